#!/usr/bin/env python3
"""Side-by-side benchmark: modelc against PyTorch eager on the same workloads, in one session.

For each round, thread count and workload this runs `modelc bench --json` and then the same
workload in PyTorch (a subprocess of this script under a Python that has torch), one after the
other, so both sides see the same machine load; it prints the medians and the ratio
(PyTorch time / modelc time: above 1 means modelc is faster) next to the targets of issue #6.

    cargo build --release
    python3 bench/compare/run.py                       # 1 and 2 threads, every workload
    python3 bench/compare/run.py --threads 1 --only charlm_train,mlp_train --rounds 3
    python3 bench/compare/run.py --torch-python /path/to/venv/bin/python

PyTorch is optional: without it the modelc side still runs and the script says PyTorch is
missing. To install it (about 3 minutes; the default wheel pulls CUDA libraries, ~5 GB):

    python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch numpy
    python3 bench/compare/run.py --torch-python ~/torch-venv/bin/python

This script uses only the standard library itself; torch is imported only in the worker
subprocess (`--torch-worker`).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# name -> (modelc bench arguments, batch sizes reported, issue #6 target speed-up at 1 / 2 threads)
WORKLOADS = {
    "mlp_train": (["models/digits_mlp.model"], "≥3× / ≥5× (eager 1.95 ms)"),
    "cnn_train": (["bench/compare/cnn.model"], "≥3× / ≥4× (eager 3.5 ms)"),
    "charlm_train": (["bench/compare/charlm.model"], "≥1.2× / ≥1.2× (eager 141 / 79 ms)"),
    "moe_train": (["bench/compare/moe.model"], "≥1.3× / ≥1.3× (eager 102 / 67 ms)"),
    "mlp_infer": (["models/digits_mlp.model", "--model", "DigitsMLP", "--batch", "1", "--batch", "64"],
                  "b1: ≤ onnxruntime 21 µs"),
    "transformer_infer": (["models/austen_lm.model", "--model", "AustenLM", "--batch", "1", "--batch", "64"],
                          "≤ onnxruntime 1.06 / 87 ms (2T: 51 ms at 64)"),
}


# ----------------------------------------------------------------------------- PyTorch side
def torch_worker(name, threads, target_s, warmup):
    """Times one workload in PyTorch eager; prints one JSON object per batch size."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.l1, self.l2, self.l3 = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 10)

        def forward(self, x):
            return self.l3(F.relu(self.l2(F.relu(self.l1(x)))))

    class CNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 16, 3), nn.Conv2d(16, 32, 3)
            self.fc = nn.Linear(512, 10)

        def forward(self, x):
            h = F.relu(self.c2(F.relu(self.c1(x.reshape(-1, 1, 8, 8)))))
            return self.fc(h.flatten(1))

    class Block(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.heads = heads
            self.n1, self.n2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.up, self.down = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

        def forward(self, x):
            b, t, d = x.shape
            q, k, v = self.qkv(self.n1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
            a = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.proj(a.transpose(1, 2).reshape(b, t, d))
            return x + self.down(F.gelu(self.up(self.n2(x))))

    class CharLM(nn.Module):
        def __init__(self, vocab=96, d=128, heads=4, layers=2, ctx=64):
            super().__init__()
            self.tok = nn.Embedding(vocab, d)
            self.pos = nn.Parameter(torch.randn(ctx, d) * 0.02)
            self.blocks = nn.ModuleList([Block(d, heads) for _ in range(layers)])
            self.norm, self.head = nn.LayerNorm(d), nn.Linear(d, vocab)

        def forward(self, ids):
            x = self.tok(ids) + self.pos[: ids.shape[1]]
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.norm(x))

    class MoE(nn.Module):
        """Top-2 of 8 experts; softmax over the two chosen gate logits; tokens dispatched per
        expert with where / index_add (the usual eager code)."""

        def __init__(self, d=128, hidden=512, experts=8, k=2):
            super().__init__()
            self.k, self.experts = k, experts
            self.gate = nn.Linear(d, experts, bias=False)
            self.w1 = nn.Parameter(torch.randn(experts, d, hidden) / d ** 0.5)
            self.b1 = nn.Parameter(torch.zeros(experts, hidden))
            self.w2 = nn.Parameter(torch.randn(experts, hidden, d) / hidden ** 0.5)
            self.b2 = nn.Parameter(torch.zeros(experts, d))

        def forward(self, x):
            top_v, top_i = self.gate(x).topk(self.k, dim=-1)
            w = top_v.softmax(-1)
            out = torch.zeros_like(x)
            for e in range(self.experts):
                tok, slot = torch.where(top_i == e)
                h = F.gelu(x[tok] @ self.w1[e] + self.b1[e])
                out.index_add_(0, tok, (h @ self.w2[e] + self.b2[e]) * w[tok, slot].unsqueeze(-1))
            return out

    def train_step(model, x, loss_fn):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x))
            loss.backward()
            opt.step()

        return step

    g = torch.Generator().manual_seed(0)
    jobs = []  # (batch, callable)
    if name == "mlp_train":
        x, y = torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
        jobs.append((64, train_step(MLP(), x, lambda out: F.cross_entropy(out, y))))
    elif name == "cnn_train":
        x, y = torch.rand(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
        jobs.append((64, train_step(CNN(), x, lambda out: F.cross_entropy(out, y))))
    elif name == "charlm_train":
        toks = torch.randint(0, 96, (32, 65), generator=g)
        x, y = toks[:, :-1].contiguous(), toks[:, 1:].contiguous()
        jobs.append((32, train_step(CharLM(), x, lambda out: F.cross_entropy(out.reshape(-1, 96), y.reshape(-1)))))
    elif name == "moe_train":
        x = torch.randn(2048, 128, generator=g)
        jobs.append((2048, train_step(MoE(), x, lambda out: F.mse_loss(out, x))))
    elif name in ("mlp_infer", "transformer_infer"):
        model = (MLP() if name == "mlp_infer" else CharLM()).eval()
        for b in (1, 64):
            inp = torch.randn(b, 64, generator=g) if name == "mlp_infer" else torch.randint(0, 96, (b, 64), generator=g)

            def fwd(model=model, inp=inp):
                with torch.inference_mode():
                    model(inp)

            jobs.append((b, fwd))
    else:
        raise SystemExit(f"unknown workload {name}")
    for batch, fn in jobs:
        r = time_calls(fn, target_s, warmup)
        r.update({"workload": name, "batch": batch, "threads": threads, "torch": torch.__version__})
        print(json.dumps(r), flush=True)


def time_calls(fn, target_s, warmup):
    """Median and quartiles of per-call wall times after warm-up (the same method as
    `modelc bench`); process CPU time per call."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    per = (time.perf_counter() - t0) / max(warmup, 1)
    iters = max(10, min(10000, int(target_s / max(per, 1e-7)) + 1))
    times = []
    c0 = time.process_time()
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    cpu = (time.process_time() - c0) / iters
    q = statistics.quantiles(times, n=4, method="inclusive")
    return {"median_ms": q[1] * 1e3, "q1_ms": q[0] * 1e3, "q3_ms": q[2] * 1e3, "min_ms": min(times) * 1e3,
            "cpu_ms": cpu * 1e3, "iters": iters, "warmup": warmup}


# ----------------------------------------------------------------------------- driver
def run_json_lines(cmd, env=None):
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def has_torch(python):
    try:
        p = subprocess.run([python, "-c", "import torch; print(torch.__version__)"], capture_output=True, text=True)
    except OSError:
        return None
    return p.stdout.strip() if p.returncode == 0 else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--only", default="", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything; medians over rounds")
    ap.add_argument("--seconds", type=float, default=2.0, help="timed seconds per measurement (about)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--modelc", default=os.path.join(ROOT, "target", "release", "modelc"))
    ap.add_argument("--torch-python", default=os.environ.get("MODELC_TORCH_PYTHON", sys.executable),
                    help="a Python with torch installed (default: this one, or $MODELC_TORCH_PYTHON)")
    ap.add_argument("--no-torch", action="store_true", help="run the modelc side only")
    ap.add_argument("--json-out", help="append every raw record to this JSON-lines file")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    if a.torch_worker:
        torch_worker(a.torch_worker, threads[0], a.seconds, a.warmup)
        return 0
    names = [n for n in a.only.split(",") if n] or list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise SystemExit(f"unknown workload `{n}`; choose from {', '.join(WORKLOADS)}")
    if not os.path.exists(a.modelc):
        raise SystemExit(f"{a.modelc} not found: build it with `cargo build --release` (or pass --modelc)")
    if "moe_train" in names and not os.path.exists(os.path.join(HERE, "data", "moe_tokens.csv")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py")], check=True)
    torch_version = None if a.no_torch else has_torch(a.torch_python)
    if torch_version is None and not a.no_torch:
        print(f"PyTorch is missing ({a.torch_python} cannot import torch): timing the modelc side only.\n"
              "Install it with: python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch numpy\n"
              "then pass --torch-python ~/torch-venv/bin/python", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"# modelc {a.modelc}; torch {torch_version or 'missing'}; load average at start {load:.2f}", flush=True)
    results = {}  # (workload, threads, batch, side) -> [records]
    raw = open(a.json_out, "a") if a.json_out else None
    for rnd in range(a.rounds):
        for t in threads:
            for n in names:
                args, _ = WORKLOADS[n]
                env = dict(os.environ, MODELC_THREADS=str(t), OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t))
                sides = [("modelc", [a.modelc, "bench", *args, "--json", "--threads", str(t),
                                     "--warmup", str(a.warmup)])]
                if torch_version:
                    sides.append(("torch", [a.torch_python, os.path.abspath(__file__), "--torch-worker", n,
                                            "--threads", str(t), "--seconds", str(a.seconds),
                                            "--warmup", str(a.warmup)]))
                for side, cmd in sides:
                    try:
                        recs = run_json_lines(cmd, env)
                    except RuntimeError as e:
                        print(f"error: {e}", file=sys.stderr)
                        continue
                    for r in recs:
                        r.update({"side": side, "round": rnd, "name": n, "load": os.getloadavg()[0]})
                        results.setdefault((n, t, r["batch"], side), []).append(r)
                        if raw:
                            raw.write(json.dumps(r) + "\n")
                    print(f"# round {rnd} {n} {t}T {side}: " +
                          ", ".join(f"b{r['batch']} {r['median_ms']:.3f} ms" for r in recs), file=sys.stderr, flush=True)
    if raw:
        raw.close()
    # table
    print()
    print("| workload | batch | threads | modelc median ms (q1–q3) | PyTorch eager median ms (q1–q3) | speed-up | target |")
    print("|---|---|---|---|---|---|---|")
    for n in names:
        for t in threads:
            batches = sorted({k[2] for k in results if k[0] == n and k[1] == t})
            for b in batches:
                def cell(side):
                    rs = results.get((n, t, b, side), [])
                    if not rs:
                        return None, "—"
                    med = statistics.median(r["median_ms"] for r in rs)
                    q1 = statistics.median(r["q1_ms"] for r in rs)
                    q3 = statistics.median(r["q3_ms"] for r in rs)
                    return med, f"{med:.3f} ({q1:.3f}–{q3:.3f})"
                m, mtext = cell("modelc")
                p, ptext = cell("torch")
                ratio = f"{p / m:.2f}×" if m and p else "—"
                print(f"| {n} | {b} | {t} | {mtext} | {ptext} | {ratio} | {WORKLOADS[n][1]} |")
    comp = [r for k, rs in results.items() if k[0] == "charlm_train" and k[3] == "modelc" for r in rs]
    if comp:
        c = statistics.median(r["compile_total_ms"] for r in comp)
        print(f"\nmodelc compile time of the char transformer train step (cold, whole process): {c:.1f} ms "
              f"(target < 50 ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

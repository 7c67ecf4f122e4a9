#!/usr/bin/env python3
"""Side-by-side benchmark: modelc against PyTorch eager, onnxruntime and numpy on the same
workloads, in one session.

For each round, thread count and workload this runs `modelc bench --json` and then the same
workload on the reference side(s) (subprocesses of this script under a Python that has them),
one after the other, so every side sees the same machine load; it prints the medians and the
ratios next to the targets of issue #6:

- train / inference workloads: PyTorch eager (speed-up = PyTorch time / modelc time: above 1
  means modelc is faster); for `mlp_infer` and `transformer_infer` also onnxruntime
  (`InferenceSession.run`, intra_op_num_threads = the thread count, inter_op 1, sequential, all
  graph optimisations) on the script's PyTorch models exported to ONNX once per run (static
  shapes, one file per batch size, in a temporary directory); ratio = onnxruntime time / modelc
  time.
- `sgemm`: `bench/compare/gemm.model` (y = x @ w, an n x n x n product) through `modelc bench
  --profile` against numpy's `np.matmul` (OpenBLAS threads from OPENBLAS_NUM_THREADS) at
  n = 128, 256, 512, 1024, in GFLOP/s; the modelc forward also copies the n x n input in and the
  output out, the kernel column is the GEMM alone.
- `copy_bw`: `bench/compare/stream.model` (the fused `max(a * b + c, 0)` over 64Mi f32, 16 bytes
  per element) against `np.copyto` of 64Mi f32 (8 bytes per element), in GB/s per byte moved.

    cargo build --release
    python3 bench/compare/run.py --torch-python ~/torch-venv/bin/python   # 1 and 2 threads, all
    python3 bench/compare/run.py --threads 1 --only charlm_train,mlp_train --rounds 3
    python3 bench/compare/run.py --only sgemm,copy_bw --json-out /tmp/cmp.jsonl
    python3 bench/compare/run.py --no-torch                                 # modelc side only

The reference sides are optional: without torch the modelc side (and numpy, if importable) still
runs and the script says what is missing; without onnxruntime / onnx the onnxruntime column says
so. To install them (about 3 minutes; the default torch wheel pulls CUDA libraries, ~5 GB;
onnxscript is needed by `torch.onnx.export`'s default exporter):

    python3 -m venv ~/torch-venv
    ~/torch-venv/bin/pip install torch numpy onnx onnxruntime onnxscript
    python3 bench/compare/run.py --torch-python ~/torch-venv/bin/python

This script uses only the standard library itself; torch, onnxruntime and numpy are imported
only in its worker subprocesses.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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
                  "b1: ≤ onnxruntime (ratio ≥ 1)"),
    "transformer_infer": (["models/austen_lm.model", "--model", "AustenLM", "--batch", "1", "--batch", "64"],
                          "b1, b64: ≤ onnxruntime (ratio ≥ 1)"),
    # modelc bench of bench/compare/gemm.model at each n against numpy's `a @ b`
    "sgemm": (None, "≥ 0.8× numpy"),
    # the fused chain of bench/compare/stream.model against numpy's copy, per byte moved
    "copy_bw": (None, "≥ 0.9× numpy copy"),
}


# ----------------------------------------------------------------------------- PyTorch side
def torch_models():
    """The PyTorch models of the workloads (classes), the same architectures as the reference's
    `models.py`."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

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

    return {"MLP": MLP, "CNN": CNN, "CharLM": CharLM, "MoE": MoE}


def infer_inputs(name, batch, g):
    """The inference input of `name` at `batch` (generator `g`): MLP features, or token ids."""
    import torch

    if name == "mlp_infer":
        return torch.randn(batch, 64, generator=g)
    return torch.randint(0, 96, (batch, 64), generator=g)


def torch_worker(name, threads, target_s, warmup):
    """Times one workload in PyTorch eager; prints one JSON object per batch size."""
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    M = torch_models()
    MLP, CNN, CharLM, MoE = M["MLP"], M["CNN"], M["CharLM"], M["MoE"]

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
            inp = infer_inputs(name, b, g)

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


# ----------------------------------------------------------------------------- onnxruntime side
ONNX_BATCHES = (1, 64)
ONNX_MODELS = {"mlp_infer": "MLP", "transformer_infer": "CharLM"}


def onnx_path(onnx_dir, name, batch):
    return os.path.join(onnx_dir, f"{name}_b{batch}.onnx")


def export_worker(onnx_dir):
    """Exports the inference models (built exactly as `torch_worker` builds them: seed 0) to ONNX,
    static shapes, one file per batch size, like the reference's `bench_infer.py`: the default
    (torch.export-based) exporter first, the legacy TorchScript one (`dynamo=False`) if that fails.
    Checks each file with onnxruntime against PyTorch; prints one JSON object per file."""
    import warnings

    import numpy as np
    import onnxruntime as ort
    import torch

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    for name, cls in ONNX_MODELS.items():
        torch.manual_seed(0)
        model = torch_models()[cls]().eval()
        g = torch.Generator().manual_seed(0)
        for b in ONNX_BATCHES:
            x = infer_inputs(name, b, g)
            path = onnx_path(onnx_dir, name, b)
            rec = {"export": name, "batch": b, "path": path, "exporter": None, "errors": []}
            t0 = time.perf_counter()
            for kw in ({}, {"dynamo": False}):
                try:
                    torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], **kw)
                    rec["exporter"] = "legacy (dynamo=False)" if kw else "default"
                    break
                except Exception as e:  # noqa: BLE001 -- recorded, then the fallback is tried
                    rec["errors"].append(f"{type(e).__name__}: {e}"[:1000])
            rec["export_s"] = time.perf_counter() - t0
            if rec["exporter"]:
                with torch.inference_mode():
                    ref = model(x).numpy()
                sess = ort.InferenceSession(path, ort_options(ort, 1), providers=["CPUExecutionProvider"])
                out = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
                rec["max_abs_diff_vs_torch"] = float(np.abs(out - ref).max())
            print(json.dumps(rec), flush=True)


def ort_options(ort, threads):
    """The reference's session options: `threads` intra-op threads, one inter-op thread,
    sequential execution, every graph optimisation."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return so


def ort_worker(name, onnx_dir, threads, target_s, warmup):
    """Times `InferenceSession.run` on the exported model of `name`, the same inputs as
    `torch_worker`; prints one JSON object per batch size."""
    import onnxruntime as ort
    import torch

    g = torch.Generator().manual_seed(0)
    for b in ONNX_BATCHES:
        x = infer_inputs(name, b, g).numpy()
        sess = ort.InferenceSession(onnx_path(onnx_dir, name, b), ort_options(ort, threads),
                                    providers=["CPUExecutionProvider"])
        feed = {sess.get_inputs()[0].name: x}
        r = time_calls(lambda: sess.run(None, feed), target_s, warmup)
        r.update({"workload": name, "batch": b, "threads": threads, "onnxruntime": ort.__version__})
        print(json.dumps(r), flush=True)


# ----------------------------------------------------------------------------- numpy side
GEMM_SIZES = (128, 256, 512, 1024)
STREAM_ELEMS = 64 * 1024 * 1024  # 64Mi f32 = 256 MiB per array, = stream.model at --batch 64


def numpy_worker(what, threads, target_s, warmup):
    """`sgemm:N`: `np.matmul(a, b, out=c)` on square f32 N x N (2 N^3 FLOPs); `copy`:
    `np.copyto(d, a)` of 64Mi f32 (8 bytes per element: one read, one write). Threads come from
    OPENBLAS_NUM_THREADS / OMP_NUM_THREADS, set by the driver before numpy is imported (numpy's
    copy is single-threaded whatever the setting). Prints one JSON object."""
    import numpy as np

    rng = np.random.default_rng(0)
    if what.startswith("sgemm:"):
        n = int(what.split(":")[1])
        a = rng.standard_normal((n, n), dtype=np.float32)
        b = rng.standard_normal((n, n), dtype=np.float32)
        c = np.empty((n, n), dtype=np.float32)
        r = time_calls(lambda: np.matmul(a, b, out=c), target_s, warmup)
        r.update({"workload": "sgemm", "batch": n, "flops": 2 * n ** 3})
    elif what == "copy":
        a = rng.standard_normal(STREAM_ELEMS, dtype=np.float32)
        d = np.empty_like(a)
        r = time_calls(lambda: np.copyto(d, a), target_s, warmup)
        r.update({"workload": "copy_bw", "batch": 64, "bytes": 8 * STREAM_ELEMS})
    else:
        raise SystemExit(f"unknown numpy job {what}")
    r.update({"threads": threads, "numpy": np.__version__, "blas_threads": blas_threads(), "blas_core": blas_core(),
              "openblas_env": os.environ.get("OPENBLAS_NUM_THREADS")})
    print(json.dumps(r), flush=True)


def openblas_lib():
    import ctypes

    with open("/proc/self/maps") as f:
        libs = sorted({line.split()[-1] for line in f if "openblas" in line.split()[-1]})
    return ctypes.CDLL(libs[0])


def blas_core():
    """The kernel set OpenBLAS picked for this CPU (e.g. `Haswell`: AVX2, no AVX-512), or None."""
    import ctypes

    try:
        lib = openblas_lib()
        for sym in ("scipy_openblas_get_corename64_", "openblas_get_corename64_", "openblas_get_corename"):
            if hasattr(lib, sym):
                f = getattr(lib, sym)
                f.restype = ctypes.c_char_p
                return f().decode()
    except Exception:  # noqa: BLE001 -- informational only
        return None
    return None


def blas_threads():
    """OpenBLAS's thread count as the loaded library reports it (None if it cannot be asked)."""
    try:
        lib = openblas_lib()
        for sym in ("scipy_openblas_get_num_threads64_", "openblas_get_num_threads64_", "openblas_get_num_threads"):
            if hasattr(lib, sym):
                return int(getattr(lib, sym)())
    except Exception:  # noqa: BLE001 -- informational only
        return None
    return None


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


def probe(python):
    """Versions of torch, onnxruntime (+ onnx) and numpy importable by `python` (None: missing)."""
    code = ("import importlib, json\n"
            "v = {}\n"
            "for m in ('torch', 'onnxruntime', 'onnx', 'onnxscript', 'numpy'):\n"
            "    try:\n"
            "        v[m] = importlib.import_module(m).__version__\n"
            "    except Exception:\n"
            "        v[m] = None\n"
            "print(json.dumps(v))\n")
    try:
        p = subprocess.run([python, "-c", code], capture_output=True, text=True)
        return json.loads(p.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError):
        return {}


def kernel_ms(rec):
    """The slowest kernel's time per run in a `modelc bench --profile` record (the GEMM of
    gemm.model, the fused chain of stream.model)."""
    ks = rec.get("profile_kernels") or []
    return max((k["ms"] for k in ks), default=None)


def med(rs, key):
    vals = [r[key] for r in rs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--only", default="", help="comma-separated workloads: " + ", ".join(WORKLOADS))
    ap.add_argument("--rounds", type=int, default=1, help="repeat everything; medians over rounds")
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="timed seconds per reference measurement (about; modelc bench times ~2 s)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--gemm-sizes", default=",".join(map(str, GEMM_SIZES)),
                    help="comma-separated n of the sgemm workload (default %(default)s)")
    ap.add_argument("--modelc", default=os.path.join(ROOT, "target", "release", "modelc"))
    ap.add_argument("--torch-python", default=os.environ.get("MODELC_TORCH_PYTHON", sys.executable),
                    help="a Python with torch (and onnxruntime, onnx, numpy) installed: runs every "
                         "reference side (default: this one, or $MODELC_TORCH_PYTHON)")
    ap.add_argument("--no-torch", action="store_true",
                    help="run the modelc side only (no PyTorch, onnxruntime or numpy)")
    ap.add_argument("--no-ort", action="store_true", help="skip onnxruntime (and the ONNX export)")
    ap.add_argument("--json-out", help="append every raw record, then one summary record per table "
                                       "row (\"summary\": true, with the ratios), to this JSON-lines file")
    ap.add_argument("--torch-worker", help=argparse.SUPPRESS)
    ap.add_argument("--ort-worker", help=argparse.SUPPRESS)
    ap.add_argument("--numpy-worker", help=argparse.SUPPRESS)
    ap.add_argument("--export-onnx", help=argparse.SUPPRESS)
    ap.add_argument("--onnx-dir", help=argparse.SUPPRESS)
    a = ap.parse_args()
    threads = [int(t) for t in a.threads.split(",") if t.strip()]
    if a.torch_worker:
        torch_worker(a.torch_worker, threads[0], a.seconds, a.warmup)
        return 0
    if a.ort_worker:
        ort_worker(a.ort_worker, a.onnx_dir, threads[0], a.seconds, a.warmup)
        return 0
    if a.numpy_worker:
        numpy_worker(a.numpy_worker, threads[0], a.seconds, a.warmup)
        return 0
    if a.export_onnx:
        export_worker(a.export_onnx)
        return 0
    names = [n for n in a.only.split(",") if n] or list(WORKLOADS)
    for n in names:
        if n not in WORKLOADS:
            raise SystemExit(f"unknown workload `{n}`; choose from {', '.join(WORKLOADS)}")
    gemm_sizes = [int(x) for x in a.gemm_sizes.split(",") if x.strip()]
    if not os.path.exists(a.modelc):
        raise SystemExit(f"{a.modelc} not found: build it with `cargo build --release` (or pass --modelc)")
    if "moe_train" in names and not os.path.exists(os.path.join(HERE, "data", "moe_tokens.csv")):
        subprocess.run([sys.executable, os.path.join(HERE, "make_data.py")], check=True)
    v = {} if a.no_torch else probe(a.torch_python)
    torch_version, numpy_version = v.get("torch"), v.get("numpy")
    ort_version = v.get("onnxruntime") if torch_version and v.get("onnx") and not a.no_ort else None
    if not a.no_torch:
        if torch_version is None:
            print(f"PyTorch is missing ({a.torch_python} cannot import torch): no PyTorch or onnxruntime side.\n"
                  "Install it with: python3 -m venv ~/torch-venv && ~/torch-venv/bin/pip install torch numpy "
                  "onnx onnxruntime onnxscript\nthen pass --torch-python ~/torch-venv/bin/python", file=sys.stderr)
        elif ort_version is None and not a.no_ort and any(n in ONNX_MODELS for n in names):
            print(f"onnxruntime or onnx is missing ({a.torch_python}): no onnxruntime side. Install with: "
                  f"{a.torch_python} -m pip install onnx onnxruntime onnxscript", file=sys.stderr)
        if numpy_version is None:
            print(f"numpy is missing ({a.torch_python}): no numpy side for sgemm / copy_bw.", file=sys.stderr)
    load = os.getloadavg()[0]
    print(f"# modelc {a.modelc}; torch {torch_version or 'missing'}; onnxruntime {ort_version or 'missing'}; "
          f"numpy {numpy_version or 'missing'}; load average at start {load:.2f}", flush=True)
    raw = open(a.json_out, "a") if a.json_out else None
    # the ONNX files: exported once per run, in a temporary directory
    onnx_dir = None
    export_notes = []
    if ort_version and any(n in ONNX_MODELS for n in names):
        onnx_dir = tempfile.mkdtemp(prefix="modelc_onnx_")
        try:
            recs = run_json_lines([a.torch_python, os.path.abspath(__file__), "--export-onnx", onnx_dir],
                                  dict(os.environ, OMP_NUM_THREADS="1"))
        except RuntimeError as e:
            print(f"error: ONNX export failed, no onnxruntime side: {e}", file=sys.stderr)
            recs = []
        for r in recs:
            print(f"# ONNX export {r['export']} b{r['batch']}: {r['exporter'] or 'FAILED ' + '; '.join(r['errors'])}"
                  + (f", {r['export_s']:.1f} s, onnxruntime vs torch max |diff| {r['max_abs_diff_vs_torch']:.2g}"
                     if r["exporter"] else ""), file=sys.stderr, flush=True)
            export_notes.append(r)
            if raw:
                raw.write(json.dumps(r) + "\n")
        if not any(r["exporter"] for r in recs):
            ort_version = None
    results = {}  # (workload, threads, batch, side) -> [records]
    try:
        for rnd in range(a.rounds):
            for t in threads:
                env = dict(os.environ, MODELC_THREADS=str(t), OMP_NUM_THREADS=str(t), MKL_NUM_THREADS=str(t),
                           OPENBLAS_NUM_THREADS=str(t))
                worker = [a.torch_python, os.path.abspath(__file__), "--threads", str(t),
                          "--seconds", str(a.seconds), "--warmup", str(a.warmup)]
                mc = [a.modelc, "bench", "--json", "--threads", str(t), "--warmup", str(a.warmup)]
                for n in names:
                    # each entry: (label, [(side, command)]) run one after the other
                    groups = []
                    if n == "sgemm":
                        for size in gemm_sizes:
                            sides = [("modelc", mc + ["bench/compare/gemm.model", "--model", "Gemm", "--arg",
                                                      f"n={size}", "--batch", str(size), "--profile"])]
                            if numpy_version:
                                sides.append(("numpy", worker + ["--numpy-worker", f"sgemm:{size}"]))
                            groups.append((f"{n} n={size}", sides))
                    elif n == "copy_bw":
                        sides = [("modelc", mc + ["bench/compare/stream.model", "--model", "Stream", "--batch", "64",
                                                  "--profile", "--iters", "10"])]
                        if numpy_version:
                            sides.append(("numpy", worker + ["--numpy-worker", "copy"]))
                        groups.append((n, sides))
                    else:
                        sides = [("modelc", mc + WORKLOADS[n][0])]
                        if torch_version:
                            sides.append(("torch", worker + ["--torch-worker", n]))
                        if ort_version and n in ONNX_MODELS:
                            sides.append(("ort", worker + ["--ort-worker", n, "--onnx-dir", onnx_dir]))
                        groups.append((n, sides))
                    for label, sides in groups:
                        for side, cmd in sides:
                            try:
                                recs = run_json_lines(cmd, env)
                            except RuntimeError as e:
                                print(f"error: {e}", file=sys.stderr)
                                continue
                            for r in recs:
                                r.update({"side": side, "round": rnd, "name": n, "load": os.getloadavg()[0]})
                                if side == "modelc" and n in ("sgemm", "copy_bw"):
                                    r["kernel_ms"] = kernel_ms(r)
                                results.setdefault((n, t, r["batch"], side), []).append(r)
                                if raw:
                                    raw.write(json.dumps(r) + "\n")
                            print(f"# round {rnd} {label} {t}T {side}: " +
                                  ", ".join(f"b{r['batch']} {r['median_ms']:.3f} ms" for r in recs),
                                  file=sys.stderr, flush=True)
    finally:
        if onnx_dir:
            shutil.rmtree(onnx_dir, ignore_errors=True)
    summaries = print_tables(names, threads, results, torch_version, ort_version, numpy_version, a)
    if raw:
        for srec in summaries:
            raw.write(json.dumps(srec) + "\n")
        raw.close()
    return 0


def cell(results, key):
    """(median ms over rounds, "median (q1–q3)") of one side, or (None, why)."""
    rs = results.get(key, [])
    if not rs:
        return None, "—"
    m = med(rs, "median_ms")
    return m, f"{m:.3f} ({med(rs, 'q1_ms'):.3f}–{med(rs, 'q3_ms'):.3f})"


def print_tables(names, threads, results, torch_version, ort_version, numpy_version, a):
    summaries = []
    missing = {"torch": "PyTorch missing" if not torch_version else "—",
               "ort": "onnxruntime missing" if not ort_version else "—",
               "numpy": "numpy missing" if not numpy_version else "—"}
    if a.no_ort:
        missing["ort"] = "not run (--no-ort)"
    if a.no_torch:
        missing = {k: "not run (--no-torch)" for k in missing}
    model_names = [n for n in names if n not in ("sgemm", "copy_bw")]
    if model_names:
        print()
        print("| workload | batch | threads | modelc median ms (q1–q3) | PyTorch eager median ms (q1–q3) | "
              "speed-up (PyTorch / modelc) | onnxruntime median ms (q1–q3) | onnxruntime / modelc | target |")
        print("|---|---|---|---|---|---|---|---|---|")
        for n in model_names:
            for t in threads:
                for b in sorted({k[2] for k in results if k[0] == n and k[1] == t}):
                    m, mtext = cell(results, (n, t, b, "modelc"))
                    p, ptext = cell(results, (n, t, b, "torch"))
                    o, otext = cell(results, (n, t, b, "ort"))
                    if p is None:
                        ptext = missing["torch"]
                    if o is None:
                        otext = missing["ort"] if n in ONNX_MODELS else "—"
                    sp = p / m if m and p else None
                    so = o / m if m and o else None
                    print(f"| {n} | {b} | {t} | {mtext} | {ptext} | {f'{sp:.2f}×' if sp else '—'} | {otext} | "
                          f"{f'{so:.2f}×' if so else '—'} | {'' if n == 'mlp_infer' and b != 1 else WORKLOADS[n][1]} |")
                    summaries.append({"summary": True, "workload": n, "batch": b, "threads": t, "modelc_ms": m,
                                      "torch_ms": p, "ort_ms": o, "torch_over_modelc": sp, "ort_over_modelc": so})
        comp = [r for k, rs in results.items() if k[0] == "charlm_train" and k[3] == "modelc" for r in rs]
        if comp:
            c = statistics.median(r["compile_total_ms"] for r in comp)
            print(f"\nmodelc compile time of the char transformer train step (cold, whole process): {c:.1f} ms "
                  f"(target < 50 ms)")
    if "sgemm" in names:
        print()
        print("| n | threads | modelc forward median ms (q1–q3) | modelc forward GFLOP/s | modelc GEMM kernel GFLOP/s "
              "| numpy median ms (q1–q3) | numpy GFLOP/s | modelc / numpy (forward) | modelc / numpy (kernel) | target |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for t in threads:
            for size in sorted({k[2] for k in results if k[0] == "sgemm" and k[1] == t}):
                flops = 2.0 * size ** 3
                m, mtext = cell(results, ("sgemm", t, size, "modelc"))
                k = med(results.get(("sgemm", t, size, "modelc"), []), "kernel_ms")
                p, ptext = cell(results, ("sgemm", t, size, "numpy"))
                gf = lambda ms: flops / (ms * 1e-3) / 1e9 if ms else None  # noqa: E731
                mg, kg, pg = gf(m), gf(k), gf(p)
                rf, rk = (mg / pg if mg and pg else None), (kg / pg if kg and pg else None)
                f = lambda x, fmt: fmt.format(x) if x else "—"  # noqa: E731
                print(f"| {size} | {t} | {mtext} | {f(mg, '{:.1f}')} | {f(kg, '{:.1f}')} | "
                      f"{ptext if p else missing['numpy']} | {f(pg, '{:.1f}')} | {f(rf, '{:.2f}×')} | "
                      f"{f(rk, '{:.2f}×')} | {WORKLOADS['sgemm'][1]} |")
                summaries.append({"summary": True, "workload": "sgemm", "batch": size, "threads": t,
                                  "modelc_ms": m, "modelc_kernel_ms": k, "numpy_ms": p, "modelc_gflops": mg,
                                  "modelc_kernel_gflops": kg, "numpy_gflops": pg, "modelc_over_numpy": rf,
                                  "modelc_kernel_over_numpy": rk})
        cores = sorted({r.get("blas_core") or "?" for k, rs in results.items() if k[0] == "sgemm" and k[3] == "numpy"
                        for r in rs})
        if cores:
            print(f"\nnumpy's OpenBLAS kernels: {', '.join(cores)}; threads from OPENBLAS_NUM_THREADS")
        print("\nforward = copying the n×n input in + the GEMM kernel + reading the n×n output out "
              "(`modelc bench`); kernel = the GEMM kernel alone (`--profile`, mean over its runs)")
    if "copy_bw" in names:
        print()
        print("| threads | modelc fused max(a*b+c, 0) kernel ms | GB/s (16 B/elem) | modelc whole forward median ms "
              "(q1–q3) | GB/s (48 B/elem) | numpy copyto median ms (q1–q3) | GB/s (8 B/elem) | "
              "kernel / numpy copy (per byte) | target |")
        print("|---|---|---|---|---|---|---|---|---|")
        for t in threads:
            if not any(k[0] == "copy_bw" and k[1] == t for k in results):
                continue
            m, mtext = cell(results, ("copy_bw", t, 64, "modelc"))
            k = med(results.get(("copy_bw", t, 64, "modelc"), []), "kernel_ms")
            p, ptext = cell(results, ("copy_bw", t, 64, "numpy"))
            gbs = lambda ms, per: per * STREAM_ELEMS / (ms * 1e-3) / 1e9 if ms else None  # noqa: E731
            kg, mg, pg = gbs(k, 16), gbs(m, 48), gbs(p, 8)
            r = kg / pg if kg and pg else None
            f = lambda x, fmt: fmt.format(x) if x else "—"  # noqa: E731
            print(f"| {t} | {f(k, '{:.2f}')} | {f(kg, '{:.1f}')} | {mtext} | {f(mg, '{:.1f}')} | "
                  f"{ptext if p else missing['numpy']} | {f(pg, '{:.1f}')} | {f(r, '{:.2f}×')} | "
                  f"{WORKLOADS['copy_bw'][1]} |")
            summaries.append({"summary": True, "workload": "copy_bw", "threads": t, "elems": STREAM_ELEMS,
                              "modelc_kernel_ms": k, "modelc_kernel_gbps": kg, "modelc_forward_ms": m,
                              "modelc_forward_gbps": mg, "numpy_copy_ms": p, "numpy_copy_gbps": pg,
                              "kernel_over_numpy_copy": r})
        print("\n64Mi f32 (256 MiB) per array; GB/s = 1e9 bytes/s counting compulsory traffic only. kernel = "
              "the fused chain alone (`--profile`): 3 reads + 1 write; whole forward adds copying the three "
              "inputs in and the output out (48 B/elem); numpy's copy is single-threaded at any thread setting")
    return summaries


if __name__ == "__main__":
    sys.exit(main())

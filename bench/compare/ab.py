#!/usr/bin/env python3
"""A/B of modelc builds: runs `BIN bench FILE --threads T --json` (T = 1 unless --threads=T) for
each workload with every binary in turn, ROUNDS times, and prints the median step time, CPU
time, kernel count and compile time per binary.

    python3 bench/compare/ab.py 3 base=/tmp/modelc-base new=target/release/modelc
    python3 bench/compare/ab.py 5 --only=cnn,mlp --threads=2 base=/tmp/modelc-base new=target/release/modelc
"""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORK = {
    "mlp": ["models/digits_mlp.model"],
    "cnn": ["bench/compare/cnn.model"],
    "charlm": ["bench/compare/charlm.model", "--iters", "12"],
    "moe": ["bench/compare/moe.model", "--iters", "12"],
    "tinfer": ["models/austen_lm.model", "--model", "AustenLM", "--batch", "1"],
}


def main():
    rounds = int(sys.argv[1])
    flags = {a[2:].split("=", 1)[0]: a.split("=", 1)[1] for a in sys.argv[2:] if a.startswith("--")}
    only = [flags["only"].split(",")] if "only" in flags else []
    threads = flags.get("threads", "1")
    bins = dict(a.split("=", 1) for a in sys.argv[2:] if not a.startswith("--"))
    work = {w: args for w, args in WORK.items() if not only or w in only[0]}
    res = {}
    for _ in range(rounds):
        for w, args in work.items():
            for name, path in bins.items():
                out = subprocess.run([path, "bench", *args, "--threads", threads, "--json"], cwd=ROOT,
                                     capture_output=True, text=True, check=True).stdout
                r = json.loads(out.splitlines()[-1])
                res.setdefault((w, name), []).append(r)
    for (w, name), rs in res.items():
        med = statistics.median(r["median_ms"] for r in rs)
        cpu = statistics.median(r["cpu_ms"] for r in rs)
        comp = statistics.median(r["compile_total_ms"] for r in rs)
        print(f"{w:8} {name:10} median {med:9.3f} ms  cpu {cpu:9.3f} ms  kernels {rs[0]['kernels']:4}  "
              f"compile {comp:7.1f} ms  runs {[round(r['median_ms'], 3) for r in rs]}")


if __name__ == "__main__":
    main()

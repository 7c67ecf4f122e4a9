#!/usr/bin/env python3
"""Writes data/moe_tokens.csv: 2048 rows of 128 standard-normal features (seeded) and a label
column of zeros, the inputs of the MoE benchmark (moe.model). Standard library only."""
import os
import random
import sys

ROWS, COLS = 2048, 128


def main(path):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(0)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(",".join([f"f{j}" for j in range(COLS)] + ["label"]) + "\n")
        for _ in range(ROWS):
            f.write(",".join(f"{rng.gauss(0.0, 1.0):.4f}" for _ in range(COLS)) + ",0\n")
    os.replace(tmp, path)


if __name__ == "__main__":
    here = os.path.dirname(os.path.abspath(__file__))
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "data", "moe_tokens.csv"))

"""Generates windows_task.csv: the "same window" task for models/hier_classifier.model.

Each row is 256 tokens (columns t0..t255, ids 1..20 as filler) in 16 windows of 16 tokens, with
three A tokens (21) and three B tokens (22) planted at random. Label 1: three windows each hold
an A and a B together; label 0: the six sit in six different windows. Both classes contain exactly the same tokens, so a bag-of-tokens model is at chance; the
answer is local co-occurrence inside a window, aggregated over windows. Deterministic (seed 0).
"""
import csv, random

random.seed(0)
N, T, W, A, B = 3000, 256, 16, 21, 22
with open("windows_task.csv", "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([f"t{i}" for i in range(T)] + ["label"])
    for n in range(N):
        label = n % 2
        row = [random.randint(1, 20) for _ in range(T)]
        wins = random.sample(range(T // W), 6 if label == 0 else 3)
        def put(win, tok):
            while True:
                p = win * W + random.randrange(W)
                if row[p] <= 20:
                    row[p] = tok
                    return
        if label == 1:
            for k in range(3):
                put(wins[k], A); put(wins[k], B)
        else:
            for k in range(3):
                put(wins[2 * k], A); put(wins[2 * k + 1], B)
        w.writerow(row + [label])

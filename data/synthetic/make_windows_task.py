"""Generates windows_task.csv: the "same window" task for models/hier_classifier.model.

Each row is 256 tokens (columns t0..t255, ids 1..20 as filler) in 16 windows of 16 tokens, with
two A tokens (21) and two B tokens (22) planted at random. Label 1: one window holds an A and a B
together (the other A and B sit in two other windows); label 0: all four sit in four different
windows. Both classes contain exactly the same tokens, so a bag-of-tokens model is at chance; the
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
        wins = random.sample(range(T // W), 4 if label == 0 else 3)
        def put(win, tok):
            while True:
                p = win * W + random.randrange(W)
                if row[p] <= 20:
                    row[p] = tok
                    return
        if label == 1:
            put(wins[0], A); put(wins[0], B); put(wins[1], A); put(wins[2], B)
        else:
            put(wins[0], A); put(wins[1], B); put(wins[2], A); put(wins[3], B)
        w.writerow(row + [label])

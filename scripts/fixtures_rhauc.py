#!/usr/bin/env python3
"""Independent RH-AUC values for tests/bench_metrics.rs.

    python scripts/fixtures_rhauc.py   # writes tests/fixtures/rhauc/expected.json

For each point set: sort by (R, H) (np.lexsort), min-max normalise R and H, integrate with
numpy's and scipy's trapezoid rule (both must agree); the un-normalised variant is the raw
trapezoid divided by (max R - min R). Undefined cases are listed with the expected error kind.

Bootstrap: a small correctness table (samples x settings per split) resampled with the same
SplitMix64 stream rhlens uses (uniform index = (x * n) >> 64; reasoning samples drawn first,
then perception), RH-AUC recomputed per resample, interval by numpy.percentile (linear).
Needs numpy and scipy.
"""

import json
from pathlib import Path

import numpy as np
from scipy.integrate import trapezoid as sp_trapezoid

np_trapezoid = getattr(np, "trapezoid", None) or getattr(np, "trapz")


def rh_auc(r, h):
    r = np.asarray(r, dtype=np.float64)
    h = np.asarray(h, dtype=np.float64)
    order = np.lexsort((h, r))  # primary key R, ties by H
    r, h = r[order], h[order]
    rn = (r - r.min()) / (r.max() - r.min())
    hn = (h - h.min()) / (h.max() - h.min())
    a = float(np_trapezoid(hn, rn))
    b = float(sp_trapezoid(hn, rn))
    assert abs(a - b) < 1e-15, (a, b)
    raw = float(sp_trapezoid(h, r)) / float(r.max() - r.min())
    return a, raw


MASK = (1 << 64) - 1


class SplitMix64:
    def __init__(self, seed):
        self.state = seed & MASK

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & MASK
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        return z ^ (z >> 31)

    def below(self, n):
        return (self.next_u64() * n) >> 64


def bootstrap_case(name, reasoning, perception, resamples, seed):
    """reasoning/perception: [sample][setting] 0/1 correctness."""
    rng = SplitMix64(seed)
    r = np.asarray(reasoning, dtype=np.float64)
    p = np.asarray(perception, dtype=np.float64)
    values, undefined = [], 0
    for _ in range(resamples):
        ri = [rng.below(len(r)) for _ in range(len(r))]
        pi = [rng.below(len(p)) for _ in range(len(p))]
        R = r[ri].mean(axis=0)
        H = p[pi].mean(axis=0)
        if np.ptp(R) == 0 or np.ptp(H) == 0:
            undefined += 1
            continue
        values.append(rh_auc(R, H)[0])
    R0, H0 = r.mean(axis=0), p.mean(axis=0)
    point = None if np.ptp(R0) == 0 or np.ptp(H0) == 0 else rh_auc(R0, H0)[0]
    lo, hi = np.percentile(values, [2.5, 97.5])
    return {"name": name, "reasoning": reasoning, "perception": perception, "resamples": resamples,
            "seed": seed, "point": point, "undefined": undefined, "lo": float(lo), "hi": float(hi)}


def main():
    rng = np.random.default_rng(20250521)
    cases = []

    def add(name, r, h):
        a, raw = rh_auc(r, h)
        cases.append({"name": name, "reasoning": list(map(float, r)), "perception": list(map(float, h)),
                      "rh_auc": a, "rh_auc_unnormalized": raw})

    for i in range(4):
        n = int(rng.integers(3, 12))
        add(f"random_{i}", rng.uniform(0.2, 0.7, n), rng.uniform(0.3, 0.8, n))
    # Paper-like: 7 reasoning lengths (0..600 step 100); reasoning peaks, perception declines.
    add("paper_lengths_7", [0.402, 0.438, 0.471, 0.486, 0.479, 0.455, 0.431],
        [0.611, 0.598, 0.583, 0.560, 0.541, 0.522, 0.509])
    # Ties in R: order within a tie matters at the tie's ends; sorted by H.
    add("ties_in_r", [0.5, 0.4, 0.5, 0.6, 0.4, 0.6], [0.7, 0.2, 0.3, 0.9, 0.8, 0.1])
    # Input deliberately out of order.
    add("unsorted", [0.9, 0.1, 0.5, 0.3, 0.7], [0.2, 0.9, 0.4, 0.8, 0.5])
    add("two_points", [0.3, 0.6], [0.8, 0.5])
    # Percent-scale numbers give the same normalised area.
    add("percent_scale", [43.8, 45.1, 47.0, 46.2], [52.0, 50.5, 48.7, 49.9])

    errors = [
        {"name": "single_point", "reasoning": [0.5], "perception": [0.5], "error": "too_few_points"},
        {"name": "empty", "reasoning": [], "perception": [], "error": "too_few_points"},
        {"name": "flat_reasoning", "reasoning": [0.4, 0.4, 0.4], "perception": [0.2, 0.5, 0.7],
         "error": "flat_reasoning"},
        {"name": "flat_perception", "reasoning": [0.1, 0.3, 0.5], "perception": [0.6, 0.6, 0.6],
         "error": "flat_perception"},
    ]

    brng = np.random.default_rng(7)
    boot = [
        bootstrap_case("boot_small", brng.integers(0, 2, (8, 4)).tolist(),
                       brng.integers(0, 2, (9, 4)).tolist(), 300, 11),
        # Two reasoning samples with opposite patterns: about half the resamples are flat in R.
        bootstrap_case("boot_half_undefined", [[1, 0, 1], [0, 1, 0]],
                       brng.integers(0, 2, (6, 3)).tolist(), 400, 3),
    ]

    out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "rhauc" / "expected.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"source": "numpy %s, scipy trapezoid" % np.__version__,
                               "cases": cases, "errors": errors,
                               "bootstrap": boot}, indent=1) + "\n")
    print(f"wrote {len(cases)} cases, {len(errors)} error cases, {len(boot)} bootstrap cases to {out}")


if __name__ == "__main__":
    main()

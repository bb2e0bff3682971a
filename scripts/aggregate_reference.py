"""Recompute an rhlens aggregate summary (aggregate.json) with numpy/scipy from its traces.

Usage: python scripts/aggregate_reference.py OUT/aggregate.json

For each group of the summary, the traces it lists are read with safetensors + json and every
statistic is computed again from the arrays (shares per layer, visual share by normalised position
and by step, spatial entropy and top-k mass of the maps, the decay map), with the 95% interval
mean +- t.ppf(0.975, n-1) * std(ddof=1) / sqrt(n). Prints one line per quantity,
`max_diff NAME VALUE`, the largest absolute difference from the summary (inf when a value is
missing on one side only).
"""

import json
import math
import sys

import numpy as np
from safetensors.numpy import load_file
from scipy.stats import t as student_t

ROLES = ["system", "visual", "instruction", "reasoning", "answer"]


def load(trace_dir):
    meta = json.load(open(f"{trace_dir}/trace.json"))
    arrays = load_file(f"{trace_dir}/attention.safetensors")
    return meta, arrays


def renorm(mass):
    """Rows renormalised to sum to one; zero rows stay zero."""
    total = mass.sum(axis=-1, keepdims=True)
    return np.divide(mass, total, out=np.zeros_like(mass), where=total > 0)


def reduce(meta, arrays, bins, top_frac):
    ra = arrays["role_attention"].astype(np.float64)  # [steps, layers, roles]
    vi = meta["roles"].index("visual")
    layer_shares = renorm(ra.sum(axis=0))  # [layers, roles]
    by_name = {name: layer_shares[:, meta["roles"].index(name)] for name in ROLES if name in meta["roles"]}
    step_layer = renorm(ra)[:, :, vi]  # [steps, layers]
    step_visual = step_layer.mean(axis=1)
    n = len(step_visual)
    pos = (np.arange(n) + 0.5) / n
    b = np.minimum(np.floor(pos * bins).astype(int), bins - 1)
    position = [step_visual[b == k].mean() if np.any(b == k) else None for k in range(bins)]
    maps = arrays["visual_attention"].astype(np.float64)
    k = max(1, math.ceil(maps.shape[1] * top_frac))
    entropy, topk = [], []
    for m in np.clip(maps, 0, None):
        p = m / m.sum()
        nz = p[p > 0]
        entropy.append(float(-(nz * np.log(nz)).sum() / np.log(len(m))))
        topk.append(float(np.sort(m)[::-1][:k].sum() / m.sum()))
    return by_name, step_layer, step_visual, position, entropy, topk


def stat(columns):
    out = {"mean": [], "lo": [], "hi": [], "n": []}
    for values in columns:
        v = np.array(values, dtype=np.float64)
        out["n"].append(len(v))
        out["mean"].append(float(v.mean()) if len(v) else None)
        if len(v) >= 2:
            half = student_t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
            out["lo"].append(float(v.mean() - half))
            out["hi"].append(float(v.mean() + half))
        else:
            out["lo"].append(None)
            out["hi"].append(None)
    return out


def diff(a, b):
    """Largest absolute difference between two equally shaped nested lists (None-aware)."""
    if isinstance(a, list) or isinstance(b, list):
        if not (isinstance(a, list) and isinstance(b, list)) or len(a) != len(b):
            return math.inf
        return max([diff(x, y) for x, y in zip(a, b)], default=0.0)
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    return abs(float(a) - float(b))


def group_reference(group, bins, top_frac):
    reduced = [reduce(*load(d), bins, top_frac) for d in group["traces"]]
    layers = len(group["layers"])
    steps = max(len(r[2]) for r in reduced)
    ref = {}
    for name in ROLES:
        ref[f"layer_shares.{name}"] = stat([[r[0][name][l] for r in reduced if name in r[0]] for l in range(layers)])
    ref["visual_by_position"] = stat([[r[3][b] for r in reduced if r[3][b] is not None] for b in range(bins)])
    ref["visual_by_step"] = stat([[r[2][s] for r in reduced if s < len(r[2])] for s in range(steps)])
    ref["spatial_entropy"] = stat([[r[4][l] for r in reduced] for l in range(layers)])
    ref["top_k_mass"] = stat([[r[5][l] for r in reduced] for l in range(layers)])
    ref["decay_map"] = [
        [float(np.mean([r[1][s, l] for r in reduced if s < len(r[2])])) for s in range(steps)]
        for l in range(layers)
    ]
    return ref


def main():
    summary = json.load(open(sys.argv[1]))
    bins, top_frac = summary["position_bins"], summary["top_k_fraction"]
    worst = {}
    for group in summary["groups"]:
        ref = group_reference(group, bins, top_frac)
        for name, value in ref.items():
            if name.startswith("layer_shares."):
                got = group["layer_shares"][name.split(".", 1)[1]]
            else:
                got = group[name]
            if isinstance(value, dict):
                d = max(diff(value[f], got[f]) for f in ("mean", "lo", "hi", "n"))
            else:
                d = diff(value, got)
            worst[name] = max(worst.get(name, 0.0), d)
    for name, d in sorted(worst.items()):
        print(f"max_diff {name} {d:.3e}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Regenerates the figure and trace-format fixtures in tests/fixtures/render/:

- pchip_scipy.json: values of scipy.interpolate.PchipInterpolator (the reference for
  src/render/pchip.rs) on fixed cases;
- py_trace/: a small trace directory written with Python's json + safetensors, as a user's own
  tooling would, to check that rhlens reads the format as documented.

Run from the repository root: python scripts/render_fixtures.py
"""
import json
import os

import numpy as np
import scipy
from safetensors.numpy import save_file
from scipy.interpolate import PchipInterpolator

CASES = {
    # two points: a straight line
    "two_points": ([0.0, 1.0], [0.2, 0.9]),
    # monotone increasing, uneven spacing
    "monotone": ([0.0, 0.1, 0.35, 0.4, 0.8, 1.0], [0.0, 0.05, 0.3, 0.32, 0.9, 1.0]),
    # rises then falls (an inverted U, as reasoning accuracy vs length)
    "inverted_u": ([0.0, 100.0, 200.0, 300.0, 400.0, 500.0, 600.0],
                   [0.31, 0.42, 0.47, 0.49, 0.46, 0.41, 0.37]),
    # flat segments and a sign change next to an end (exercises the end rules)
    "flat_and_turns": ([0.0, 1.0, 2.0, 3.0, 4.5, 5.0, 7.0], [1.0, 1.0, 0.4, 0.9, 0.9, 2.0, -1.0]),
    # end slope clipped to 3*m0 (m0, m1 of opposite sign with a steep one-sided estimate)
    "end_clip": ([0.0, 1.0, 1.1, 2.0], [0.0, 1.0, -9.0, -8.0]),
    # normalised RH-AUC-like points
    "rhauc_points": ([0.0, 0.18, 0.45, 0.61, 1.0], [1.0, 0.83, 0.71, 0.35, 0.0]),
    # three points only
    "three": ([-1.0, 0.5, 2.0], [3.0, -1.0, 4.0]),
}


def write_py_trace(root):
    """A 3-step, 2-layer trace over a 2x3 merged grid (4x6 patches, 84x56 resized, 90x60 image).

    Every array element encodes its own index so that a reader can check the layout:
    role_attention[s, l, r] = s + l / 10 + r / 100, visual_attention[l, t] = l + t / 100,
    prompt_role_attention[l, r] = l + r / 100.
    """
    d = os.path.join(root, "py_trace")
    os.makedirs(d, exist_ok=True)
    steps, layers, roles, vt = 3, 2, 5, 6
    s, l, r = np.meshgrid(np.arange(steps), np.arange(layers), np.arange(roles), indexing="ij")
    role_attention = (s + l / 10 + r / 100).astype(np.float32)
    ll, t = np.meshgrid(np.arange(layers), np.arange(vt), indexing="ij")
    visual_attention = (ll + t / 100).astype(np.float32)
    pl, pr = np.meshgrid(np.arange(layers), np.arange(roles), indexing="ij")
    prompt_role_attention = (pl + pr / 100).astype(np.float32)
    save_file({
        "role_attention": role_attention,
        "visual_attention": visual_attention,
        "prompt_role_attention": prompt_role_attention,
    }, os.path.join(d, "attention.safetensors"))
    meta = {
        "format": "rhlens-trace", "format_version": 1, "complete": True,
        "model": {"path": "models/tiny", "model_type": "qwen2_5_vl", "dtype": "bf16",
                  "device": "cuda:0", "random_weights": False, "num_layers": 4, "num_heads": 2},
        "image": {"path": "cat.png", "width": 90, "height": 60, "resized_width": 84,
                  "resized_height": 56, "grid_thw": [1, 4, 6], "merged_grid": [2, 3]},
        "prompt": "Is there a cat?", "rendered_prompt": "<|im_start|>user ... Is there a cat?",
        "roles": ["system", "visual", "instruction", "reasoning", "answer"],
        "spans": [{"role": "system", "start": 0, "end": 3},
                  {"role": "visual", "start": 3, "end": 9},
                  {"role": "instruction", "start": 9, "end": 12},
                  {"role": "reasoning", "start": 12, "end": 14},
                  {"role": "answer", "start": 14, "end": 15}],
        "prompt_tokens": 12, "layers": [1, 3], "window": None, "steps": 3,
        "generated_ids": [151667, 151668, 9454],
        "text": "<think></think>Yes", "thinking": "", "answer": "Yes",
        "think_tokens": 2, "answer_tokens": 1, "stop_reason": "eos",
        "events": [{"step": 0, "kind": "think_start", "text": "<think>"},
                   {"step": 1, "kind": "think_end", "text": "</think>"},
                   {"step": 2, "kind": "answer_start", "text": ""}],
        "settings": {"seed": 3, "sampling": {"greedy": True}},
    }
    with open(os.path.join(d, "trace.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(d))


def main():
    out = {"scipy_version": scipy.__version__, "cases": {}}
    for name, (x, y) in CASES.items():
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        p = PchipInterpolator(x, y)
        span = x[-1] - x[0]
        # inside (150 points as the RH-AUC plot), the knots, and a little outside (extrapolation)
        xq = np.concatenate([np.linspace(x[0], x[-1], 150), x,
                             [x[0] - 0.1 * span, x[-1] + 0.1 * span]])
        yq = p(xq)
        out["cases"][name] = {
            "x": x.tolist(), "y": y.tolist(),
            "xq": xq.tolist(), "yq": yq.tolist(),
            "derivatives": p.derivative()(x).tolist(),
        }
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "tests", "fixtures", "render", "pchip_scipy.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
        f.write("\n")
    print("wrote", os.path.normpath(path))
    write_py_trace(os.path.join(here, "..", "tests", "fixtures", "render"))


if __name__ == "__main__":
    main()

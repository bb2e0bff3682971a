#!/usr/bin/env python3
"""Regenerate the steering-direction reference in tests/fixtures/direction/.

Run from the repository root:

    .venv/bin/python scripts/fixtures_direction.py

What it writes (deterministic: fixed seeds, one CPU thread, the pinned stack):

* generations.jsonl: six generation records made with Hugging Face `generate` on the
  tests/fixtures/models/tiny-flat checkpoint, one JSON object per line:
  `{"image": "../images/<name>.png", "prompt": str, "generated_ids": [int, ...], "think_tokens": int}`
  (image paths relative to the JSONL's folder). Some records carry more generated ids than
  `think_tokens`; only the first `think_tokens` of them count.
* expected.safetensors:
    direction  f32 [layers, hidden]  mean over long records - mean over short records
    counts     i64 [2]               (n_long, n_short)
    record.{i} f32 [layers, hidden]  record i's per-layer mean residual (for locating mismatches)
  metadata: long_min, short_max, model, and `records` (JSON: per record the prompt length P,
  think_tokens and whether it is long, short or neither).

The direction is defined as rhlens computes it: for each record, render the prompt with the
checkpoint's chat template (one image, then the text; generation prompt added; image pads expanded),
append `generated_ids[:think_tokens]`, run one forward pass (eager attention, float32) with the image,
and take, for every decoder layer, the residual stream right after the attention block (the input of
that layer's `post_attention_layernorm`, i.e. hidden + self-attention output), averaged over the
positions [P, P + think_tokens). Long records have think_tokens > long_min, short ones
think_tokens < short_max; the direction is not normalised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.dont_write_bytecode = True  # importing make_fixtures must not leave files behind
sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets the single-thread / offline environment first)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = mf.ROOT
MODEL_NAME = "tiny-flat"
MODEL_DIR = mf.MODELS_DIR / MODEL_NAME
OUT_DIR = ROOT / "tests" / "fixtures" / "direction"
LONG_MIN = 20
SHORT_MAX = 10

# (image, prompt, think_tokens, extra ids generated after the thinking part, sampling seed or None)
# think_tokens > 20: long (30, 40, 25); < 10: short (5, 8); 15 is in neither set.
RECORDS = [
    ("wide", "Describe the picture. How many shapes are there?", 30, 4, None),
    ("tall", "Is the red square above the blue one? Think step by step.", 5, 0, None),
    ("big", "What color is the largest circle? Answer briefly.", 40, 0, 7),
    ("wide", "Count the triangles in the image.", 8, 6, 11),
    ("big", "Where is the sun? Let me think step by step.", 15, 0, None),
    ("tall", "Which object is closest to the camera?", 25, 3, 23),
]
SAMPLING = dict(do_sample=True, temperature=0.9, top_k=30, top_p=0.95)


def generate_ids(model, processor, image_name: str, prompt: str, n: int, seed: int | None) -> list[int]:
    image = Image.open(mf.image_path(image_name)).convert("RGB")
    _, inputs = mf.prepare_inputs(processor, image, prompt)
    length = inputs["input_ids"].shape[1]
    with torch.no_grad():
        if seed is None:
            out = model.generate(**inputs, do_sample=False, max_new_tokens=n, min_new_tokens=n)
        else:
            torch.manual_seed(seed)
            out = model.generate(**inputs, **SAMPLING, max_new_tokens=n, min_new_tokens=n)
    ids = out[0, length:].tolist()
    if len(ids) != n:
        raise SystemExit(f"generate returned {len(ids)} ids, expected {n}")
    return ids


def thinking_residual(model, processor, image_name: str, prompt: str, gen_ids: list[int], think: int):
    """[layers, hidden] mean residual after attention over the thinking positions, and P."""
    image = Image.open(mf.image_path(image_name)).convert("RGB")
    _, inputs = mf.prepare_inputs(processor, image, prompt)
    p = inputs["input_ids"].shape[1]
    extra = torch.tensor([gen_ids[:think]], dtype=inputs["input_ids"].dtype)
    inputs["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    inputs["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    if "mm_token_type_ids" in inputs:  # generated ids are text
        tt = inputs["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat([tt, torch.zeros((1, think), dtype=tt.dtype)], dim=1)

    layers = model.model.language_model.layers
    post_attn: dict[int, torch.Tensor] = {}
    layer_in: dict[int, torch.Tensor] = {}
    attn_out: dict[int, torch.Tensor] = {}
    hooks = []
    for i, layer in enumerate(layers):
        hooks.append(
            layer.post_attention_layernorm.register_forward_pre_hook(
                lambda m, a, i=i: post_attn.__setitem__(i, a[0].detach().clone())
            )
        )
        hooks.append(
            layer.register_forward_pre_hook(
                lambda m, a, kw, i=i: layer_in.__setitem__(i, (a[0] if a else kw["hidden_states"]).detach().clone()),
                with_kwargs=True,
            )
        )
        hooks.append(layer.self_attn.register_forward_hook(lambda m, a, o, i=i: attn_out.__setitem__(i, o[0].detach())))
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    rows = []
    for i in range(len(layers)):
        h = post_attn[i][0]  # [seq, hidden]
        # The hook input is what the docstring says: the layer's input plus its attention output.
        if not torch.equal(h, layer_in[i][0] + attn_out[i][0]):
            raise SystemExit(f"layer {i}: post_attention_layernorm input != hidden + self_attn output")
        if h.shape[0] != p + think:
            raise SystemExit(f"layer {i}: sequence length {h.shape[0]} != {p} + {think}")
        rows.append(h[p : p + think].to(torch.float32).mean(dim=0))
    return torch.stack(rows), p


def main() -> None:
    print(f"transformers {mf.transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    model = mf.load_model(MODEL_DIR)
    processor = mf.load_processor(MODEL_DIR)
    cfg = model.config
    vision_ids = {cfg.image_token_id, cfg.video_token_id, cfg.vision_start_token_id, cfg.vision_end_token_id}

    OUT_DIR.mkdir(parents=True, exist_ok=True)
    lines = []
    tensors: dict[str, torch.Tensor] = {}
    long_vecs, short_vecs, notes = [], [], []
    for i, (image_name, prompt, think, extra, seed) in enumerate(RECORDS):
        ids = generate_ids(model, processor, image_name, prompt, think + extra, seed)
        if vision_ids & set(ids):
            raise SystemExit(f"record {i}: a vision token was generated; change the seed or prompt")
        vec, p = thinking_residual(model, processor, image_name, prompt, ids, think)
        tensors[f"record.{i}"] = vec.contiguous()
        kind = "long" if think > LONG_MIN else "short" if think < SHORT_MAX else "neither"
        (long_vecs if kind == "long" else short_vecs if kind == "short" else []).append(vec)
        notes.append({"index": i, "prompt_len": p, "think_tokens": think, "generated": len(ids), "set": kind})
        lines.append(
            json.dumps(
                {"image": f"../images/{image_name}.png", "prompt": prompt, "generated_ids": ids, "think_tokens": think}
            )
        )
        print(f"  record {i}: {image_name:4s} P={p} think={think} generated={len(ids)} ({kind})")

    if len(long_vecs) < 2 or len(short_vecs) < 2:
        raise SystemExit("need at least two long and two short records")

    # Same order of operations as rhlens: sum in record order, divide by the count, subtract.
    def mean(vs):
        acc = vs[0].clone()
        for v in vs[1:]:
            acc = acc + v
        return acc / len(vs)

    direction = mean(long_vecs) - mean(short_vecs)
    tensors["direction"] = direction.to(torch.float32).contiguous()
    tensors["counts"] = torch.tensor([len(long_vecs), len(short_vecs)], dtype=torch.int64)

    (OUT_DIR / "generations.jsonl").write_text("\n".join(lines) + "\n")
    metadata = {
        "long_min": str(LONG_MIN),
        "short_max": str(SHORT_MAX),
        "model": MODEL_NAME,
        "records": json.dumps(notes),
        "capture": "input of model.model.language_model.layers[l].post_attention_layernorm "
        "(hidden + self_attn output), mean over positions [P, P + think_tokens)",
        "settings": json.dumps({"dtype": "float32", "attn_implementation": "eager", "device": "cpu"}),
        "transformers_version": mf.transformers.__version__,
        "torch_version": torch.__version__,
        "random_weights": "true",
    }
    mf.save_tensors(tensors, OUT_DIR / "expected.safetensors", metadata)
    norms = direction.norm(dim=1).tolist()
    print(f"direction [{direction.shape[0]}, {direction.shape[1]}], per-layer norms {[round(n, 4) for n in norms]}")
    print(f"counts: {len(long_vecs)} long, {len(short_vecs)} short -> {OUT_DIR.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Regenerate tests/fixtures/checkpoint/{config,tokenizer}_cases.json from Hugging Face.

Run from the repository root:

    .venv/bin/python scripts/fixtures_checkpoint.py

config_cases.json: config.json variants (flat Hub layout as published for Qwen2.5-VL-7B/3B, the nested
layout transformers 5 writes when it re-saves them, and edge cases) with the values
transformers' `Qwen2_5_VLConfig` derives from each, for tests/checkpoint_config.rs.

tokenizer_cases.json: ids and decodings by transformers' tokenizer for the tiny checkpoints in
tests/fixtures/models/, for tests/checkpoint_tokenizer.rs.
"""

from __future__ import annotations

import copy
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import transformers  # noqa: E402
from transformers import AutoTokenizer, Qwen2_5_VLConfig  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures" / "checkpoint"
MODELS = ROOT / "tests" / "fixtures" / "models"

# The flat config.json published with Qwen/Qwen2.5-VL-7B-Instruct (values as on the Hub).
HUB_7B = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "attention_dropout": 0.0,
    "bos_token_id": 151643,
    "eos_token_id": 151645,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_token_id": 151654,
    "image_token_id": 151655,
    "video_token_id": 151656,
    "hidden_act": "silu",
    "hidden_size": 3584,
    "initializer_range": 0.02,
    "intermediate_size": 18944,
    "max_position_embeddings": 128000,
    "max_window_layers": 28,
    "model_type": "qwen2_5_vl",
    "num_attention_heads": 28,
    "num_hidden_layers": 28,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "sliding_window": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.41.2",
    "use_cache": True,
    "use_sliding_window": False,
    "vision_config": {
        "depth": 32,
        "hidden_act": "silu",
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
        "temporal_patch_size": 2,
    },
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "vocab_size": 152064,
}

# Qwen/Qwen2.5-VL-3B-Instruct differs in sizes and ties its embeddings.
HUB_3B = copy.deepcopy(HUB_7B)
HUB_3B.update(
    {
        "hidden_size": 2048,
        "intermediate_size": 11008,
        "max_window_layers": 70,
        "num_attention_heads": 16,
        "num_hidden_layers": 36,
        "num_key_value_heads": 2,
        "tie_word_embeddings": True,
        "vocab_size": 151936,
    }
)
HUB_3B["vision_config"]["out_hidden_size"] = 2048

GEN_7B = {
    "bos_token_id": 151643,
    "pad_token_id": 151643,
    "do_sample": True,
    "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.05,
    "temperature": 1e-06,
}


DROP = object()  # marks a key to remove from small_flat's config


def small_flat(**overrides):
    cfg = {
        "model_type": "qwen2_5_vl",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 96,
        "vocab_size": 300,
        "vision_config": {"depth": 2, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 64,
                          "fullatt_block_indexes": [1]},
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 3, 3]},
    }
    for key, value in overrides.items():
        if value is DROP:
            cfg.pop(key, None)
        else:
            cfg[key] = value
    return cfg


def resaved_nested(flat: dict) -> dict:
    """The config.json transformers 5 writes for a flat Hub config."""
    with tempfile.TemporaryDirectory() as tmp:
        Qwen2_5_VLConfig(**flat).save_pretrained(tmp)
        return json.loads((Path(tmp) / "config.json").read_text())


def derived(cfg: dict, gen: dict | None) -> dict:
    """What transformers derives from a config (+ generation config)."""
    c = Qwen2_5_VLConfig(**copy.deepcopy(cfg))
    t, v = c.text_config, c.vision_config
    rope = t.rope_parameters
    eos = (gen or {}).get("eos_token_id", t.eos_token_id)
    pad = (gen or {}).get("pad_token_id", t.pad_token_id)
    return {
        "text": {
            "hidden_size": t.hidden_size,
            "num_hidden_layers": t.num_hidden_layers,
            "num_attention_heads": t.num_attention_heads,
            "num_key_value_heads": t.num_key_value_heads,
            "head_dim": getattr(t, "head_dim", None) or t.hidden_size // t.num_attention_heads,
            "intermediate_size": t.intermediate_size,
            "vocab_size": t.vocab_size,
            "rms_norm_eps": t.rms_norm_eps,
            "rope_theta": rope["rope_theta"],
            "mrope_section": rope.get("mrope_section", [16, 24, 24]),
            "tie_word_embeddings": c.tie_word_embeddings,
            "max_position_embeddings": t.max_position_embeddings,
            "hidden_act": t.hidden_act,
        },
        "vision": {
            "depth": v.depth,
            "hidden_size": v.hidden_size,
            "num_heads": v.num_heads,
            "intermediate_size": v.intermediate_size,
            "patch_size": v.patch_size,
            "temporal_patch_size": v.temporal_patch_size,
            "spatial_merge_size": v.spatial_merge_size,
            "window_size": v.window_size,
            "fullatt_block_indexes": list(v.fullatt_block_indexes),
            "out_hidden_size": v.out_hidden_size,
            "in_channels": v.in_channels,
            "tokens_per_second": v.tokens_per_second,
            "hidden_act": v.hidden_act,
        },
        "image_token_id": c.image_token_id,
        "video_token_id": c.video_token_id,
        "vision_start_token_id": c.vision_start_token_id,
        "vision_end_token_id": c.vision_end_token_id,
        "eos_token_ids": eos if isinstance(eos, list) else [eos],
        "pad_token_id": pad,
    }


def config_cases():
    nested_7b = resaved_nested(HUB_7B)
    nested_3b = resaved_nested(HUB_3B)
    # A pre-v5 nested save: tie flag inside text_config only.
    nested_tie_in_text = copy.deepcopy(nested_3b)
    nested_tie_in_text.pop("tie_word_embeddings", None)
    nested_tie_in_text["text_config"]["tie_word_embeddings"] = True

    cases = [
        ("hub_7b_flat", HUB_7B, GEN_7B),
        ("hub_3b_flat", HUB_3B, None),
        ("hub_7b_resaved_nested", nested_7b, GEN_7B),
        ("hub_3b_resaved_nested", nested_3b, None),
        ("nested_tie_in_text_config", nested_tie_in_text, None),
        ("flat_rope_type_key_and_theta", small_flat(rope_scaling={"rope_type": "mrope", "mrope_section": [2, 3, 3],
                                                                   "rope_theta": 5000.0}, rope_theta=7.0), None),
        ("flat_rope_parameters", small_flat(rope_scaling=None,
                                            rope_parameters={"rope_type": "default", "mrope_section": [4, 2, 2]},
                                            rope_theta=2500.0), None),
        ("flat_defaults", small_flat(rope_scaling=None, hidden_size=128, num_attention_heads=1,
                                     num_key_value_heads=1, vision_config={"out_hidden_size": 128}), None),
        ("flat_kv_heads_null", small_flat(num_key_value_heads=None), {"eos_token_id": 7}),
        ("flat_kv_heads_absent_default", small_flat(num_key_value_heads=DROP, num_attention_heads=8, hidden_size=512,
                                                    rope_scaling={"type": "mrope", "mrope_section": [8, 12, 12]},
                                                    vision_config={"out_hidden_size": 512}), None),
        ("flat_eos_list_and_pad", small_flat(eos_token_id=[5, 6], pad_token_id=4), None),
        ("vision_attention_heads_alias", small_flat(vision_config={"hidden_size": 32, "num_attention_heads": 2,
                                                                   "out_hidden_size": 64, "depth": 2,
                                                                   "fullatt_block_indexes": [0]}), None),
    ]
    out = []
    for name, cfg, gen in cases:
        out.append({"name": name, "config": cfg, "generation_config": gen, "expected": derived(cfg, gen)})
    return out


def checkpoint_config_cases():
    """The tiny checkpoints' own config.json + generation_config.json, read from disk."""
    out = []
    for model in sorted(p for p in MODELS.glob("*") if (p / "config.json").is_file()):
        cfg = json.loads((model / "config.json").read_text())
        gen_path = model / "generation_config.json"
        gen = json.loads(gen_path.read_text()) if gen_path.is_file() else None
        expected = derived(cfg, gen)
        expected["random_weights"] = bool(cfg.get("rhlens_random_weights", False))
        loaded = Qwen2_5_VLConfig.from_pretrained(str(model))
        expected["torch_dtype"] = str(loaded.dtype).removeprefix("torch.") if loaded.dtype is not None else None
        out.append({"dir": str(model.relative_to(ROOT)), "expected": expected})
    return out


TOKENIZER_TEXTS = [
    "Describe this image.",
    "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>How many?<|im_end|>\n<|im_start|>assistant\n",
    "Unicode: 你好世界, café, naïve, 🙂👍, Ω≈ç.",
    "  leading spaces, tabs\tand\n\nnewlines  ",
    "<think>\nStep 1: count.\n</think>\n<answer>3</answer>",
    "Numbers 12345 and 3.14159, punctuation!?;:",
]


def tokenizer_cases():
    out = []
    for model in sorted(p for p in MODELS.glob("*") if (p / "tokenizer.json").is_file()):
        tok = AutoTokenizer.from_pretrained(str(model))
        specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                    "<|image_pad|>", "<think>", "</think>", "not-a-token-xyz"]
        token_ids = {}
        for s in specials:
            i = tok.convert_tokens_to_ids(s)
            token_ids[s] = None if i is None or i == tok.unk_token_id else i
        texts = []
        for text in TOKENIZER_TEXTS:
            ids = tok(text, add_special_tokens=False)["input_ids"]
            texts.append({
                "text": text,
                "ids": ids,
                "decoded": tok.decode(ids, skip_special_tokens=False),
                "decoded_skip_special": tok.decode(ids, skip_special_tokens=True),
            })
        out.append({
            "dir": str(model.relative_to(ROOT)),
            "vocab_size": len(tok),
            "token_ids": token_ids,
            "id_to_token": {str(i): tok.convert_ids_to_tokens(i) for i in (0, 1, 100, len(tok) - 1)},
            "texts": texts,
        })
    return out


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    gen = f"scripts/fixtures_checkpoint.py with transformers {transformers.__version__}"
    configs = {"generator": gen, "cases": config_cases(), "checkpoints": checkpoint_config_cases()}
    (OUT / "config_cases.json").write_text(json.dumps(configs, indent=1, ensure_ascii=False) + "\n")
    toks = {"generator": gen, "checkpoints": tokenizer_cases()}
    (OUT / "tokenizer_cases.json").write_text(json.dumps(toks, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {len(configs['cases'])} config cases, {len(toks['checkpoints'])} tokenizer checkpoints to "
          f"{OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Tiny random checkpoints of the model families beyond Qwen2.5-VL, with Hugging Face references.

Run from the repository root (make_fixtures.py builds the Qwen2.5-VL ones):

    .venv/bin/python scripts/fixtures_families.py          # build, then verify
    .venv/bin/python scripts/fixtures_families.py --check  # verify the committed files only

What it writes (deterministic: fixed seeds, one CPU thread, float32 weights):

* tests/fixtures/models/qwen3-vl-tiny/: `model_type: qwen3_vl` in the Hub layout (nested
  `text_config` with `rope_scaling {mrope_interleaved, mrope_section}`, transformers-5 tensor names
  `model.visual.*` / `model.language_model.*`), patch 16 (32 px per merged token), mean/std 0.5,
  DeepStack on two vision blocks, and a Thinking-style chat template whose generation prompt
  opens `<think>` (no default system prompt, as Qwen3-VL's).
* tests/fixtures/models/qwen3-vl-moe-tiny/: `model_type: qwen3_vl_moe`, as qwen3-vl-tiny plus routed
  experts (4 experts, top 2, layer 0 dense via `mlp_only_layers`), expert tensors stored in the
  published layout (`gate_up_proj [experts, hidden, 2·inter]`, `down_proj [experts, inter,
  hidden]`, which transformers transposes on load).
* tests/fixtures/models/qwen2-vl-tiny/: `model_type: qwen2_vl` in the flat Hub layout (vision
  `embed_dim` / `mlp_ratio`, `hidden_size` = the output width), Hub tensor names, CLIP mean/std,
  the Qwen2-VL Instruct template.
* tests/fixtures/models/mimo-vl-tiny/: a Qwen2.5-VL checkpoint (the tiny-flat weights) with a
  MiMo-VL-style template: thinking opens in the generation prompt unless the user turn ends
  with `/no_think`, which closes an empty thinking block instead.
* tests/fixtures/reference/<model>__<image>.safetensors: Hugging Face outputs (eager attention,
  float32, PIL image processor, inputs through the processor so `mm_token_type_ids` give 3-D
  positions): input_ids, image_grid_thw, pixel_values, position_ids [3,L], rope_deltas, logits,
  attentions.{l} [H,L,L], hidden_states.{i}, image_embeds, greedy_ids [24] and gen_rows.{s}
  [layers,H,L+s] (the attention row that produced generated token s), and for MoE checkpoints
  router_probs.{l} [L, experts] (softmax of each routed layer's router logits).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (sets the single-thread environment first)

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors import safe_open  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

ROOT = mf.ROOT
MODELS_DIR = mf.MODELS_DIR
REFERENCE_DIR = mf.REFERENCE_DIR
NEW_TOKENS = mf.NEW_TOKENS

QWEN3_MIN_PIXELS = 64 * 64
QWEN3_MAX_PIXELS = 32 * 32 * 64  # 65536: the fixture images get downscaled to a small grid


def qwen3_template(open_think: bool) -> str:
    """Qwen3-VL's chat template for images and text (no default system prompt); the Thinking
    variant opens `<think>` in the generation prompt."""
    gen = "<|im_start|>assistant\n" + ("<think>\n" if open_think else "")
    return (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}{% endif %}"
        "<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}" + gen + "{% endif %}"
    )


def mimo_template() -> str:
    """A MiMo-VL-style template: the generation prompt opens `<think>` unless the last user text
    ends with `/no_think`, in which case an empty thinking block is closed for the model."""
    return (
        "{% set ns = namespace(no_think=false) %}"
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\nYou are MiMo, a helpful assistant.<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% set ns.no_think = message['content'].rstrip().endswith('/no_think') %}"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content %}<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif 'text' in content %}{{ content['text'] }}"
        "{% set ns.no_think = content['text'].rstrip().endswith('/no_think') %}"
        "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n"
        "{% if ns.no_think %}<think>\n\n</think>\n\n{% else %}<think>\n{% endif %}{% endif %}"
    )


# random-init gains shared by every fixture here (see make_fixtures.init_weights)
GAINS = dict(embed_std=1.0, qk_gain=2.2, vqk_gain=2.2, tied=False, think_tokens=True)

SPECS = {
    "qwen3-vl-tiny": dict(
        family="qwen3_vl",
        text=dict(hidden=64, layers=3, heads=4, kv_heads=2, head_dim=24, intermediate=96, mrope=[4, 4, 4]),
        vision=dict(depth=4, hidden=32, heads=2, intermediate=48, out=64, pos=64, deepstack=[1, 2]),
        seed=30301,
        qk_norm_gain=2.5,
        **GAINS,
    ),
    "qwen2-vl-tiny": dict(
        family="qwen2_vl",
        text=dict(hidden=64, layers=3, heads=4, kv_heads=2, intermediate=112, mrope=[2, 3, 3]),
        vision=dict(depth=3, hidden=32, heads=2, mlp_ratio=2, out=64),
        seed=30302,
        **GAINS,
    ),
}

SPECS["qwen3-vl-moe-tiny"] = dict(
    SPECS["qwen3-vl-tiny"],
    family="qwen3_vl_moe",
    moe=dict(experts=4, top_k=2, inter=24, mlp_only=[0]),
    vision=dict(depth=3, hidden=32, heads=2, intermediate=48, out=64, pos=64, deepstack=[1]),
    seed=30303,
)

# (model, image, prompt)
CASES = [
    ("qwen3-vl-tiny", "wide", "What is in the picture?"),
    ("qwen3-vl-moe-tiny", "tall", "Describe the image."),
    ("qwen2-vl-tiny", "tall", "Describe the image."),
]


def token_ids(tok) -> dict[str, int]:
    names = mf.QWEN_SPECIAL_TOKENS + mf.THINK_TOKENS
    return {t: tok.token_to_id(t) for t in names if tok.token_to_id(t) is not None}


def qwen3_config(spec: dict, ids: dict[str, int], vocab_size: int) -> dict:
    config = qwen3_dense_config(spec, ids, vocab_size)
    if spec["family"] == "qwen3_vl_moe":
        m = spec["moe"]
        config["architectures"] = ["Qwen3VLMoeForConditionalGeneration"]
        config["model_type"] = "qwen3_vl_moe"
        del config["text_config"]["model_type"], config["vision_config"]["model_type"]
        config["text_config"].update(
            num_experts=m["experts"],
            num_experts_per_tok=m["top_k"],
            moe_intermediate_size=m["inter"],
            decoder_sparse_step=1,
            mlp_only_layers=m["mlp_only"],
        )
    return config


def qwen3_dense_config(spec: dict, ids: dict[str, int], vocab_size: int) -> dict:
    t, v = spec["text"], spec["vision"]
    return {
        "architectures": ["Qwen3VLForConditionalGeneration"],
        "model_type": "qwen3_vl",
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "tie_word_embeddings": spec["tied"],
        "text_config": {
            "model_type": "qwen3_vl_text",
            "attention_bias": False,
            "bos_token_id": ids["<|endoftext|>"],
            "eos_token_id": ids["<|im_end|>"],
            "dtype": "float32",
            "head_dim": t["head_dim"],
            "hidden_act": "silu",
            "hidden_size": t["hidden"],
            "intermediate_size": t["intermediate"],
            "max_position_embeddings": mf.MAX_POSITIONS,
            "num_attention_heads": t["heads"],
            "num_hidden_layers": t["layers"],
            "num_key_value_heads": t["kv_heads"],
            "rms_norm_eps": mf.RMS_NORM_EPS,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": t["mrope"], "rope_type": "default"},
            "rope_theta": 5000000,
            "vocab_size": vocab_size,
        },
        "vision_config": {
            "model_type": "qwen3_vl",
            "deepstack_visual_indexes": v["deepstack"],
            "depth": v["depth"],
            "hidden_act": "gelu_pytorch_tanh",
            "hidden_size": v["hidden"],
            "in_channels": 3,
            "intermediate_size": v["intermediate"],
            "num_heads": v["heads"],
            "num_position_embeddings": v["pos"],
            "out_hidden_size": v["out"],
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        "rhlens_random_weights": True,
    }


def qwen2_config(spec: dict, ids: dict[str, int], vocab_size: int) -> dict:
    """Qwen2-VL's flat Hub config: make_fixtures' flat Qwen2.5-VL one with Qwen2-VL's vision
    fields (`embed_dim` is the tower's width, `hidden_size` its output, `mlp_ratio`)."""
    v = spec["vision"]
    no_windows = dict(v, intermediate=0, window=0, fullatt=[])
    config = mf.flat_config_json(dict(spec, storage_dtype=torch.float32, vision=no_windows), ids, vocab_size)
    config.update(architectures=["Qwen2VLForConditionalGeneration"], model_type="qwen2_vl")
    config["vision_config"] = {
        "depth": v["depth"],
        "embed_dim": v["hidden"],
        "mlp_ratio": v["mlp_ratio"],
        "num_heads": v["heads"],
        "in_chans": 3,
        "hidden_size": v["out"],
        "patch_size": 14,
        "spatial_merge_size": 2,
        "spatial_patch_size": 14,
        "temporal_patch_size": 2,
    }
    return config


def model_class(family: str):
    import transformers

    return {
        "qwen3_vl": transformers.Qwen3VLForConditionalGeneration,
        "qwen3_vl_moe": transformers.Qwen3VLMoeForConditionalGeneration,
        "qwen2_vl": transformers.Qwen2VLForConditionalGeneration,
    }[family]


def processor_class(family: str):
    import transformers

    qwen3 = transformers.Qwen3VLProcessor
    return {"qwen3_vl": qwen3, "qwen3_vl_moe": qwen3, "qwen2_vl": transformers.Qwen2VLProcessor}[family]


def write_processor_files(out_dir: Path, family: str) -> None:
    if family.startswith("qwen3_vl"):
        mean = std = [0.5, 0.5, 0.5]
        patch, lo, hi, proc = 16, QWEN3_MIN_PIXELS, QWEN3_MAX_PIXELS, "Qwen3VLProcessor"
    else:
        mean, std = mf.CLIP_MEAN, mf.CLIP_STD
        patch, lo, hi, proc = 14, mf.MIN_PIXELS, mf.MAX_PIXELS, "Qwen2VLProcessor"
    config = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": proc,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": mean,
        "image_std": std,
        "merge_size": 2,
        "size": {"shortest_edge": lo, "longest_edge": hi},
        "patch_size": patch,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "temporal_patch_size": 2,
    }
    mf.write_json(out_dir / "preprocessor_config.json", config)


def init_family_weights(model, spec: dict, quiet: list[int]) -> None:
    """make_fixtures' random init, plus Qwen3's per-head q/k norms scaled up: they undo the q/k
    projections' gain, and attention would be nearly uniform without it."""
    stacked = {n: p for n, p in model.named_parameters() if p.ndim == 3}  # MoE experts
    every = model.named_parameters
    model.named_parameters = lambda: [(n, p) for n, p in every() if n not in stacked]
    try:
        mf.init_weights(model, dict(spec, storage_dtype=torch.float32), quiet)
    finally:
        del model.named_parameters
    g = torch.Generator().manual_seed(spec["seed"] + 1)
    with torch.no_grad():
        for name in sorted(stacked):
            p = stacked[name]
            p.copy_(torch.randn(tuple(p.shape), generator=g) / p.shape[-1] ** 0.5)
        for name, p in model.named_parameters():
            if name.endswith("self_attn.q_norm.weight") or name.endswith("self_attn.k_norm.weight"):
                noise = torch.randn(tuple(p.shape), generator=g) * 0.1
                p.copy_(spec["qk_norm_gain"] * (1.0 + noise))


def save_state(model, spec: dict, out_dir: Path) -> None:
    tensors = {}
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and spec["tied"]:
            continue
        if spec["family"] == "qwen2_vl":  # Hub names, as the published Qwen2-VL files
            name = name.replace("model.visual.", "visual.").replace("model.language_model.", "model.")
        if name.endswith("mlp.experts.gate_up_proj") or name.endswith("mlp.experts.down_proj"):
            t = t.transpose(1, 2)  # the published Qwen3-VL-MoE files store experts transposed
        tensors[name] = t.detach().clone().contiguous()
    mf.save_tensors(dict(sorted(tensors.items())), out_dir / "model.safetensors", {"format": "pt"})


def build_model(name: str, spec: dict, base) -> None:
    tok = mf.build_tokenizer(base, spec["think_tokens"])
    vocab_size = mf.round_up(tok.get_vocab_size(with_added_tokens=True), 64)
    ids = token_ids(tok)
    make = qwen3_config if spec["family"].startswith("qwen3_vl") else qwen2_config
    config_json = make(spec, ids, vocab_size)
    out_dir = MODELS_DIR / name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    mf.write_json(out_dir / "config.json", config_json)
    cls = model_class(spec["family"])
    config = cls.config_class.from_pretrained(str(out_dir))
    torch.manual_seed(spec["seed"])
    model = cls(config).eval()
    init_family_weights(model, spec, mf.quiet_ids(tok, ids, vocab_size))
    save_state(model, spec, out_dir)
    generation = {
        "bos_token_id": ids["<|endoftext|>"],
        "do_sample": False,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
    }
    mf.write_json(out_dir / "generation_config.json", generation)
    mf.write_tokenizer_files(tok, out_dir)
    write_processor_files(out_dir, spec["family"])
    if spec["family"].startswith("qwen3_vl"):
        (out_dir / "chat_template.jinja").write_text(qwen3_template(open_think=True))
    else:
        mf.write_json(out_dir / "chat_template.json", {"chat_template": mf.chat_template(mf.QWEN_SYSTEM_PROMPT)})
    print(f"model {name}: vocab_size {vocab_size}, params {sum(p.numel() for p in model.parameters())}")


def build_mimo() -> None:
    """MiMo-VL is Qwen2.5-VL with its own template: reuse tiny-flat's files, change the template."""
    src, out_dir = MODELS_DIR / "tiny-flat", MODELS_DIR / "mimo-vl-tiny"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    shutil.copytree(src, out_dir)
    (out_dir / "chat_template.json").unlink()
    (out_dir / "chat_template.jinja").write_text(mimo_template())
    print("model mimo-vl-tiny: tiny-flat weights, MiMo-style template")


def load_model(name: str):
    spec = SPECS[name]
    model, info = model_class(spec["family"]).from_pretrained(
        str(MODELS_DIR / name), attn_implementation="eager", dtype=torch.float32, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise SystemExit(f"loading {name} was not clean: {bad}")
    return model.eval()


def load_processor(name: str):
    """The family's processor with the PIL image processor (no video processor: torchvision is
    not part of the pinned stack)."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    base = processor_class(SPECS[name]["family"])

    class ImageOnlyProcessor(base):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    path = str(MODELS_DIR / name)
    processor_dict, _ = base.get_processor_dict(path)
    return ImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(path),
        tokenizer=AutoTokenizer.from_pretrained(path),
        video_processor=None,
        chat_template=processor_dict["chat_template"],
    )


def run_reference(name: str, image_name: str, prompt: str) -> None:
    model = load_model(name)
    processor = load_processor(name)
    image = Image.open(mf.image_path(image_name)).convert("RGB")
    rendered, inputs = mf.prepare_inputs(processor, image, prompt)
    if "mm_token_type_ids" not in inputs:
        raise SystemExit("the processor gave no mm_token_type_ids: positions would be 1-D")
    ids = inputs["input_ids"]
    L = ids.shape[1]
    cfg = model.config
    n_layers = cfg.text_config.num_hidden_layers
    captured = {}
    hooks = [
        model.model.visual.register_forward_hook(
            lambda m, a, o: captured.__setitem__("image_embeds", o.pooler_output)
        )
    ]
    for i, layer in enumerate(model.model.language_model.layers):
        if hasattr(layer.mlp, "gate"):  # a routed layer: keep its router probabilities
            hooks.append(
                layer.mlp.gate.register_forward_hook(
                    lambda m, a, o, i=i: captured.__setitem__(
                        f"router_probs.{i}", torch.softmax(o[0], dim=-1, dtype=torch.float)
                    )
                )
            )
    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()
    position_ids, rope_deltas = model.model.get_rope_index(
        ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    tensors = {
        "input_ids": ids[0].to(torch.int64),
        "image_grid_thw": inputs["image_grid_thw"].to(torch.int64),
        "pixel_values": inputs["pixel_values"].float(),
        "position_ids": position_ids[:, 0, :].to(torch.int64),
        "rope_deltas": rope_deltas.reshape(1).to(torch.int64),
        "logits": out.logits[0].float(),
        "image_embeds": captured["image_embeds"].float(),
    }
    tensors.update({k: v.float() for k, v in captured.items() if k.startswith("router_probs.")})
    for layer in range(n_layers):
        tensors[f"attentions.{layer}"] = out.attentions[layer][0].float()
    for i, hs in enumerate(out.hidden_states):
        tensors[f"hidden_states.{i}"] = hs[0].float()
    with torch.no_grad():
        greedy = model.generate(
            **inputs,
            do_sample=False,
            repetition_penalty=1.0,
            max_new_tokens=NEW_TOKENS,
            min_new_tokens=NEW_TOKENS,
            output_attentions=True,
            return_dict_in_generate=True,
        )
    tensors["greedy_ids"] = greedy.sequences[0, L:].to(torch.int64)
    for s in range(NEW_TOKENS):
        rows = [greedy.attentions[s][layer][0, :, -1, :] for layer in range(n_layers)]
        tensors[f"gen_rows.{s}"] = torch.stack(rows).float()
    text = processor.tokenizer.decode(tensors["greedy_ids"], skip_special_tokens=True)
    row_max = [round(out.attentions[lay][0].amax(-1).mean().item(), 3) for lay in range(n_layers)]
    metadata = {
        "model": name,
        "image": image_name,
        "prompt": prompt,
        "rendered_prompt": rendered,
        "generated_text": text,
        "settings": json.dumps({"dtype": "float32", "attn_implementation": "eager", "new_tokens": NEW_TOKENS}),
        "checks": json.dumps({"attention_mean_row_max_per_layer": row_max}),
        "transformers_version": mf.transformers.__version__,
        "torch_version": torch.__version__,
    }
    out_path = REFERENCE_DIR / f"{name}__{image_name}.safetensors"
    mf.save_tensors({k: v.contiguous() for k, v in tensors.items()}, out_path, metadata)
    distinct = len(set(tensors["greedy_ids"].tolist()))
    print(f"  {name} x {image_name}: L={L} grid={inputs['image_grid_thw'][0].tolist()} row max {row_max}")
    print(f"      greedy ({distinct} distinct): {tensors['greedy_ids'].tolist()} {text!r}")
    if min(row_max) < 0.3 or distinct < 8:
        raise SystemExit(f"{name}: fixture not usable (attention too flat or output too repetitive)")


def check_all() -> None:
    for name, image_name, prompt in CASES:
        path = REFERENCE_DIR / f"{name}__{image_name}.safetensors"
        with safe_open(str(path), "pt") as f:
            ref = {k: f.get_tensor(k) for k in ["input_ids", "logits", "greedy_ids"]}
        model = load_model(name)
        processor = load_processor(name)
        image = Image.open(mf.image_path(image_name)).convert("RGB")
        _, inputs = mf.prepare_inputs(processor, image, prompt)
        assert torch.equal(inputs["input_ids"][0], ref["input_ids"]), f"{path.name}: input_ids differ"
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
            greedy = model.generate(
                **inputs, do_sample=False, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
            )
        diff = (out.logits[0] - ref["logits"]).abs().max().item()
        assert diff == 0.0, f"{path.name}: logits differ by {diff}"
        assert torch.equal(greedy[0, inputs["input_ids"].shape[1] :], ref["greedy_ids"]), f"{path.name}: greedy"
        print(f"  {path.name}: reproduced, {path.stat().st_size} B")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify the existing files")
    args = parser.parse_args()
    if not args.check:
        base = mf.build_base_bpe()
        for name, spec in SPECS.items():
            build_model(name, spec, base)
        build_mimo()
        for name, image_name, prompt in CASES:
            run_reference(name, image_name, prompt)
    check_all()


if __name__ == "__main__":
    sys.exit(main())

"""Run the pinned Hugging Face stack (transformers 5.17.0, torch 2.11.0, eager attention, float32)
on one checkpoint, image and prompt, and save what its prefill computes, named as `rhlens dump`
names it: input_ids, pixel_values, image_grid_thw, position_ids, logits, attentions.{layer}.

tests/parity_live.rs compares the two on the machine the tests run on, where both use the same
libtorch kernels; the committed references in tests/fixtures/reference were made on another CPU.

usage: .venv/bin/python scripts/hf_prefill.py MODEL_DIR IMAGE PROMPT OUT.safetensors [MODEL_DIR IMAGE PROMPT OUT ...]
"""
import sys
from pathlib import Path

import torch
from transformers.image_utils import load_image
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the same loading and processor code the fixtures use)


def main() -> None:
    args = sys.argv[1:]
    if not args or len(args) % 4:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    for i in range(0, len(args), 4):
        dump_prefill(*args[i : i + 4])


def dump_prefill(model_dir: str, image: str, prompt: str, out: str) -> None:
    model = mf.load_model(Path(model_dir))
    processor = mf.load_processor(Path(model_dir))
    # transformers' own loader: EXIF orientation applied, then convert("RGB")
    _, inputs = mf.prepare_inputs(processor, load_image(image), prompt)
    with torch.no_grad():
        result = model(**inputs, output_attentions=True, use_cache=False)
    position_ids, _ = model.model.get_rope_index(
        inputs["input_ids"], mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=inputs["image_grid_thw"]
    )
    tensors = {
        "input_ids": inputs["input_ids"][0],
        "pixel_values": inputs["pixel_values"].float(),
        "image_grid_thw": inputs["image_grid_thw"],
        "position_ids": position_ids[:, 0],
        "logits": result.logits[0].float(),
    }
    for layer, attn in enumerate(result.attentions):
        tensors[f"attentions.{layer}"] = attn[0].float()
    save_file({k: v.contiguous() for k, v in tensors.items()}, out)


if __name__ == "__main__":
    main()

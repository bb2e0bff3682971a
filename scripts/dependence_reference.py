"""Image dependence per generated token on the pinned Hugging Face stack (transformers 5.17.0,
eager attention, float32, inputs through the checkpoint's processor so that mm_token_type_ids are
set), for tests/evidence_dependence.rs to compare `rhlens evidence --image-dependence` with.

The trace's prompt (the user turn with its image, the template's default system prompt, the
generation prompt) plus its generated ids except the last are run teacher-forced in one forward
pass, with the image, with the blank image (every pixel the image's mean colour, each channel's
mean rounded half up) and without the image tokens. Step s is the prediction at position
P - 1 + s of a prompt of P positions. Per step: KL(p_with || p_without) and
log p_with(t_s) - log p_without(t_s) in float64 from the float32 logits, and per layer except the
last (whose hidden state Hugging Face returns after the final norm) 1 - cos of the layer's output.

usage:
  dependence_reference.py MODEL_DIR TRACE_DIR OUT.json
      OUT: {"blank": {"fill", "kl", "delta_logp", "resid_cosine_distance"}, "drop": {...}}
"""
import json
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the same loading and processor code the fixtures use)


def trace_image(trace_dir: Path, meta: dict) -> Path:
    rel = meta["image"].get("relative_path")
    if rel and (trace_dir / rel).is_file():
        return trace_dir / rel
    return Path(meta["image"]["path"])


def mean_colour(image: Image.Image) -> tuple:
    pixels = np.asarray(image, dtype=np.uint64).reshape(-1, 3)
    n = pixels.shape[0]
    return tuple(int((s + n // 2) // n) for s in pixels.sum(axis=0))


def with_chain(inputs: dict, chain: list) -> dict:
    """The processor's inputs with the generated ids appended (text tokens)."""
    extra = torch.tensor([chain], dtype=inputs["input_ids"].dtype)
    out = dict(inputs)
    out["input_ids"] = torch.cat([inputs["input_ids"], extra], dim=1)
    out["attention_mask"] = torch.cat([inputs["attention_mask"], torch.ones_like(extra)], dim=1)
    tt = inputs["mm_token_type_ids"]
    out["mm_token_type_ids"] = torch.cat([tt, torch.zeros((1, len(chain)), dtype=tt.dtype)], dim=1)
    return out


def without_image(inputs: dict, image_token_id: int) -> dict:
    keep = inputs["input_ids"][0] != image_token_id
    ids = inputs["input_ids"][:, keep]
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "mm_token_type_ids": torch.zeros_like(ids),
    }


def forward(model, inputs: dict, steps: int):
    """Log-probabilities [steps, vocab] (float64) and the layers' outputs [layers-1][steps, hidden]
    at the step positions."""
    with torch.no_grad():
        out = model(**inputs, output_hidden_states=True, use_cache=False)
    first = inputs["input_ids"].shape[1] - steps
    logp = out.logits[0, first : first + steps].double().log_softmax(-1)
    hidden = [h[0, first : first + steps].double() for h in out.hidden_states[1:-1]]
    return logp, hidden


def compare(with_pass, without_pass, chosen: list) -> dict:
    (lw, hw), (lo, ho) = with_pass, without_pass
    kl = (lw.exp() * (lw - lo)).sum(-1)
    idx = torch.tensor(chosen).view(-1, 1)
    delta = (lw.gather(1, idx) - lo.gather(1, idx)).view(-1)
    cos = [(1 - torch.nn.functional.cosine_similarity(a, b, dim=-1)).tolist() for a, b in zip(hw, ho)]
    return {"kl": kl.tolist(), "delta_logp": delta.tolist(), "resid_cosine_distance": cos}


def main() -> None:
    if len(sys.argv) != 4:
        raise SystemExit(__doc__.strip().split("usage:")[1])
    model_dir, trace_dir, out = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    meta = json.loads((trace_dir / "trace.json").read_text())
    model = mf.load_model(model_dir)
    processor = mf.load_processor(model_dir)
    image = Image.open(trace_image(trace_dir, meta)).convert("RGB")
    generated = meta["generated_ids"]
    steps, chain = len(generated), generated[:-1]
    _, inputs = mf.prepare_inputs(processor, image, meta["prompt"])
    base = forward(model, with_chain(inputs, chain), steps)
    fill = mean_colour(image)
    _, blank_inputs = mf.prepare_inputs(processor, Image.new("RGB", image.size, fill), meta["prompt"])
    blank = compare(base, forward(model, with_chain(blank_inputs, chain), steps), generated)
    blank["fill"] = list(fill)
    dropped = without_image(inputs, model.config.image_token_id)
    drop = compare(base, forward(model, with_chain(dropped, chain), steps), generated)
    out.write_text(json.dumps({"blank": blank, "drop": drop}))


if __name__ == "__main__":
    main()

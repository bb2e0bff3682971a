#!/usr/bin/env python3
"""Regenerate rhlens's test fixtures and the bundled demo checkpoint.

Run from the repository root:

    .venv/bin/python scripts/make_fixtures.py          # build everything, then verify
    .venv/bin/python scripts/make_fixtures.py --check  # verify the committed files only

What it writes (all deterministic: fixed seeds, one CPU thread):

* tests/fixtures/images/{wide,tall,big}.png and assets/demo.png: drawn with Pillow.
* tests/fixtures/models/tiny-flat/: Hub-style Qwen2.5-VL checkpoint (flat config.json with
  `rope_scaling`, Hub weight names, untied lm_head, one bfloat16 model.safetensors,
  chat_template.json with the Qwen2.5-VL Instruct template).
* tests/fixtures/models/tiny-nested/: transformers-5 layout (nested `text_config` with
  `rope_parameters`, `model.language_model.*` / `model.visual.*` names, tied embeddings,
  bfloat16 weights in 3 shards + index, R1-style chat_template.jinja, <think>/<answer> tokens).
* tests/fixtures/reference/<model>__<image>.safetensors: Hugging Face outputs (eager attention,
  float32, PIL image processor) for the Rust parity tests; see `run_reference` for the keys.

Every checkpoint has random weights and says so with `"rhlens_random_weights": true`. The demo
checkpoint in assets/demo-model/ is trained instead (scripts/train_demo.py).
Only the pinned stack is used (transformers 5.17.0, torch 2.11.0 on CPU); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path

# Single-threaded everywhere so that the reference bits (and the BPE training) are reproducible.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402
from safetensors import safe_open  # noqa: E402
from safetensors.torch import save as save_bytes  # noqa: E402
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers  # noqa: E402
from tokenizers import processors, trainers  # noqa: E402

import transformers  # noqa: E402
from transformers import (  # noqa: E402
    AutoTokenizer,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
)

NUM_THREADS = 1
torch.set_num_threads(NUM_THREADS)
transformers.utils.logging.disable_progress_bar()

ROOT = Path(__file__).resolve().parent.parent
IMAGES_DIR = ROOT / "tests" / "fixtures" / "images"
MODELS_DIR = ROOT / "tests" / "fixtures" / "models"
REFERENCE_DIR = ROOT / "tests" / "fixtures" / "reference"
DEMO_MODEL_DIR = ROOT / "assets" / "demo-model"
DEMO_IMAGE = ROOT / "assets" / "demo.png"

# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

# The Qwen2 pre-tokenizer split (same expression transformers' Qwen2Tokenizer rebuilds its
# pipeline with; tokenizer.json must carry the identical pipeline so that a reader of
# tokenizer.json and transformers agree on every id).
QWEN2_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

NUM_MERGES = 300

QWEN_SPECIAL_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
THINK_TOKENS = ["<think>", "</think>", "<answer>", "</answer>"]

CORPUS = """\
The picture shows a small house with a red roof under a blue sky. There are two green trees
next to the house and a yellow sun in the upper corner. A white cloud drifts to the right.
How many shapes are there in the image? Count the circles, the squares and the triangles.
Describe the picture in one sentence. What color is the largest circle? Answer briefly.
The assistant first thinks about the question and then gives the final answer.
Let me think step by step. First, I look at the left side of the image. Then I look at the
right side. The red square is above the blue square, and the green circle is below them.
Wait, I should check again. The triangle is orange and it points up. So the answer is three.
A conversation between a user and an assistant. The user asks a question about an image,
and the assistant solves it. The reasoning process is written before the answer.
Is the red square above the blue one? Think step by step. Count the triangles in the image.
The image is a photo of a street with cars, people, a dog and a bicycle. The weather is sunny.
In the middle of the picture there is a large gray stone, and behind it a wooden fence.
She reads a book while he paints the wall. They walk along the river in the evening light.
Numbers: 1, 2, 3, 4, 5, 10, 12, 20, 25, 100. The answer is 4. There are 7 birds and 3 cats.
Colors: red, green, blue, yellow, orange, purple, black, white, gray, brown, pink.
Shapes: circle, square, rectangle, triangle, line, star, ellipse, polygon, point, curve.
Where is the sun? The sun is at the top left. Where is the tree? The tree is at the bottom.
What is the man doing? He is holding an umbrella because it is raining in the city.
The question asks about the number of objects, so we count each object only once.
Therefore, the final answer is the total number of visible objects in the scene.
The model looks at the image tokens while it reasons, but as the chain grows longer,
attention to the image decays and the model relies more on its own text.
Answer the question using a single word or phrase. Please reason about the image first.
The boy kicks the ball across the green field, and the girl catches it with both hands.
Look closely at the picture: the window is open, the light is on, and the cat is sleeping.
A train crosses the bridge over the river while the boats wait below for their turn.
Two people are standing near the door; one of them is wearing a red jacket and a hat.
The kitchen table holds three apples, a bowl of soup, a spoon, and a glass of water.
Which object is closest to the camera? The bicycle is closest, then the bench, then the tree.
If the red circle is moved to the left, how many circles remain on the right side?
The chart shows that the value increases from 2010 to 2020 and then decreases slightly.
Reasoning: the shadow falls to the left, so the light comes from the right of the scene.
Final answer: the picture contains four shapes, two circles, one square and one triangle.
The teacher writes the problem on the board, and the students solve it together in groups.
Every morning the baker opens the shop, bakes fresh bread and sells it to the neighbours.
The mountain behind the village is covered with snow, and the forest below is dark green.
The dog runs after the ball, jumps over the small wall and brings the ball back to the boy.
We can see a long road that leads to a white building with many windows and a flag on top.
Because the question asks for the total, we add the numbers: two plus three equals five.
The flowers in the garden are red, yellow and purple, and a bee is flying above them.
There is a clock on the wall showing ten past three, and a calendar next to the clock.
Hmm, that does not look right. Let me count the objects again from the top of the image.
The weather is cloudy today, so the colors of the houses look darker than usual.
"""


def build_base_bpe() -> Tokenizer:
    """Train a small byte-level BPE with the Qwen2 pre-tokenization pipeline."""
    tok = Tokenizer(
        models.BPE(
            unk_token=None,
            continuing_subword_prefix="",
            end_of_word_suffix="",
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(
        vocab_size=256 + NUM_MERGES,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(CORPUS.splitlines(keepends=True), trainer=trainer)
    vocab_size = tok.get_vocab_size()
    if vocab_size != 256 + NUM_MERGES:
        raise SystemExit(f"BPE training produced {vocab_size} entries, expected {256 + NUM_MERGES}")
    return tok


def build_tokenizer(base: Tokenizer, with_think: bool) -> Tokenizer:
    tok = Tokenizer.from_str(base.to_str())
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    if with_think:
        tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def write_tokenizer_files(tok: Tokenizer, out_dir: Path) -> None:
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    added = {}
    for token_id, added_token in sorted(tok.get_added_tokens_decoder().items()):
        added[str(token_id)] = {
            "content": added_token.content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": added_token.special,
        }
    config = {
        "tokenizer_class": "Qwen2Tokenizer",
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": added,
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": 32768,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "unk_token": None,
    }
    write_json(out_dir / "tokenizer_config.json", config)


# ---------------------------------------------------------------------------------------------
# Chat templates and processor files
# ---------------------------------------------------------------------------------------------

QWEN_SYSTEM_PROMPT = "You are a helpful assistant."
R1_SYSTEM_PROMPT = (
    "You are a helpful assistant. First think about the question step by step inside "
    "<think> </think>, then give the final answer inside <answer> </answer>."
)
R1_SHORT_SYSTEM_PROMPT = "Think inside <think> </think>, then answer inside <answer> </answer>."


def chat_template(system_prompt: str) -> str:
    """The Qwen2-VL / Qwen2.5-VL Instruct chat template with a configurable default system prompt."""
    return (
        "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
        "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
        "<|im_start|>system\n" + system_prompt + "<|im_end|>\n{% endif %}"
        "<|im_start|>{{ message['role'] }}\n"
        "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
        "{% else %}{% for content in message['content'] %}"
        "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
        "{% set image_count.value = image_count.value + 1 %}"
        "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
        "<|vision_start|><|image_pad|><|vision_end|>"
        "{% elif content['type'] == 'video' or 'video' in content %}"
        "{% set video_count.value = video_count.value + 1 %}"
        "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
        "<|vision_start|><|video_pad|><|vision_end|>"
        "{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
        "{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )


MIN_PIXELS = 56 * 56
MAX_PIXELS = 28 * 28 * 64  # 50176: small, so the fixture images get downscaled
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def write_processor_files(out_dir: Path) -> None:
    config = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor",
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": CLIP_MEAN,
        "image_std": CLIP_STD,
        "merge_size": 2,
        "min_pixels": MIN_PIXELS,
        "max_pixels": MAX_PIXELS,
        # transformers 5 reads the limits from `size`; older readers from min/max_pixels.
        "size": {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS},
        "patch_size": 14,
        "resample": 3,
        "rescale_factor": 1 / 255,
        "temporal_patch_size": 2,
    }
    write_json(out_dir / "preprocessor_config.json", config)


# ---------------------------------------------------------------------------------------------
# Model specs
# ---------------------------------------------------------------------------------------------

# Between them the three checkpoints cover every loading path: flat and nested config.json, Hub
# and transformers-5 tensor names, one file and shards, tied and untied output, bf16 and f32 on
# disk. bf16 checkpoints are run in float32: the bf16 values are exact in f32, so the references
# are float32 computations on exactly the stored weights.
SPECS = {
    "tiny-flat": dict(
        out_dir=MODELS_DIR / "tiny-flat",
        layout="flat",
        tied=False,
        storage_dtype=torch.bfloat16,
        think_tokens=False,
        system_prompt=QWEN_SYSTEM_PROMPT,
        template_file="chat_template.json",
        text=dict(hidden=64, layers=3, heads=4, kv_heads=2, intermediate=112, mrope=[2, 3, 3]),
        vision=dict(depth=4, hidden=32, heads=2, intermediate=48, fullatt=[1, 3], window=56, out=64),
        seed=20245,
        embed_std=1.0,
        qk_gain=2.2,
        vqk_gain=2.2,
    ),
    "tiny-nested": dict(
        out_dir=MODELS_DIR / "tiny-nested",
        layout="nested",
        tied=True,
        storage_dtype=torch.bfloat16,
        think_tokens=True,
        system_prompt=R1_SHORT_SYSTEM_PROMPT,
        template_file="chat_template.jinja",
        text=dict(hidden=96, layers=2, heads=6, kv_heads=3, intermediate=160, mrope=[2, 3, 3]),
        vision=dict(depth=3, hidden=48, heads=3, intermediate=64, fullatt=[2], window=112, out=96),
        seed=20242,
        embed_std=0.1,
        qk_gain=2.2,
        vqk_gain=2.2,
        shards=3,
    ),
}

TOKENS_PER_SECOND = 2
RMS_NORM_EPS = 1e-6
ROPE_THETA = 1000000.0
MAX_POSITIONS = 32768
LOGIT_STD = 3.0  # target spread of the prefill logits (so sampling has a real choice)


def quiet_ids(tok: Tokenizer, ids: dict[str, int], vocab_size: int) -> list[int]:
    """Ids a random model should not emit: the Qwen special tokens (end of turn, image pads, ...),
    non-printable byte tokens, and the embedding rows past the tokenizer."""
    printable = set(map(chr, range(0x20, 0x7F))) | {"\n"}
    base = [i for i in range(tok.get_vocab_size(with_added_tokens=False)) if not set(tok.decode([i])) <= printable]
    unused = list(range(tok.get_vocab_size(with_added_tokens=True), vocab_size))
    special = [ids[t] for t in QWEN_SPECIAL_TOKENS]
    return sorted({*special, *base, *unused})


def round_up(x: int, m: int) -> int:
    return (x + m - 1) // m * m


def make_config(spec: dict, ids: dict[str, int], vocab_size: int) -> Qwen2_5_VLConfig:
    t, v = spec["text"], spec["vision"]
    eos = ids["<|im_end|>"]
    bos = ids["<|endoftext|>"]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=t["hidden"],
            intermediate_size=t["intermediate"],
            num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"],
            num_key_value_heads=t["kv_heads"],
            hidden_act="silu",
            max_position_embeddings=MAX_POSITIONS,
            rms_norm_eps=RMS_NORM_EPS,
            rope_parameters={"rope_type": "default", "mrope_section": t["mrope"], "rope_theta": t.get("rope_theta", ROPE_THETA)},
            bos_token_id=bos,
            eos_token_id=eos,
            pad_token_id=None,
            use_sliding_window=False,
        ),
        vision_config=dict(
            depth=v["depth"],
            hidden_size=v["hidden"],
            hidden_act="silu",
            intermediate_size=v["intermediate"],
            num_heads=v["heads"],
            in_channels=3,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            tokens_per_second=TOKENS_PER_SECOND,
            window_size=v["window"],
            out_hidden_size=v["out"],
            fullatt_block_indexes=v["fullatt"],
        ),
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=spec["tied"],
    )


def flat_config_json(spec: dict, ids: dict[str, int], vocab_size: int) -> dict:
    """A config.json shaped like the published Qwen2.5-VL checkpoints (text fields top level)."""
    t, v = spec["text"], spec["vision"]
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "vision_token_id": ids["<|vision_pad|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": t["hidden"],
        "initializer_range": 0.02,
        "intermediate_size": t["intermediate"],
        "max_position_embeddings": MAX_POSITIONS,
        "max_window_layers": t["layers"],
        "model_type": "qwen2_5_vl",
        "num_attention_heads": t["heads"],
        "num_hidden_layers": t["layers"],
        "num_key_value_heads": t["kv_heads"],
        "rms_norm_eps": RMS_NORM_EPS,
        "rope_theta": t.get("rope_theta", ROPE_THETA),
        "sliding_window": MAX_POSITIONS,
        "tie_word_embeddings": spec["tied"],
        "torch_dtype": "bfloat16" if spec["storage_dtype"] == torch.bfloat16 else "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vision_config": {
            "depth": v["depth"],
            "hidden_act": "silu",
            "hidden_size": v["hidden"],
            "intermediate_size": v["intermediate"],
            "num_heads": v["heads"],
            "in_chans": 3,
            "out_hidden_size": v["out"],
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "window_size": v["window"],
            "fullatt_block_indexes": v["fullatt"],
            "tokens_per_second": TOKENS_PER_SECOND,
            "temporal_patch_size": 2,
        },
        "rope_scaling": {"type": "mrope", "mrope_section": t["mrope"]},
        "vocab_size": vocab_size,
        "rhlens_random_weights": True,
    }


# ---------------------------------------------------------------------------------------------
# Weight initialisation
# ---------------------------------------------------------------------------------------------


def init_weights(model: Qwen2_5_VLForConditionalGeneration, spec: dict, quiet: list[int]) -> None:
    """Random weights with enough scale that attention is sharp and layers matter.

    Linear weights ~ N(0, 1/fan_in) (so activations keep unit scale), token embeddings
    ~ N(0, embed_std^2), q/k projections scaled up (`qk_gain`) so attention rows are far from
    uniform, random norm weights and biases (so a reader that forgets one is caught), and the final
    scale set so the logits spread by about LOGIT_STD. With tied embeddings the token embeddings are
    small next to what the layers add; otherwise the output is dominated by the current token's own
    embedding and greedy decoding repeats it forever.
    `quiet` (special tokens, unused embedding rows, non-printable byte tokens) get tiny output
    rows, so greedy decoding never stops early, never emits an image pad or chat marker, and never
    emits an id outside the tokenizer.
    """
    g = torch.Generator().manual_seed(spec["seed"])

    def normal(shape, std):
        return torch.randn(tuple(shape), generator=g, dtype=torch.float32) * std

    d_text = spec["text"]["hidden"]
    d_vis = spec["vision"]["hidden"]
    params = dict(model.named_parameters())  # tied lm_head is not listed separately
    with torch.no_grad():
        for name in sorted(params):
            p = params[name]
            if name.endswith("embed_tokens.weight"):
                new = normal(p.shape, spec["embed_std"])
            elif name == "lm_head.weight":
                new = normal(p.shape, LOGIT_STD / math.sqrt(d_text))
            elif name.endswith("language_model.norm.weight"):
                scale = LOGIT_STD / (spec["embed_std"] * math.sqrt(d_text)) if spec["tied"] else 1.0
                new = scale * (1.0 + 0.1 * normal(p.shape, 1.0))
            elif p.ndim == 1 and ("norm" in name or "ln_q" in name):
                new = 1.0 + 0.1 * normal(p.shape, 1.0)
            elif name.endswith(".bias"):
                new = normal(p.shape, 0.1)
            elif name.endswith("patch_embed.proj.weight"):
                fan_in = p[0].numel()
                new = normal(p.shape, 1.0 / math.sqrt(fan_in))
            elif name.endswith("self_attn.q_proj.weight") or name.endswith("self_attn.k_proj.weight"):
                new = normal(p.shape, spec["qk_gain"] / math.sqrt(p.shape[1]))
            elif name.endswith("attn.qkv.weight"):
                new = normal(p.shape, 1.0 / math.sqrt(p.shape[1]))
                new[: 2 * d_vis] *= spec["vqk_gain"]  # q and k rows; v keeps unit gain
            elif p.ndim == 2:
                new = normal(p.shape, 1.0 / math.sqrt(p.shape[1]))
            else:
                raise SystemExit(f"no init rule for {name} {tuple(p.shape)}")
            p.copy_(new)

        out_rows = model.lm_head.weight  # the embedding itself when tied
        out_rows[quiet] *= 0.05
        if spec["storage_dtype"] == torch.bfloat16:
            # The checkpoint is stored in bf16; run the reference on exactly those values.
            for p in model.parameters():
                p.copy_(p.to(torch.bfloat16).to(torch.float32))


# ---------------------------------------------------------------------------------------------
# Checkpoint writing
# ---------------------------------------------------------------------------------------------


def hub_to_v5_name(name: str) -> str:
    """Hub names (what 5.17's save_pretrained writes) -> transformers-5 runtime names."""
    if name.startswith("visual."):
        return "model." + name
    if name.startswith("model."):
        return "model.language_model." + name[len("model.") :]
    return name


def hub_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's tensors under Hub names (`visual.*`, `model.*`, `lm_head.weight`)."""
    out = {}
    tied = model.config.tie_word_embeddings
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight" and tied:
            continue
        if name.startswith("model.visual."):
            key = name[len("model.") :]
        elif name.startswith("model.language_model."):
            key = "model." + name[len("model.language_model.") :]
        else:
            key = name
        out[key] = tensor.detach().clone().contiguous()
    return out


def write_checkpoint(model, spec: dict, ids: dict[str, int], tok: Tokenizer) -> None:
    out_dir: Path = spec["out_dir"]
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    vocab_size = model.config.text_config.vocab_size
    tensors = {k: v.to(spec["storage_dtype"]) for k, v in sorted(hub_state_dict(model).items())}

    if spec["layout"] == "flat":
        write_json(out_dir / "config.json", flat_config_json(spec, ids, vocab_size))
        save_tensors(tensors, out_dir / "model.safetensors", {"format": "pt"})
    else:
        with tempfile.TemporaryDirectory() as tmp:
            model.config.text_config.pad_token_id = ids["<|endoftext|>"]
            model.config.dtype = spec["storage_dtype"]
            model.config.save_pretrained(tmp)
            config = json.loads((Path(tmp) / "config.json").read_text())
        config["rhlens_random_weights"] = True
        write_json(out_dir / "config.json", config)
        renamed = {hub_to_v5_name(k): v for k, v in tensors.items()}
        write_shards(renamed, out_dir, spec["shards"])

    generation = {
        "bos_token_id": ids["<|endoftext|>"],
        "do_sample": False,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]],
        "pad_token_id": ids["<|endoftext|>"],
        "transformers_version": transformers.__version__,
    }
    write_json(out_dir / "generation_config.json", generation)
    write_tokenizer_files(tok, out_dir)
    write_processor_files(out_dir)
    template = chat_template(spec["system_prompt"])
    if spec["template_file"] == "chat_template.json":
        write_json(out_dir / "chat_template.json", {"chat_template": template})
    else:
        (out_dir / "chat_template.jinja").write_text(template)


def write_shards(tensors: dict[str, torch.Tensor], out_dir: Path, n_shards: int) -> None:
    names = sorted(tensors)
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    target = total / n_shards
    shards: list[list[str]] = [[]]
    acc = 0
    for name in names:
        size = tensors[name].numel() * tensors[name].element_size()
        if acc + size / 2 > target * len(shards) and len(shards) < n_shards and shards[-1]:
            shards.append([])
        shards[-1].append(name)
        acc += size
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_tensors({n: tensors[n] for n in shard}, out_dir / fname, {"format": "pt"})
        for n in shard:
            weight_map[n] = fname
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    write_json(out_dir / "model.safetensors.index.json", index)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors file with a byte-stable header.

    The library writes `__metadata__` from a hash map, so its key order (and the file's bytes)
    changes from run to run; the header is re-written with sorted keys. Offsets are relative to
    the data section, so only the header changes.
    """
    raw = save_bytes(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


def gradient(w: int, h: int, top: tuple, bottom: tuple, left_tint: tuple = (0, 0, 0)) -> np.ndarray:
    y = np.linspace(0.0, 1.0, h)[:, None, None]
    x = np.linspace(0.0, 1.0, w)[None, :, None]
    top_c = np.array(top, dtype=np.float64)[None, None, :]
    bot_c = np.array(bottom, dtype=np.float64)[None, None, :]
    tint = np.array(left_tint, dtype=np.float64)[None, None, :]
    return top_c * (1 - y) + bot_c * y + tint * (1 - x)


def finish(img: Image.Image, rng: np.random.Generator, noise: float) -> Image.Image:
    img = img.filter(ImageFilter.GaussianBlur(radius=0.6))
    arr = np.asarray(img, dtype=np.float64)
    arr = arr + rng.normal(0.0, noise, arr.shape)
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def draw_wide() -> Image.Image:
    rng = np.random.default_rng(11)
    base = gradient(200, 120, (70, 130, 190), (200, 220, 235), (40, 10, -20))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((18, 30, 68, 80), fill=(220, 60, 50), outline=(90, 20, 20), width=2)
    d.rectangle((85, 20, 125, 60), fill=(60, 170, 80))
    d.polygon([(140, 95), (190, 95), (165, 45)], fill=(245, 160, 40))
    d.rectangle((95, 75, 135, 110), fill=(50, 60, 160))
    d.line((0, 112, 200, 100), fill=(30, 30, 30), width=3)
    return finish(img, rng, 6.0)


def draw_tall() -> Image.Image:
    rng = np.random.default_rng(12)
    base = gradient(90, 170, (240, 230, 200), (120, 90, 60), (-20, 10, 30))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.rectangle((20, 15, 60, 55), fill=(210, 40, 40))
    d.rectangle((25, 75, 65, 115), fill=(40, 70, 200))
    d.ellipse((30, 125, 70, 165), fill=(40, 160, 70))
    d.polygon([(5, 160), (20, 130), (35, 160)], fill=(250, 200, 60))
    return finish(img, rng, 7.0)


def draw_big() -> Image.Image:
    rng = np.random.default_rng(13)
    base = gradient(400, 300, (30, 40, 90), (180, 140, 110), (50, 0, 30))
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for i in range(7):
        cx, cy = 40 + 52 * i, 60 + 25 * (i % 3)
        r = 12 + 4 * i
        color = tuple(int(c) for c in rng.integers(40, 250, 3))
        d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
    d.rectangle((30, 190, 150, 280), fill=(200, 200, 60), outline=(20, 20, 20), width=3)
    d.polygon([(200, 280), (300, 280), (250, 180)], fill=(60, 200, 200))
    d.rectangle((320, 200, 390, 290), fill=(150, 50, 150))
    for k in range(0, 400, 16):
        d.line((k, 295, k + 8, 300), fill=(240, 240, 240), width=1)
    return finish(img, rng, 4.0)


def draw_demo() -> Image.Image:
    """A small outdoor scene: sky, sun, clouds, hills, a house and two trees."""
    rng = np.random.default_rng(14)
    w, h = 320, 240
    sky = gradient(w, h, (90, 150, 225), (200, 225, 245))
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    d.ellipse((245, 18, 295, 68), fill=(255, 215, 60))  # sun
    for cx, cy in [(70, 40), (95, 32), (118, 42), (170, 60), (190, 55)]:
        d.ellipse((cx - 20, cy - 12, cx + 20, cy + 12), fill=(245, 245, 250))  # clouds
    d.ellipse((-80, 150, 200, 330), fill=(95, 165, 75))  # hills
    d.ellipse((120, 160, 420, 340), fill=(80, 150, 65))
    d.rectangle((0, 195, w, h), fill=(90, 160, 70))  # grass
    d.rectangle((120, 130, 210, 200), fill=(225, 205, 170), outline=(90, 70, 50), width=2)  # house
    d.polygon([(110, 132), (220, 132), (165, 88)], fill=(180, 50, 40))  # roof
    d.rectangle((155, 160, 177, 200), fill=(110, 70, 40))  # door
    d.rectangle((130, 145, 148, 162), fill=(150, 200, 235), outline=(60, 60, 60))  # windows
    d.rectangle((185, 145, 203, 162), fill=(150, 200, 235), outline=(60, 60, 60))
    for tx in (50, 265):  # trees
        d.rectangle((tx - 5, 160, tx + 5, 205), fill=(100, 65, 35))
        d.ellipse((tx - 28, 110, tx + 28, 172), fill=(40, 120, 45))
    d.line((0, 214, w, 222), fill=(170, 150, 110), width=6)  # path
    return finish(img, rng, 3.0)


def write_images() -> None:
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    draw_wide().save(IMAGES_DIR / "wide.png", optimize=True)
    draw_tall().save(IMAGES_DIR / "tall.png", optimize=True)
    draw_big().save(IMAGES_DIR / "big.png", optimize=True)
    DEMO_IMAGE.parent.mkdir(parents=True, exist_ok=True)
    draw_demo().save(DEMO_IMAGE, optimize=True)


# ---------------------------------------------------------------------------------------------
# Reference outputs
# ---------------------------------------------------------------------------------------------

NEW_TOKENS = 24
SAMPLE_SEED = 1234
SAMPLE_SETTINGS = dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9, repetition_penalty=1.0)
PENALTY = 1.3
# Every greedy step's best logit must beat the runner-up by this much, so that float32 rounding
# differences between implementations (~1e-5 here) cannot flip the argmax.
MIN_ARGMAX_GAP = 2e-3

CASES = [
    # (model, image, prompt, full): full=False writes a light file (no per-layer tensors)
    ("tiny-flat", "wide", "Describe the picture. How many shapes are there?", True),
    ("tiny-flat", "big", "What color is the largest circle? Answer briefly.", True),
    ("tiny-nested", "tall", "Is the red square above the blue one? Think step by step.", True),
    ("tiny-nested", "wide", "Count the triangles in the image.", True),
]


def model_dir(name: str) -> Path:
    return DEMO_MODEL_DIR if name == "demo-model" else MODELS_DIR / name


def image_path(name: str) -> Path:
    return DEMO_IMAGE if name == "demo" else IMAGES_DIR / f"{name}.png"


def load_model(path: Path):
    model, info = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        str(path), attn_implementation="eager", dtype=torch.float32, output_loading_info=True
    )
    bad = {k: v for k, v in info.items() if v and k != "error_msgs"} | (
        {"error_msgs": info["error_msgs"]} if info.get("error_msgs") else {}
    )
    if bad:
        raise SystemExit(f"loading {path} was not clean: {bad}")
    model.eval()
    return model


def load_processor(path: Path):
    """The Qwen2.5-VL processor with the PIL image processor, built from the checkpoint's files.

    `transformers.AutoProcessor.from_pretrained` cannot be used: in transformers 5.17 it always loads the
    video processor, which needs torchvision (not part of the pinned stack, and unused for images).
    """
    from transformers import Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    processor_dict, _ = Qwen2_5_VLProcessor.get_processor_dict(str(path))  # reads the chat template file
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    processor = ImageOnlyProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        video_processor=None,
        chat_template=processor_dict["chat_template"],
    )
    ip = processor.image_processor
    if ip.size["shortest_edge"] != MIN_PIXELS or ip.size["longest_edge"] != MAX_PIXELS:
        raise SystemExit(f"image processor ignored the pixel limits: {ip.size}")
    return processor


def prepare_inputs(processor, image: Image.Image, prompt: str):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    inputs = processor(images=[image], text=[rendered], return_tensors="pt")
    return rendered, inputs


def row_max_stats(attn: torch.Tensor, min_keys: int = 8) -> tuple[float, float]:
    """Mean max-probability of the rows with at least `min_keys` keys, and the uniform value."""
    rows = attn[..., min_keys - 1 :, :]  # [H, R, K]
    n_keys = torch.arange(min_keys, attn.shape[-1] + 1, dtype=torch.float64)
    return rows.amax(-1).double().mean().item(), (1.0 / n_keys).mean().item()


def vision_attention_stats(model, pixel_values, grid) -> list[tuple[float, float]]:
    """Per vision block: mean max-probability of the attention rows, and the uniform value."""
    import transformers.models.qwen2_5_vl.modeling_qwen2_5_vl as modeling

    blocks = {id(blk.attn): i for i, blk in enumerate(model.model.visual.blocks)}
    records: dict[int, list[torch.Tensor]] = {i: [] for i in blocks.values()}
    original = modeling.eager_attention_forward

    def recording(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        out, weights = original(module, query, key, value, attention_mask, scaling, dropout, **kwargs)
        if id(module) in blocks:
            records[blocks[id(module)]].append(weights[0].detach())
        return out, weights

    modeling.eager_attention_forward = recording
    try:
        with torch.no_grad():
            model.model.visual(pixel_values, grid_thw=grid)
    finally:
        modeling.eager_attention_forward = original
    stats = []
    for i in sorted(records):
        if not records[i]:
            raise SystemExit("vision attention was not recorded (not the eager path?)")
        maxes = torch.cat([w.amax(-1).flatten() for w in records[i]])
        uniform = torch.cat([torch.full((w.shape[0] * w.shape[1],), 1.0 / w.shape[-1]) for w in records[i]])
        stats.append((maxes.double().mean().item(), uniform.double().mean().item()))
    return stats


def check_layout_notes(model, t: dict[str, torch.Tensor], ids: torch.Tensor) -> None:
    """Confirm what the metadata says about the saved tensors, from the tensors themselves."""
    cfg = model.config
    lm = model.model.language_model
    n_layers = cfg.text_config.num_hidden_layers
    with torch.no_grad():
        is_image = ids == cfg.image_token_id
        h0 = t["hidden_states.0"]
        assert torch.equal(h0[is_image], t["image_embeds"]), "hidden_states.0 image rows != image_embeds"
        assert torch.equal(h0[~is_image], lm.embed_tokens(ids[~is_image])), "hidden_states.0 text rows"
        assert torch.equal(t[f"hidden_states.{n_layers}"], lm.norm(t["last_layer_output"])), "final norm"
        if n_layers > 1:
            assert not torch.equal(t[f"hidden_states.{n_layers - 1}"], t["last_layer_output"])
        merged = model.model.visual.merger(t[f"vision_hidden.{cfg.vision_config.depth - 1}"])
        order = torch.argsort(t["vision_window_index"])
        assert torch.equal(merged[order], t["image_embeds"]), "vision_hidden is not in window order"


def run_reference(model_name: str, image_name: str, prompt: str, full: bool) -> dict:
    """Run the pinned Hugging Face stack on one (checkpoint, image, prompt) and save what it computes.

    Keys (float32 / int64; L = prompt length, P = patches, V = vocab rows, D = text hidden):
      input_ids [L], image_grid_thw [1,3], position_ids [3,L], rope_deltas [1],
      greedy_ids [24], greedy_logits [24,V], penalty_ids [24], sampled_ids [24], and
      full cases: pixel_values [P,1176], logits [L,V], attentions.{l} [H,L,L],
        hidden_states.{0..layers} [L,D], last_layer_output [L,D], image_embeds [P/4,D],
        vision_patch_embeds [P,Dv], vision_hidden.{i} [P,Dv] (window order),
        vision_window_index [P/4], vision_cu_window_seqlens [W+1], gen_rows.{s} [layers,H,L+s];
      light cases (the demo): logits_last [V] instead of the per-layer tensors.
    The file's metadata explains each layout and records prompts, texts and settings.
    """
    mdir = model_dir(model_name)
    model = load_model(mdir)
    processor = load_processor(mdir)
    tokenizer = processor.tokenizer
    cfg = model.config
    image = Image.open(image_path(image_name)).convert("RGB")
    rendered, inputs = prepare_inputs(processor, image, prompt)
    input_ids = inputs["input_ids"]
    L = input_ids.shape[1]
    grid = inputs["image_grid_thw"]
    n_img = int((input_ids == cfg.image_token_id).sum())
    expanded = tokenizer.decode(input_ids[0], skip_special_tokens=False)
    n_expected = int(grid.prod()) // 4
    if expanded != rendered.replace("<|image_pad|>", "<|image_pad|>" * n_expected) or n_img != n_expected:
        raise SystemExit("image-pad expansion is not what the processor docs describe")

    # Raw tokenizer (what a tokenizer.json reader sees) must agree with transformers.
    raw = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    if raw.encode(expanded, add_special_tokens=False).ids != input_ids[0].tolist():
        raise SystemExit(f"{model_name}: tokenizer.json and transformers disagree on the prompt ids")

    captured: dict[str, torch.Tensor] = {}
    hooks = []
    visual = model.model.visual
    for i, blk in enumerate(visual.blocks):
        hooks.append(blk.register_forward_hook(lambda m, a, o, i=i: captured.__setitem__(f"vision_hidden.{i}", o)))
    hooks.append(
        visual.patch_embed.register_forward_hook(lambda m, a, o: captured.__setitem__("vision_patch_embeds", o))
    )
    hooks.append(visual.register_forward_hook(lambda m, a, o: captured.__setitem__("image_embeds", o.pooler_output)))
    hooks.append(
        model.model.language_model.register_forward_pre_hook(
            lambda m, a, kw: captured.__setitem__("lm_position_ids", kw["position_ids"]), with_kwargs=True
        )
    )
    last_layer = model.model.language_model.layers[-1]
    hooks.append(last_layer.register_forward_hook(lambda m, a, o: captured.__setitem__("last_layer_output", o)))

    with torch.no_grad():
        out = model(**inputs, output_attentions=True, output_hidden_states=True, use_cache=False)
    for h in hooks:
        h.remove()

    position_ids, rope_deltas = model.model.get_rope_index(
        input_ids, mm_token_type_ids=inputs["mm_token_type_ids"], image_grid_thw=grid
    )
    fwd_pos = captured["lm_position_ids"]
    if fwd_pos.shape[0] == 4:  # 5.17 prepends text positions; keep the 3 M-RoPE planes
        fwd_pos = fwd_pos[1:]
    if not torch.equal(fwd_pos, position_ids):
        raise SystemExit("get_rope_index and the forward's position ids differ")

    from transformers.vision_utils import get_vision_window_index

    window_index, cu_window = get_vision_window_index(
        grid, spatial_merge_size=2, window_size=cfg.vision_config.window_size, patch_size=14
    )

    n_layers = cfg.text_config.num_hidden_layers
    tensors: dict[str, torch.Tensor] = {
        "input_ids": input_ids[0].to(torch.int64),
        "image_grid_thw": grid.to(torch.int64),
        "position_ids": position_ids[:, 0, :].to(torch.int64),
        "rope_deltas": rope_deltas.reshape(1).to(torch.int64),
    }
    logits = out.logits[0].float()
    attn_summary = []
    for layer in range(n_layers):
        a = out.attentions[layer][0].float()
        mean_max, uniform = row_max_stats(a)
        attn_summary.append((mean_max, uniform))
    if full:
        tensors["pixel_values"] = inputs["pixel_values"].float()
        tensors["logits"] = logits
        for layer in range(n_layers):
            tensors[f"attentions.{layer}"] = out.attentions[layer][0].float()
        for i, hs in enumerate(out.hidden_states):
            tensors[f"hidden_states.{i}"] = hs[0].float()
        tensors["last_layer_output"] = captured["last_layer_output"][0].float()
        tensors["image_embeds"] = captured["image_embeds"].float()
        tensors["vision_patch_embeds"] = captured["vision_patch_embeds"].float()
        for i in range(cfg.vision_config.depth):
            tensors[f"vision_hidden.{i}"] = captured[f"vision_hidden.{i}"].float()
        tensors["vision_window_index"] = window_index.to(torch.int64)
        tensors["vision_cu_window_seqlens"] = cu_window.to(torch.int64)
        check_layout_notes(model, tensors, input_ids[0])
    else:
        tensors["logits_last"] = logits[-1]

    vision_summary = vision_attention_stats(model, inputs["pixel_values"], grid)

    gen_common = dict(max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, return_dict_in_generate=True)
    with torch.no_grad():
        greedy = model.generate(
            **inputs,
            do_sample=False,
            repetition_penalty=1.0,
            output_attentions=True,
            output_logits=True,
            **gen_common,
        )
    greedy_ids = greedy.sequences[0, L:]
    tensors["greedy_ids"] = greedy_ids.to(torch.int64)
    tensors["greedy_logits"] = torch.stack([lg[0] for lg in greedy.logits]).float()
    # Generation prefill must agree with the plain forward we saved.
    prefill_attn_max_diff = max(
        (greedy.attentions[0][layer][0].float() - out.attentions[layer][0].float()).abs().max().item()
        for layer in range(n_layers)
    )
    step0_logit_diff = (tensors["greedy_logits"][0] - logits[-1]).abs().max().item()
    if full:
        for s in range(NEW_TOKENS):
            rows = [greedy.attentions[s][layer][0, :, -1, :] for layer in range(n_layers)]
            row = torch.stack(rows).float()  # [layers, heads, kv_len]
            if row.shape[-1] != L + s:
                raise SystemExit(f"step {s}: kv_len {row.shape[-1]} != {L + s}")
            tensors[f"gen_rows.{s}"] = row

    eos_ids = [cfg.text_config.eos_token_id, tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    step_logits = tensors["greedy_logits"]
    eos_argmax = any(int(step_logits[s].argmax()) in eos_ids for s in range(NEW_TOKENS))
    if eos_argmax:
        raise SystemExit(f"{model_name}/{image_name}: an end-of-turn id is the greedy argmax")

    with torch.no_grad():
        penalty = model.generate(
            **inputs, do_sample=False, repetition_penalty=PENALTY, output_scores=True, **gen_common
        )
    tensors["penalty_ids"] = penalty.sequences[0, L:].to(torch.int64)

    def min_margin(rows: list[torch.Tensor]) -> float:
        """Smallest gap between the best and second-best score over the steps (argmax robustness)."""
        return min((r.topk(2).values[0] - r.topk(2).values[1]).item() for r in rows)

    greedy_margin = min_margin([step_logits[s] for s in range(NEW_TOKENS)])
    penalty_margin = min_margin([sc[0] for sc in penalty.scores])

    with torch.no_grad():
        torch.manual_seed(SAMPLE_SEED)
        sampled = model.generate(**inputs, output_logits=True, **SAMPLE_SETTINGS, **gen_common)
    tensors["sampled_ids"] = sampled.sequences[0, L:].to(torch.int64)
    sampled_logits = torch.stack([lg[0] for lg in sampled.logits])
    eos_in_topk = any(
        bool(set(sampled_logits[s].topk(SAMPLE_SETTINGS["top_k"]).indices.tolist()) & set(eos_ids))
        for s in range(NEW_TOKENS)
    )

    text = tokenizer.decode(greedy_ids, skip_special_tokens=True)
    metadata = {
        "model": model_name,
        "image": image_name,
        "prompt": prompt,
        "rendered_prompt": rendered,
        "expanded_prompt": expanded,
        "generated_text": text,
        "penalty_text": tokenizer.decode(tensors["penalty_ids"], skip_special_tokens=True),
        "sampled_text": tokenizer.decode(tensors["sampled_ids"], skip_special_tokens=True),
        "settings": json.dumps(
            {
                "dtype": "float32",
                "attn_implementation": "eager",
                "image_processor": type(processor.image_processor).__name__,
                "new_tokens": NEW_TOKENS,
                "greedy": {"do_sample": False, "repetition_penalty": 1.0, "min_new_tokens": NEW_TOKENS},
                "penalty": {"do_sample": False, "repetition_penalty": PENALTY, "min_new_tokens": NEW_TOKENS},
                "sampled": {
                    **SAMPLE_SETTINGS,
                    "seed": SAMPLE_SEED,
                    "seed_call": "torch.manual_seed(1234) immediately before generate",
                    "min_new_tokens": NEW_TOKENS,
                    "processor_order": "repetition_penalty, min_new_tokens(eos->-inf), temperature, "
                    "top_k, top_p, softmax, torch.multinomial",
                    "repetition_penalty_scope": "every id in input_ids so far (prompt incl. image pads, "
                    "plus generated ids): logit/p if > 0 else logit*p",
                    "eos_in_top_k_at_any_step": eos_in_topk,
                },
            }
        ),
        "layout_notes": json.dumps(
            {
                "hidden_states": "hidden_states.0 = input embeddings after the image scatter; "
                "hidden_states.i (1..layers-1) = output of decoder layer i-1; hidden_states.{layers} = "
                "final RMSNorm output (last_layer_output is the last decoder layer before that norm)",
                "attentions": "attentions.{l} [heads, L, L] prefill probabilities (float32 softmax)",
                "gen_rows": "gen_rows.{s} [layers, heads, L+s]: attention row of the query that produced "
                "generated token s (s=0: last prompt row of the prefill)",
                "greedy_logits": "[new_tokens, vocab] raw logits (before logits processors) of each greedy step",
                "vision_hidden": "vision_hidden.{i} [patches, vision_hidden] output of vision block i, in the "
                "WINDOW-REORDERED patch order (rows grouped by 4 = one merged token; merged-token order = "
                "vision_window_index); vision_patch_embeds is the patch-embed output in the ORIGINAL order",
                "image_embeds": "merger output after the reverse permutation = raster order of merged tokens",
                "position_ids": "[3, L] (t, h, w) M-RoPE positions from get_rope_index; decode step s uses "
                "L + s + rope_deltas on all three planes",
            }
        ),
        "checks": json.dumps(
            {
                "generate_prefill_vs_forward_attn_max_abs_diff": prefill_attn_max_diff,
                "generate_step0_vs_forward_last_logits_max_abs_diff": step0_logit_diff,
                "greedy_min_top1_top2_logit_gap": greedy_margin,
                "penalty_min_top1_top2_score_gap": penalty_margin,
                "attention_mean_row_max_per_layer": [round(m, 4) for m, _ in attn_summary],
                "uniform_row_max_mean": round(attn_summary[0][1], 4),
                "vision_attention_mean_row_max_per_block": [round(m, 4) for m, _ in vision_summary],
                "vision_uniform_row_max_mean_per_block": [round(u, 4) for _, u in vision_summary],
            }
        ),
        "transformers_version": transformers.__version__,
        "torch_version": torch.__version__,
        "num_threads": str(torch.get_num_threads()),
        "random_weights": "true",
    }
    REFERENCE_DIR.mkdir(parents=True, exist_ok=True)
    out_path = REFERENCE_DIR / f"{model_name}__{image_name}.safetensors"
    save_tensors({k: v.contiguous() for k, v in tensors.items()}, out_path, metadata)

    print(
        f"  {model_name:11s} x {image_name:5s}: L={L} image_tokens={n_img} grid={grid[0].tolist()} "
        f"rope_delta={int(rope_deltas)} P={int(grid.prod())}"
    )
    for layer, (m, u) in enumerate(attn_summary):
        print(f"      layer {layer}: mean row max-prob {m:.3f} (uniform would be {u:.3f})")
    for block, (m, u) in enumerate(vision_summary):
        print(f"      vision block {block}: mean row max-prob {m:.3f} (uniform would be {u:.3f})")
    print(
        f"      generate vs forward: attention diff {prefill_attn_max_diff:.2e}, "
        f"step-0 logits diff {step0_logit_diff:.2e}"
    )
    print(f"      greedy  ({len(set(greedy_ids.tolist()))} distinct): {greedy_ids.tolist()}")
    print(f"      greedy text: {text!r}")
    print(f"      smallest top-1/top-2 gap: greedy {greedy_margin:.4f}, penalty {penalty_margin:.4f}")
    print(f"      penalty: {tensors['penalty_ids'].tolist()}")
    print(f"      sampled: {tensors['sampled_ids'].tolist()}  (eos in top-k at some step: {eos_in_topk})")
    return {
        "attn": attn_summary + vision_summary,
        "gap": min(greedy_margin, penalty_margin),
        "distinct": len(set(greedy_ids.tolist())),
    }


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def build_all() -> None:
    print("images")
    write_images()
    print("tokenizer")
    base = build_base_bpe()
    for name, spec in SPECS.items():
        tok = build_tokenizer(base, spec["think_tokens"])
        tok_size = tok.get_vocab_size(with_added_tokens=True)
        vocab_size = round_up(tok_size, 64)
        ids = {t: tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS + THINK_TOKENS if tok.token_to_id(t) is not None}
        config = make_config(spec, ids, vocab_size)
        torch.manual_seed(spec["seed"])
        model = Qwen2_5_VLForConditionalGeneration(config)
        model.eval()
        init_weights(model, spec, quiet_ids(tok, ids, vocab_size))
        write_checkpoint(model, spec, ids, tok)
        where = spec["out_dir"].relative_to(ROOT)
        print(f"model {name}: tokenizer size {tok_size}, vocab_size {vocab_size} -> {where}")
    print("reference outputs")
    failures = []
    for model_name, image_name, prompt, full in CASES:
        res = run_reference(model_name, image_name, prompt, full)
        for layer, (m, _) in enumerate(res["attn"]):
            if m < 0.3:
                failures.append(f"{model_name}/{image_name} layer {layer}: mean row max-prob {m:.3f} < 0.3")
        if res["gap"] < MIN_ARGMAX_GAP:
            failures.append(f"{model_name}/{image_name}: a greedy step is nearly tied ({res['gap']:.4f})")
        if res["distinct"] < 12:
            failures.append(f"{model_name}/{image_name}: greedy output has only {res['distinct']} distinct ids")
    if failures:
        raise SystemExit("fixtures not usable (change a seed or a gain):\n  " + "\n  ".join(failures))


# ---------------------------------------------------------------------------------------------
# Verification
# ---------------------------------------------------------------------------------------------


def check_all() -> None:
    print("check")
    # Layout of the configs as a reader sees the files.
    flat = json.loads((MODELS_DIR / "tiny-flat" / "config.json").read_text())
    nested = json.loads((MODELS_DIR / "tiny-nested" / "config.json").read_text())
    demo = json.loads((DEMO_MODEL_DIR / "config.json").read_text())
    assert "text_config" not in flat and "rope_scaling" in flat, "tiny-flat must be the flat Hub layout"
    assert "text_config" not in demo and "rope_scaling" in demo, "demo-model must be the flat Hub layout"
    assert "text_config" in nested and "rope_parameters" in nested["text_config"], "tiny-nested must be nested"
    for cfg in (flat, nested):
        assert cfg.get("rhlens_random_weights") is True

    for name in SPECS:
        mdir = model_dir(name)
        model = load_model(mdir)
        cfg = model.config
        tok = AutoTokenizer.from_pretrained(str(mdir))
        ids = {t: tok.convert_tokens_to_ids(t) for t in QWEN_SPECIAL_TOKENS + THINK_TOKENS}
        raw = Tokenizer.from_file(str(mdir / "tokenizer.json"))
        for t in QWEN_SPECIAL_TOKENS:
            assert raw.token_to_id(t) == ids[t], f"{name}: {t} id differs between tokenizer.json and transformers"
        assert cfg.image_token_id == ids["<|image_pad|>"] and cfg.video_token_id == ids["<|video_pad|>"]
        assert cfg.vision_start_token_id == ids["<|vision_start|>"]
        assert cfg.vision_end_token_id == ids["<|vision_end|>"]
        assert cfg.text_config.eos_token_id == ids["<|im_end|>"]
        assert cfg.text_config.rope_parameters["mrope_section"] == SPECS[name]["text"]["mrope"]
        assert cfg.vision_config.window_size == SPECS[name]["vision"]["window"]
        tied = model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
        assert tied == SPECS[name]["tied"], f"{name}: tied={tied}"
        sample = "Hello <think>step 1</think><answer>42</answer> naïve café\n\n  x"
        hf_ids = tok(sample, add_special_tokens=False)["input_ids"]
        assert raw.encode(sample, add_special_tokens=False).ids == hf_ids, f"{name}: tokenizers disagree"
        assert tok.decode(hf_ids) == sample, f"{name}: decode does not round-trip"
        think = {t: ids[t] for t in THINK_TOKENS if ids[t] != tok.unk_token_id and ids[t] is not None}
        sizes = {p.name: p.stat().st_size for p in sorted(mdir.iterdir())}
        print(
            f"  {name}: tokenizer {len(tok)} ids, vocab_size {cfg.text_config.vocab_size}, tied={tied}, "
            f"params {sum(p.numel() for p in model.parameters())}, files {sum(sizes.values())} B"
        )
        special = {t: ids[t] for t in QWEN_SPECIAL_TOKENS}
        print(f"    special ids: {special}")
        if SPECS[name]["think_tokens"]:
            print(f"    added (non-special) ids: {think}")
        else:
            print(f"    '<think>' is plain text here: {tok('<think>', add_special_tokens=False)['input_ids']}")

    # Saved references reproduce from the committed checkpoints.
    for model_name, image_name, prompt, full in CASES:
        path = REFERENCE_DIR / f"{model_name}__{image_name}.safetensors"
        with safe_open(str(path), "pt") as f:
            ref = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata()
        mdir = model_dir(model_name)
        model = load_model(mdir)
        processor = load_processor(mdir)
        image = Image.open(image_path(image_name)).convert("RGB")
        rendered, inputs = prepare_inputs(processor, image, prompt)
        assert rendered == meta["rendered_prompt"], f"{path.name}: rendered prompt differs"
        assert torch.equal(inputs["input_ids"][0], ref["input_ids"]), f"{path.name}: input_ids differ"
        assert torch.equal(inputs["image_grid_thw"], ref["image_grid_thw"]), f"{path.name}: grid differs"
        if "pixel_values" in ref:
            assert torch.equal(inputs["pixel_values"], ref["pixel_values"]), f"{path.name}: pixel_values differ"
        with torch.no_grad():
            out = model(**inputs, use_cache=False)
            greedy = model.generate(
                **inputs, do_sample=False, repetition_penalty=1.0, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
            )
            torch.manual_seed(SAMPLE_SEED)
            sampled = model.generate(
                **inputs, **SAMPLE_SETTINGS, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS
            )
        L = inputs["input_ids"].shape[1]
        if "logits" in ref:
            diff = (out.logits[0] - ref["logits"]).abs().max().item()
        else:
            diff = (out.logits[0, -1] - ref["logits_last"]).abs().max().item()
        assert diff == 0.0, f"{path.name}: logits differ by {diff}"
        assert torch.equal(greedy[0, L:], ref["greedy_ids"]), f"{path.name}: greedy ids differ"
        assert torch.equal(sampled[0, L:], ref["sampled_ids"]), f"{path.name}: sampled ids differ"
        print(f"  {path.name}: reproduced (logits bit-exact, greedy and sampled ids equal), {path.stat().st_size} B")

    import zlib

    for label, files in (
        ("models", [p for d in (MODELS_DIR, DEMO_MODEL_DIR) for p in d.rglob("*") if p.is_file()]),
        ("reference", [p for p in REFERENCE_DIR.rglob("*") if p.is_file()]),
        ("images", [p for p in IMAGES_DIR.rglob("*") if p.is_file()] + [DEMO_IMAGE]),
    ):
        raw_size = sum(p.stat().st_size for p in files)
        packed = sum(len(zlib.compress(p.read_bytes(), 6)) for p in files)
        print(f"  {label}: {raw_size / 1e6:.2f} MB on disk, ~{packed / 1e6:.2f} MB zlib-compressed (as git stores it)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only verify the existing files")
    args = parser.parse_args()
    print(f"transformers {transformers.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    if not args.check:
        build_all()
    check_all()


if __name__ == "__main__":
    sys.exit(main())

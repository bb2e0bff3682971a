#!/usr/bin/env python3
"""Train rhlens's demo checkpoint: a tiny Qwen2.5-VL trained on synthetic scenes.

Run from the repository root (CPU, seeded, deterministic with a fixed --threads on any x86-64 CPU
with AVX2, see the kernel pins below: the same command writes the committed weights bit for bit):

    .venv/bin/python scripts/train_demo.py            # train, write assets/demo-model/
    .venv/bin/python scripts/train_demo.py --steps 20 --out runs/demo-try   # a short timing run

The committed run is the default command (9000 steps of 32 scenes on two threads; README, "The
demo model and its benchmark", gives its time and measured numbers).

Scenes are coloured shapes (circle, square, triangle in red, green, blue, yellow) on a 3 x 3
layout of an 84 x 84 image in a grey frame: 9 visual tokens (a 3 x 3 merged grid, 28 px per
token), one per cell, so every object lies inside one token; the frame is what tells a token where
it lies (see FRAME). Every object's box is recorded. Questions ask for a colour,
presence, a position (left of / right of / above / below) or a count. Targets are R1-style: a
short chain inside <think> </think> that lists, numbered, the objects the question is about by
shape and place (`1 circle top left , 2 circle bottom right .`, or `no circle .`), then the answer
inside <answer> </answer>. The colour is never written in the chain, so colour and presence
answers are read from the image when the answer is written; a count is the chain's last number.

The model is Qwen2_5_VLForConditionalGeneration built from a config (2 vision blocks, 4 decoder
layers, hidden 128), trained on the processor's inputs (input ids with the image pads expanded,
pixel values, image_grid_thw and mm_token_type_ids, so the decoder sees the 3-D M-RoPE positions
rhlens uses; without mm_token_type_ids it falls back to 1-D positions, and a model trained so
answers worse under rhlens). What makes it read the image: the first fifth of the steps are scenes
of one or two objects, mostly colour questions (a curriculum, --easy-share); the loss weights the
answer word (--answer-weight) and the chain's shape and place words (--word-weight), so they are
not drowned by template tokens; --shape-share adds training-only questions that ask which shape
is at a place (see SHAPE_SHARE); the image embeddings start at the text embeddings' scale; and the
rotary base is low (rope_theta 20, see TEXT) so that image tokens differ by place. Its tokenizer
is word-level (tokenizers library, lower-cased). The checkpoint is written in the flat Hub layout
with `"rhlens_demo_model": "synthetic-scenes demo model"` in config.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import sys
import time
from pathlib import Path

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
# The same float kernels on every x86-64 CPU with AVX2: MKL's conditional numerical reproducibility
# mode, ATen's vectorised kernels and oneDNN are held to AVX2. Without this the kernels follow the
# CPU (AVX-512, AMX), sums round differently, and over thousands of steps the weights drift apart:
# the same command trained on two CPUs gave perception 100% and 88.9% on the bench at budget 32.
# With it a run limited to AVX2 (MKL_ENABLE_INSTRUCTIONS=AVX2) writes the same bytes as one on an
# AVX-512/AMX CPU. Set before torch loads, and not overridable: the committed weights depend on it.
os.environ.update(MKL_CBWR="AVX2", ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
sys.path.insert(0, str(Path(__file__).resolve().parent))
# The checkpoint layout, template and writers are the fixtures' (one definition of each); importing
# them also sets the offline, single-threaded environment before torch loads.
import make_fixtures as fixtures  # noqa: E402
from make_fixtures import CLIP_MEAN, CLIP_STD, QWEN_SPECIAL_TOKENS, THINK_TOKENS  # noqa: E402
from make_fixtures import save_tensors, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402
from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "assets" / "demo-model"
MODEL_LABEL = "synthetic-scenes demo model"

# ---------------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------------

SIZE = 84
CELL = SIZE // 3  # one cell of the 3 x 3 layout is one merged visual token (28 px)
SHAPES = ["circle", "square", "triangle"]
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles"}
COLORS = {"red": (220, 40, 40), "green": (40, 170, 70), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
ROWS = ["top", "middle", "bottom"]
COLS = ["left", "centre", "right"]
RELATIONS = ["left of", "right of", "above", "below"]
KINDS = ["color", "presence", "position", "count"]
# Benchmark split of each kind (RH-Bench: perception = halu_data, reasoning = reason_data).
SPLIT_OF = {"color": "perception", "presence": "perception", "position": "perception", "count": "reasoning"}
MAX_OBJECTS = 5


def make_scene(rng: random.Random, n: int, unique_shapes: bool) -> list[dict]:
    """n objects in distinct cells; each {shape, color, cell, box=[x0,y0,x1,y1]} (pixels, x1/y1
    exclusive). An object lies inside its cell, so inside one visual token."""
    cells = rng.sample(range(9), n)
    shapes = rng.sample(SHAPES, n) if unique_shapes else [rng.choice(SHAPES) for _ in range(n)]
    objs = []
    for cell, shape in zip(cells, shapes):
        size = rng.randint(18, 24)
        x0 = (cell % 3) * CELL + rng.randint(2, CELL - size - 2)
        y0 = (cell // 3) * CELL + rng.randint(2, CELL - size - 2)
        objs.append({"shape": shape, "color": rng.choice(list(COLORS)), "cell": cell, "box": [x0, y0, x0 + size, y0 + size]})
    return sorted(objs, key=lambda o: o["cell"])  # reading order


# A grey frame around the picture. Without it the vision tower cannot tell where a token lies:
# its attention is relative (2-D rotary), and on a plain background every patch around an object
# looks the same, so "top left" would have nothing in the pixels to be read from. With the frame,
# each of the 8 outer cells shows a different piece of it (a corner or one side) and the centre
# none, so every visual token carries its place (a linear probe on the vision tower's output
# tokens names their cell 100% of the time with the frame, 8% without, after 2500 steps). Objects
# keep a 2 px margin inside their cell, clear of the frame.
FRAME = 2, (110, 110, 110)  # width (px), colour


def draw_scene(objs: list[dict]) -> Image.Image:
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.rectangle([0, 0, SIZE - 1, SIZE - 1], outline=FRAME[1], width=FRAME[0])
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        fill = COLORS[o["color"]]
        if o["shape"] == "circle":
            d.ellipse([x0, y0, x1 - 1, y1 - 1], fill=fill)
        elif o["shape"] == "square":
            d.rectangle([x0, y0, x1 - 1, y1 - 1], fill=fill)
        else:
            d.polygon([((x0 + x1 - 1) / 2, y0), (x1 - 1, y1 - 1), (x0, y1 - 1)], fill=fill)
    return img


def place(o: dict) -> str:
    return f"{ROWS[o['cell'] // 3]} {COLS[o['cell'] % 3]}"


def chain(listed: list[dict], shape: str | None) -> str:
    """The thinking: the objects the question is about, numbered, by shape and place (colours are
    never named, so colour and presence answers are read from the image). With none: `no circle .`"""
    if not listed:
        return f"no {shape} ."
    return " , ".join(f"{i} {o['shape']} {place(o)}" for i, o in enumerate(listed, start=1)) + " ."


def union(boxes: list[list[int]]) -> list[int]:
    return [min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]


def relation_holds(a: dict, b: dict, rel: str) -> bool:
    ra, ca, rb, cb = a["cell"] // 3, a["cell"] % 3, b["cell"] // 3, b["cell"] % 3
    return {"left of": ca < cb, "right of": ca > cb, "above": ra < rb, "below": ra > rb}[rel]


def make_item(rng: random.Random, kind: str, easy: bool = False) -> dict:
    """One scene and question of the given kind: {kind, objects, question, answer, bbox, listed,
    shape}. listed: the objects the chain names, in its order; shape: the asked shape. bbox is the
    asked object's box (for counts: the box around the counted objects, None when zero).
    easy: scenes of one or two objects (colour, presence, count), the curriculum's first stage."""
    if easy and kind != "position":
        objs = make_scene(rng, rng.randint(1, 2), unique_shapes=kind == "color")
    elif kind in ("color", "position"):
        objs = make_scene(rng, rng.randint(2, 3), unique_shapes=True)
    else:
        objs = make_scene(rng, rng.randint(1, MAX_OBJECTS), unique_shapes=False)
    if kind == "shape":  # training only (see SHAPE_SHARE)
        o = rng.choice(objs)
        return dict(kind=kind, objects=objs, question=f"which object is {place(o)} ?", answer=o["shape"],
                    bbox=o["box"], listed=[o], shape=None)
    if kind == "color":
        o = rng.choice(objs)
        return dict(kind=kind, objects=objs, question=f"what color is the {o['shape']} ?", answer=o["color"],
                    bbox=o["box"], listed=[o], shape=o["shape"])
    if kind == "presence":
        shape, color = rng.choice(SHAPES), rng.choice(list(COLORS))
        if rng.random() < 0.5:  # ask for an object that is there half of the time
            o = rng.choice(objs)
            shape, color = o["shape"], o["color"]
        hits = [o for o in objs if o["shape"] == shape and o["color"] == color]
        same = [o for o in objs if o["shape"] == shape]
        bbox = hits[0]["box"] if hits else (same[0]["box"] if same else None)
        return dict(kind=kind, objects=objs, question=f"is there a {color} {shape} ?", answer="yes" if hits else "no",
                    bbox=bbox, listed=same, shape=shape)
    if kind == "position":
        rel = rng.choice(RELATIONS)
        horizontal = rel in ("left of", "right of")
        pairs = [(a, b) for a in objs for b in objs if a is not b
                 and ((a["cell"] % 3 != b["cell"] % 3) if horizontal else (a["cell"] // 3 != b["cell"] // 3))]
        if not pairs:
            return make_item(rng, kind, easy)
        a, b = rng.choice(pairs)
        yes = relation_holds(a, b, rel)
        q = f"is the {a['shape']} {rel} the {b['shape']} ?"
        return dict(kind=kind, objects=objs, question=q, answer="yes" if yes else "no", bbox=a["box"],
                    listed=[a, b], shape=a["shape"])
    # count: one shape, or all shapes
    if rng.random() < 0.7:
        shape = rng.choice(SHAPES)
        hits = [o for o in objs if o["shape"] == shape]
        q = f"how many {PLURAL[shape]} are there ?"
    else:
        shape, hits = "shape", objs
        q = "how many shapes are there ?"
    bbox = union([o["box"] for o in hits]) if hits else None
    return dict(kind=kind, objects=objs, question=q, answer=str(len(hits)), bbox=bbox, listed=hits, shape=shape)


def target_text(item: dict) -> str:
    if item["kind"] == "shape":  # the chain names the place only: the shape is the answer
        return f"<think> 1 {place(item['listed'][0])} . </think><answer> {item['answer']} </answer>"
    return f"<think> {chain(item['listed'], item['shape'])} </think><answer> {item['answer']} </answer>"


TRAIN_MIX = [("color", 0.25), ("presence", 0.3), ("position", 0.25), ("count", 0.2)]
# The curriculum's first stage: scenes of one or two objects, mostly colour questions. There the
# only way to lower the loss is to read the image, so the decoder learns to attend to the visual
# tokens before the full mix (whose chains a text-only model can half-guess) arrives.
EASY_MIX = [("color", 0.5), ("presence", 0.25), ("count", 0.25)]
EASY_SHARE = 0.2  # of the steps
# A training-only question, "which object is top left ?", answered with the shape there (the chain
# names the place). Without it the decoder never learned to read shapes off the image tokens: in
# chains that list every object it named the right shape a third of the time (chance), and it
# could not find "the circle" among the image tokens, so it wrote another object's place (colour
# questions: the first row right 55% of the time, teacher-forced). The vision tokens did hold the
# shape (a linear probe: 93%), but only asking for it by place makes the shape a feature the
# decoder reads and the vision tower keeps. With a share of 0.2 (a 2500-step run's snapshot at
# step 2000, the question then worded "what shape is at the top left ?"): first row right 85%,
# listed shapes 57%; without: 55% and 34%. The share is taken from every other kind alike (at 0
# the stream is the one drawn before the question existed).
SHAPE_SHARE = 0.2


def with_shape_questions(mix: list[tuple[str, float]], share: float) -> list[tuple[str, float]]:
    if share <= 0:
        return mix  # unchanged, so a run without them draws the same stream as before
    return [(kind, p * (1 - share)) for kind, p in mix] + [("shape", share)]


def draw_item(rng: random.Random, step: int, steps: int, easy_share: float = EASY_SHARE,
              shape_share: float = SHAPE_SHARE) -> dict:
    """The training stream's item at a step (scripts/make_demo_bench.py replays it)."""
    if step < easy_share * steps:
        return make_item(rng, sample_kind(rng, with_shape_questions(EASY_MIX, shape_share)), easy=True)
    return make_item(rng, sample_kind(rng, with_shape_questions(TRAIN_MIX, shape_share)))


def sample_kind(rng: random.Random, mix: list[tuple[str, float]]) -> str:
    r, acc = rng.random(), 0.0
    for kind, p in mix:
        acc += p
        if r < acc:
            return kind
    return mix[-1][0]


# ---------------------------------------------------------------------------------------------
# Tokenizer, template, processor files
# ---------------------------------------------------------------------------------------------

SYSTEM_PROMPT = "Think inside <think> </think>, then answer inside <answer> </answer>."
UNK = "[unk]"
# Words outside the training data that rhlens's defaults and README examples use (the "Wait"
# continuation, R1 prompt presets, the demo prompt), so they tokenize to themselves; the model
# never saw them in training.
EXTRA_WORDS = (
    "wait but i ' m not sure if missing anything the picture image think step by step then answer "
    "you first about reasoning process as an internal monologue and provide final must be enclosed "
    "within tags in let ' s more so is color colour what where which does contain user assistant "
    "system describe trees how many are there shapes count objects object 0 1 2 3 4 5 6 7 8 9 : ! "
    "yes no"
)


def vocabulary() -> list[str]:
    words = set(EXTRA_WORDS.split())
    words |= set(SHAPES) | set(PLURAL.values()) | set(COLORS) | set(ROWS) | set(COLS)
    words |= {w for rel in RELATIONS for w in rel.split()}
    words |= set("what color is the there a how many are shapes , . ? first think inside then answer".split())
    words |= set("<>/_|".split())
    return [UNK] + sorted(words)


def build_tokenizer() -> Tokenizer:
    vocab = {w: i for i, w in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in QWEN_SPECIAL_TOKENS])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return tok


def chat_template() -> str:
    """The Qwen2.5-VL chat template with the R1-style default system prompt."""
    return fixtures.chat_template(SYSTEM_PROMPT)


def rendered_prompt(question: str) -> str:
    """What the template renders for one image followed by the question."""
    return (
        f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
        f"<|vision_start|><|image_pad|><|vision_end|>{question}<|im_end|>\n<|im_start|>assistant\n"
    )


MIN_PIXELS = 56 * 56
MAX_PIXELS = SIZE * SIZE  # larger images are scaled down to about 9 visual tokens


def write_processor_files(out_dir: Path) -> None:
    """The fixtures' preprocessor_config.json with this model's image-size limits."""
    fixtures.write_processor_files(out_dir)
    path = out_dir / "preprocessor_config.json"
    config = json.loads(path.read_text())
    config.update(min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, size={"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS})
    write_json(path, config)


def pixel_values(img: Image.Image) -> torch.Tensor:
    """Qwen2-VL patches of a SIZE x SIZE image (no resize needed: it is a multiple of 28):
    [(SIZE/14)^2, 3*2*14*14] in the processor's merge-window order."""
    arr = np.asarray(img, dtype=np.float32) / 255.0
    arr = (arr - np.array(CLIP_MEAN, dtype=np.float32)) / np.array(CLIP_STD, dtype=np.float32)
    chw = np.transpose(arr, (2, 0, 1))[None].repeat(2, axis=0)  # [t=2, c, h, w]
    gh = gw = SIZE // 14
    x = chw.reshape(1, 2, 3, gh // 2, 2, 14, gw // 2, 2, 14)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(np.ascontiguousarray(x.reshape(gh * gw, 3 * 2 * 14 * 14)))


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------

# Rotary positions: head_dim 32 gives 16 frequencies, split t / h / w as mrope lists, fastest
# first. With Qwen2.5-VL's theta 1e6 the row and column sections rotate by 0.03 rad or less per
# token, so the decoder could hardly tell the image tokens apart by place (a run with it never
# learned places); theta 20 and [2, 7, 7] give rows 0.7-0.2 rad and columns 0.2-0.06 rad per token.
TEXT = dict(hidden=128, layers=4, heads=4, kv_heads=2, intermediate=384, mrope=[2, 7, 7], rope_theta=20.0)
VISION = dict(depth=2, hidden=128, heads=2, intermediate=256, fullatt=[0, 1], window=112, out=128)
# Untrained, the image embeddings are ~4x the text embeddings' norm (the earlier run's had grown to
# ~70x): the merger's last layer starts scaled down to the text scale. --vision-lr-scale can slow
# the vision tower; the committed run keeps it at 1.
MERGER_INIT_SCALE = 0.25
MAX_POSITIONS = 32768


def special_ids(tok: Tokenizer) -> dict[str, int]:
    return {t: tok.token_to_id(t) for t in QWEN_SPECIAL_TOKENS + THINK_TOKENS}


SPEC = dict(text=TEXT, vision=VISION, tied=True, storage_dtype=torch.float32)


def make_model(ids: dict[str, int], vocab_size: int):
    from transformers import Qwen2_5_VLForConditionalGeneration

    cfg = fixtures.make_config(SPEC, ids, vocab_size)
    cfg._attn_implementation = "sdpa"
    model = Qwen2_5_VLForConditionalGeneration(cfg)
    with torch.no_grad():  # image embeddings start at the text embeddings' scale (see MERGER_INIT_SCALE)
        model.model.visual.merger.mlp[2].weight.mul_(MERGER_INIT_SCALE)
    return model


def flat_config_json(ids: dict[str, int], vocab_size: int) -> dict:
    config = fixtures.flat_config_json(SPEC, ids, vocab_size)
    del config["rhlens_random_weights"]
    config["rhlens_demo_model"] = MODEL_LABEL
    return config


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------

VISUAL_TOKENS = (SIZE // 28) ** 2
# The committed checkpoint's run (scripts/make_demo_bench.py replays its data stream to keep the
# benchmark out of it).
DEFAULT_STEPS, DEFAULT_BATCH, DEFAULT_SEED = 9000, 32, 1616


def load_weights(model, ckpt: Path) -> None:
    """Weights written by write_checkpoint (Hub names) back into the model, bit for bit."""
    from safetensors.torch import load_file

    state = {}
    for name, t in load_file(str(ckpt / "model.safetensors")).items():
        if name.startswith("visual."):
            state["model." + name] = t
        elif name.startswith("model."):
            state["model.language_model." + name[len("model.") :]] = t
        else:
            state[name] = t
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [m for m in missing if m != "lm_head.weight"]:
        raise SystemExit(f"{ckpt}: weights do not fit the model ({missing}, {unexpected})")


def encode_item(tok: Tokenizer, item: dict) -> tuple[list[int], list[int]]:
    prompt = rendered_prompt(item["question"]).replace("<|image_pad|>", "<|image_pad|>" * VISUAL_TOKENS)
    p = tok.encode(prompt, add_special_tokens=False).ids
    t = tok.encode(target_text(item) + "<|im_end|>", add_special_tokens=False).ids
    return p + t, [-100] * len(p) + t


def make_batch(tok, rng: random.Random, batch: int, pad_id: int, step: int, steps: int,
               easy_share: float = EASY_SHARE, shape_share: float = SHAPE_SHARE):
    items = [draw_item(rng, step, steps, easy_share, shape_share) for _ in range(batch)]
    seqs = [encode_item(tok, it) for it in items]
    n = max(len(s) for s, _ in seqs)
    ids = torch.full((batch, n), pad_id, dtype=torch.long)
    labels = torch.full((batch, n), -100, dtype=torch.long)
    mask = torch.zeros((batch, n), dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    pv = torch.cat([pixel_values(draw_scene(it["objects"])) for it in items])
    grid = torch.tensor([[1, SIZE // 14, SIZE // 14]] * batch)
    return dict(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pv, image_grid_thw=grid,
                mm_token_type_ids=image_token_types(tok, ids))


def image_token_types(tok: Tokenizer, ids: torch.Tensor) -> torch.Tensor:
    """1 on image pads, 0 elsewhere (the processor's mm_token_type_ids): without it the model
    falls back to 1-D positions, not the 3-D M-RoPE positions rhlens gives the image tokens."""
    return (ids == tok.token_to_id("<|image_pad|>")).long()


def lr_at(step: int, steps: int, peak: float) -> float:
    warm = max(1, steps // 20)
    if step < warm:
        return peak * (step + 1) / warm
    return peak * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def grounded_word_ids(tok: Tokenizer) -> torch.Tensor:
    """The chain's shape and place words: the tokens that name what the image shows."""
    return torch.tensor([tok.token_to_id(w) for w in SHAPES + ROWS + COLS])


def weighted_loss(logits: torch.Tensor, labels: torch.Tensor, answer_id: int, grounded: torch.Tensor,
                  answer_weight: float, word_weight: float) -> torch.Tensor:
    """Next-token cross-entropy with the answer word weighted answer_weight times and the chain's
    shape and place words word_weight times. Unweighted, the loss is mostly template, numbers and
    commas: the model learned those and named the first object of the image in reading order for
    every question (it never copied the asked shape from the question), and it answered every
    colour question with one colour."""
    pred, gold = logits[:, :-1].float(), labels[:, 1:]
    weight = (gold != -100).float()
    weight[:, 1:] += (answer_weight - 1) * (gold[:, :-1] == answer_id).float()  # the word after <answer>
    weight += (word_weight - 1) * torch.isin(gold, grounded).float()
    per_token = torch.nn.functional.cross_entropy(pred.transpose(1, 2), gold.clamp(min=0), reduction="none")
    return (per_token * weight).sum() / weight.sum()


def answer_hits(logits: torch.Tensor, labels: torch.Tensor, answer_id: int) -> float:
    """Share of the batch whose answer word (the label after <answer>) is the top prediction
    before the step learns from it: a held-out accuracy, as every batch is fresh."""
    ok, n = 0, 0
    for row, lab in zip(logits, labels):
        at = (lab == answer_id).nonzero()
        if len(at):
            i = at[0].item() + 1  # the answer word's label position; logits at i - 1 predict it
            ok += int(row[i - 1].argmax().item() == lab[i].item())
            n += 1
    return ok / max(1, n)


def train(model, tok, steps: int, batch: int, seed: int, lr: float, log, snapshot=None,
          vision_lr_scale: float = 1.0, answer_weight: float = 8.0, word_weight: float = 4.0,
          easy_share: float = EASY_SHARE, shape_share: float = SHAPE_SHARE) -> None:
    rng = random.Random(seed)
    pad = tok.token_to_id("<|endoftext|>")
    vision = [p for n, p in model.named_parameters() if ".visual." in f".{n}"]
    others = [p for n, p in model.named_parameters() if ".visual." not in f".{n}"]
    opt = torch.optim.AdamW([{"params": others, "scale": 1.0}, {"params": vision, "scale": vision_lr_scale}],
                            lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    model.train()
    t0, ema, hits = time.time(), None, None
    answer_id, grounded = tok.token_to_id("<answer>"), grounded_word_ids(tok)
    for step in range(steps):
        b = make_batch(tok, rng, batch, pad, step, steps, easy_share, shape_share)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr) * g["scale"]
        labels = b.pop("labels")
        out = model(**b)
        loss = weighted_loss(out.logits, labels, answer_id, grounded, answer_weight, word_weight)
        b["labels"] = labels
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        ema = loss.item() if ema is None else 0.95 * ema + 0.05 * loss.item()
        hit = answer_hits(out.logits.detach(), labels, answer_id)
        hits = hit if hits is None else 0.95 * hits + 0.05 * hit
        if step % 25 == 0 or step == steps - 1:
            el = time.time() - t0
            log(f"step {step + 1}/{steps} loss {loss.item():.4f} (ema {ema:.4f}) answer {hits:.2f} lr {lr_at(step, steps, lr):.2e} "
                f"{el:.0f}s elapsed, ~{el / (step + 1) * (steps - step - 1):.0f}s left")
        if snapshot and (step + 1) % 500 == 0 and step + 1 < steps:
            snapshot(step + 1)  # a partial checkpoint to look at while training goes on
            model.train()
    model.eval()


# ---------------------------------------------------------------------------------------------
# Quick greedy check in Python (rhlens measures the committed checkpoint itself)
# ---------------------------------------------------------------------------------------------


def greedy_answer(model, tok, item: dict, max_new: int = 40) -> str:
    ids, _ = encode_item(tok, item)
    prompt = rendered_prompt(item["question"]).replace("<|image_pad|>", "<|image_pad|>" * VISUAL_TOKENS)
    p = tok.encode(prompt, add_special_tokens=False).ids
    with torch.no_grad():
        out = model.generate(
            input_ids=torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
            mm_token_type_ids=image_token_types(tok, torch.tensor([p])),
            pixel_values=pixel_values(draw_scene(item["objects"])),
            image_grid_thw=torch.tensor([[1, SIZE // 14, SIZE // 14]]),
            max_new_tokens=max_new, do_sample=False, eos_token_id=tok.token_to_id("<|im_end|>"),
            pad_token_id=tok.token_to_id("<|endoftext|>"),
        )
    return tok.decode(out[0, len(p):].tolist(), skip_special_tokens=True)


def quick_eval(model, tok, n: int, seed: int, log) -> dict:
    rng = random.Random(seed)
    acc = {}
    for kind in KINDS if n > 0 else []:
        ok = 0
        for _ in range(n):
            item = make_item(rng, kind)
            text = greedy_answer(model, tok, item)
            got = text.split("<answer>")[-1].split("</answer>")[0].strip()
            ok += got == item["answer"]
        acc[kind] = ok / n
        log(f"  {kind}: {ok}/{n}  e.g. {item['question']!r} -> {text!r} (gold {item['answer']})")
    return acc


# ---------------------------------------------------------------------------------------------
# Writing the checkpoint
# ---------------------------------------------------------------------------------------------


def write_checkpoint(model, tok: Tokenizer, out_dir: Path, facts: dict) -> None:
    import transformers

    ids = special_ids(tok)
    vocab_size = model.config.text_config.vocab_size
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    write_json(out_dir / "config.json", flat_config_json(ids, vocab_size))
    save_tensors(dict(sorted(fixtures.hub_state_dict(model).items())), out_dir / "model.safetensors", {"format": "pt"})
    write_json(out_dir / "generation_config.json", {
        "bos_token_id": ids["<|endoftext|>"], "do_sample": False,
        "eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"],
        "transformers_version": transformers.__version__,
    })
    tok.save(str(out_dir / "tokenizer.json"), pretty=True)
    added = {
        str(i): {"content": t.content, "lstrip": False, "normalized": False, "rstrip": False,
                 "single_word": False, "special": t.special}
        for i, t in sorted(tok.get_added_tokens_decoder().items())
    }
    write_json(out_dir / "tokenizer_config.json", {
        "tokenizer_class": "PreTrainedTokenizerFast", "added_tokens_decoder": added, "bos_token": None,
        "clean_up_tokenization_spaces": False, "eos_token": "<|im_end|>", "model_max_length": 32768,
        "pad_token": "<|endoftext|>", "unk_token": UNK,
    })
    write_processor_files(out_dir)
    (out_dir / "chat_template.jinja").write_text(chat_template())
    write_json(out_dir / "training.json", facts)


def settings_args(argv: list[str]) -> list[str]:
    """The command line without where it wrote (no machine paths in the checkpoint)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
        elif a == "--out":
            skip = True
        elif not a.startswith("--out="):
            out.append(a)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    ap.add_argument("--batch", type=int, default=DEFAULT_BATCH)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vision-lr-scale", type=float, default=1.0, help="the vision tower's learning rate / --lr")
    ap.add_argument("--answer-weight", type=float, default=8.0, help="loss weight of the answer word")
    ap.add_argument("--word-weight", type=float, default=4.0, help="loss weight of the chain's shape and place words")
    ap.add_argument("--easy-share", type=float, default=EASY_SHARE,
                    help="share of the steps (from the start) that show one or two objects")
    ap.add_argument("--shape-share", type=float, default=SHAPE_SHARE,
                    help="share of the questions that ask which shape is at a place (training only)")
    ap.add_argument("--seed", type=int, default=DEFAULT_SEED)
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (fixed: results depend on it)")
    ap.add_argument("--eval", type=int, default=20, help="held-out questions per kind for the quick check")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    import transformers

    transformers.utils.logging.disable_progress_bar()

    def log(msg: str) -> None:
        print(msg, flush=True)

    tok = build_tokenizer()
    vocab_size = (tok.get_vocab_size(with_added_tokens=True) + 63) // 64 * 64
    model = make_model(special_ids(tok), vocab_size)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"torch {torch.__version__}, transformers {transformers.__version__}, threads {args.threads}; "
        f"vocab {tok.get_vocab_size(with_added_tokens=True)} (rows {vocab_size}), {n_params} parameters")
    t0 = time.time()

    def snapshot(step: int) -> None:
        model.eval()
        write_checkpoint(model, tok, args.out.with_name(args.out.name + "-partial"), {"label": MODEL_LABEL, "partial_steps": step})

    train(model, tok, args.steps, args.batch, args.seed, args.lr, log, snapshot, args.vision_lr_scale,
          args.answer_weight, args.word_weight, args.easy_share, args.shape_share)
    minutes = (time.time() - t0) / 60
    log(f"trained {args.steps} steps in {minutes:.1f} min; quick check on held-out scenes:")
    acc = quick_eval(model, tok, args.eval, seed=args.seed + 1_000_003, log=log)
    facts = {
        "label": MODEL_LABEL,
        "command": " ".join(["scripts/train_demo.py"] + settings_args(sys.argv[1:])),
        "steps": args.steps, "batch": args.batch, "lr": args.lr, "vision_lr_scale": args.vision_lr_scale,
        "answer_weight": args.answer_weight, "word_weight": args.word_weight,
        "easy_share": args.easy_share, "shape_share": args.shape_share, "seed": args.seed, "threads": args.threads,
        "parameters": n_params, "train_minutes": round(minutes, 1),
        "quick_check_accuracy": {k: round(v, 3) for k, v in acc.items()},
        "torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
    }
    write_checkpoint(model, tok, args.out, facts)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()

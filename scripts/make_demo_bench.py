#!/usr/bin/env python3
"""Draw the demo bench in assets/bench/ (RH-Bench layout) from the demo model's scene generator.

    .venv/bin/python scripts/make_demo_bench.py [OUT_DIR]

Scenes and questions come from scripts/train_demo.py's generator with a seed of their own; any
(scene, question) pair that also occurs in the training stream is skipped, so none was seen in
training. Perception (halu_data.json + per_images/): colour, presence and position questions.
Reasoning (reason_data.json + reason_images/): counting, over the objects the chain lists.
Every record carries its gold answer, `category` (color, presence, position, count), `bbox`
([x0, y0, x1, y1] in original pixels, x1/y1 exclusive: the asked object; for a presence question
answered "no", a same-shaped object when there is one; for a count, the box around the counted
objects; absent when there is none) and `objects` (every shape with its colour and box).
"""

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_demo as td  # noqa: E402

BENCH_SEED = 20261202
PER_KIND = {"color": 24, "presence": 24, "position": 24, "count": 48}


def training_keys(batch: int) -> set:
    """Every (scene, question) the default training run draws, replayed from its seed without
    drawing."""
    keys = set()
    rng = random.Random(td.DEFAULT_SEED)
    for step in range(td.DEFAULT_STEPS):
        for _ in range(batch):
            keys.add(key_of(td.draw_item(rng, step, td.DEFAULT_STEPS)))
    return keys


def key_of(item: dict) -> str:
    return json.dumps([item["objects"], item["question"]], sort_keys=True)


def natural(question: str) -> str:
    """The generator's lower-case, space-separated question as a person writes it."""
    q = question.replace(" ?", "?")
    return q[0].upper() + q[1:]


def record(i: int, item: dict, image: str) -> dict:
    rec = {
        "id": i,
        "question": natural(item["question"]),
        "image": image,
        "answer": item["answer"],
        "question_type": "free_form",
        "category": item["kind"],
    }
    if item["bbox"] is not None:
        rec["bbox"] = item["bbox"]
    rec["objects"] = [{"shape": o["shape"], "color": o["color"], "bbox": o["box"]} for o in item["objects"]]
    return rec


def main() -> None:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else td.ROOT / "assets" / "bench"
    seen = training_keys(td.DEFAULT_BATCH)
    rng = random.Random(BENCH_SEED)
    items = {"perception": [], "reasoning": []}
    for kind, n in PER_KIND.items():
        got = 0
        while got < n:
            item = td.make_item(rng, kind)
            if key_of(item) in seen:
                continue
            items[td.SPLIT_OF[kind]].append(item)
            got += 1
    layout = {"perception": ("halu_data.json", "per_images", "p"), "reasoning": ("reason_data.json", "reason_images", "r")}
    for split, (data_file, image_dir, prefix) in layout.items():
        (out / image_dir).mkdir(parents=True, exist_ok=True)
        recs = []
        for i, item in enumerate(items[split], start=1):
            name = f"{prefix}{i:03d}.png"
            img = td.draw_scene(item["objects"])
            img.save(out / image_dir / name, optimize=True)
            recs.append(record(i, item, f"{image_dir}/{name}"))
        (out / data_file).write_text("[\n" + ",\n".join(json.dumps(r) for r in recs) + "\n]\n")
    counts = {k: sum(1 for s in items.values() for it in s if it["kind"] == k) for k in PER_KIND}
    print(f"wrote {out}: {counts}")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Draw the small RH-Bench-layout fixture in tests/fixtures/bench/ that the bench tests read.

    python scripts/fixtures_bench.py [OUT_DIR]

It keeps the quirks of the released RH-Bench records (choices inside the question, `options`
lists, a gold answer given as the option's value, `free_from`), which the demo bench in
assets/bench/ (scripts/make_demo_bench.py) does not need.

Writes reason_data.json + reason_images/ (arithmetic on counted shapes) and halu_data.json +
per_images/ (counting, yes/no and multiple-choice perception questions). Scenes are fixed
below; every gold answer is computed from the shapes actually drawn. Needs Pillow.
"""

import json
import sys
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageDraw

SIZE = 192
CELL = SIZE // 3
COLORS = {"red": (220, 40, 40), "blue": (40, 80, 220), "green": (40, 170, 70)}


def draw(scene, path):
    """scene: list of (shape, color, cell index 0-8)."""
    img = Image.new("RGB", (SIZE, SIZE), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for shape, color, cell in scene:
        x0, y0 = (cell % 3) * CELL + 12, (cell // 3) * CELL + 12
        x1, y1 = x0 + CELL - 24, y0 + CELL - 24
        fill = COLORS[color]
        if shape == "circle":
            d.ellipse([x0, y0, x1, y1], fill=fill)
        elif shape == "square":
            d.rectangle([x0, y0, x1, y1], fill=fill)
        elif shape == "triangle":
            d.polygon([((x0 + x1) // 2, y0), (x1, y1), (x0, y1)], fill=fill)
        else:
            raise ValueError(shape)
    # A 4-colour palette keeps each PNG around a kilobyte.
    img.quantize(colors=4, dither=Image.Dither.NONE).save(path, optimize=True)


def count(scene, shape=None, color=None):
    return sum(
        1
        for s, c, _ in scene
        if (shape is None or s == shape) and (color is None or c == color)
    )


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


# Scenes: (shape, color, cell).
R = {
    "r01": [("circle", "red", 0), ("circle", "red", 4), ("square", "blue", 2), ("square", "blue", 6), ("square", "blue", 8)],
    "r02": [("circle", "green", 0), ("circle", "red", 1), ("circle", "blue", 3), ("circle", "red", 5), ("square", "blue", 7)],
    "r03": [("circle", "blue", 1), ("circle", "blue", 3), ("square", "red", 5), ("square", "green", 7)],
    "r04": [("triangle", "green", 0), ("triangle", "red", 4), ("triangle", "blue", 8)],
    "r05": [("circle", "red", 0), ("square", "red", 2), ("circle", "blue", 6), ("triangle", "green", 8)],
    "r06": [("square", "green", 0), ("square", "green", 1), ("triangle", "red", 4), ("circle", "blue", 7), ("circle", "blue", 8), ("square", "red", 3)],
    "r07": [("circle", "red", 2), ("circle", "red", 4), ("circle", "red", 6)],
}
P = {
    "p01": [("circle", "red", 0), ("circle", "red", 2), ("circle", "red", 7), ("square", "blue", 4)],
    "p02": [("square", "blue", 1), ("triangle", "green", 6), ("circle", "red", 8)],
    "p03": [("circle", "blue", 0), ("square", "red", 4), ("circle", "green", 8)],
    "p04": [("square", "green", 3), ("circle", "red", 1), ("circle", "red", 7)],
    "p05": [("triangle", "blue", 0), ("triangle", "blue", 2), ("triangle", "red", 4), ("circle", "green", 6)],
    "p06": [("circle", "green", 0), ("square", "blue", 2), ("triangle", "red", 6), ("circle", "blue", 8), ("square", "red", 4)],
    "p07": [("square", "red", 0), ("square", "red", 8)],
}


def choices_block(values, style="lines"):
    letters = "ABCDEFGH"
    if style == "lines":
        return "Choices:\n" + "\n".join(f"({letters[i]}) {v}" for i, v in enumerate(values))
    return "Choices: " + " ".join(f"{letters[i]}. {v}" for i, v in enumerate(values))


def letter_of(values, gold):
    return "ABCDEFGH"[values.index(gold)]


def reasoning_records():
    s = R
    recs = []
    a = count(s["r01"], "circle", "red") + count(s["r01"], "square", "blue")
    recs.append(("r01", "What is the number of red circles plus the number of blue squares?", str(a), "free_form", None))

    diff = count(s["r02"], "circle") - count(s["r02"], "square")
    vals = [diff - 1, diff, diff + 1, diff + 2]
    q = "How many more circles than squares are there?\n" + choices_block(vals)
    recs.append(("r02", q, letter_of(vals, diff), "multi_choice", None))

    total = 2 * count(s["r03"], "circle") + 3 * count(s["r03"], "square")
    recs.append(("r03", "Each circle is worth 2 points and each square is worth 3 points. What is the total number of points in the image?", str(total), "free_form", None))

    sides = 3 * count(s["r04"], "triangle")
    vals = [sides - 6, sides - 3, sides, sides + 3]
    q = "Each triangle has 3 sides. How many sides do all the triangles in the image have in total? " + choices_block(vals, "inline")
    recs.append(("r04", q, letter_of(vals, sides), "multi_choice", None))

    frac = Fraction(count(s["r05"], color="red"), len(s["r05"]))
    recs.append(("r05", "What fraction of the shapes are red? Answer with a fraction.", f"{frac.numerator}/{frac.denominator}", "free_form", None))

    corners = 4 * count(s["r06"], "square") + 3 * count(s["r06"], "triangle")
    vals = [corners - 4, corners, corners + 3, corners + 4]
    q = "Squares have 4 corners, triangles have 3 and circles have none. How many corners are there in total?\n" + choices_block(vals)
    # Gold given as the option's value rather than its letter, as some RH-Bench records do.
    recs.append(("r06", q, str(corners), "multi_choice", None))

    n = count(s["r07"], "circle", "red")
    recs.append(("r07", "If every red circle were removed and replaced by two blue squares, how many blue squares would there be?", str(2 * n), "free_form", None))
    return recs


def perception_records():
    s = P
    recs = []
    n = count(s["p01"], "circle", "red")
    recs.append(("p01", "How many red circles are there?", str(n), "free_form", None))

    yes = count(s["p02"], "square", "blue") > 0
    recs.append(("p02", "Is there a blue square in the image?", "Yes" if yes else "No", "free_form", None))

    yes = count(s["p03"], "triangle", "green") > 0
    # The released RH-Bench misspells free_form as free_from in some records.
    recs.append(("p03", "Is there a green triangle in the image?", "Yes" if yes else "No", "free_from", None))

    color = next(c for sh, c, _ in s["p04"] if sh == "square")
    opts = ["red", "blue", "green", "yellow"]
    recs.append(("p04", "What color is the square?", letter_of(opts, color), "multi_choice", opts))

    kinds = ["circle", "square", "triangle"]
    most = max(kinds, key=lambda k: count(s["p05"], k))
    recs.append(("p05", "Which shape appears most often in the image?", letter_of(kinds, most), "multi_choice", kinds))

    n = len(s["p06"])
    recs.append(("p06", "How many shapes are in the image in total?", str(n), "free_form", None))

    n = count(s["p07"], "square", "red")
    desc = f"{plural(n, 'red square')}"
    recs.append(("p07", "Describe the shapes in the image.", f"There are {desc} in opposite corners.", "free_form", None))
    return recs


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "bench"
    (out / "reason_images").mkdir(parents=True, exist_ok=True)
    (out / "per_images").mkdir(parents=True, exist_ok=True)

    reason = []
    for i, (key, q, ans, qt, _) in enumerate(reasoning_records()):
        draw(R[key], out / "reason_images" / f"{key}.png")
        # Image given by file name only; loaders look in reason_images/.
        reason.append({"id": i + 1, "question": q, "image": f"{key}.png", "answer": ans, "question_type": qt})
    halu = []
    for i, (key, q, ans, qt, opts) in enumerate(perception_records()):
        draw(P[key], out / "per_images" / f"{key}.png")
        rec = {"id": i + 1, "question": q, "image": f"per_images/{key}.png", "answer": ans, "question_type": qt}
        if opts:
            rec["options"] = opts
        halu.append(rec)
    (out / "reason_data.json").write_text(json.dumps(reason, indent=2) + "\n")
    (out / "halu_data.json").write_text(json.dumps(halu, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(reason)} reasoning + {len(halu)} perception samples to {out} ({total} bytes)")


if __name__ == "__main__":
    main()

"""Write seeded random resize cases and Pillow's results for them into OUT_DIR
(tests/resize_wide.rs runs this into a temporary folder at test time).

usage: .venv/bin/python scripts/resize_cases.py SEED N OUT_DIR

Each case is a small RGB image (uniform noise, gradients with noise, hard 0/255 edges, or one
flat colour; mostly 1..64 pixels a side, some tiny, some larger, some with extreme aspect
ratios) and a target size (down- and upscaling, 1-pixel and unchanged sides, whole-image
copies), resized by Pillow's `Image.resize` with one of the convolution filters, the filters
taking turns. Output:

- `cases.bin`: for each case, its source RGB bytes then Pillow's resized RGB bytes (row-major);
- `index.json`: `{"pillow": version, "seed": SEED, "cases": [[w, h, new_w, new_h, filter_code,
  source_offset, expected_offset], ...]}` with byte offsets into `cases.bin`.
"""

import json
import sys
from pathlib import Path

import numpy as np
import PIL
from PIL import Image

# Pillow's codes of the convolution filters (NEAREST, 0, is not one).
FILTERS = [
    Image.Resampling.LANCZOS,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.BOX,
    Image.Resampling.HAMMING,
]


def source_size(rng: np.random.Generator) -> tuple[int, int]:
    kind = rng.random()
    if kind < 0.60:
        return int(rng.integers(1, 65)), int(rng.integers(1, 65))
    if kind < 0.75:
        return int(rng.integers(1, 9)), int(rng.integers(1, 9))
    if kind < 0.95:
        # extreme aspect ratio: a thin strip, either way round
        thin, long = int(rng.integers(1, 4)), int(rng.integers(32, 301))
        return (thin, long) if rng.random() < 0.5 else (long, thin)
    return int(rng.integers(65, 129)), int(rng.integers(65, 129))


def target_side(rng: np.random.Generator, side: int) -> int:
    kind = rng.random()
    if kind < 0.10:
        return 1
    if kind < 0.20:
        return side
    if kind < 0.60:
        return int(rng.integers(1, side + 1))
    # upscaling, at most 8x and mostly to 96 pixels or less (strips grow a little)
    return int(rng.integers(side, max(min(8 * side, 96), side + 16) + 1))


def picture(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    kind = rng.random()
    if kind < 0.35:
        return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    if kind < 0.70:
        y, x = np.mgrid[0:h, 0:w].astype(np.float64)
        dx, dy = rng.uniform(-12, 12, 3), rng.uniform(-12, 12, 3)
        v = rng.uniform(0, 255, 3) + x[..., None] * dx + y[..., None] * dy
        v += rng.normal(0, rng.uniform(0, 20), (h, w, 3))
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)
    if kind < 0.90:
        # hard 0/255 edges: the sharper filters overshoot and must clamp
        bw, bh = int(rng.integers(1, 5)), int(rng.integers(1, 5))
        blocks = rng.integers(0, 2, ((h + bh - 1) // bh, (w + bw - 1) // bw, 3), dtype=np.uint8)
        return (np.kron(blocks, np.ones((bh, bw, 1), np.uint8))[:h, :w] * 255).astype(np.uint8)
    colour = rng.choice([0, 1, 127, 128, 254, 255, int(rng.integers(0, 256))], 3)
    return np.broadcast_to(np.asarray(colour, np.uint8), (h, w, 3)).copy()


def main() -> None:
    seed, n, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    cases = []
    offset = 0
    with open(out / "cases.bin", "wb") as blob:
        for i in range(n):
            w, h = source_size(rng)
            if rng.random() < 0.02:
                new_w, new_h = w, h
            else:
                new_w, new_h = target_side(rng, w), target_side(rng, h)
            resample = FILTERS[i % len(FILTERS)]
            src = picture(rng, w, h)
            got = np.asarray(Image.fromarray(src, "RGB").resize((new_w, new_h), resample))
            assert got.shape == (new_h, new_w, 3), (got.shape, new_w, new_h)
            blob.write(src.tobytes())
            blob.write(got.tobytes())
            cases.append([w, h, new_w, new_h, int(resample), offset, offset + src.nbytes])
            offset += src.nbytes + got.nbytes
    index = {"pillow": PIL.__version__, "seed": seed, "cases": cases}
    (out / "index.json").write_text(json.dumps(index))


if __name__ == "__main__":
    main()

"""Regenerate the image-preprocessing fixtures under tests/fixtures/preprocess/.

Run from the repository root:

    .venv/bin/python scripts/fixtures_preprocess.py

Everything is drawn here from fixed seeds, then passed through the pinned reference stack
(Pillow for decoding and BICUBIC resizing, transformers' `Qwen2VLImageProcessorPil` for
`pixel_values` / `image_grid_thw`, its `smart_resize` for the size table). Output:

- `images/*.png|jpg`: the test inputs;
- `expected.safetensors`: reference arrays (decoded RGB, Pillow resizes, pixel values, grids);
- `manifest.json`: which arrays belong to which case, plus scalar expectations.
"""

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import transformers
from PIL import Image, ImageDraw, ImageOps
from safetensors.numpy import save_file
from transformers.image_utils import load_image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    Qwen2VLImageProcessorPil,
    smart_resize,
)

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "preprocess"
IMAGES = OUT / "images"

HUB = {"min_pixels": 3136, "max_pixels": 12845056}
SMALL = {"min_pixels": 2000, "max_pixels": 6272}
# pixel_values of cases with more patches than this are stored as a row subset (all cases also
# store an FNV-1a 64 hash of the whole array's float32 little-endian bytes)
FULL_ROWS_MAX = 12
SUBSET_ROWS = 12
# uint8 images larger than this are stored as an FNV-1a 64 hash of their row-major RGB bytes
MAX_U8_BYTES = 64 * 1024

tensors: dict[str, np.ndarray] = {}

# transformers 5.17 writes `min_pixels`/`max_pixels` into the class-level `size` dict, so one
# processor's budget leaks into the next one built without them; restore it before each build
# to get what a fresh process would.
_CLASS_SIZE = dict(Qwen2VLImageProcessorPil.size)


def fresh_processor(**kwargs) -> Qwen2VLImageProcessorPil:
    Qwen2VLImageProcessorPil.size = dict(_CLASS_SIZE)
    return Qwen2VLImageProcessorPil(**kwargs)


def fresh_processor_from_dir(path: str) -> Qwen2VLImageProcessorPil:
    Qwen2VLImageProcessorPil.size = dict(_CLASS_SIZE)
    return Qwen2VLImageProcessorPil.from_pretrained(path)


def put(name: str, arr: np.ndarray) -> str:
    assert name not in tensors, name
    tensors[name] = np.ascontiguousarray(arr)
    return name


def fnv1a64(data: bytes) -> str:
    """FNV-1a 64 as 16 hex digits (JSON has no u64)."""
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def put_u8_image(case: dict, field: str, name: str, arr: np.ndarray) -> None:
    """Stores an HxWx3 uint8 image as an array, or as shape + hash when it is large."""
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3, (name, arr.shape, arr.dtype)
    if arr.nbytes <= MAX_U8_BYTES:
        case[field] = put(name, arr)
    else:
        case[field + "_fnv1a64"] = fnv1a64(np.ascontiguousarray(arr).tobytes())
        case[field + "_shape"] = list(arr.shape)


# ---------------------------------------------------------------------------- drawing


def photo(w: int, h: int, seed: int, noise: float = 6.0, noise_box=None) -> np.ndarray:
    """Photo-like RGB: smooth gradients, a few shapes, sensor-like noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    chans = []
    for c in range(3):
        fx, fy, ph = rng.uniform(0.5, 3.0), rng.uniform(0.5, 3.0), rng.uniform(0, 6.28)
        v = 128 + 70 * np.sin(fx * 6.28 * x / w + ph) * np.cos(fy * 6.28 * y / h) + 40 * (x / w - y / h)
        chans.append(v)
    base = Image.fromarray(np.clip(np.stack(chans, -1), 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(base)
    for _ in range(6):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        x1, y1 = x0 + rng.integers(2, max(3, w // 2)), y0 + rng.integers(2, max(3, h // 2))
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        if rng.random() < 0.5:
            draw.ellipse([x0, y0, x1, y1], fill=color)
        else:
            draw.rectangle([x0, y0, x1, y1], fill=color)
    arr = np.asarray(base).astype(np.float64)
    n = rng.normal(0, noise, arr.shape)
    if noise_box is not None:
        mask = np.zeros(arr.shape[:2], bool)
        x0, y0, x1, y1 = noise_box
        mask[y0:y1, x0:x1] = True
        n[~mask] = 0
    return np.clip(np.round(arr + n), 0, 255).astype(np.uint8)


def checker(w: int, h: int, cell: int, seed: int) -> np.ndarray:
    """Hard edges: saturated coloured cells (drives bicubic overshoot into the clamps)."""
    rng = np.random.default_rng(seed)
    palette = np.array([[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0]])
    cells = rng.integers(0, len(palette), ((h + cell - 1) // cell, (w + cell - 1) // cell))
    img = palette[cells].repeat(cell, 0).repeat(cell, 1)[:h, :w]
    img[h // 3, :] = 255  # one-pixel lines
    img[:, w // 2] = 0
    return img.astype(np.uint8)


# ---------------------------------------------------------------------------- PNG writer


def write_png(path: Path, width: int, height: int, color_type: int, bit_depth: int, rows: list[bytes],
              plte: bytes | None = None, trns: bytes | None = None) -> None:
    """Minimal PNG writer for encodings Pillow does not produce (16-bit RGB, 2/4-bit grey)."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = b"".join(b"\x00" + r for r in rows)
    data = b"\x89PNG\r\n\x1a\n"
    data += chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0))
    if plte is not None:
        data += chunk(b"PLTE", plte)
    if trns is not None:
        data += chunk(b"tRNS", trns)
    data += chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")
    path.write_bytes(data)


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    out = bytearray()
    per = 8 // bits
    for i in range(0, len(values), per):
        byte = 0
        group = values[i : i + per]
        for j in range(per):
            byte <<= bits
            if j < len(group):
                byte |= int(group[j])
        out.append(byte)
    return bytes(out)


# ---------------------------------------------------------------------------- inputs


def make_inputs() -> dict[str, dict]:
    """Writes the input files; returns name -> info (file, kind)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    info = {}

    def save_rgb(name: str, arr: np.ndarray):
        Image.fromarray(arr, "RGB").save(IMAGES / f"{name}.png", optimize=True)
        info[name] = {"file": f"images/{name}.png"}

    save_rgb("photo_157x113", photo(157, 113, 1))
    save_rgb("photo_50x41", photo(50, 41, 2))
    save_rgb("photo_97x69", photo(97, 69, 3))
    save_rgb("photo_300x205", photo(300, 205, 4))
    save_rgb("photo_112x84", photo(112, 84, 5))
    save_rgb("photo_112x100", photo(112, 100, 6))
    save_rgb("photo_130x84", photo(130, 84, 7))
    save_rgb("photo_20x15", photo(20, 15, 8))
    save_rgb("photo_3x290", photo(3, 290, 9))
    save_rgb("photo_640x480", photo(640, 480, 10, noise=5.0, noise_box=(400, 300, 480, 360)))
    save_rgb("checker_64x45", checker(64, 45, 5, 11))

    rng = np.random.default_rng(12)
    rgb = photo(90, 61, 13)
    alpha = np.clip(np.linspace(0, 255, 90)[None, :] + rng.normal(0, 20, (61, 90)), 0, 255).astype(np.uint8)
    Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(IMAGES / "rgba_90x61.png")
    info["rgba_90x61"] = {"file": "images/rgba_90x61.png"}

    gray = photo(75, 52, 14)[..., 1]
    Image.fromarray(gray, "L").save(IMAGES / "gray_75x52.png")
    info["gray_75x52"] = {"file": "images/gray_75x52.png"}

    la = np.dstack([photo(33, 29, 15)[..., 0], rng.integers(0, 256, (29, 33)).astype(np.uint8)])
    Image.fromarray(la, "LA").save(IMAGES / "la_33x29.png")
    info["la_33x29"] = {"file": "images/la_33x29.png"}

    pal = Image.fromarray(photo(41, 37, 16), "RGB").quantize(colors=32, method=Image.Quantize.MEDIANCUT)
    pal.save(IMAGES / "palette_41x37.png")
    info["palette_41x37"] = {"file": "images/palette_41x37.png"}

    pal_t = Image.fromarray(photo(41, 37, 17), "RGB").quantize(colors=16, method=Image.Quantize.MEDIANCUT)
    pal_t.save(IMAGES / "palette_trns_41x37.png", transparency=3, bits=4)
    info["palette_trns_41x37"] = {"file": "images/palette_trns_41x37.png"}

    bw = (photo(37, 23, 18)[..., 0] > 128)
    Image.fromarray(bw).save(IMAGES / "bilevel_37x23.png")
    info["bilevel_37x23"] = {"file": "images/bilevel_37x23.png"}

    g4 = rng.integers(0, 16, (19, 21))
    write_png(IMAGES / "gray4_21x19.png", 21, 19, 0, 4, [pack_bits(r, 4) for r in g4])
    info["gray4_21x19"] = {"file": "images/gray4_21x19.png"}

    g2 = rng.integers(0, 4, (11, 13))
    write_png(IMAGES / "gray2_13x11.png", 13, 11, 0, 2, [pack_bits(r, 2) for r in g2])
    info["gray2_13x11"] = {"file": "images/gray2_13x11.png"}

    rgb16 = rng.integers(0, 65536, (17, 23, 3)).astype(">u2")
    write_png(IMAGES / "rgb16_23x17.png", 23, 17, 2, 16, [r.tobytes() for r in rgb16])
    info["rgb16_23x17"] = {"file": "images/rgb16_23x17.png"}

    rgba16 = rng.integers(0, 65536, (13, 11, 4)).astype(">u2")
    write_png(IMAGES / "rgba16_11x13.png", 11, 13, 6, 16, [r.tobytes() for r in rgba16])
    info["rgba16_11x13"] = {"file": "images/rgba16_11x13.png"}

    la16 = rng.integers(0, 65536, (7, 9, 2)).astype(">u2")
    write_png(IMAGES / "la16_9x7.png", 9, 7, 4, 16, [r.tobytes() for r in la16])
    info["la16_9x7"] = {"file": "images/la16_9x7.png"}

    # mostly small values so that Pillow's clamp to 255 and the in-range values both show
    g16 = rng.integers(0, 600, (9, 14)).astype(">u2")
    g16[0, :4] = [0, 255, 256, 65535]
    write_png(IMAGES / "gray16_14x9.png", 14, 9, 0, 16, [r.tobytes() for r in g16])
    info["gray16_14x9"] = {"file": "images/gray16_14x9.png"}

    # EXIF orientations on PNG (eXIf chunk): load_image must transpose like exif_transpose
    base = Image.fromarray(photo(31, 18, 19), "RGB")
    for orient in (3, 5, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orient
        name = f"exif{orient}_31x18"
        base.save(IMAGES / f"{name}.png", exif=exif)
        info[name] = {"file": f"images/{name}.png"}

    # JPEG: decoder parity with Pillow (libjpeg-turbo) is measured, not assumed
    jp = Image.fromarray(photo(120, 88, 20), "RGB")
    jp.save(IMAGES / "photo_120x88_q90_420.jpg", quality=90, subsampling=2)
    info["photo_120x88_q90_420"] = {"file": "images/photo_120x88_q90_420.jpg"}
    jp.save(IMAGES / "photo_120x88_q95_444.jpg", quality=95, subsampling=0)
    info["photo_120x88_q95_444"] = {"file": "images/photo_120x88_q95_444.jpg"}
    Image.fromarray(photo(64, 40, 21)[..., 2], "L").save(IMAGES / "gray_64x40.jpg", quality=90)
    info["gray_64x40"] = {"file": "images/gray_64x40.jpg"}
    return info


# ---------------------------------------------------------------------------- cases


def decode_cases(info: dict) -> list[dict]:
    """What transformers' `load_image` (exif_transpose + convert("RGB")) gives for each file."""
    cases = []
    for name, meta in info.items():
        path = OUT / meta["file"]
        with Image.open(path) as raw:
            mode = raw.mode
        rgb = np.asarray(load_image(str(path)))
        case = {"name": name, "file": meta["file"], "pil_mode": mode}
        put_u8_image(case, "rgb", f"decoded.{name}", rgb)
        cases.append(case)
    return cases


def resize_cases(info: dict) -> list[dict]:
    """Pillow `Image.resize` at arbitrary sizes (not only smart_resize outputs)."""
    filters = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
               "lanczos": Image.Resampling.LANCZOS, "box": Image.Resampling.BOX,
               "hamming": Image.Resampling.HAMMING}
    plan = [
        # Pillow runs the vertical pass first iff the height shrinks by more than twice the
        # width's shrink: (150, 99) is just horizontal-first, (150, 98) just vertical-first.
        ("photo_157x113", "bicubic", [(61, 200), (200, 61), (1, 1), (157, 40), (40, 113), (313, 227), (17, 9),
                                      (156, 112), (158, 114), (3, 250), (150, 99), (150, 98), (157, 113)]),
        ("checker_64x45", "bicubic", [(64 * 3 + 1, 45 * 2 - 1), (13, 11), (100, 45), (64, 20)]),
        ("photo_640x480", "bicubic", [(37, 29), (211, 103)]),
        ("photo_157x113", "bilinear", [(61, 200), (300, 50)]),
        ("photo_157x113", "lanczos", [(61, 200), (300, 50)]),
        ("photo_157x113", "box", [(61, 200), (300, 50)]),
        ("photo_157x113", "hamming", [(61, 200), (300, 50)]),
    ]
    cases = []
    for name, flt, sizes in plan:
        img = load_image(str(OUT / info[name]["file"]))
        for w, h in sizes:
            out = np.asarray(img.resize((w, h), resample=filters[flt]))
            case = {"image": name, "filter": flt, "filter_code": int(filters[flt]), "width": w, "height": h}
            put_u8_image(case, "expected", f"resize.{name}.{flt}.{w}x{h}", out)
            cases.append(case)
    return cases


def processor_cases(info: dict) -> list[dict]:
    plan = [
        ("photo_157x113", "hub"), ("photo_157x113", "small"),
        ("photo_50x41", "hub"), ("photo_97x69", "hub"), ("photo_300x205", "small"),
        ("photo_300x205", "hub"), ("photo_112x84", "hub"), ("photo_112x100", "hub"),
        ("photo_130x84", "hub"), ("photo_20x15", "hub"), ("photo_3x290", "small"),
        ("photo_640x480", "hub"), ("checker_64x45", "hub"), ("checker_64x45", "small"),
        ("rgba_90x61", "small"), ("gray_75x52", "small"), ("palette_41x37", "small"),
    ]
    configs = {"hub": HUB, "small": SMALL}
    rng = np.random.default_rng(99)
    cases = []
    for name, cfg_name in plan:
        cfg = configs[cfg_name]
        proc = fresh_processor(**cfg)
        # the image as the user hands it over (e.g. RGBA); the processor converts it itself
        with Image.open(OUT / info[name]["file"]) as im:
            im.load()
            src = ImageOps.exif_transpose(im)
        out = proc(images=src, return_tensors="np")
        pv = out["pixel_values"].astype(np.float32)
        grid = out["image_grid_thw"].astype(np.int64)
        h, w = smart_resize(src.height, src.width, factor=28, min_pixels=cfg["min_pixels"],
                            max_pixels=cfg["max_pixels"])
        resized = np.asarray(src.convert("RGB").resize((w, h), resample=Image.Resampling.BICUBIC))
        key = f"proc.{name}.{cfg_name}"
        case = {"image": name, "config": cfg_name, "min_pixels": cfg["min_pixels"], "max_pixels": cfg["max_pixels"],
                "resized_width": w, "resized_height": h, "n_patches": int(pv.shape[0]),
                "patch_dim": int(pv.shape[1]), "grid_thw": put(f"{key}.grid_thw", grid)}
        if pv.shape[0] <= FULL_ROWS_MAX:
            rows = np.arange(pv.shape[0])
        else:
            mid = rng.choice(np.arange(4, pv.shape[0] - 4), SUBSET_ROWS - 8, replace=False)
            rows = np.sort(np.concatenate([np.arange(4), mid, np.arange(pv.shape[0] - 4, pv.shape[0])]))
        case["rows"] = put(f"{key}.rows", rows.astype(np.int64))
        case["pixel_values"] = put(f"{key}.pixel_values", pv[rows])
        case["pixel_values_fnv1a64"] = fnv1a64(np.ascontiguousarray(pv).astype("<f4").tobytes())
        put_u8_image(case, "resized", f"{key}.resized", resized)
        cases.append(case)
    return cases


def smart_resize_table() -> list[dict]:
    sizes = [
        # ties: x/28 = k + 0.5 rounds to the even k
        (70, 70), (126, 126), (182, 182), (42, 98), (154, 238), (70, 126), (14, 14),
        (28, 28), (56, 56), (27, 100), (480, 640), (720, 1280), (1080, 1920), (113, 157),
        (10, 10), (1, 200), (200, 1), (2, 401), (3, 290), (1, 1), (4000, 3000), (8000, 6000),
        (29, 5800), (5000, 26), (333, 777), (1023, 1), (99999, 600),
    ]
    limits = [(3136, 12845056), (3136, 1003520), (2000, 6272), (200704, 401408), (784, 784)]
    table = []
    for h, w in sizes:
        for mn, mx in limits:
            row = {"height": h, "width": w, "factor": 28, "min_pixels": mn, "max_pixels": mx}
            try:
                rh, rw = smart_resize(h, w, factor=28, min_pixels=mn, max_pixels=mx)
                row["result"] = [rh, rw]
            except ValueError as e:
                row["error"] = str(e)
            table.append(row)
    # other factors (a different patch or merge size)
    for h, w in [(50, 70), (130, 99), (33, 33)]:
        row = {"height": h, "width": w, "factor": 16, "min_pixels": 1024, "max_pixels": 16384}
        row["result"] = list(smart_resize(h, w, factor=16, min_pixels=1024, max_pixels=16384))
        table.append(row)
    return table


def config_cases() -> list[dict]:
    """preprocessor_config.json layouts and what transformers makes of them."""
    layouts = {
        "hub_flat": {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2,
                     "merge_size": 2, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                     "image_std": [0.26862954, 0.26130258, 0.27577711],
                     "image_processor_type": "Qwen2VLImageProcessor", "processor_class": "Qwen2_5_VLProcessor"},
        "v5_size": {"size": {"shortest_edge": 4000, "longest_edge": 500000}, "resample": 2, "do_rescale": False,
                    "rescale_factor": 0.5, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.5, 1.0],
                    "do_normalize": False, "do_resize": False, "patch_size": 16, "merge_size": 2,
                    "image_processor_type": "Qwen2VLImageProcessor"},
        "both_keys": {"size": {"shortest_edge": 1000, "longest_edge": 200000}, "min_pixels": 3136,
                      "max_pixels": 12845056, "image_processor_type": "Qwen2VLImageProcessor"},
        "only_min": {"min_pixels": 5000, "image_processor_type": "Qwen2VLImageProcessor"},
        "size_plus_max": {"size": {"shortest_edge": 4000}, "max_pixels": 500000,
                          "image_processor_type": "Qwen2VLImageProcessor"},
        "empty": {},
        "scalar_mean": {"image_mean": 0.5, "image_std": 0.25},
    }
    import tempfile

    out = []
    for name, layout in layouts.items():
        with tempfile.TemporaryDirectory() as d:
            Path(d, "preprocessor_config.json").write_text(json.dumps(layout))
            p = fresh_processor_from_dir(d)
        mean = p.image_mean if isinstance(p.image_mean, (list, tuple)) else [p.image_mean] * 3
        std = p.image_std if isinstance(p.image_std, (list, tuple)) else [p.image_std] * 3
        out.append({
            "name": name, "json": layout,
            "expected": {
                "min_pixels": p.size.shortest_edge, "max_pixels": p.size.longest_edge,
                "patch_size": p.patch_size, "temporal_patch_size": p.temporal_patch_size,
                "merge_size": p.merge_size, "image_mean": [float(v) for v in mean],
                "image_std": [float(v) for v in std], "do_resize": bool(p.do_resize),
                "resample": int(p.resample), "do_rescale": bool(p.do_rescale),
                "rescale_factor": float(p.rescale_factor), "do_normalize": bool(p.do_normalize),
                "do_convert_rgb": bool(p.do_convert_rgb),
            },
        })
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for old in IMAGES.glob("*"):
        old.unlink()
    info = make_inputs()
    manifest = {
        "generator": "scripts/fixtures_preprocess.py",
        "versions": {"transformers": transformers.__version__, "pillow": PIL.__version__, "numpy": np.__version__},
        "configs": {"hub": HUB, "small": SMALL},
        "decode": decode_cases(info),
        "resize": resize_cases(info),
        "processor": processor_cases(info),
        "smart_resize": smart_resize_table(),
        "config_files": config_cases(),
    }
    save_file(tensors, str(OUT / "expected.safetensors"))
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {len(tensors)} arrays, {total / 1024:.0f} KiB under {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

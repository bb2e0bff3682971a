"""Write image files of every supported format, and what the pinned reference stack makes of them,
into OUT_DIR (tests/decode.rs runs this into a temporary folder at test time).

usage: .venv/bin/python scripts/fixtures_decode.py OUT_DIR

Each file is a photo-like picture (smooth gradients, shapes, sensor-like noise; odd sizes) saved
by Pillow, plus the committed files under tests/fixtures/decode (encodings Pillow cannot write:
arithmetic-coded and 4:1:1 JPEG). For each one, `expected.safetensors` holds what transformers'
`load_image` returns (`ImageOps.exif_transpose` + `convert("RGB")`, as uint8 HxWx3) and the
`Qwen2VLImageProcessorPil` output for it (`pixel_values`, `image_grid_thw`) with the Hub pixel
budget; `manifest.json` lists the cases.
"""

import io
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image
from safetensors.numpy import save_file
from transformers.image_utils import load_image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fixtures_preprocess import HUB, fresh_processor, photo  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "tests" / "fixtures" / "decode"


def jpeg_cases(out: Path) -> list[str]:
    names = []
    seed = 100
    for w, h in [(157, 113), (61, 47)]:
        for q in (50, 75, 90, 95):
            for sub, label in ((2, "420"), (1, "422"), (0, "444")):
                for prog in (False, True):
                    seed += 1
                    name = f"photo_{w}x{h}_q{q}_{label}{'_prog' if prog else ''}.jpg"
                    Image.fromarray(photo(w, h, seed), "RGB").save(
                        out / name, quality=q, subsampling=sub, progressive=prog
                    )
                    names.append(name)
        for q in (50, 90):
            name = f"gray_{w}x{h}_q{q}.jpg"
            Image.fromarray(photo(w, h, seed + q)[..., 1], "L").save(out / name, quality=q)
            names.append(name)
        for q in (60, 95):
            name = f"cmyk_{w}x{h}_q{q}.jpg"
            Image.fromarray(photo(w, h, seed + 2 * q), "RGB").convert("CMYK").save(out / name, quality=q)
            names.append(name)
    return names


def exif_cases(out: Path) -> list[str]:
    """EXIF orientations 1-8 on JPEG, and one each on WebP and TIFF."""
    names = []
    base = Image.fromarray(photo(37, 22, 300), "RGB")
    for orient in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orient
        name = f"exif{orient}_37x22.jpg"
        base.save(out / name, quality=90, exif=exif)
        names.append(name)
    exif = Image.Exif()
    exif[0x0112] = 6
    base.save(out / "exif6_37x22.webp", quality=90, exif=exif)
    exif[0x0112] = 8
    base.save(out / "exif8_37x22.tif", exif=exif)
    return names + ["exif6_37x22.webp", "exif8_37x22.tif"]


def webp_cases(out: Path) -> list[str]:
    rgb = photo(83, 59, 400)
    alpha = np.clip(np.linspace(0, 255, 83)[None, :].repeat(59, 0) + photo(83, 59, 401)[..., 0] / 8, 0, 255)
    rgba = Image.fromarray(np.dstack([rgb, alpha.astype(np.uint8)]), "RGBA")
    im = Image.fromarray(rgb, "RGB")
    im.save(out / "lossy_q50_83x59.webp", quality=50)
    im.save(out / "lossy_q90_83x59.webp", quality=90)
    im.save(out / "lossless_83x59.webp", lossless=True)
    rgba.save(out / "lossy_alpha_83x59.webp", quality=80)
    rgba.save(out / "lossless_alpha_83x59.webp", lossless=True, exact=True)
    frames = [Image.fromarray(photo(83, 59, 402 + i), "RGB") for i in range(2)]
    frames[0].save(out / "animated_83x59.webp", save_all=True, append_images=frames[1:], duration=100)
    return ["lossy_q50_83x59.webp", "lossy_q90_83x59.webp", "lossless_83x59.webp",
            "lossy_alpha_83x59.webp", "lossless_alpha_83x59.webp", "animated_83x59.webp"]


def gif_bmp_tiff_cases(out: Path) -> list[str]:
    rgb = photo(71, 43, 500)
    im = Image.fromarray(rgb, "RGB")
    pal = im.quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    pal.save(out / "palette_71x43.gif")
    pal.save(out / "palette_trns_71x43.gif", transparency=5)
    frames = [Image.fromarray(photo(71, 43, 501 + i), "RGB").quantize(colors=32) for i in range(2)]
    frames[0].save(out / "animated_71x43.gif", save_all=True, append_images=frames[1:], duration=100)
    im.save(out / "rgb_71x43.bmp")
    pal.save(out / "palette_71x43.bmp")
    Image.fromarray(rgb[..., 0], "L").save(out / "gray_71x43.bmp")
    Image.fromarray(np.dstack([rgb, rgb[..., 1]]), "RGBA").save(out / "rgba_71x43.bmp")
    im.save(out / "rgb_71x43.tif")
    im.save(out / "rgb_lzw_71x43.tif", compression="tiff_lzw")
    im.save(out / "rgb_deflate_71x43.tif", compression="tiff_adobe_deflate")
    Image.fromarray(rgb[..., 2], "L").save(out / "gray_71x43.tif")
    Image.fromarray(np.dstack([rgb, rgb[..., 0]]), "RGBA").save(out / "rgba_71x43.tif")
    im.convert("CMYK").save(out / "cmyk_71x43.tif")
    im.save(out / "rgb_packbits_71x43.tif", compression="packbits")
    # written but not compared: rhlens refuses JPEG-compressed TIFF (tests/decode.rs)
    im.save(out / "rgb_jpeg_71x43.tif", compression="jpeg")
    Image.fromarray(photo(71, 43, 503)[..., 0].astype(np.uint16) * 3).save(out / "gray16_71x43.tif")
    Image.fromarray(rgb[..., 1] > 128).save(out / "bilevel_71x43.tif")
    Image.fromarray(rgb[..., 1] > 128).save(out / "bilevel_71x43.bmp")
    Image.fromarray(rgb, "RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(out / "palette16_71x43.bmp")
    return ["palette_71x43.gif", "palette_trns_71x43.gif", "animated_71x43.gif", "rgb_71x43.bmp",
            "palette_71x43.bmp", "gray_71x43.bmp", "rgba_71x43.bmp", "rgb_71x43.tif",
            "rgb_lzw_71x43.tif", "rgb_deflate_71x43.tif", "gray_71x43.tif", "rgba_71x43.tif",
            "cmyk_71x43.tif", "rgb_packbits_71x43.tif", "gray16_71x43.tif",
            "bilevel_71x43.tif", "bilevel_71x43.bmp", "palette16_71x43.bmp"]


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__.strip().splitlines()[-1])
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    names = jpeg_cases(out) + exif_cases(out) + webp_cases(out) + gif_bmp_tiff_cases(out)
    for committed in sorted(COMMITTED.glob("*")):
        (out / committed.name).write_bytes(committed.read_bytes())
        names.append(committed.name)
    tensors, cases = {}, []
    for name in names:
        with Image.open(out / name) as raw:
            mode, fmt = raw.mode, raw.format
        rgb = load_image(str(out / name))
        batch = fresh_processor(**HUB)(images=rgb, return_tensors="np")
        tensors[f"{name}.rgb"] = np.ascontiguousarray(np.asarray(rgb))
        tensors[f"{name}.pixel_values"] = batch["pixel_values"].astype(np.float32)
        tensors[f"{name}.grid_thw"] = batch["image_grid_thw"].astype(np.int64)
        cases.append({"file": name, "pil_mode": mode, "pil_format": fmt})
    save_file(tensors, str(out / "expected.safetensors"))
    (out / "manifest.json").write_text(json.dumps({"hub": HUB, "cases": cases}, indent=1) + "\n")


if __name__ == "__main__":
    main()

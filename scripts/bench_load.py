#!/usr/bin/env python3
"""Peak host memory and time of loading a 7B-width bf16 checkpoint, per requested dtype.

Run from the repository root after `scripts/setup.sh`:

    .venv/bin/python scripts/bench_load.py                        # bf16 and f32, model, CPU
    .venv/bin/python scripts/bench_load.py --dtypes bf16 --what weights --layers 2
    .venv/bin/python scripts/bench_load.py --loader PATH/TO/load_peak --keep DIR

The checkpoint has the widths of Qwen2.5-VL-7B (hidden 3584, 28 heads / 4 KV heads, intermediate
18944, vocab 152064, untied lm_head; vision blocks of width 1280 and the 7B merger) but only
--layers decoder layers (default 2) and --vision-depth vision blocks (default 1): about 3.2 GB in
bf16, so its load is measured on an ordinary machine; the full 7B is 16.6 GB. Its weights are a
repeated block of random bf16 values written straight into one safetensors file (the layout
`save_pretrained` writes: `model.language_model.*`, `model.visual.*`, `lm_head.*`), with the
config, tokenizer and chat template of tests/fixtures/models/tiny-flat.

Each dtype is loaded by `benches/load_peak.rs` (built here with `cargo bench --no-run` unless
--loader names the binary) in a fresh process, one after the other, once to warm the page cache and
then --repeats times; it reports the process's peak resident memory (VmHWM, reset just before
loading) and the load time. Page-cache pages are not the process's memory; the figure is what
loading holds. The checkpoint is deleted at the end unless --keep names a folder for it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.dont_write_bytecode = True  # importing bench.py must not leave files in the repository
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402
import bench_gpu as G  # noqa: E402

# bf16 bytes of the random block repeated through every tensor
BLOCK_BYTES = 16 << 20


def write_safetensors(model, out_dir: Path) -> None:
    """One `model.safetensors` with the names and shapes of `model`'s state dict, bf16, filled with
    a repeated block of random values (the loader's cost does not depend on the values)."""
    import numpy as np

    entries, offset = {}, 0
    for name, p in model.state_dict().items():
        n = p.numel() * 2
        entries[name] = {"dtype": "BF16", "shape": list(p.shape), "data_offsets": [offset, offset + n]}
        offset += n
    header = json.dumps({"__metadata__": {"format": "pt"}, **entries}, separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    rng = np.random.default_rng(0)
    values = (rng.standard_normal(BLOCK_BYTES // 2, dtype=np.float32) * 0.02).view(np.uint32)
    block = (values >> 16).astype("<u2").tobytes()
    with open(out_dir / "model.safetensors", "wb") as f:
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        left = offset
        while left > 0:
            f.write(block[: min(left, len(block))])
            left -= min(left, len(block))


def make_checkpoint(out_dir: Path, layers: int, vision_depth: int) -> dict:
    import torch

    shape = G.SHAPES["7b"]
    text = dict(shape["text"], layers=layers)
    vision = dict(shape["vision"], depth=vision_depth, fullatt=[vision_depth - 1])
    facts, model = B.build_random_checkpoint(
        out_dir,
        dict(text=text, vision=vision),
        G.VOCAB,
        torch.bfloat16,
        "meta",
        tied=shape["tied"],
        write_weights=write_safetensors,
    )
    del model
    facts["file_bytes"] = (out_dir / "model.safetensors").stat().st_size
    return facts


def build_loader() -> Path:
    """`cargo bench --bench load_peak --no-run`; the path of the binary it built."""
    cmd = ["cargo", "bench", "--bench", "load_peak", "--no-run", "--message-format=json"]
    out = subprocess.run(cmd, cwd=B.ROOT, capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        msg = json.loads(line)
        if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "load_peak" and msg.get("executable"):
            return Path(msg["executable"])
    raise SystemExit("cargo built no load_peak binary")


def load_once(loader: Path, model_dir: Path, dtype: str, device: str, what: str, threads: int) -> dict:
    r = subprocess.run(
        [str(loader), str(model_dir), dtype, device, what],
        env=B.rhlens_env(threads),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    line = B.last_json_line(r.stdout)
    if r.returncode != 0 or line is None:
        return {"error": (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]}
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description="peak host memory of loading (see the module docstring)")
    parser.add_argument("--dtypes", default="bf16,f32", help="comma-separated: bf16, f16, f32")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--what", default="model", help="model (Runtime::load) or weights (the loader alone)")
    parser.add_argument("--layers", type=int, default=2, help="decoder layers (default 2: about 3.2 GB)")
    parser.add_argument("--vision-depth", type=int, default=1, help="vision blocks (default 1)")
    parser.add_argument("--repeats", type=int, default=2, help="measured loads per dtype after a warm-up load")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--loader", type=Path, help="a built load_peak binary (default: build it)")
    parser.add_argument("--model", type=Path, help="an existing checkpoint folder (none is made)")
    parser.add_argument("--keep", type=Path, help="make the checkpoint here and keep it")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rhlens-bench-load.json")
    args = parser.parse_args()
    os.environ.update({k: v for k, v in B.quiet_env().items() if k not in os.environ})
    loader = (args.loader or build_loader()).resolve()
    work = None
    report: dict[str, object] = {"loader": str(loader), "device": args.device, "what": args.what}
    try:
        if args.model:
            model_dir = args.model
        else:
            work = None if args.keep else Path(tempfile.mkdtemp(prefix="rhlens-load-", dir=B.ROOT / "target"))
            model_dir = args.keep or work / "model"
            print(f"writing a 7B-width checkpoint with {args.layers} layers to {model_dir} ...", flush=True)
            report["checkpoint"] = make_checkpoint(model_dir, args.layers, args.vision_depth)
        size = sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))
        print(f"checkpoint: {size / 1e9:.2f} GB of safetensors")
        results = {}
        for dtype in [d.strip() for d in args.dtypes.split(",") if d.strip()]:
            warm = load_once(loader, model_dir, dtype, args.device, args.what, args.threads)
            runs = [load_once(loader, model_dir, dtype, args.device, args.what, args.threads) for _ in range(args.repeats)]
            errors = [r["error"] for r in [warm, *runs] if "error" in r]
            if errors:
                results[dtype] = {"error": errors[0]}
                print(f"{dtype}: error: {errors[0]}")
                continue
            med = {k: statistics.median(r[k] for r in runs) for k in ("peak_rss_mib", "rss_before_mib", "load_s")}
            results[dtype] = {"runs": runs, "warm_up": warm, **med, "peak_over_checkpoint": med["peak_rss_mib"] * 2**20 / size}
            print(
                f"{dtype}: peak RSS {med['peak_rss_mib'] / 1024:.2f} GiB ({results[dtype]['peak_over_checkpoint']:.2f}x the "
                f"checkpoint; {med['rss_before_mib']:.0f} MiB before loading), load {med['load_s']:.1f} s from the page cache"
            )
        report["checkpoint_bytes"] = size
        report["results"] = results
    finally:
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"numbers written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())

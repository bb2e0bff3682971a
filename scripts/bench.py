#!/usr/bin/env python3
"""CPU benchmark: rhlens against Hugging Face transformers, both measured in the same run.

Run from the repository root after `scripts/setup.sh` (which builds target/release/rhlens):

    .venv/bin/python scripts/bench.py                      # tiny + mid, 3 repeats
    .venv/bin/python scripts/bench.py --quick              # fewer tokens, one repeat
    .venv/bin/python scripts/bench.py --configs mid --tokens 64 --skip-hf
    .venv/bin/python scripts/bench.py --long 4096          # peak memory of long generations

Configurations:
  tiny  tests/fixtures/models/tiny-flat (3 layers, hidden 64), N = 256 new tokens
  mid   a random Qwen2.5-VL made here in a temporary folder (8 layers, hidden 1024, 16 heads /
        4 KV heads, intermediate 2816, small vision tower; float32), N = 128 new tokens
Both use a 448x448 image drawn here (the mid checkpoint keeps it at 448x448: 256 image tokens).

Measured per configuration (median of the repeats):
  rhlens generate  `generate --json` (no capture): prefill ms and decode tokens/s from its own timing
  rhlens trace     `trace` (every layer's role attention captured): from trace.json's timing when it
                   has one, else by the difference method on process wall times
  HF sdpa          attn_implementation="sdpa", no attentions returned
  HF eager+attn    attn_implementation="eager", output_attentions=True, return_dict_in_generate=True
For Hugging Face, prefill ms = time of generate(max_new_tokens=1) and decode tokens/s =
(N - 1) / (t(N) - t(1)) (the difference method), after one warm-up call, float32, greedy,
min_new_tokens = max_new_tokens = N. Each measured run is a fresh process; its peak RSS is that
process's ru_maxrss (getrusage(RUSAGE_CHILDREN) in a small wrapper process around it). rhlens prefill is the first forward of a fresh process (cold); HF's
is warm. Every run uses the same number of CPU threads (--threads, default 2).

Everything is written under a temporary folder (removed at the end) and to --out (default in /tmp).
Timing is never a test: the numbers depend on the machine and on whatever else runs on it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY_DIR = ROOT / "tests" / "fixtures" / "models" / "tiny-flat"
DEFAULT_BINARY = ROOT / "target" / "release" / "rhlens"
PROMPT = "Describe the picture. How many shapes are there?"
# files a checkpoint needs besides its weights and config, copied from tiny-flat
TEXT_ASSETS = ["tokenizer.json", "tokenizer_config.json", "chat_template.json", "generation_config.json"]
SPECIAL_ID_KEYS = [
    "bos_token_id",
    "eos_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "vision_token_id",
    "image_token_id",
    "video_token_id",
]
# Qwen's own default limits; max_pixels far above 448*448 so the mid image is not downscaled.
QWEN_MIN_PIXELS = 56 * 56
QWEN_MAX_PIXELS = 28 * 28 * 16384

MID_SPEC = dict(
    text=dict(hidden=1024, layers=8, heads=16, kv_heads=4, intermediate=2816, mrope=[8, 12, 12]),
    vision=dict(depth=6, hidden=384, heads=6, intermediate=1024, fullatt=[2, 5], window=112),
)


def quiet_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TOKENIZERS_PARALLELISM="false",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        TRANSFORMERS_VERBOSITY="error",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return env


# ---------------------------------------------------------------------------------------------
# Shared helpers (also used by scripts/bench_gpu.py)
# ---------------------------------------------------------------------------------------------


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def torch_lib_dir() -> str:
    """libtorch's folder inside the Python's torch, found without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or spec.origin is None:
        raise SystemExit("torch is not installed in this Python")
    return str(Path(spec.origin).parent / "lib")


def rhlens_env(threads: int | None = None) -> dict[str, str]:
    env = quiet_env()
    lib = torch_lib_dir()
    env["LD_LIBRARY_PATH"] = lib + (os.pathsep + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH") else "")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
        env["MKL_NUM_THREADS"] = str(threads)
    return env


def rhlens_capabilities(binary: Path) -> dict[str, object]:
    """Which subcommands and flags the binary has (`generate --help`, `trace --help`)."""
    caps: dict[str, object] = {"binary": str(binary), "generate": False, "trace": False, "window": False}
    if not binary.exists():
        caps["problem"] = f"{binary} does not exist: run scripts/setup.sh to build rhlens"
        return caps
    env = rhlens_env()

    def help_text(*sub: str) -> str:
        try:
            p = subprocess.run([str(binary), *sub, "--help"], env=env, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as e:
            return f"<failed: {e}>"
        return p.stdout + p.stderr if p.returncode == 0 else ""

    try:
        caps["version"] = subprocess.run(
            [str(binary), "--version"], env=env, capture_output=True, text=True, timeout=60
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as e:
        caps["problem"] = f"{binary} does not run ({e}): run scripts/setup.sh"
        return caps
    g = help_text("generate")
    caps["generate"] = all(f in g for f in ("--json", "--min-new-tokens", "--max-new-tokens", "--greedy"))
    t = help_text("trace")
    caps["trace"] = all(f in t for f in ("--out", "--min-new-tokens", "--quiet"))
    caps["window"] = "--window" in t
    caps["threads_flag"] = "--threads" in g
    if not caps["generate"]:
        caps["problem"] = (
            f"{binary} has no usable `generate` subcommand (version {caps.get('version')!r}): "
            "run scripts/setup.sh to rebuild it"
        )
    return caps


# Runs one command and records its peak RSS. A process started straight from this (large) Python
# would report this Python's RSS as its own peak: Linux carries the pre-exec memory high-water mark
# of the forked parent over into ru_maxrss. A small stdlib-only wrapper forks the measured command
# instead, so the figure is the command's own (floor: the wrapper's ~10 MiB).
WRAPPER = (
    "import json,resource,subprocess,sys,time\n"
    "t=time.perf_counter()\n"
    "rc=subprocess.call(sys.argv[2:])\n"
    "w=time.perf_counter()-t\n"
    "m=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
    "open(sys.argv[1],'w').write(json.dumps({'rc':rc,'wall_s':w,'maxrss_kib':m}))\n"
)


def run_measured(cmd: list[str], env: dict[str, str], timeout: float, cwd: str | None = None) -> dict:
    """Run one command in a fresh process; return rc, wall seconds, its peak RSS, stdout, stderr."""
    with tempfile.TemporaryDirectory() as tmp:
        meas = Path(tmp) / "measure.json"
        with open(Path(tmp) / "out", "w+b") as out, open(Path(tmp) / "err", "w+b") as err:
            wrapped = [sys.executable, "-S", "-c", WRAPPER, str(meas), *cmd]
            try:
                subprocess.run(wrapped, stdout=out, stderr=err, env=env, cwd=cwd, timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
            out.seek(0)
            err.seek(0)
            stdout, stderr = out.read().decode(errors="replace"), err.read().decode(errors="replace")
        if not meas.exists():
            return {"rc": -1, "wall_s": None, "maxrss_mib": None, "stdout": stdout, "stderr": stderr + "\n(timed out)"}
        m = json.loads(meas.read_text())
    return {
        "rc": m["rc"],
        "wall_s": m["wall_s"],
        "maxrss_mib": m["maxrss_kib"] / 1024.0,  # KiB on Linux
        "stdout": stdout,
        "stderr": stderr,
    }


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def trace_timing(trace_dir: Path) -> tuple[dict | None, list[int] | None]:
    """(timing, generated_ids) of a trace: timing from timing.json beside trace.json (older traces:
    trace.json's `settings.timing` or `timing`)."""
    path = trace_dir / "trace.json"
    if not path.exists():
        return None, None
    meta = json.loads(path.read_text())
    timing_path = trace_dir / "timing.json"
    if timing_path.exists():
        timing = json.loads(timing_path.read_text())
    else:
        timing = (meta.get("settings") or {}).get("timing") or meta.get("timing")
    return timing, meta.get("generated_ids")


def tokens_per_s(timing: dict | None) -> float | None:
    if not timing:
        return None
    if timing.get("decode_tokens_per_s"):
        return float(timing["decode_tokens_per_s"])
    if timing.get("decode_ms") and timing.get("decode_steps"):
        return timing["decode_steps"] * 1000.0 / timing["decode_ms"]
    return None


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def draw_image(width: int, height: int, seed: int = 5):
    """A deterministic test picture: gradient sky, shapes, noise."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None, None]
    x = np.linspace(0, 1, width)[None, :, None]
    base = np.array([60, 120, 200])[None, None] * (1 - y) + np.array([220, 200, 160])[None, None] * y
    base = base + np.array([40, -20, 0])[None, None] * x
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(12):
        cx, cy = rng.integers(0, width), rng.integers(0, height)
        r = int(rng.integers(min(width, height) // 30 + 2, min(width, height) // 8 + 4))
        color = tuple(int(c) for c in rng.integers(20, 250, 3))
        if rng.random() < 0.5:
            d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=color)
        else:
            d.rectangle((cx - r, cy - r, cx + r, cy + r), fill=color)
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, 4.0, (height, width, 3))
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "RGB")


def load_processor(path: Path):
    """Qwen2.5-VL processor with the PIL image processor (AutoProcessor would need torchvision)."""
    from transformers import AutoTokenizer, Qwen2_5_VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    class ImageOnlyProcessor(Qwen2_5_VLProcessor):
        def check_argument_for_proper_class(self, argument_name, argument):
            if argument_name == "video_processor" and argument is None:
                return None
            return super().check_argument_for_proper_class(argument_name, argument)

    processor_dict, _ = Qwen2_5_VLProcessor.get_processor_dict(str(path))
    return ImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(str(path)),
        tokenizer=AutoTokenizer.from_pretrained(str(path)),
        video_processor=None,
        chat_template=processor_dict["chat_template"],
    )


def prepare_inputs(processor, image, prompt: str):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    rendered = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(images=[image], text=[rendered], return_tensors="pt")


def write_preprocessor(out_dir: Path, max_pixels: int) -> None:
    cfg = json.loads((TINY_DIR / "preprocessor_config.json").read_text())
    cfg["min_pixels"] = QWEN_MIN_PIXELS
    cfg["max_pixels"] = max_pixels
    cfg["size"] = {"shortest_edge": QWEN_MIN_PIXELS, "longest_edge": max_pixels}
    (out_dir / "preprocessor_config.json").write_text(json.dumps(cfg, indent=2) + "\n")


def tiny_special_ids() -> dict[str, int]:
    cfg = json.loads((TINY_DIR / "config.json").read_text())
    return {k: cfg[k] for k in SPECIAL_ID_KEYS}


def build_random_checkpoint(
    out_dir: Path,
    spec: dict,
    vocab_size: int,
    dtype,
    device: str = "cpu",
    seed: int = 0,
    tied: bool = False,
    max_positions: int = 128000,
    write_weights=None,
) -> tuple[dict, object]:
    """A random-weight Qwen2.5-VL with the tiny-flat tokenizer, template and special-token ids.

    Built with `_from_config` (transformers' own initialisation) directly on `device` in `dtype`,
    saved with `save_pretrained` (safetensors). The output rows of ids the tokenizer does not know,
    and of the special tokens, are zeroed so greedy decoding only emits ordinary text ids.
    With `write_weights(model, out_dir)` the config is saved as usual and that function writes the
    weights instead (for a model built on the `meta` device, which holds no values).
    Returns facts about the checkpoint (parameters, bytes, ids) and the model itself.
    """
    import torch
    import transformers
    from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    transformers.utils.logging.disable_progress_bar()
    ids = tiny_special_ids()
    tok = AutoTokenizer.from_pretrained(str(TINY_DIR))
    named = {
        "bos_token_id": "<|endoftext|>",
        "eos_token_id": "<|im_end|>",
        "vision_start_token_id": "<|vision_start|>",
        "vision_end_token_id": "<|vision_end|>",
        "vision_token_id": "<|vision_pad|>",
        "image_token_id": "<|image_pad|>",
        "video_token_id": "<|video_pad|>",
    }
    for key, token in named.items():
        if tok.convert_tokens_to_ids(token) != ids[key]:
            raise SystemExit(f"{key}: config id {ids[key]} != tokenizer id of {token}")
    t, v = spec["text"], spec["vision"]
    if sum(t["mrope"]) * 2 != t["hidden"] // t["heads"]:
        raise SystemExit(f"mrope_section {t['mrope']} does not match head_dim {t['hidden'] // t['heads']}")
    config = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=vocab_size,
            hidden_size=t["hidden"],
            intermediate_size=t["intermediate"],
            num_hidden_layers=t["layers"],
            num_attention_heads=t["heads"],
            num_key_value_heads=t["kv_heads"],
            hidden_act="silu",
            max_position_embeddings=max_positions,
            rms_norm_eps=1e-6,
            rope_parameters={"rope_type": "default", "mrope_section": t["mrope"], "rope_theta": 1000000.0},
            bos_token_id=ids["bos_token_id"],
            eos_token_id=ids["eos_token_id"],
            pad_token_id=ids["bos_token_id"],
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
            tokens_per_second=2,
            window_size=v["window"],
            out_hidden_size=t["hidden"],
            fullatt_block_indexes=v["fullatt"],
        ),
        image_token_id=ids["image_token_id"],
        video_token_id=ids["video_token_id"],
        vision_start_token_id=ids["vision_start_token_id"],
        vision_end_token_id=ids["vision_end_token_id"],
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    model.to(device).eval()
    special = sorted(tok.all_special_ids)
    with torch.no_grad():
        rows = model.lm_head.weight
        rows[len(tok) :] = 0
        rows[special] = 0
    out_dir.mkdir(parents=True, exist_ok=True)
    if write_weights is None:
        model.save_pretrained(str(out_dir))
    else:
        model.config.architectures = [type(model).__name__]
        model.config.save_pretrained(str(out_dir))
        write_weights(model, out_dir)
    cfg_path = out_dir / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["rhlens_random_weights"] = True
    cfg.setdefault("vision_token_id", ids["vision_token_id"])
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    # The ids a reader takes from config.json must be the tokenizer's.
    for key, token in named.items():
        got = cfg.get(key, cfg.get("text_config", {}).get(key))
        if got is None and key not in ("bos_token_id", "vision_token_id"):
            raise SystemExit(f"saved config.json has no {key}")
        if got is not None and got != tok.convert_tokens_to_ids(token):
            raise SystemExit(f"saved config.json: {key} = {got}, tokenizer id of {token} = {tok.convert_tokens_to_ids(token)}")
    for name in TEXT_ASSETS:
        shutil.copy(TINY_DIR / name, out_dir / name)
    write_preprocessor(out_dir, QWEN_MAX_PIXELS)
    n_params = sum(p.numel() for p in model.parameters())
    n_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    facts = {
        "parameters": n_params,
        "weight_bytes": n_bytes,
        "vocab_size": vocab_size,
        "tokenizer_size": len(tok),
        "special_ids": ids,
        "spec": spec,
        "dtype": str(dtype).replace("torch.", ""),
    }
    return facts, model


# ---------------------------------------------------------------------------------------------
# Hugging Face worker (one measured process per implementation)
# ---------------------------------------------------------------------------------------------


def hf_worker(spec: dict) -> None:
    """Runs in a fresh process: load, warm up, time generate(1) and generate(N); print one JSON line."""
    import torch
    from PIL import Image
    import transformers
    from transformers import Qwen2_5_VLForConditionalGeneration

    transformers.utils.logging.disable_progress_bar()
    torch.set_num_threads(spec["threads"])
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
        spec["model"], attn_implementation=spec["attn"], dtype=torch.float32
    )
    model.eval()
    processor = load_processor(Path(spec["model"]))
    inputs = prepare_inputs(processor, Image.open(spec["image"]).convert("RGB"), spec["prompt"])
    length = inputs["input_ids"].shape[1]
    capture = spec["capture"]
    pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")

    def timed(n: int):
        kw = dict(do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=pad)
        if capture:
            kw.update(output_attentions=True, return_dict_in_generate=True)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**inputs, **kw)
        dt = time.perf_counter() - t0
        seq = out.sequences if capture else out
        ids = seq[0, length:].tolist()
        if len(ids) != n:
            raise SystemExit(f"generate returned {len(ids)} tokens, expected {n}")
        del out
        return dt, ids

    n = spec["tokens"]
    timed(2)  # warm-up: first-call allocations and lazy initialisation
    t1s, tns, ids = [], [], []
    for _ in range(spec["repeats"]):
        t1s.append(timed(1)[0])
        if n > 1:
            dt, ids = timed(n)
            tns.append(dt)
    t1 = statistics.median(t1s)
    tn = statistics.median(tns) if tns else None
    rate = (n - 1) / (tn - t1) if tn and tn > t1 else None
    print(
        json.dumps(
            {
                "prefill_ms": t1 * 1000.0,
                "decode_tokens_per_s": rate,
                "t1_s": t1s,
                "tN_s": tns,
                "prompt_tokens": length,
                "image_tokens": int((inputs["input_ids"] == model.config.image_token_id).sum()),
                "generated_ids": ids,
                "threads": torch.get_num_threads(),
                "transformers": transformers.__version__,
                "torch": torch.__version__,
            }
        )
    )


# ---------------------------------------------------------------------------------------------
# Benchmark driver
# ---------------------------------------------------------------------------------------------


def hf_run(model_dir: Path, image: Path, attn: str, capture: bool, tokens: int, repeats: int, threads: int) -> dict:
    spec = dict(
        model=str(model_dir),
        image=str(image),
        prompt=PROMPT,
        attn=attn,
        capture=capture,
        tokens=tokens,
        repeats=repeats,
        threads=threads,
    )
    env = quiet_env()
    env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--hf-worker", json.dumps(spec)]
    r = run_measured(cmd, env, timeout=7200)
    res = last_json_line(r["stdout"]) if r["rc"] == 0 else None
    if res is None:
        tail = (r["stderr"] or r["stdout"]).strip().splitlines()[-5:]
        return {"error": f"HF {attn} run failed (rc {r['rc']}): " + " | ".join(tail)}
    res["peak_rss_mib"] = r["maxrss_mib"]
    res["process_wall_s"] = r["wall_s"]
    return res


def rhlens_cmd(binary: Path, sub: str, model_dir: Path, image: Path, tokens: int, threads: int, extra=()) -> list[str]:
    cmd = [
        str(binary),
        sub,
        "--model",
        str(model_dir),
        "--image",
        str(image),
        "--prompt",
        PROMPT,
        "--greedy",
        "--min-new-tokens",
        str(tokens),
        "--max-new-tokens",
        str(tokens),
        "--device",
        "cpu",
        "--dtype",
        "f32",
        "--threads",
        str(threads),
    ]
    return cmd + list(extra)


def rhlens_generate(binary, model_dir, image, tokens, threads) -> dict:
    r = run_measured(rhlens_cmd(binary, "generate", model_dir, image, tokens, threads, ["--json"]), rhlens_env(threads), 7200)
    obj = last_json_line(r["stdout"]) if r["rc"] == 0 else None
    if obj is None:
        return {"error": f"rhlens generate failed (rc {r['rc']}): {r['stderr'].strip()[-400:]}"}
    timing = obj.get("timing") or {}
    return {
        "prefill_ms": timing.get("prefill_ms"),
        "decode_tokens_per_s": tokens_per_s(timing),
        "timing": timing,
        "self_peak_rss_mib": obj.get("peak_rss_mib"),
        "peak_rss_mib": r["maxrss_mib"],
        "process_wall_s": r["wall_s"],
        "prompt_tokens": obj.get("prompt_tokens"),
        "generated_ids": obj.get("generated_ids"),
    }


def rhlens_trace(binary, model_dir, image, tokens, threads, out_dir: Path, extra=()) -> dict:
    if out_dir.exists():
        shutil.rmtree(out_dir)
    cmd = rhlens_cmd(binary, "trace", model_dir, image, tokens, threads, ["--out", str(out_dir), "--quiet", *extra])
    r = run_measured(cmd, rhlens_env(threads), 7200)
    if r["rc"] != 0:
        return {"error": f"rhlens trace failed (rc {r['rc']}): {r['stderr'].strip()[-400:]}"}
    timing, ids = trace_timing(out_dir)
    summary = [ln for ln in r["stderr"].splitlines() if ln.startswith("trace:")]
    res = {
        "prefill_ms": (timing or {}).get("prefill_ms"),
        "decode_tokens_per_s": tokens_per_s(timing),
        "timing": timing,
        "peak_rss_mib": r["maxrss_mib"],
        "process_wall_s": r["wall_s"],
        "generated_ids": ids,
        "summary": summary[-1] if summary else None,
        "trace_bytes": sum(p.stat().st_size for p in out_dir.rglob("*") if p.is_file()),
    }
    shutil.rmtree(out_dir, ignore_errors=True)
    return res


def difference_rate(walls_n: list[float], walls_1: list[float], tokens: int) -> float | None:
    wn, w1 = median(walls_n), median(walls_1)
    if wn is None or w1 is None or wn <= w1:
        return None
    return (tokens - 1) / (wn - w1)


def summarize(runs: list[dict]) -> dict:
    """Median of each number over repeated runs (first error wins)."""
    errors = [r["error"] for r in runs if "error" in r]
    if errors:
        return {"error": errors[0]}
    keys = ["prefill_ms", "decode_tokens_per_s", "peak_rss_mib", "self_peak_rss_mib", "process_wall_s"]
    out = {k: median([r.get(k) for r in runs]) for k in keys}
    out["runs"] = [{k: v for k, v in r.items() if k != "generated_ids"} for r in runs]
    out["generated_ids"] = runs[-1].get("generated_ids")
    for k in ("prompt_tokens", "summary", "trace_bytes"):
        if runs[-1].get(k) is not None:
            out[k] = runs[-1][k]
    return out


def bench_rhlens(caps, binary, model_dir, image, tokens, repeats, threads, work: Path, notes: list[str]) -> dict:
    res: dict[str, dict] = {}
    gen = [rhlens_generate(binary, model_dir, image, tokens, threads) for _ in range(repeats)]
    res["rhlens generate"] = summarize(gen)
    if not caps["trace"]:
        notes.append("rhlens trace not measured: the binary has no `trace` subcommand")
        return res
    trace = [rhlens_trace(binary, model_dir, image, tokens, threads, work / f"trace-{i}") for i in range(repeats)]
    res["rhlens trace"] = summarize(trace)
    if "error" in res["rhlens trace"] or "error" in res["rhlens generate"]:
        return res
    if res["rhlens trace"]["decode_tokens_per_s"] is None:
        # No timing in trace.json: time both paths by the difference method on process wall times
        # (load, preprocessing and writing cancel out, except what grows with the tokens).
        notes.append("trace.json has no timing: rhlens decode rates by the difference method on process wall time")
        g1 = [rhlens_generate(binary, model_dir, image, 1, threads) for _ in range(repeats)]
        t1 = [rhlens_trace(binary, model_dir, image, 1, threads, work / f"trace1-{i}") for i in range(repeats)]
        for name, runs_n, runs_1 in (("rhlens generate", gen, g1), ("rhlens trace", trace, t1)):
            rate = difference_rate([r["process_wall_s"] for r in runs_n], [r["process_wall_s"] for r in runs_1], tokens)
            res[name]["decode_tokens_per_s_wall_difference"] = rate
        res["rhlens trace"]["decode_tokens_per_s"] = res["rhlens trace"]["decode_tokens_per_s_wall_difference"]
    return res


def ids_agreement(a: list[int] | None, b: list[int] | None) -> str | None:
    if not a or not b:
        return None
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return "equal" if n == len(a) == len(b) else f"first {n} of {min(len(a), len(b))} equal"


def prepare_config(name: str, work: Path, image: Path, notes: list[str]) -> tuple[Path, dict]:
    if name == "tiny":
        return TINY_DIR, {"checkpoint": str(TINY_DIR.relative_to(ROOT))}
    if name == "mid":
        import torch

        vocab = json.loads((TINY_DIR / "config.json").read_text())["vocab_size"]
        out = work / "mid"
        t0 = time.perf_counter()
        facts, model = build_random_checkpoint(out, MID_SPEC, vocab, torch.float32, "cpu", seed=7, max_positions=32768)
        del model
        facts["build_s"] = time.perf_counter() - t0
        facts["checkpoint"] = "temporary (random weights, float32, save_pretrained)"
        return out, facts
    raise SystemExit(f"unknown config {name!r} (tiny, mid)")


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def ratio(a, b) -> str:
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def print_table(results: dict) -> None:
    head = f"{'config':7s} {'implementation':17s} {'prefill ms':>11s} {'decode tok/s':>13s} {'peak RSS MiB':>13s} {'vs HF sdpa':>11s} {'vs HF eager+attn':>17s}"
    print(head)
    print("-" * len(head))
    for cfg, res in results.items():
        sdpa = res.get("HF sdpa", {}).get("decode_tokens_per_s")
        eager = res.get("HF eager+attn", {}).get("decode_tokens_per_s")
        for impl in ("HF sdpa", "HF eager+attn", "rhlens generate", "rhlens trace"):
            r = res.get(impl)
            if r is None:
                continue
            if "error" in r:
                print(f"{cfg:7s} {impl:17s} error: {r['error'][:90]}")
                continue
            rate = r.get("decode_tokens_per_s")
            rel = impl.startswith("rhlens")
            print(
                f"{cfg:7s} {impl:17s} {fmt(r.get('prefill_ms')):>11s} {fmt(rate):>13s} {fmt(r.get('peak_rss_mib'), '.0f'):>13s} "
                f"{(ratio(rate, sdpa) if rel else ''):>11s} {(ratio(rate, eager) if rel else ''):>17s}"
            )
        g, t = res.get("rhlens generate", {}), res.get("rhlens trace", {})
        key, how = "decode_tokens_per_s", "own timing"
        if t.get("decode_tokens_per_s_wall_difference"):
            key, how = "decode_tokens_per_s_wall_difference", "both by wall-time difference"
        if g.get(key) and t.get(key):
            over = (g[key] / t[key] - 1) * 100
            rss = (t.get("peak_rss_mib") or 0) - (g.get("peak_rss_mib") or 0)
            print(
                f"{cfg:7s} rhlens trace vs generate: decode time per token {over:+.1f}% ({how}), "
                f"peak RSS {rss:+.0f} MiB"
            )


def estimate_hf_attn_bytes(layers: int, heads: int, prompt: int, new: int) -> int:
    """Bytes of float32 attention probabilities generate(output_attentions=True) holds at the end:
    the prefill's [heads, L, L] per layer plus one [heads, 1, L+s] row per layer per later step."""
    per_layer_heads = prompt * prompt + sum(prompt + s for s in range(1, new))
    return layers * heads * per_layer_heads * 4


HF_CPU_ATTN_RSS_FACTOR = 7


def mem_available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def long_mode(args, caps, binary, work: Path, image: Path, notes: list[str]) -> dict:
    n = args.long
    model_dir, facts = prepare_config("mid", work, image, notes)
    out: dict[str, object] = {"config": "mid", "tokens": n, "checkpoint": facts}
    print(f"long generation: mid config, {n} new tokens, one run each")
    if caps["generate"]:
        out["rhlens generate"] = summarize([rhlens_generate(binary, model_dir, image, n, args.threads)])
    if caps["trace"]:
        out["rhlens trace"] = summarize([rhlens_trace(binary, model_dir, image, n, args.threads, work / "trace-long")])
    if not caps["generate"]:
        notes.append(caps.get("problem", "rhlens not available"))
    if not args.skip_hf:
        from transformers import AutoTokenizer  # noqa: F401  (processor needs it)
        from PIL import Image

        processor = load_processor(model_dir)
        prompt_len = prepare_inputs(processor, Image.open(image).convert("RGB"), PROMPT)["input_ids"].shape[1]
        t = MID_SPEC["text"]
        attn = estimate_hf_attn_bytes(t["layers"], t["heads"], prompt_len, n)
        # The process grows by several times the attention bytes it keeps: each step's eager
        # attention allocates a few same-sized temporaries next to the kept row, and the C heap
        # keeps the freed space (measured on this config: about 6.7x at 1,024 new tokens).
        total = HF_CPU_ATTN_RSS_FACTOR * attn + 2 * facts["weight_bytes"] + 1 * 2**30
        avail = mem_available_bytes()
        limit = min(16 * 2**30, int(0.85 * avail)) if avail else 16 * 2**30
        out["hf_estimate"] = {
            "prompt_tokens": prompt_len,
            "attentions_gib": attn / 2**30,
            "peak_rss_gib": total / 2**30,
            "rss_factor": HF_CPU_ATTN_RSS_FACTOR,
        }
        if total > limit:
            note = f"HF eager+attn at {n} tokens skipped: estimated {total / 2**30:.1f} GiB > {limit / 2**30:.1f} GiB"
            notes.append(note)
        else:
            r = hf_run(model_dir, image, "eager", True, n, 1, args.threads)
            out["HF eager+attn"] = r
    print(f"{'implementation':17s} {'peak RSS MiB':>13s} {'decode tok/s':>13s} {'wall s':>8s}")
    for impl in ("rhlens generate", "rhlens trace", "HF eager+attn"):
        r = out.get(impl)
        if isinstance(r, dict):
            if "error" in r:
                print(f"{impl:17s} error: {r['error'][:100]}")
            else:
                print(
                    f"{impl:17s} {fmt(r.get('peak_rss_mib'), '.0f'):>13s} {fmt(r.get('decode_tokens_per_s')):>13s} "
                    f"{fmt(r.get('process_wall_s')):>8s}"
                )
    if isinstance(out.get("hf_estimate"), dict):
        e = out["hf_estimate"]
        print(
            f"(HF estimate at prompt {e['prompt_tokens']} + {n} tokens: {e['attentions_gib']:.2f} GiB of held "
            f"attentions, peak RSS ~{e['peak_rss_gib']:.1f} GiB)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description="rhlens vs Hugging Face on CPU (see the module docstring)")
    parser.add_argument("--configs", default="tiny,mid", help="comma-separated: tiny, mid")
    parser.add_argument("--tokens", type=int, help="new tokens for every config (default: tiny 256, mid 128)")
    parser.add_argument("--repeats", type=int, help="runs per measurement, median reported (default 3)")
    parser.add_argument("--quick", action="store_true", help="32 tokens, one repeat")
    parser.add_argument("--skip-hf", action="store_true", help="rhlens only")
    parser.add_argument("--skip-eager", action="store_true", help="no HF eager+attn (the slow one): HF sdpa vs rhlens")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for every run (default 2)")
    parser.add_argument(
        "--omp-passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE for every run: on a CPU shared with other work, idle OpenMP "
        "threads sleep instead of spinning (spinning took 70%% of decode time under load)",
    )
    parser.add_argument("--rhlens", type=Path, default=DEFAULT_BINARY, help="rhlens binary")
    parser.add_argument("--long", type=int, metavar="N", help="peak-memory mode: N new tokens on the mid config")
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "rhlens-bench.json")
    parser.add_argument("--hf-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.hf_worker:
        return hf_worker(json.loads(args.hf_worker))

    os.environ.update({k: v for k, v in quiet_env().items() if k not in os.environ})
    if args.omp_passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # read by libgomp when each run starts
    repeats = args.repeats or (1 if args.quick else 3)
    default_tokens = {"tiny": 32 if args.quick else 256, "mid": 32 if args.quick else 128}
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    binary = args.rhlens.resolve()
    caps = rhlens_capabilities(binary)
    notes: list[str] = []
    if caps.get("problem"):
        notes.append(caps["problem"])
        print(f"note: {caps['problem']}")

    import torch
    import transformers

    machine = {
        "cpu": cpu_name(),
        "logical_cpus": os.cpu_count(),
        "threads": args.threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rhlens": caps.get("version"),
    }
    print(
        f"CPU: {machine['cpu']} ({machine['logical_cpus']} logical CPUs), {args.threads} threads per run, "
        f"load average {machine['load_average_at_start'][0]:.2f}; torch {torch.__version__}, "
        f"transformers {transformers.__version__}, rhlens {caps.get('version') or '-'}"
    )
    if machine["load_average_at_start"][0] > 0.5:
        print("note: other processes are using the CPUs (load average above); timings will be noisy")
    work = Path(tempfile.mkdtemp(prefix="rhlens-bench-"))
    report: dict[str, object] = {"machine": machine, "settings": {"repeats": repeats, "prompt": PROMPT}, "notes": notes}
    try:
        image = work / "bench-448.png"
        draw_image(448, 448).save(image)
        if args.long:
            report["long"] = long_mode(args, caps, binary, work, image, notes)
        else:
            results: dict[str, dict] = {}
            for name in configs:
                tokens = args.tokens or default_tokens.get(name, 128)
                model_dir, facts = prepare_config(name, work, image, notes)
                print(f"[{name}] {tokens} new tokens, {repeats} repeat(s)" + (f", {facts['parameters'] / 1e6:.1f} M parameters" if "parameters" in facts else ""))
                res: dict[str, object] = {"tokens": tokens, "checkpoint": facts}
                if not args.skip_hf:
                    print(f"[{name}] Hugging Face sdpa ...", flush=True)
                    res["HF sdpa"] = hf_run(model_dir, image, "sdpa", False, tokens, repeats, args.threads)
                if not args.skip_hf and not args.skip_eager:
                    print(f"[{name}] Hugging Face eager + output_attentions ...", flush=True)
                    res["HF eager+attn"] = hf_run(model_dir, image, "eager", True, tokens, repeats, args.threads)
                if caps["generate"]:
                    print(f"[{name}] rhlens ...", flush=True)
                    res.update(bench_rhlens(caps, binary, model_dir, image, tokens, repeats, args.threads, work, notes))
                    g = res.get("rhlens generate", {})
                    t = res.get("rhlens trace", {})
                    res["ids"] = {
                        "rhlens generate vs HF sdpa": ids_agreement(g.get("generated_ids"), res.get("HF sdpa", {}).get("generated_ids")),
                        "rhlens trace vs rhlens generate": ids_agreement(t.get("generated_ids"), g.get("generated_ids")),
                    }
                results[name] = res
                if name == "mid":
                    shutil.rmtree(model_dir, ignore_errors=True)
            report["results"] = results
            print()
            print_table(results)
            for name, res in results.items():
                for k, v in (res.get("ids") or {}).items():
                    if v:
                        print(f"{name}: {k}: {v}")
        for n in dict.fromkeys(notes):
            print(f"note: {n}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    machine["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"numbers written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""GPU benchmark: rhlens against Hugging Face transformers at real Qwen2.5-VL sizes, one command.

For a CUDA machine whose Python has torch 2.11.0 and transformers, and a prebuilt rhlens binary
(nothing is built or downloaded there):

    python3 scripts/bench_gpu.py --rhlens PATH/TO/rhlens --out result.json \\
        [--sizes 256,1024,4096] [--dtype bf16] [--shape 7b|3b|tiny] [--budget-s 450]

Smoke test of the logic on a CPU machine:

    .venv/bin/python scripts/bench_gpu.py --rhlens target/release/rhlens --shape tiny --device cpu \\
        --dtype f32 --sizes 16,32 --out /tmp/gpu-smoke.json

What it does:
1. Builds a random-weight Qwen2.5-VL with the real shapes of `--shape` (7B: 28 layers, hidden 3584,
   28 heads / 4 KV heads, intermediate 18944, vision 32 blocks x 1280; vocab 152064) with
   transformers' `_from_config` directly on the device in `--dtype`, with the tokenizer, chat template
   and special-token ids of tests/fixtures/models/tiny-flat, and saves it (safetensors) to a temporary
   folder (in /dev/shm when it has room). Draws a 448x448 and a 1280x720 image.
2. For each N in --sizes (greedy, min_new_tokens = max_new_tokens = N):
   - rhlens `generate --json` (no capture), `trace` (role attention of every layer captured) and
     `trace --window 64` (plus visual maps per window), each a fresh process; tokens/s from rhlens's
     own timing (`generate --json`'s `timing`; trace.json's `settings.timing` when present, else
     the difference method on process wall times); peak GPU memory by polling nvidia-smi every 50 ms
     minus the idle level just before the process; generated ids of trace vs generate compared.
   - Hugging Face on the model already in memory: eager + output_attentions (the reference code's
     capture path) and sdpa without capture; prefill ms = generate(max_new_tokens=1) (median of 3,
     after a warm-up), tokens/s = (N - 1) / (t(N) - t(1)); peak memory from
     torch.cuda.max_memory_allocated (reset before each run), also given as the extra over weights.
   Runs whose estimated time would overrun --budget-s (counted from the start), or whose estimated
   memory would not fit, are skipped and listed in the notes. Order per N: rhlens runs, HF eager,
   HF sdpa (HF at the largest N is the first to go).
3. Prefill of the 1280x720 image: HF eager and sdpa (median of 3) and rhlens `generate
   --max-new-tokens 1`. rhlens prefill is always the first forward of a fresh process (cold).
4. Writes one JSON file and prints a table with the ratios rhlens capture / HF eager+attn and
   rhlens capture / rhlens no-capture.
The rhlens binary gets LD_LIBRARY_PATH = this Python's torch/lib.
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
import threading
import time
from pathlib import Path

sys.dont_write_bytecode = True  # importing bench.py must not leave files in the repository
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402

VOCAB = 152064
VISION_7B = dict(depth=32, hidden=1280, heads=16, intermediate=3420, fullatt=[7, 15, 23, 31], window=112)
SHAPES = {
    "7b": dict(
        text=dict(hidden=3584, layers=28, heads=28, kv_heads=4, intermediate=18944, mrope=[16, 24, 24]),
        vision=VISION_7B,
        tied=False,
    ),
    "3b": dict(
        text=dict(hidden=2048, layers=36, heads=16, kv_heads=2, intermediate=11008, mrope=[16, 24, 24]),
        vision=VISION_7B,
        tied=True,
    ),
    "tiny": dict(
        text=dict(hidden=64, layers=3, heads=4, kv_heads=2, intermediate=112, mrope=[2, 3, 3]),
        vision=dict(depth=4, hidden=32, heads=2, intermediate=48, fullatt=[1, 3], window=112),
        tied=False,
    ),
}
DTYPES = {"bf16": "bfloat16", "f16": "float16", "f32": "float32"}
WINDOW = 64
POLL_S = 0.05


# ---------------------------------------------------------------------------------------------
# GPU memory of a child process, from nvidia-smi
# ---------------------------------------------------------------------------------------------


def smi_index() -> str:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    return vis if vis.isdigit() else "0"


def smi_used_mib() -> float | None:
    try:
        p = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", smi_index()],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return float(p.stdout.strip().splitlines()[0]) if p.returncode == 0 else None
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


class GpuPoller:
    """Samples nvidia-smi's memory.used every 50 ms (`-lms 50`) while a child runs."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self.baseline: float | None = None
        self._proc: subprocess.Popen | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if self.enabled:
            base = [x for x in (smi_used_mib() for _ in range(3)) if x is not None]
            self.baseline = statistics.median(base) if base else None
            self._proc = subprocess.Popen(
                [
                    "nvidia-smi",
                    "--query-gpu=memory.used",
                    "--format=csv,noheader,nounits",
                    "-i",
                    smi_index(),
                    "-lms",
                    str(int(POLL_S * 1000)),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
            time.sleep(0.2)  # let the sampler start before the child does
        return self

    def _read(self):
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            try:
                self.samples.append(float(line.strip()))
            except ValueError:
                pass

    def __exit__(self, *exc):
        if self._proc:
            time.sleep(2 * POLL_S)
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        if self._thread:
            self._thread.join(timeout=10)

    def peak_extra_mib(self) -> float | None:
        if not self.samples or self.baseline is None:
            return None
        return max(self.samples) - self.baseline


# ---------------------------------------------------------------------------------------------
# rhlens runs
# ---------------------------------------------------------------------------------------------


class Rhlens:
    def __init__(self, binary: Path, model_dir: Path, device: str, dtype: str, work: Path):
        self.binary, self.model_dir, self.device, self.dtype, self.work = binary, model_dir, device, dtype, work
        self.env = B.rhlens_env()
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)

    def cmd(self, sub: str, image: Path, n: int, extra=()) -> list[str]:
        return [
            str(self.binary),
            sub,
            "--model",
            str(self.model_dir),
            "--image",
            str(image),
            "--prompt",
            B.PROMPT,
            "--greedy",
            "--min-new-tokens",
            str(n),
            "--max-new-tokens",
            str(n),
            "--device",
            self.device,
            "--dtype",
            self.dtype,
            *extra,
        ]

    def _run(self, cmd: list[str]) -> tuple[dict, float | None]:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()  # so the idle level is this process's weights + context only
        with GpuPoller(self.device.startswith("cuda")) as poll:
            r = B.run_measured(cmd, self.env, timeout=1800)
        return r, poll.peak_extra_mib()

    def generate(self, image: Path, n: int) -> dict:
        r, gpu = self._run(self.cmd("generate", image, n, ["--json"]))
        obj = B.last_json_line(r["stdout"]) if r["rc"] == 0 else None
        if obj is None:
            return {"error": f"rhlens generate failed (rc {r['rc']}): {r['stderr'].strip()[-400:]}"}
        timing = obj.get("timing") or {}
        return {
            "tokens_per_s": B.tokens_per_s(timing),
            "prefill_ms": timing.get("prefill_ms"),
            "timing": timing,
            "peak_gpu_mib": gpu,
            "peak_rss_mib": r["maxrss_mib"],
            "process_wall_s": r["wall_s"],
            "prompt_tokens": obj.get("prompt_tokens"),
            "generated_ids": obj.get("generated_ids"),
        }

    def trace(self, image: Path, n: int, window: int | None) -> dict:
        out = self.work / f"trace-{n}-{window or 0}"
        if out.exists():
            shutil.rmtree(out)
        extra = ["--out", str(out), "--quiet"] + (["--window", str(window)] if window else [])
        r, gpu = self._run(self.cmd("trace", image, n, extra))
        if r["rc"] != 0:
            return {"error": f"rhlens trace failed (rc {r['rc']}): {r['stderr'].strip()[-400:]}"}
        timing, ids = B.trace_timing(out)
        size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
        shutil.rmtree(out, ignore_errors=True)
        summary = [ln for ln in r["stderr"].splitlines() if ln.startswith("trace:")]
        return {
            "tokens_per_s": B.tokens_per_s(timing),
            "prefill_ms": (timing or {}).get("prefill_ms"),
            "timing": timing,
            "peak_gpu_mib": gpu,
            "peak_rss_mib": r["maxrss_mib"],
            "process_wall_s": r["wall_s"],
            "generated_ids": ids,
            "trace_bytes": size,
            "summary": summary[-1] if summary else None,
        }


# ---------------------------------------------------------------------------------------------
# Hugging Face runs (in this process, on the model already built)
# ---------------------------------------------------------------------------------------------


class HF:
    def __init__(self, model, processor, device: str):
        import torch

        self.torch = torch
        self.model, self.processor, self.device = model, processor, device
        self.cuda = device.startswith("cuda")
        self.pad = processor.tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self.t1: dict[tuple[str, str], float] = {}

    def inputs(self, image):
        inp = B.prepare_inputs(self.processor, image, B.PROMPT)
        return {k: v.to(self.device) for k, v in inp.items()}

    def sync(self):
        if self.cuda:
            self.torch.cuda.synchronize()

    def set_impl(self, attn: str):
        self.model.set_attn_implementation(attn)
        got = self.model.config.text_config._attn_implementation
        if got != attn:
            raise SystemExit(f"could not switch the model to {attn} attention (got {got})")

    def timed(self, inputs, n: int, capture: bool) -> dict:
        torch = self.torch
        kw = dict(do_sample=False, max_new_tokens=n, min_new_tokens=n, pad_token_id=self.pad)
        if capture:
            kw.update(output_attentions=True, return_dict_in_generate=True)
        base = peak = None
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        self.sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**inputs, **kw)
        self.sync()
        dt = time.perf_counter() - t0
        if self.cuda:
            peak = torch.cuda.max_memory_allocated()
        seq = out.sequences if capture else out
        ids = seq[0, inputs["input_ids"].shape[1] :].tolist()
        del out, seq
        if len(ids) != n:
            raise SystemExit(f"HF generate returned {len(ids)} tokens, expected {n}")
        res = {"wall_s": dt, "generated_ids": ids}
        if peak is not None:
            res["peak_gpu_mib"] = peak / 2**20
            res["extra_over_weights_mib"] = (peak - base) / 2**20
            res["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
        return res

    def prefill(self, inputs, attn: str, capture: bool, key: str, repeats: int = 3) -> dict:
        self.set_impl(attn)
        self.timed(inputs, 2, capture)  # warm-up
        runs = [self.timed(inputs, 1, capture) for _ in range(repeats)]
        t1 = statistics.median(r["wall_s"] for r in runs)
        self.t1[(attn, key)] = t1
        out = {"prefill_ms": t1 * 1000.0, "t1_s": [r["wall_s"] for r in runs]}
        if self.cuda:
            out["peak_gpu_mib"] = max(r["peak_gpu_mib"] for r in runs)
        return out

    def decode(self, inputs, attn: str, capture: bool, n: int, key: str = "448") -> dict:
        self.set_impl(attn)
        r = self.timed(inputs, n, capture)
        t1 = self.t1[(attn, key)]
        r["prefill_ms"] = t1 * 1000.0
        r["tokens_per_s"] = (n - 1) / (r["wall_s"] - t1) if r["wall_s"] > t1 and n > 1 else None
        return r


def hf_attention_bytes(spec: dict, prompt: int, n: int, elem: int) -> int:
    t = spec["text"]
    return B.estimate_hf_attn_bytes(t["layers"], t["heads"], prompt, n) // 4 * elem


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------


def pick_workdir(need_bytes: int) -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 2 * need_bytes + 8 * 2**30:
        return Path(tempfile.mkdtemp(prefix="rhlens-bench-gpu-", dir=shm))
    return Path(tempfile.mkdtemp(prefix="rhlens-bench-gpu-"))


def fmt(x, spec=".1f") -> str:
    return "-" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description="rhlens vs Hugging Face on a GPU (see the module docstring)")
    ap.add_argument("--rhlens", type=Path, help="the rhlens binary (required unless --skip-rhlens)")
    ap.add_argument("--out", type=Path, default=Path("bench-gpu.json"))
    ap.add_argument("--sizes", default="256,1024,4096", help="new-token counts")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    ap.add_argument("--shape", default="7b", choices=sorted(SHAPES))
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: smoke test of the logic)")
    ap.add_argument("--budget-s", type=float, default=450.0, help="skip runs that would end later than this")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-rhlens", action="store_true")
    args = ap.parse_args()
    start = time.perf_counter()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    if not args.skip_rhlens and args.rhlens is None:
        raise SystemExit("--rhlens PATH is required (or pass --skip-rhlens)")
    for k, v in B.quiet_env().items():
        os.environ.setdefault(k, v)

    import torch
    import transformers
    from PIL import Image

    transformers.utils.logging.disable_progress_bar()
    cuda = args.device.startswith("cuda")
    if cuda and not torch.cuda.is_available():
        raise SystemExit("CUDA is not available to this Python's torch (use --device cpu for a smoke test)")
    dtype = getattr(torch, DTYPES[args.dtype])
    elem = torch.tensor([], dtype=dtype).element_size()
    spec = SHAPES[args.shape]
    notes: list[str] = []

    caps = {"generate": False, "trace": False, "window": False}
    if not args.skip_rhlens:
        caps = B.rhlens_capabilities(args.rhlens.resolve())
        if caps.get("problem"):
            raise SystemExit(caps["problem"])
        if not caps["trace"]:
            notes.append("the rhlens binary has no `trace` subcommand: capture not measured")
    machine = {
        "device": torch.cuda.get_device_name() if cuda else B.cpu_name(),
        "gpu_memory_gib": torch.cuda.get_device_properties(0).total_memory / 2**30 if cuda else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "rhlens": caps.get("version"),
        "cpu": B.cpu_name(),
        "threads": torch.get_num_threads(),
    }
    print(
        f"{machine['device']} ({args.device}), torch {torch.__version__}, transformers {transformers.__version__}, "
        f"rhlens {caps.get('version') or '-'}; shape {args.shape}, {args.dtype}, sizes {sizes}, budget {args.budget_s:.0f}s"
    )

    approx_bytes = 8 * 10**9 * elem if args.shape == "7b" else 4 * 10**9 * elem if args.shape == "3b" else 10**8
    work = pick_workdir(approx_bytes)
    report: dict[str, object] = {"machine": machine, "shape": args.shape, "dtype": args.dtype, "notes": notes}
    try:
        t0 = time.perf_counter()
        model_dir = work / f"qwen2_5_vl-{args.shape}-random"
        facts, model = B.build_random_checkpoint(
            model_dir, spec, VOCAB, dtype, args.device, seed=0, tied=spec["tied"], max_positions=128000
        )
        facts["build_and_save_s"] = time.perf_counter() - t0
        report["checkpoint"] = facts
        print(
            f"checkpoint: {facts['parameters'] / 1e9:.2f} B parameters, {facts['weight_bytes'] / 2**30:.1f} GiB, "
            f"built and saved in {facts['build_and_save_s']:.0f}s -> {model_dir}"
        )
        img448 = work / "448.png"
        img720 = work / "1280x720.png"
        B.draw_image(448, 448).save(img448)
        B.draw_image(1280, 720, seed=6).save(img720)

        processor = B.load_processor(model_dir)
        hf = HF(model, processor, args.device) if not args.skip_hf else None
        rh = Rhlens(args.rhlens.resolve(), model_dir, args.device, args.dtype, work) if not args.skip_rhlens else None
        inp448 = B.prepare_inputs(processor, Image.open(img448).convert("RGB"), B.PROMPT)
        prompt_len = inp448["input_ids"].shape[1]
        report["prompt_tokens_448"] = prompt_len
        results: dict[str, dict] = {}
        prefill: dict[str, dict] = {}
        if hf:
            i448 = hf.inputs(Image.open(img448).convert("RGB"))
            prefill["HF eager+attn 448"] = hf.prefill(i448, "eager", True, "448")
            prefill["HF sdpa 448"] = hf.prefill(i448, "sdpa", False, "448")

        def remaining() -> float:
            return args.budget_s - (time.perf_counter() - start)

        # rates and per-process overheads seen so far, for the time estimates; without a rate
        # (trace.json without timing) the last wall time, scaled linearly with the tokens
        seen: dict[str, tuple[float, float]] = {}
        walls: dict[str, tuple[int, float]] = {}

        def estimate(name: str, n: int) -> float | None:
            if name in seen:
                rate, overhead = seen[name]
                return overhead + n / rate
            if name in walls:
                n0, w0 = walls[name]
                return w0 * max(n / n0, 1.0)
            return None

        def allowed(name: str, n: int) -> bool:
            est = estimate(name, n)
            if est is not None and est > remaining():
                notes.append(f"{name} at {n} tokens skipped: estimated {est:.0f}s, {max(remaining(), 0):.0f}s of budget left")
                return False
            return True

        def learn(name: str, n: int, r: dict, wall_key: str):
            rate = r.get("tokens_per_s")
            wall = r.get(wall_key)
            if wall:
                walls[name] = (n, wall)
            if rate and wall:
                seen[name] = (rate, max(wall - n / rate, 0.0))

        for n in sizes:
            row: dict[str, dict] = {}
            if rh:
                for name, run in (
                    ("rhlens generate", lambda: rh.generate(img448, n)),
                    ("rhlens trace", lambda: rh.trace(img448, n, None)),
                    (f"rhlens trace --window {WINDOW}", lambda: rh.trace(img448, n, WINDOW)),
                ):
                    if name != "rhlens generate" and not caps["trace"]:
                        continue
                    if name.endswith(f"{WINDOW}") and not caps["window"]:
                        continue
                    if allowed(name, n):
                        print(f"[{n}] {name} ...", flush=True)
                        row[name] = run()
                        learn(name, n, row[name], "process_wall_s")
            if hf:
                t = spec["text"]
                for name, attn, capture in (("HF eager+attn", "eager", True), ("HF sdpa", "sdpa", False)):
                    if capture and cuda:
                        need = hf_attention_bytes(spec, prompt_len, n, elem)
                        free, _ = torch.cuda.mem_get_info()
                        kv = 2 * t["layers"] * t["kv_heads"] * (t["hidden"] // t["heads"]) * (prompt_len + n) * elem
                        if need + kv + 2 * 2**30 > free:
                            notes.append(
                                f"{name} at {n} tokens skipped: needs ~{(need + kv) / 2**30:.1f} GiB of attentions and "
                                f"cache, {free / 2**30:.1f} GiB free"
                            )
                            continue
                    if allowed(name, n):
                        print(f"[{n}] {name} ...", flush=True)
                        row[name] = hf.decode(i448, attn, capture, n)
                        learn(name, n, row[name], "wall_s")
            results[str(n)] = row

        # trace.json without timing: difference method on process wall times for all rhlens paths
        if rh and caps["trace"]:
            missing = any(
                "error" not in r and r.get("tokens_per_s") is None
                for row in results.values()
                for k, r in row.items()
                if k.startswith("rhlens trace")
            )
            if missing:
                notes.append("trace.json has no timing: rhlens rates by the difference method on process wall time")
                one = {
                    "rhlens generate": rh.generate(img448, 1),
                    "rhlens trace": rh.trace(img448, 1, None),
                }
                if caps["window"]:
                    one[f"rhlens trace --window {WINDOW}"] = rh.trace(img448, 1, WINDOW)
                for n_key, row in results.items():
                    n = int(n_key)
                    for k, r in row.items():
                        base = one.get(k)
                        if base is None or "error" in r or "error" in base or n < 2:
                            continue
                        d = r["process_wall_s"] - base["process_wall_s"]
                        r["tokens_per_s_wall_difference"] = (n - 1) / d if d > 0 else None
                        if r.get("tokens_per_s") is None:
                            r["tokens_per_s"] = r["tokens_per_s_wall_difference"]
                report["rhlens_one_token"] = {k: {kk: vv for kk, vv in v.items() if kk != "generated_ids"} for k, v in one.items()}

        # prefill of a 1280x720 image
        if hf and remaining() > 30:
            i720 = hf.inputs(Image.open(img720).convert("RGB"))
            prefill["HF eager+attn 1280x720"] = hf.prefill(i720, "eager", True, "720")
            prefill["HF sdpa 1280x720"] = hf.prefill(i720, "sdpa", False, "720")
            prefill["prompt_tokens_1280x720"] = {"tokens": i720["input_ids"].shape[1]}
        if rh and remaining() > 20:
            r = rh.generate(img720, 1)
            prefill["rhlens 1280x720"] = {k: r.get(k) for k in ("prefill_ms", "peak_gpu_mib", "process_wall_s", "error")}
        report["prefill"] = prefill
        report["results"] = results

        # ids and ratios
        summary_rows = []
        for n_key, row in results.items():
            g = row.get("rhlens generate", {})
            for k, r in row.items():
                if k.startswith("rhlens trace") and g.get("generated_ids") and r.get("generated_ids") is not None:
                    r["ids_equal_generate"] = r["generated_ids"] == g["generated_ids"]
            if g.get("generated_ids") and row.get("HF sdpa", {}).get("generated_ids"):
                g["ids_vs_hf_sdpa"] = B.ids_agreement(g["generated_ids"], row["HF sdpa"]["generated_ids"])
            summary_rows.append((n_key, row))
        print()
        head = (
            f"{'N':>5s} {'implementation':24s} {'tok/s':>8s} {'prefill ms':>10s} {'peak GPU MiB':>13s} "
            f"{'vs HF eager+attn':>17s} {'vs rhlens generate':>19s} {'ids = generate':>15s}"
        )
        print(head)
        print("-" * len(head))
        for n_key, row in summary_rows:
            eager = row.get("HF eager+attn", {}).get("tokens_per_s")
            gen = row.get("rhlens generate", {}).get("tokens_per_s")
            for k, r in row.items():
                if "error" in r:
                    print(f"{n_key:>5s} {k:24s} error: {r['error'][:100]}")
                    continue
                rate = r.get("tokens_per_s")
                mem_s = fmt(r.get("peak_gpu_mib"), ".0f")
                rel_e = B.ratio(rate, eager) if k.startswith("rhlens trace") else ""
                # compare like with like: wall-time difference rates on both sides when trace had no timing
                g_rate = gen
                if r.get("tokens_per_s_wall_difference") is not None:
                    g_rate = row.get("rhlens generate", {}).get("tokens_per_s_wall_difference")
                    rate_g = r["tokens_per_s_wall_difference"]
                else:
                    rate_g = rate
                rel_g = B.ratio(rate_g, g_rate) if k.startswith("rhlens trace") else ""
                same = {True: "yes", False: "NO"}.get(r.get("ids_equal_generate"), "")
                print(
                    f"{n_key:>5s} {k:24s} {fmt(rate):>8s} {fmt(r.get('prefill_ms')):>10s} {mem_s:>13s} "
                    f"{rel_e:>17s} {rel_g:>19s} {same:>15s}"
                )
        if prefill:
            print()
            for k, v in prefill.items():
                if "prefill_ms" in v:
                    print(f"prefill {k:26s} {fmt(v.get('prefill_ms')):>10s} ms")
            if "prompt_tokens_1280x720" in prefill:
                print(f"(1280x720 prompt: {prefill['prompt_tokens_1280x720']['tokens']} tokens; 448x448: {prompt_len})")
        print(
            "GPU memory: HF = torch.cuda.max_memory_allocated (weights included); rhlens = nvidia-smi peak minus "
            "the idle level before the process (weights, CUDA context and allocator cache included)"
        )
        for note in dict.fromkeys(notes):
            print(f"note: {note}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report["total_s"] = time.perf_counter() - start
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"total {report['total_s']:.0f}s; numbers written to {args.out}")


if __name__ == "__main__":
    sys.exit(main())

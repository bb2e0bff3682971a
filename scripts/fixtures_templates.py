#!/usr/bin/env python3
"""Regenerate tests/fixtures/templates/expected.json: chat templates rendered by Hugging Face.

Run from the repository root:

    .venv/bin/python scripts/fixtures_templates.py

For each template in tests/fixtures/templates/*.jinja it renders, with transformers' own
`render_jinja_template` (what `apply_chat_template` calls), the conversations rhlens builds
(`ChatTemplate::render`: optional system message + one user message with an image and a text)
and a few multi-turn conversations (reasoning, tool calls, errors raised by the template).
For the tiny checkpoints in tests/fixtures/models/ it also records what the checkpoint's
processor produces (`AutoProcessor.apply_chat_template`), which exercises the template lookup
and the special-token variables. The Rust tests in tests/checkpoint_chat_template.rs compare
against these strings byte for byte.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import transformers  # noqa: E402
from transformers import AutoTokenizer, Qwen2_5_VLProcessor  # noqa: E402
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil  # noqa: E402
from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TEMPLATES = ROOT / "tests" / "fixtures" / "templates"
MODELS = ROOT / "tests" / "fixtures" / "models"

SPECIAL = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
SPECIAL_WITH_BOS = {**SPECIAL, "bos_token": "<｜begin▁of▁sentence｜>"}

# (system, prompt) pairs given to ChatTemplate::render.
RENDER_CASES = [
    (None, "Describe this image."),
    ("You are a careful visual reasoner.", "How many apples are there?\nAnswer with a number."),
    ("", "An empty system prompt."),
    ("  Padded system prompt.  ", "  Leading and trailing spaces  "),
    (None, 'Unicode 你好, café, 🙂; quotes "x" \'y\'; template-like {{ not_a_var }} {% raw %} <|im_end|>'),
]


def rhlens_messages(system, prompt):
    """The conversation ChatTemplate::render builds."""
    messages = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]})
    return messages


MESSAGE_CASES = [
    (
        "reasoning_multi_turn",
        [
            {"role": "system", "content": "Think step by step."},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many cats?"}]},
            {"role": "assistant", "content": "<think>\nI see two cats.\n</think>\n\n<answer>2</answer>"},
            {"role": "user", "content": "And dogs?"},
        ],
        True,
    ),
    (
        "tool_calls",
        [
            {"role": "user", "content": [{"type": "text", "text": "Measure it."}, {"type": "image"}]},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "type": "function",
                        "function": {
                            "name": "measure",
                            "arguments": {
                                "zoom": 2,
                                "scale": 0.5,
                                "eps": 1e-06,
                                "big": 1e16,
                                "label": "größe \"Ω\" \\ <b>&</b>",
                                "flags": [True, False, None],
                                "nested": {"b": 1, "a": [1.0, 2.25]},
                            },
                        },
                    },
                    {"type": "function", "function": {"name": "noop", "arguments": {}}},
                ],
            },
            {"role": "tool", "content": "{\"length_cm\": 12}"},
            {"role": "tool", "content": "ok"},
            {"role": "user", "content": "Thanks."},
        ],
        False,
    ),
    (
        "unknown_role",
        [{"role": "critic", "content": "hm"}, {"role": "user", "content": "hi"}],
        True,
    ),
    (
        "system_not_first",
        [{"role": "user", "content": "hi"}, {"role": "system", "content": "late"}],
        True,
    ),
]


class ImageOnlyProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without the video processor (which needs torchvision)."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)


def load_processor(path: Path):
    # get_processor_dict performs transformers' own chat-template file lookup.
    processor_dict, _ = Qwen2_5_VLProcessor.get_processor_dict(str(path))
    return ImageOnlyProcessor(
        image_processor=Qwen2VLImageProcessorPil.from_pretrained(str(path)),
        tokenizer=AutoTokenizer.from_pretrained(str(path)),
        video_processor=None,
        chat_template=processor_dict["chat_template"],
    )


def render(template: str, messages, add_generation_prompt: bool, special: dict):
    try:
        out, _ = render_jinja_template(
            conversations=[messages],
            chat_template=template,
            add_generation_prompt=add_generation_prompt,
            **special,
        )
        return {"expected": out[0]}
    except Exception as e:  # the template's raise_exception, or a Jinja error
        return {"error": str(e)}


def main() -> int:
    cases = []
    for path in sorted(TEMPLATES.glob("*.jinja")):
        template = path.read_text(encoding="utf-8")
        for special_name, special in (("default", SPECIAL), ("with_bos", SPECIAL_WITH_BOS)):
            for system, prompt in RENDER_CASES:
                case = {
                    "template": path.name,
                    "special_tokens": special,
                    "kind": "render",
                    "system": system,
                    "prompt": prompt,
                }
                case.update(render(template, rhlens_messages(system, prompt), True, special))
                cases.append(case)
            for name, messages, add_gen in MESSAGE_CASES:
                case = {
                    "template": path.name,
                    "special_tokens": special,
                    "kind": "messages",
                    "name": f"{name}/{special_name}",
                    # JSON text: the Rust test must see the keys in this order.
                    "messages_json": json.dumps(messages, ensure_ascii=False),
                    "add_generation_prompt": add_gen,
                }
                case.update(render(template, messages, add_gen, special))
                cases.append(case)

    checkpoints = []
    for model in sorted(p for p in MODELS.glob("*") if (p / "config.json").is_file()):
        processor = load_processor(model)
        renders = []
        for system, prompt in RENDER_CASES[:2]:
            text = processor.apply_chat_template(
                rhlens_messages(system, prompt), add_generation_prompt=True, tokenize=False
            )
            renders.append({"system": system, "prompt": prompt, "expected": text})
        checkpoints.append(
            {
                "dir": str(model.relative_to(ROOT)),
                "special_tokens": processor.tokenizer.special_tokens_map,
                "renders": renders,
            }
        )

    out = {
        "generator": f"scripts/fixtures_templates.py with transformers {transformers.__version__}",
        "cases": cases,
        "checkpoints": checkpoints,
    }
    dest = TEMPLATES / "expected.json"
    dest.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {dest.relative_to(ROOT)}: {len(cases)} cases, {len(checkpoints)} checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())

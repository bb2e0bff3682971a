"""The paper's layer analysis and two-stage budget protocol, written from the description of its
reference scripts (layer analysis; length-control budget forcing), on the pinned Hugging Face stack
(transformers 5.17.0, eager attention, float32, inputs through the checkpoint's processor), for
tests/paper_reproduction.rs to compare `rhlens layers` and `--budget-protocol paper` with.

usage:
  paper_reference.py layers MODEL_DIR QUESTIONS.jsonl IMAGE_DIR OUT.json
      QUESTIONS: JSONL records {"question_id", "image", "text"} (the paper's schema)
      OUT: {"ids", "per_sample" [n][layers][3], "allocation" [layers][3]}
  paper_reference.py budget MODEL_DIR IMAGE QUESTION STAGE1_TOKENS STAGE2_TOKENS CHARS[,CHARS...] OUT.json
      greedy decoding; OUT: {"stage1_prompt", "stage1_text", "runs": [{"chars", "thinking",
      "stage2_prompt", "answer_ids"}]}
"""
import json
import re
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_fixtures as mf  # noqa: E402  (the same loading and processor code the fixtures use)

# The instruction the paper's length-control script appends, with no separator, to every question.
R1 = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final "
    "answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST "
    "BE in <answer> </answer> tags."
)


def user_turn(text: str) -> list:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]


def encode(processor, image: Image.Image, text: str, generation_prompt: bool):
    rendered = processor.apply_chat_template(user_turn(text), add_generation_prompt=generation_prompt, tokenize=False)
    return processor(images=[image], text=[rendered], return_tensors="pt")


def layers(model_dir: str, questions: str, image_dir: str, out: str) -> None:
    model = mf.load_model(Path(model_dir))
    processor = mf.load_processor(Path(model_dir))
    tok = processor.tokenizer
    start_id = tok.convert_tokens_to_ids("<|vision_start|>")
    end_id = tok.convert_tokens_to_ids("<|vision_end|>")
    ids, per_sample = [], []
    for line in Path(questions).read_text().splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        image = Image.open(Path(image_dir) / rec["image"]).convert("RGB")
        inputs = encode(processor, image, rec["text"], generation_prompt=False)
        seq = inputs["input_ids"][0].tolist()
        system_end = seq.index(start_id) + 1  # the vision-start token counts as system
        visual_end = seq.index(end_id)
        with torch.no_grad():
            result = model(**inputs, output_attentions=True, use_cache=False)
        shares = []
        for attn in result.attentions:
            row = attn[0].float().mean(dim=0)[-1]  # heads' mean, the last token's row
            shares.append(
                [row[:system_end].sum().item(), row[system_end:visual_end].sum().item(), row[visual_end:].sum().item()]
            )
        ids.append(str(rec["question_id"]))
        per_sample.append(shares)
    mean = torch.tensor(per_sample, dtype=torch.float64).mean(dim=0)
    mean = mean / mean.sum(dim=1, keepdim=True)
    Path(out).write_text(json.dumps({"ids": ids, "per_sample": per_sample, "allocation": mean.tolist()}))


def generate(model, inputs, max_new_tokens: int) -> list:
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def clean_thinking(text: str) -> str:
    found = re.search(r"<think>(.*?)</think>", text, re.DOTALL)
    think = found.group(1).strip() if found else text.strip()
    return re.split(r"\*\*Answer:\*\*", think, maxsplit=1)[0].strip()


def budget(model_dir, image_path, question, stage1_tokens, stage2_tokens, chars, out) -> None:
    model = mf.load_model(Path(model_dir))
    processor = mf.load_processor(Path(model_dir))
    image = Image.open(image_path).convert("RGB")
    stage1_prompt = f"{question}{R1}"
    stage1_ids = generate(model, encode(processor, image, stage1_prompt, True), int(stage1_tokens))
    stage1_text = processor.tokenizer.decode(stage1_ids, skip_special_tokens=True)
    runs = []
    for n in [int(c) for c in chars.split(",")]:
        thinking = clean_thinking(stage1_text)[:n]
        stage2_prompt = f"{question}\n<think>\n{thinking}\n</think>\n\n So the Final Answer is:"
        answer_ids = generate(model, encode(processor, image, stage2_prompt, True), int(stage2_tokens))
        runs.append({"chars": n, "thinking": thinking, "stage2_prompt": stage2_prompt, "answer_ids": answer_ids})
    result = {"stage1_prompt": stage1_prompt, "stage1_text": stage1_text, "runs": runs}
    Path(out).write_text(json.dumps(result))


def main() -> None:
    commands = {"layers": (layers, 4), "budget": (budget, 7)}
    args = sys.argv[1:]
    if not args or args[0] not in commands or len(args) - 1 != commands[args[0]][1]:
        raise SystemExit(__doc__.strip().split("usage:")[1])
    fn, _ = commands[args[0]]
    fn(*args[1:])


if __name__ == "__main__":
    main()

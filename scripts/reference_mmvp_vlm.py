"""MMVP-VLM scoring with PyTorch and transformers, as the reference script does it, to check
`blindspot eval vlm` on an exported checkpoint. Needs the export environment (torch,
transformers, pyarrow). Run from the repository root:

    python scripts/reference_mmvp_vlm.py --model CHECKPOINT --benchmark MMVP_VLM_DIR \
        [--answers ROOT/eval/answers/vlm-....parquet]

For each pair: the texts "a photo of " + statement, CLIPModel's logits_per_text over the two
images, softmax, first image when its probability is above 0.5; a pair is right only when both
statements pick their own image. With --answers it compares blindspot's per-statement
probabilities (the `response` column) and choices with these, and exits non-zero when a
choice differs.
"""

import argparse
import csv
import sys
from pathlib import Path

import torch
from PIL import Image
from transformers import CLIPImageProcessor, CLIPModel, PreTrainedTokenizerFast


def image_of(root, pattern, qid):
    folder = Path(root) / "MLLM_VLM Images" / pattern
    return next(folder.glob(f"{qid}.*"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--benchmark", required=True)
    ap.add_argument("--answers")
    args = ap.parse_args()
    model = CLIPModel.from_pretrained(args.model).eval()
    processor = CLIPImageProcessor.from_pretrained(args.model)
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(Path(args.model) / "tokenizer.json"))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or "<|endoftext|>"
    rows = list(csv.DictReader(open(Path(args.benchmark) / "Questions.csv", newline="")))
    rows.sort(key=lambda r: int(r["Question ID"]))
    probs, right_pairs = {}, 0
    for a, b in zip(rows[0::2], rows[1::2]):
        images = [Image.open(image_of(args.benchmark, r["Type"], r["Question ID"])).convert("RGB") for r in (a, b)]
        texts = ["a photo of " + r["Statement"] for r in (a, b)]
        tok = tokenizer(texts, padding=True, return_tensors="pt")
        pix = processor(images=images, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            out = model(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"], pixel_values=pix)
        p = out.logits_per_text.softmax(dim=-1)[:, 0].tolist()
        probs[int(a["Question ID"])], probs[int(b["Question ID"])] = p
        right_pairs += p[0] > 0.5 and not p[1] > 0.5
    print(f"reference: pair accuracy {100 * right_pairs / (len(rows) // 2):.1f}% over {len(rows) // 2} pairs")
    if not args.answers:
        return
    import pyarrow.parquet as pq

    table = pq.read_table(args.answers).to_pylist()
    worst, differ = 0.0, 0
    for r in table:
        ours = float(r["response"].split("=")[1])
        ref = probs[r["item"]]
        worst = max(worst, abs(ours - ref))
        differ += (ours > 0.5) != (ref > 0.5)
    print(f"blindspot vs reference: {len(table)} statements, max |p difference| {worst:.2e}, {differ} choices differ")
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()

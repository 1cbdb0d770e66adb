"""How much of a SQuAD-style data set a model actually reads: token lengths and where the answers sit.

For KorQuAD this explains the low first-stage numbers: MiniLM's uncased English tokenizer decomposes each
Hangul syllable into 2-3 jamo pieces, so paragraphs run to hundreds of tokens and many answers lie beyond
what the bi-encoder embeds (its max length) or what the reranker reads of the document.

    python bench/token_lengths.py --data ../shared/data/korquad-1.0-dev/KorQuAD_v1.0_dev.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from _machine import result_header
from transformers import AutoTokenizer

from rerank_plugins.models.resolve import resolve_model_path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="SQuAD/KorQuAD-style .json")
    parser.add_argument("--model", default="sentence-transformers/all-MiniLM-L6-v2")
    parser.add_argument("--bi-max-length", type=int, default=256)
    parser.add_argument("--cross-max-length", type=int, default=256)
    args = parser.parse_args()
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(args.model))
    tokenizer.model_max_length = 10**9  # measuring lengths, not feeding the model
    articles = json.loads(Path(args.data).read_text(encoding="utf-8"))["data"]
    paragraph_lengths, question_lengths = [], []
    past_bi = past_cross = answers = 0
    for article in articles:
        for paragraph in article["paragraphs"]:
            encoded = tokenizer(paragraph["context"], add_special_tokens=False, return_offsets_mapping=True)
            offsets = encoded["offset_mapping"]
            paragraph_lengths.append(len(offsets))
            for qa in paragraph["qas"]:
                question = len(tokenizer(qa["question"], add_special_tokens=False)["input_ids"])
                question_lengths.append(question)
                first_answer_token = sum(1 for start, _ in offsets if start < qa["answers"][0]["answer_start"])
                answers += 1
                past_bi += first_answer_token >= args.bi_max_length - 2  # [CLS] ... [SEP]
                past_cross += first_answer_token >= args.cross_max_length - question - 3  # [CLS] q [SEP] d [SEP]
    sample = " ".join(articles[0]["paragraphs"][0]["context"].split()[:2])
    print(result_header(f"Token lengths: {args.data}") + f"\n\ntokenizer: {args.model}\n")
    print(f"- `{sample}` tokenizes as {tokenizer.tokenize(sample)}")
    print(
        f"- paragraphs: {len(paragraph_lengths)}, tokens median {statistics.median(paragraph_lengths):.0f}, "
        f"mean {statistics.mean(paragraph_lengths):.0f}, max {max(paragraph_lengths)}"
    )
    print(
        f"- questions: {len(question_lengths)}, tokens median {statistics.median(question_lengths):.0f}, "
        f"max {max(question_lengths)}"
    )
    print(
        f"- answers starting beyond what a bi-encoder with max length {args.bi_max_length} embeds: "
        f"{past_bi}/{answers} ({past_bi / answers:.1%})"
    )
    print(
        f"- answers starting beyond the document room of a reranker with max length {args.cross_max_length} "
        f"(after the question): {past_cross}/{answers} ({past_cross / answers:.1%})"
    )


if __name__ == "__main__":
    main()

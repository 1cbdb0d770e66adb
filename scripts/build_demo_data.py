"""Build the small SciFact subset bundled for the quickstart and the examples.

Keeps every abstract cited by a train or test claim, plus a seeded random sample of other abstracts as
distractors, so the demo runs in minutes on a laptop CPU. Re-run to regenerate byte-identical files:

    python scripts/build_demo_data.py ../shared/data/scifact src/rerank_plugins/data/scifact-mini
"""

from __future__ import annotations

import gzip
import json
import random
import shutil
import sys
from pathlib import Path

DISTRACTORS = 700
TRAIN_QUERIES = 400
TEST_QUERIES = 100


def main(source: Path, target: Path) -> None:
    rng = random.Random(0)
    qrels = {}
    for split in ("train", "test"):
        rows = [
            line.rstrip("\n").split("\t") for line in (source / "qrels" / f"{split}.tsv").read_text().splitlines()[1:]
        ]
        by_query: dict[str, list[str]] = {}
        for query_id, doc_id, _ in rows:
            by_query.setdefault(query_id, []).append(doc_id)
        keep = sorted(by_query)
        rng.shuffle(keep)
        qrels[split] = {q: by_query[q] for q in sorted(keep[: TRAIN_QUERIES if split == "train" else TEST_QUERIES])}
    cited = {d for split in qrels.values() for docs in split.values() for d in docs}
    with gzip.open(source / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        corpus = [json.loads(line) for line in handle]
    others = sorted(row["_id"] for row in corpus if row["_id"] not in cited)
    keep_docs = cited | set(rng.sample(others, DISTRACTORS))
    queries = [json.loads(line) for line in (source / "queries.jsonl").read_text().splitlines()]
    wanted_queries = {q for split in qrels.values() for q in split}

    if target.exists():
        shutil.rmtree(target)
    (target / "qrels").mkdir(parents=True)
    with gzip.GzipFile(target / "corpus.jsonl.gz", "wb", mtime=0) as handle:
        for row in corpus:
            if row["_id"] in keep_docs:
                handle.write(
                    (json.dumps({"_id": row["_id"], "title": row["title"], "text": row["text"]}) + "\n").encode()
                )
    (target / "queries.jsonl").write_text(
        "".join(json.dumps({"_id": q["_id"], "text": q["text"]}) + "\n" for q in queries if q["_id"] in wanted_queries)
    )
    for split, by_query in qrels.items():
        lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{d}\t1" for q, docs in by_query.items() for d in docs]
        (target / "qrels" / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    (target / "NOTICE.txt").write_text(
        f"""SciFact subset bundled with rerank-plugins for its quickstart and examples.
{len(keep_docs)} abstracts ({len(cited)} cited by the claims kept + {DISTRACTORS} random others),
{TRAIN_QUERIES} train and {TEST_QUERIES} test claims (BEIR's "test" = SciFact dev), qrels as in BEIR.
Built by scripts/build_demo_data.py.

Source: SciFact, Wadden et al., "Fact or Fiction: Verifying Scientific Claims", EMNLP 2020 (allenai/scifact),
in the BEIR layout (Thakur et al., NeurIPS 2021 Datasets and Benchmarks).
Licences as stated in allenai/scifact LICENSE.md: claims and annotations CC BY 4.0; abstracts (from S2ORC)
ODC-By 1.0. Some third parties list SciFact as CC BY-NC 2.0: check before commercial use.
Changes: subset only; each document keeps _id, title and text.
"""
    )
    print(f"{len(keep_docs)} documents, {len(wanted_queries)} queries -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))

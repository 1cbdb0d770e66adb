"""Pseudo-queries from a corpus without labels: offline strategies, LLM generation (fake models), validation, cache."""

from __future__ import annotations

import asyncio
import json

import pytest

from rerank_plugins.data import DataError
from rerank_plugins.data.corpus import CorpusDocument, load_corpus
from rerank_plugins.training.pseudo_queries import (
    LLMQueryGenerator,
    dominant_script,
    offline_pseudo_queries,
    parse_queries,
    rejection_reason,
    split_sentences,
)

ENGLISH = [
    CorpusDocument(
        "d1", "Cancer risk rises with age. Smoking doubles the risk of lung cancer. Diet matters less.", "Risk"
    ),
    CorpusDocument("d2", "The heart pumps blood through the body. A weak heart leads to fatigue and swelling.", ""),
    CorpusDocument("d3", "Short.", ""),
]
KOREAN = [
    CorpusDocument("k1", "서울은 대한민국의 수도이다. 한강이 도시를 가로질러 흐른다. 인구는 약 천만 명이다.", ""),
    CorpusDocument("k2", "세종대왕은 훈민정음을 창제하였다. 그는 조선의 네 번째 왕이다.", ""),
]


def test_sentence_queries_are_removed_from_their_passage_and_deterministic():
    first = offline_pseudo_queries(ENGLISH + KOREAN, "sentence", seed=3)
    again = offline_pseudo_queries(ENGLISH + KOREAN, "sentence", seed=3)
    assert first.dataset.queries == again.dataset.queries and first.dataset.corpus == again.dataset.corpus
    data = first.dataset
    assert first.rejected["too short to make a query"] == 1  # d3 has one sentence of one word
    for query_id, query in data.queries.items():
        (doc_id,) = data.qrels[query_id]
        original = next(d for d in ENGLISH + KOREAN if d.id == doc_id)
        assert query in original.text and query not in data.corpus[doc_id], "the query sentence leaves its passage"
        assert data.corpus[doc_id].strip(), "something of the passage stays as the positive"
    assert data.corpus["d3"] == "Short."  # documents without a query stay in the corpus, whole
    korean_queries = [q for q in data.queries.values() if dominant_script(q) == "HANGUL"]
    assert len(korean_queries) == 2 and all(q.endswith("다.") for q in korean_queries)


def test_title_and_terms_strategies():
    titles = offline_pseudo_queries(ENGLISH, "title")
    assert list(titles.dataset.queries.values()) == ["Risk"] and titles.rejected["no title"] == 2
    assert titles.dataset.corpus["d1"] == ENGLISH[0].text  # the title left the positive
    terms = offline_pseudo_queries(ENGLISH, "terms")
    query = terms.dataset.queries["d1#terms0"]
    assert "cancer" in query.lower().split() and "the" not in query.lower().split()  # frequent here, rare elsewhere


def test_several_queries_per_document_and_duplicates_dropped():
    docs = [
        CorpusDocument("a", "One two three four. Five six seven eight. Nine ten eleven twelve."),
        CorpusDocument("b", "One two three four. Other words are here now."),
    ]
    result = offline_pseudo_queries(docs, "sentence", queries_per_document=2, seed=0)
    queries = list(result.dataset.queries.values())
    assert "One two three four." not in queries or queries.count("One two three four.") == 1
    assert len(result.dataset.qrels) == len(queries)
    owners = {}
    for query_id, query in result.dataset.queries.items():
        owners.setdefault(query, set()).update(result.dataset.qrels[query_id])
    assert all(len(docs) == 1 for docs in owners.values())


def test_sentence_splitting_and_scripts():
    assert split_sentences("A b c. D e f! G h?\nI j") == ["A b c.", "D e f!", "G h?", "I j"]
    assert split_sentences("첫 문장이다. 둘째 문장이다.") == ["첫 문장이다.", "둘째 문장이다."]
    assert dominant_script("서울특별시 Seoul") == "HANGUL" and dominant_script("123 !?") is None


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("  ", "empty"),
        ("?!", "empty"),
        ("word " * 80, "too long"),
        ("smoking doubles the risk of lung cancer", "copies the passage"),
        ("흡연은 폐암 위험을 높이는가", "wrong language"),
        ("does smoking raise cancer risk", None),
    ],
)
def test_rejection_reasons(query, reason):
    assert rejection_reason(query, ENGLISH[0].text) == reason


def test_parse_queries_handles_numbering_bullets_and_json():
    assert parse_queries("1. first one\n2) second\n- third\n\n* fourth") == ["first one", "second", "third", "fourth"]
    assert parse_queries('["a query", "another"]') == ["a query", "another"]
    assert parse_queries('"quoted query"\nQ3: labelled') == ["quoted query", "labelled"]


class FakeLLM:
    """Answers from a script per passage; counts calls; can fail a number of times first."""

    def __init__(self, answers, failures=0):
        self.answers, self.failures, self.calls = answers, failures, 0

    async def __call__(self, prompt: str) -> str:
        self.calls += 1
        await asyncio.sleep(0)
        if self.failures:
            self.failures -= 1
            raise ConnectionError("rate limited")
        for key, answer in self.answers.items():
            if key in prompt:
                return answer
        raise ValueError("no scripted answer")


def _generator(llm, tmp_path=None, **options):
    cache = None if tmp_path is None else tmp_path / "cache.jsonl"
    defaults = {"queries_per_document": 2, "retry_delay_s": 0.0, "show_progress": False, "cache_path": cache}
    return LLMQueryGenerator(llm, model_name="fake", **{**defaults, **options})


def test_llm_outputs_are_validated_deduplicated_and_counted():
    llm = FakeLLM(
        {
            "Cancer risk": "1. what raises cancer risk\n2. WHAT raises cancer risk?\n3. a third query beyond n",
            "heart pumps": "\n\nThe heart pumps blood through the body\n심장은 무엇을 하는가",
        }
    )
    result = _generator(llm).generate(ENGLISH[:2])
    assert list(result.dataset.queries.values()) == ["what raises cancer risk"]
    assert result.rejected == {
        "more than n in one answer": 1,
        "duplicate": 1,
        "copies the passage": 1,
        "wrong language": 1,
    }
    assert result.dataset.qrels == {"d1#llm0": {"d1": 1}} and set(result.dataset.corpus) == {"d1", "d2"}


def test_llm_failures_are_retried_then_reported(tmp_path):
    flaky = FakeLLM({"Cancer risk": "when does cancer risk rise", "heart pumps": "what does a weak heart cause"}, 1)
    result = _generator(flaky, max_retries=2).generate(ENGLISH[:2])
    assert len(result.dataset.queries) == 2 and not result.failed and flaky.calls == 3
    broken = FakeLLM({"Cancer risk": "when does cancer risk rise"})  # no answer for d2: raises every time
    result = _generator(broken, max_retries=1).generate(ENGLISH[:2])
    assert set(result.failed) == {"d2"} and "no scripted answer" in result.failed["d2"]
    with pytest.raises(RuntimeError, match="every LLM call failed"):
        _generator(FakeLLM({}), max_retries=0).generate(ENGLISH[:2])


def test_cache_resumes_where_a_run_stopped(tmp_path):
    answers = {"Cancer risk": "when does cancer risk rise", "heart pumps": "what does a weak heart cause"}
    first = FakeLLM({"Cancer risk": answers["Cancer risk"]})  # d2 fails: "crash" before it was answered
    _generator(first, tmp_path, max_retries=0).generate(ENGLISH[:2])
    with (tmp_path / "cache.jsonl").open("a") as cache:
        cache.write('{"key": "cut sho')  # a line cut short by a crash
    second = FakeLLM(answers)
    generator = _generator(second, tmp_path)
    assert generator.estimate_cost(ENGLISH[:2])["calls"] == 1
    result = generator.generate(ENGLISH[:2])
    assert second.calls == 1 and len(result.dataset.queries) == 2
    third = FakeLLM({})
    assert len(_generator(third, tmp_path).generate(ENGLISH[:2]).dataset.queries) == 2 and third.calls == 0
    other_prompt = _generator(FakeLLM(answers), tmp_path, prompt="Queries for: {passage}")
    assert other_prompt.estimate_cost(ENGLISH[:2])["calls"] == 2, "a different prompt is not served from the cache"


def test_cost_estimate_and_concurrency_bound():
    running, peak = 0, 0

    async def slow(prompt: str) -> str:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        number = prompt.split("Passage number ")[1].split()[0]
        return "a shared query about things" if number in ("0", "1") else f"what is in passage {number}"

    docs = [CorpusDocument(f"d{i}", f"Passage number {i} talks about things and more things.") for i in range(12)]
    generator = LLMQueryGenerator(slow, model_name="slow", concurrency=3, queries_per_document=1, show_progress=False)
    cost = generator.estimate_cost(docs)
    assert cost["calls"] == 12 and cost["prompt_tokens"] > 12 * 20
    result = generator.generate(docs)
    assert peak == 3
    assert result.rejected == {"same query for several documents": 2}, "a query two passages share is dropped"
    assert sorted(result.dataset.qrels) == sorted(f"d{i}#llm0" for i in range(2, 12))


def test_langchain_and_llamaindex_models_generate_queries():
    from langchain_core.language_models import FakeListChatModel
    from llama_index.core.llms import MockLLM

    from rerank_plugins.langchain import query_generator as langchain_generator
    from rerank_plugins.llamaindex import query_generator as llamaindex_generator

    chat = FakeListChatModel(responses=["what raises cancer risk\nis lung cancer linked to smoking", "heart failure"])
    result = langchain_generator(chat, concurrency=1, show_progress=False).generate(ENGLISH[:2])
    assert sorted(result.dataset.queries.values()) == [
        "heart failure",
        "is lung cancer linked to smoking",
        "what raises cancer risk",
    ]
    assert result.source == "llm:langchain:fake-list-chat-model"
    echo = llamaindex_generator(MockLLM(), show_progress=False)  # MockLLM echoes the prompt: copies are refused
    with pytest.raises(DataError, match="no document gave a usable query"):
        echo.generate(ENGLISH[:2])
    with pytest.raises(TypeError, match="LlamaIndex LLM"):
        llamaindex_generator(chat)


def test_generate_inside_a_running_loop_points_to_agenerate():
    async def inside():
        return _generator(FakeLLM({})).generate(ENGLISH[:1])

    with pytest.raises(RuntimeError, match="agenerate"):
        asyncio.run(inside())


def test_bad_corpora_are_refused_with_the_culprit_named(tmp_path):
    with pytest.raises(DataError, match="empty"):
        load_corpus([])
    with pytest.raises(DataError, match=r"#1 \(int\)"):
        load_corpus(["fine text", 42])
    with pytest.raises(DataError, match="doc-b"):
        load_corpus({"doc-a": "text", "doc-b": "   "})
    with pytest.raises(DataError, match="no document gave a usable query"):
        offline_pseudo_queries(load_corpus(["Too short.", "Tiny."]), "sentence")
    with pytest.raises(DataError, match="not CorpusDocument"):
        offline_pseudo_queries(["a plain string"], "sentence")
    with pytest.raises(ValueError, match="strategy"):
        offline_pseudo_queries(ENGLISH, "summaries")
    bad = tmp_path / "corpus.jsonl"
    bad.write_text(json.dumps({"_id": "x", "text": "ok"}) + "\n" + json.dumps({"_id": "y", "text": 3}) + "\n")
    with pytest.raises(DataError, match=r"record numbers\): 2"):
        load_corpus(bad)


def test_load_corpus_reads_every_source(tmp_path):
    from langchain_core.documents import Document
    from llama_index.core.schema import TextNode

    beir = tmp_path / "beir"
    beir.mkdir()
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "1", "title": "T", "text": "Body."}) + "\n")
    assert load_corpus(beir) == [CorpusDocument("1", "Body.", "T")]
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps({"data": [{"paragraphs": [{"context": "문단 하나."}, {"context": "문단 하나."}]}]}))
    assert load_corpus(squad) == [CorpusDocument("a0p0", "문단 하나.")]  # repeated paragraphs once, as load_squad
    text = tmp_path / "docs.txt"
    text.write_text("first line\n\nsecond line\n")
    assert [d.text for d in load_corpus(text)] == ["first line", "second line"]
    documents = load_corpus([Document(page_content="lc text", id="lc1"), TextNode(text="node text", id_="n1")])
    assert [(d.id, d.text) for d in documents] == [("lc1", "lc text"), ("n1", "node text")]
    with pytest.raises(DataError, match="duplicate"):
        load_corpus([Document(page_content="a", id="same"), Document(page_content="b", id="same")])


def test_max_documents_bounds_the_queries_and_leaves_the_rest_of_the_corpus_unchanged():
    docs = [
        CorpusDocument(f"d{i}", f"First sentence number {i} here. Second sentence number {i} here.") for i in range(20)
    ]
    result = offline_pseudo_queries(docs, "sentence", max_documents=5, seed=1)
    with_queries = {d for rel in result.dataset.qrels.values() for d in rel}
    assert len(result.dataset.queries) == 5 and len(with_queries) == 5 and len(result.dataset.corpus) == 20
    assert all(result.dataset.corpus[d.id] == d.text for d in docs if d.id not in with_queries)
    assert offline_pseudo_queries(docs, "sentence", max_documents=5, seed=1).dataset.qrels == result.dataset.qrels

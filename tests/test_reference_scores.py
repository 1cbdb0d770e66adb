"""Our scores against an independent reference: sentence-transformers' own predictions on the same model directory.

Every path that ends in a score (score, rank, batches, async, ONNX, windows, both frameworks' rerankers and
retrievers) is checked pair by pair against ``CrossEncoder.predict`` (raw logits) with the score cache OFF, so a
score paired with the wrong document, or a cache that hides a wrong computation, fails here. Embeddings are checked
against ``SentenceTransformer.encode_query`` / ``encode_document`` the same way.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import pytest

from rerank_plugins.models.bi_encoder import BiEncoderBackend
from rerank_plugins.models.cross_encoder import CrossEncoderBackend

ATOL = 1e-4
QUERIES = ["cancer risk", "korea seoul", "heart", "immune virus drug"]
LONG_DOC = "cancer gene risk patients " * 30  # ~120 tokens: longer than the tiny models' 64
DOCS = [
    "cancer gene risk",
    "heart blood dose",
    "brain immune virus infection in mice",
    "seoul korea city river mountain history",
    "the cells protein",
    "a",
    LONG_DOC,
    "liver " * 20 + "drug dose trial results associated with response",  # ~30 tokens
    "the study of music and film " * 12,  # ~70 tokens: just over the max length
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: many tiny forward passes run several times faster than with threads on a busy machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _spread_copy(source: Path, target: Path) -> Path:
    """The tiny cross-encoder with seeded noise on its weights, so its scores differ clearly between documents.

    The session fixture's scores lie within ~1e-3 of each other: a score moved onto a neighbouring document would
    sometimes stay within tolerance. Here neighbouring scores differ by far more than ``ATOL``.
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model = AutoModelForSequenceClassification.from_pretrained(source)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" not in name and not name.endswith("bias"):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.2)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


@pytest.fixture(scope="module")
def cross_path(tiny_cross_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = _spread_copy(tiny_cross_path, tmp_path_factory.mktemp("spread") / "cross")
    scores = reference_model(path).predict([("cancer risk", d) for d in DOCS])
    gaps = np.diff(np.sort(scores))
    assert gaps.min() > 10 * ATOL, f"fixture scores too close to tell documents apart: {np.sort(scores)}"
    return path


_REFERENCES: dict[str, object] = {}


def reference_model(path: Path):
    """sentence-transformers' CrossEncoder on ``path``, returning raw logits (no sigmoid), at the model's max length."""
    import torch
    from sentence_transformers import CrossEncoder

    key = str(path)
    if key not in _REFERENCES:
        _REFERENCES[key] = CrossEncoder(key, activation_fn=torch.nn.Identity(), device="cpu")
    return _REFERENCES[key]


def reference(path: Path, query: str, documents: list[str]) -> np.ndarray:
    """Raw scores of ``(query, d)`` for each document, computed by sentence-transformers (one pair per batch)."""
    model = reference_model(path)
    return np.array([float(model.predict([(query, d)], batch_size=1)[0]) for d in documents], dtype=np.float32)


def fresh(path: Path, **options) -> CrossEncoderBackend:
    """A backend of its own with the score cache off: every score is computed, never remembered."""
    return CrossEncoderBackend(path, cache_size=0, **options)


def test_reference_agrees_with_itself_on_the_long_documents(cross_path):
    # ST truncates pairs 'longest_first'; with short queries that cuts only the document, as we do (only_second).
    model = reference_model(cross_path)
    tokenizer = model.tokenizer
    ids = tokenizer("cancer risk", LONG_DOC, truncation="longest_first", max_length=64)["input_ids"]
    query_ids = tokenizer("cancer risk", add_special_tokens=False)["input_ids"]
    assert ids[1 : 1 + len(query_ids)] == query_ids and len(ids) == 64


# -- the backend's own paths -----------------------------------------------------------------------------------


@pytest.mark.parametrize("batch_size", [1, 3, 32])
def test_score_equals_reference(cross_path, batch_size):
    backend = fresh(cross_path)
    for query in QUERIES:
        np.testing.assert_allclose(
            backend.score(query, DOCS, batch_size=batch_size), reference(cross_path, query, DOCS), atol=ATOL
        )


def test_sigmoid_scale_equals_reference_sigmoid(cross_path):
    from sentence_transformers import CrossEncoder

    default = CrossEncoder(str(cross_path), device="cpu")  # a 1-label model: ST applies a sigmoid by default
    expected = default.predict([("cancer risk", d) for d in DOCS])
    np.testing.assert_allclose(fresh(cross_path).score("cancer risk", DOCS, scale="sigmoid"), expected, atol=ATOL)


@pytest.mark.parametrize("batch_size", [1, 4, 32])
def test_score_batch_of_several_queries_equals_reference(cross_path, batch_size):
    # each query a different slice and order of the documents, so a score moved across requests shows
    requests = [(q, DOCS[i:] + DOCS[:i][::-1]) for i, q in enumerate(QUERIES)] + [("heart", [])]
    results = fresh(cross_path).score_batch(requests, batch_size=batch_size)
    assert len(results) == len(requests)
    for (query, docs), scores in zip(requests, results):
        np.testing.assert_allclose(scores, reference(cross_path, query, docs), atol=ATOL)


def _check_ranked(path: Path, query: str, docs: list[str], ranked, top_n: int | None = None) -> None:
    expected = reference(path, query, docs)
    order = list(np.argsort(-expected, kind="stable"))[:top_n]
    assert [r.index for r in ranked] == order
    np.testing.assert_allclose([r.score for r in ranked], expected[order], atol=ATOL)


def test_rank_equals_reference(cross_path):
    backend = fresh(cross_path)
    for query in QUERIES:
        _check_ranked(cross_path, query, DOCS, backend.rank(query, DOCS))
        _check_ranked(cross_path, query, DOCS, backend.rank(query, DOCS, top_n=3), top_n=3)


def test_rank_batch_equals_reference(cross_path):
    requests = [(q, DOCS[::-1] if i % 2 else DOCS[2:]) for i, q in enumerate(QUERIES)]
    for (query, docs), ranked in zip(requests, fresh(cross_path).rank_batch(requests, batch_size=5)):
        _check_ranked(cross_path, query, docs, ranked)


def test_concurrent_arank_equals_reference(cross_path):
    backend = fresh(cross_path)
    rng = np.random.default_rng(0)
    requests = []
    for i in range(24):
        picked = rng.permutation(len(DOCS))[: int(rng.integers(1, len(DOCS) + 1))]
        requests.append((QUERIES[i % len(QUERIES)], [DOCS[j] for j in picked]))

    async def run_all():
        return await asyncio.gather(*(backend.arank(q, d, batch_size=4) for q, d in requests))

    for (query, docs), ranked in zip(requests, asyncio.run(run_all())):
        _check_ranked(cross_path, query, docs, ranked)
    assert max(backend.batcher.batch_sizes) > 1, "concurrent requests should have shared forward passes"


def test_onnx_runtime_equals_torch_and_reference(cross_path):
    pytest.importorskip("onnxruntime")
    onnx_backend = fresh(cross_path, runtime="onnx")
    torch_backend = fresh(cross_path)
    requests = [(q, DOCS) for q in QUERIES]
    for (query, docs), on_onnx, on_torch in zip(
        requests, onnx_backend.score_batch(requests, batch_size=3), torch_backend.score_batch(requests, batch_size=3)
    ):
        np.testing.assert_allclose(on_onnx, on_torch, atol=ATOL)
        np.testing.assert_allclose(on_onnx, reference(cross_path, query, docs), atol=ATOL)
    _check_ranked(cross_path, "cancer risk", DOCS, onnx_backend.rank("cancer risk", DOCS))


# -- long documents ------------------------------------------------------------------------------------------


def _document_windows(path: Path, query: str, document: str, overlap: int) -> list[str]:
    """The texts of the windows a long document is scored in, worked out here from token counts alone."""
    tokenizer = reference_model(path).tokenizer
    room = 64 - len(tokenizer(query, add_special_tokens=False)["input_ids"]) - 3  # [CLS] q [SEP] d [SEP]
    stride = min(overlap, room // 2)
    ids = tokenizer(document, add_special_tokens=False)["input_ids"]
    windows, start = [], 0
    while True:
        windows.append(tokenizer.decode(ids[start : start + room]))
        if start + room >= len(ids):
            return windows
        start += room - stride


def test_truncation_cuts_only_the_document(cross_path):
    query = "immune virus drug dose"  # 4 tokens
    tokenizer = reference_model(cross_path).tokenizer
    room = 64 - 4 - 3
    first_tokens = tokenizer.decode(tokenizer(LONG_DOC, add_special_tokens=False)["input_ids"][:room])
    [item] = fresh(cross_path).rank(query, [LONG_DOC])
    assert item.truncated and item.window is None
    assert item.score == pytest.approx(reference(cross_path, query, [first_tokens])[0], abs=ATOL)
    assert item.score == pytest.approx(reference(cross_path, query, [LONG_DOC])[0], abs=ATOL)


def test_window_mode_scores_the_best_window(cross_path):
    # The relevant words lie only past the first window; which filler/target pair puts the best window there is
    # decided by the reference model, then the backend must find that window and its score.
    query = "korea seoul"
    backend = fresh(cross_path)
    for filler, target in [("the ", "korea seoul city"), ("of ", "seoul korea capital"), ("and ", "korea river")]:
        document = filler * 100 + target
        windows = _document_windows(cross_path, query, document, backend.window_overlap)
        expected = reference(cross_path, query, windows)
        best = int(np.argmax(expected))
        if best > 0 and expected[best] - expected[0] > 10 * ATOL:
            break
    else:
        pytest.fail("no document whose best window lies past the first one")
    assert len(windows) >= 3 and target.split()[0] in windows[-1] and target.split()[0] not in windows[0]

    windowed = backend.rank(query, ["seoul korea city", document], long_documents="window")
    by_index = {r.index: r for r in windowed}
    assert by_index[1].truncated and by_index[1].window == best
    assert by_index[1].score == pytest.approx(float(expected[best]), abs=ATOL)
    assert by_index[0].window is None  # a short document is scored whole
    assert by_index[0].score == pytest.approx(reference(cross_path, query, ["seoul korea city"])[0], abs=ATOL)
    [truncated] = backend.rank(query, [document])
    assert truncated.score == pytest.approx(float(expected[0]), abs=ATOL)
    np.testing.assert_allclose(
        backend.score(query, [document, "heart"], long_documents="window"),
        [expected[best], reference(cross_path, query, ["heart"])[0]],
        atol=ATOL,
    )


# -- the cache -----------------------------------------------------------------------------------------------


def test_cached_scores_equal_computed_ones_across_orders_and_batches(cross_path):
    cached = CrossEncoderBackend(cross_path, cache_size=1000)
    first = cached.score_batch([("cancer risk", DOCS[:5]), ("korea seoul", DOCS[3:])])
    assert cached.cache_hits == 0
    # the same pairs again, in another order, split differently across requests and mixed with new ones
    requests = [
        ("korea seoul", DOCS[::-1]),
        ("cancer risk", [DOCS[4], "brand new document", DOCS[0], DOCS[2]]),
        ("cancer risk", DOCS[5:] + DOCS[:2]),
    ]
    again = cached.score_batch(requests, batch_size=2)
    assert cached.cache_hits > 0
    uncached = fresh(cross_path).score_batch(requests, batch_size=7)
    for (query, docs), from_cache, computed in zip(requests, again, uncached):
        np.testing.assert_allclose(from_cache, computed, atol=ATOL)
        np.testing.assert_allclose(from_cache, reference(cross_path, query, docs), atol=ATOL)
    np.testing.assert_allclose(first[0], reference(cross_path, "cancer risk", DOCS[:5]), atol=ATOL)
    ranked = cached.rank("korea seoul", DOCS[1:6])
    _check_ranked(cross_path, "korea seoul", DOCS[1:6], ranked)


def test_cache_keeps_window_and_truncated_scores_apart(cross_path):
    cached = CrossEncoderBackend(cross_path)
    document = "the " * 100 + "korea seoul city"
    truncated = cached.score("korea seoul", [document])
    windowed = cached.score("korea seoul", [document], long_documents="window")
    backend = fresh(cross_path)
    np.testing.assert_allclose(truncated, backend.score("korea seoul", [document]), atol=ATOL)
    np.testing.assert_allclose(windowed, backend.score("korea seoul", [document], long_documents="window"), atol=ATOL)
    np.testing.assert_allclose(cached.score("korea seoul", [document]), truncated, atol=0)


# -- both frameworks' rerankers and retrievers ---------------------------------------------------------------


def test_langchain_reranker_equals_reference(cross_path):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from rerank_plugins.langchain import CrossEncoderReranker

    reranker = CrossEncoderReranker(backend=fresh(cross_path), top_n=None)
    documents = [Document(page_content=t, metadata={"n": i}) for i, t in enumerate(DOCS)]
    for query in QUERIES[:2]:
        expected = reference(cross_path, query, DOCS)
        out = reranker.compress_documents(documents, query)
        assert len(out) == len(DOCS)
        assert [d.metadata["n"] for d in out] == list(np.argsort(-expected, kind="stable"))
        for d in out:
            assert d.metadata["rerank_score"] == pytest.approx(float(expected[d.metadata["n"]]), abs=ATOL)
        async_out = asyncio.run(reranker.acompress_documents(documents, query))
        assert [d.metadata["n"] for d in async_out] == [d.metadata["n"] for d in out]
        for d in async_out:
            assert d.metadata["rerank_score"] == pytest.approx(float(expected[d.metadata["n"]]), abs=ATOL)
    batched = reranker.compress_batch([(q, documents[i:]) for i, q in enumerate(QUERIES)])
    for query, out in zip(QUERIES, batched):
        for d in out:
            assert d.metadata["rerank_score"] == pytest.approx(
                float(reference(cross_path, query, [d.page_content])[0]), abs=ATOL
            )


def test_llamaindex_reranker_equals_reference(cross_path):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

    from rerank_plugins.llamaindex import CrossEncoderRerank

    rerank = CrossEncoderRerank(backend=fresh(cross_path), top_n=None)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=f"n{i}"), score=0.0) for i, t in enumerate(DOCS)]
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    for query in QUERIES[:2]:
        expected = dict(zip((f"n{i}" for i in range(len(DOCS))), reference(cross_path, query, texts)))
        out = rerank.postprocess_nodes(nodes, QueryBundle(query))
        assert [n.node.node_id for n in out] == sorted(expected, key=lambda k: -expected[k])
        for n in out:
            assert n.score == pytest.approx(float(expected[n.node.node_id]), abs=ATOL)
            assert n.node.metadata["rerank_score"] == pytest.approx(n.score)
        async_out = asyncio.run(rerank.apostprocess_nodes(nodes, QueryBundle(query)))
        for n in async_out:
            assert n.score == pytest.approx(float(expected[n.node.node_id]), abs=ATOL)


def test_langchain_two_stage_retriever_scores_equal_reference(cross_path, tiny_bi_path):
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document

    from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker, TwoStageRetriever

    retriever = TwoStageRetriever.from_documents(
        [Document(page_content=t, id=f"d{i}") for i, t in enumerate(DOCS)],
        BiEncoderEmbeddings(backend=BiEncoderBackend(tiny_bi_path, cache_size=0)),
        CrossEncoderReranker(backend=fresh(cross_path), top_n=4),
        top_k=6,
    )

    def check(query, out):
        assert len(out) == 4
        expected = reference(cross_path, query, [d.page_content for d in out])
        np.testing.assert_allclose([d.metadata["rerank_score"] for d in out], expected, atol=ATOL)
        assert list(expected) == sorted(expected, reverse=True)

    for query in QUERIES:
        check(query, retriever.invoke(query))
        check(query, asyncio.run(retriever.ainvoke(query)))
    for query, out in zip(QUERIES, retriever.batch(QUERIES)):
        check(query, out)


def test_llamaindex_two_stage_retriever_scores_equal_reference(cross_path, tiny_bi_path):
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import MetadataMode, TextNode

    from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank, TwoStageRetriever

    retriever = TwoStageRetriever.from_nodes(
        [TextNode(text=t, id_=f"n{i}") for i, t in enumerate(DOCS)],
        BiEncoderEmbedding(backend=BiEncoderBackend(tiny_bi_path, cache_size=0)),
        CrossEncoderRerank(backend=fresh(cross_path), top_n=4),
        top_k=6,
    )

    def check(query, out):
        assert len(out) == 4
        texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in out]
        expected = reference(cross_path, query, texts)
        np.testing.assert_allclose([n.score for n in out], expected, atol=ATOL)
        np.testing.assert_allclose([n.node.metadata["rerank_score"] for n in out], expected, atol=ATOL)
        assert list(expected) == sorted(expected, reverse=True)

    for query in QUERIES:
        check(query, retriever.retrieve(query))
        check(query, asyncio.run(retriever.aretrieve(query)))
    for query, out in zip(QUERIES, retriever.retrieve_batch(QUERIES)):
        check(query, out)


# -- bi-encoder embeddings ----------------------------------------------------------------------------------


def _check_embeddings(path: Path, texts: list[str], batch_sizes: tuple[int, ...] = (1, 3, 32)) -> None:
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(path), device="cpu")
    backend = BiEncoderBackend(path, cache_size=0)
    for batch_size in batch_sizes:
        np.testing.assert_allclose(
            backend.encode_documents(texts, batch_size=batch_size),
            model.encode_document(texts, normalize_embeddings=True),
            atol=ATOL,
        )
        np.testing.assert_allclose(
            backend.encode_queries(texts, batch_size=batch_size),
            model.encode_query(texts, normalize_embeddings=True),
            atol=ATOL,
        )
    raw = backend.encode_documents(texts, normalize=False)
    np.testing.assert_allclose(raw, model.encode(texts, normalize_embeddings=False), atol=ATOL)


def test_tiny_bi_encoder_embeddings_equal_reference(tiny_bi_path):
    _check_embeddings(tiny_bi_path, DOCS)


def test_minilm_embeddings_equal_reference(minilm_path):
    _check_embeddings(minilm_path, DOCS + QUERIES, batch_sizes=(4,))


def test_prompts_are_applied_like_sentence_transformers(tiny_bi_path, tmp_path):
    from sentence_transformers import SentenceTransformer

    path = tmp_path / "prompted"
    shutil.copytree(tiny_bi_path, path)
    model = SentenceTransformer(str(path), device="cpu")
    model.prompts = {"query": "query: ", "document": "passage: "}
    model.save(str(path))
    texts = DOCS[:6]
    backend = BiEncoderBackend(path, cache_size=0)
    queries = backend.encode_queries(texts)
    documents = backend.encode_documents(texts)
    np.testing.assert_allclose(
        queries, model.encode(["query: " + t for t in texts], normalize_embeddings=True), atol=ATOL
    )
    np.testing.assert_allclose(
        documents, model.encode(["passage: " + t for t in texts], normalize_embeddings=True), atol=ATOL
    )
    assert np.abs(queries - documents).max() > 10 * ATOL, "the prompts must change the embeddings"

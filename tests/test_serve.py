"""The HTTP server: each API's route shape and errors, limits, auth, concurrency, shutdown, and real clients.

Scores are compared with the in-process backends at atol 1e-5. Real clients (cohere, openai, LangChain's and
LlamaIndex's integrations) talk to a uvicorn server on loopback started by the test.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import threading
import time

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

import httpx
from fastapi.testclient import TestClient

from rerank_plugins.first_stage import HybridIndex, LexicalIndex
from rerank_plugins.first_stage.dense import FaissIndex
from rerank_plugins.models.registry import get_bi_encoder, get_cross_encoder
from rerank_plugins.pipeline import TwoStagePipeline
from rerank_plugins.rerank import RerankOptions
from rerank_plugins.schema import Document
from rerank_plugins.serve import ServerSettings, Service, ServiceLimits, create_app

QUERY = "cancer risk in patients"
TEXTS = [
    "gene expression in cancer cells",
    "the river and the mountain",
    "patients with increased cancer risk",
    "music and film history",
    "blood levels after treatment",
]
ATOL = 1e-5


@pytest.fixture
def service(tiny_cross_path, tiny_bi_path) -> Service:
    embedder = get_bi_encoder(tiny_bi_path)
    index = HybridIndex(FaissIndex(embedder), LexicalIndex("english"))
    index.add_documents([Document(id=f"d{i}", text=t) for i, t in enumerate(TEXTS)])
    return Service(
        get_cross_encoder(tiny_cross_path),
        embedder,
        index,
        options=RerankOptions(fusion_weight=None),
        top_k=5,
        limits=ServiceLimits(max_documents=8, max_text_chars=500),
    )


@pytest.fixture
def client(service) -> TestClient:
    with TestClient(create_app(service)) as test_client:
        yield test_client


def expected_sigmoid(service: Service) -> np.ndarray:
    return service.reranker.score(QUERY, TEXTS, scale="sigmoid")


# -- route shapes --------------------------------------------------------------------------------------------------


def test_tei_rerank_returns_every_text_sorted_with_its_own_index(client, service):
    response = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "return_text": True})
    assert response.status_code == 200
    body = response.json()
    expected = expected_sigmoid(service)
    assert sorted(r["index"] for r in body) == list(range(len(TEXTS)))
    assert [r["score"] for r in body] == sorted((r["score"] for r in body), reverse=True)
    for result in body:
        assert result["score"] == pytest.approx(float(expected[result["index"]]), abs=ATOL)
        assert result["text"] == TEXTS[result["index"]]


def test_tei_raw_scores_are_the_logits(client, service):
    body = client.post("/rerank", json={"query": QUERY, "texts": TEXTS, "raw_scores": True}).json()
    raw = service.reranker.score(QUERY, TEXTS)
    assert {r["index"]: r["score"] for r in body} == pytest.approx(dict(enumerate(raw.tolist())), abs=ATOL)
    assert "text" not in body[0]


@pytest.mark.parametrize("route", ["/v1/rerank", "/v2/rerank"])
def test_cohere_and_jina_rerank_shape(client, service, route):
    documents = [TEXTS[0], {"text": TEXTS[1]}, *TEXTS[2:]]
    body = client.post(
        route, json={"model": "m", "query": QUERY, "documents": documents, "top_n": 3, "return_documents": True}
    ).json()
    expected = expected_sigmoid(service)
    best = np.argsort(-expected, kind="stable")[:3]
    assert [r["index"] for r in body["results"]] == best.tolist()
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=ATOL)
        assert result["document"] == {"text": TEXTS[result["index"]]}
    assert body["id"] and body["model"] == "m" and "meta" in body and "usage" in body


def test_infinity_rerank_on_the_tei_path_answers_in_infinity_shape(client, service):
    body = client.post("/rerank", json={"query": QUERY, "documents": TEXTS, "return_documents": True}).json()
    expected = expected_sigmoid(service)
    assert body["object"] == "rerank"
    for result in body["results"]:
        assert result["relevance_score"] == pytest.approx(float(expected[result["index"]]), abs=ATOL)
        assert result["document"] == TEXTS[result["index"]]


def test_cohere_max_tokens_per_doc_cuts_documents(client, service):
    body = client.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS, "max_tokens_per_doc": 1}).json()
    first_words = [t.split()[0] for t in TEXTS]
    expected = service.reranker.score(QUERY, first_words, scale="sigmoid")
    assert {r["index"]: r["relevance_score"] for r in body["results"]} == pytest.approx(
        dict(enumerate(expected.tolist())), abs=ATOL
    )


def test_tei_embed_and_openai_embeddings_equal_the_backend(client, service):
    expected = service.embedder.encode_texts(TEXTS[:2])
    tei = client.post("/embed", json={"inputs": TEXTS[:2]}).json()
    np.testing.assert_allclose(np.asarray(tei), expected, atol=ATOL)
    prompted = client.post("/embed", json={"inputs": TEXTS[0], "prompt_name": "query"}).json()
    np.testing.assert_allclose(np.asarray(prompted[0]), service.embedder.encode_queries(TEXTS[:1])[0], atol=ATOL)
    for route in ("/v1/embeddings", "/embeddings"):
        body = client.post(route, json={"input": TEXTS[:2], "model": "m", "encoding_format": "base64"}).json()
        vectors = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
        np.testing.assert_allclose(np.stack(vectors), expected, atol=ATOL)
        assert [d["index"] for d in body["data"]] == [0, 1] and body["usage"]["prompt_tokens"] > 0
    floats = client.post("/v1/embeddings", json={"input": TEXTS[0]}).json()
    np.testing.assert_allclose(np.asarray(floats["data"][0]["embedding"]), expected[0], atol=ATOL)


def test_search_runs_both_stages_like_the_pipeline(client, service):
    body = client.post("/search", json={"query": QUERY, "top_n": 3}).json()
    stage_pipeline = TwoStagePipeline(
        service.first_stage, service.reranker, top_k=5, options=RerankOptions(top_n=3, fusion_weight=None)
    )
    expected = stage_pipeline.retrieve(QUERY)
    assert [r["id"] for r in body["results"]] == [r.document.id for r in expected]
    for got, want in zip(body["results"], expected):
        assert got["rerank_score"] == pytest.approx(want.rerank_score, abs=ATOL)
        assert got["retrieval_score"] == pytest.approx(want.retrieval_score, abs=ATOL)
    first_only = client.post("/search", json={"query": QUERY, "rerank": False}).json()["results"]
    assert all("rerank_score" not in r for r in first_only)


def test_health_info_metrics(client):
    assert client.get("/health").json() == {"status": "ok"}
    info = client.get("/info").json()
    assert {"reranker", "embedder", "index", "limits"} <= set(info)
    client.post("/rerank", json={"query": QUERY, "texts": TEXTS})
    metrics = client.get("/metrics").text
    assert 'rerank_plugins_requests_total{route="/rerank",status="200"} 1.0' in metrics


# -- errors and limits -----------------------------------------------------------------------------------------------


def test_errors_come_in_each_apis_format(client):
    tei = client.post("/rerank", json={"query": QUERY})
    assert tei.status_code == 422 and tei.json()["error_type"] == "Validation" and "texts" in tei.json()["error"]
    cohere = client.post("/v2/rerank", json={"query": QUERY})
    assert cohere.status_code == 422
    assert cohere.json()["message"] == cohere.json()["detail"] == "documents: Field required"
    openai = client.post("/v1/embeddings", json={"input": [[1, 2, 3]]})
    assert openai.status_code == 422 and "check_embedding_ctx_length=False" in openai.json()["error"]["message"]
    not_json = client.post("/rerank", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 422 and "JSON" in not_json.json()["error"]


def test_limits_answer_413_and_422(client):
    too_many = client.post("/rerank", json={"query": QUERY, "texts": ["a"] * 9})
    assert too_many.status_code == 413 and "at most 8" in too_many.json()["error"]
    too_long = client.post("/v1/rerank", json={"query": QUERY, "documents": ["x" * 501]})
    assert too_long.status_code == 422 and "documents[0]" in too_long.json()["message"]
    assert client.post("/search", json={"query": QUERY, "top_k": 0}).status_code == 422
    assert client.post("/v2/rerank", json={"query": QUERY, "documents": TEXTS, "top_n": 0}).status_code == 422


def test_body_limit_refuses_large_bodies_even_without_content_length(service):
    with TestClient(create_app(service, ServerSettings(max_body_bytes=2048))) as client:
        declared = client.post("/rerank", json={"query": QUERY, "texts": ["word " * 1000]})
        assert declared.status_code == 413 and "2048" in declared.json()["error"]

        def chunks():
            yield b'{"query": "q", "texts": ["'
            for _ in range(10):
                yield b"x" * 500
            yield b'"]}'

        streamed = client.post("/rerank", content=chunks(), headers={"content-type": "application/json"})
        assert streamed.status_code == 413


def test_api_key_is_required_except_for_health(service):
    with TestClient(create_app(service, ServerSettings(api_key="secret"))) as client:
        assert client.get("/health").status_code == 200
        assert client.post("/rerank", json={"query": QUERY, "texts": TEXTS}).status_code == 401
        wrong = client.post("/v1/rerank", json={}, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "API key" in wrong.json()["message"]
        right = client.post(
            "/rerank", json={"query": QUERY, "texts": TEXTS}, headers={"Authorization": "Bearer secret"}
        )
        assert right.status_code == 200


def test_missing_component_is_named(tiny_cross_path):
    service = Service(get_cross_encoder(tiny_cross_path))
    with TestClient(create_app(service)) as client:
        response = client.post("/embed", json={"inputs": "x"})
        assert response.status_code == 404 and "--bi-encoder" in response.json()["error"]


# -- a real server on loopback ---------------------------------------------------------------------------------------


class LoopbackServer:
    """uvicorn serving an app on 127.0.0.1 in a thread, on a free port."""

    def __init__(self, app) -> None:
        import uvicorn

        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        sock.close()
        config = uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", timeout_graceful_shutdown=10
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def server(service):
    running = LoopbackServer(create_app(service))
    yield running
    running.stop()


def test_fifty_concurrent_requests_equal_sequential_results(server, service):
    queries = [f"{QUERY} {i % 7}" for i in range(50)]
    sequential = [service.reranker.score(q, TEXTS, scale="sigmoid") for q in queries]

    async def fire():
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http:
            return await asyncio.gather(*(http.post("/rerank", json={"query": q, "texts": TEXTS}) for q in queries))

    responses = asyncio.run(fire())
    assert all(r.status_code == 200 for r in responses)
    for response, expected in zip(responses, sequential):
        got = {r["index"]: r["score"] for r in response.json()}
        assert got == pytest.approx(dict(enumerate(expected.tolist())), abs=ATOL)


def _slow_service(service: Service, gate: threading.Event) -> Service:
    """``service`` whose reranking waits for ``gate`` (requests stay in flight until the test opens it)."""
    rerank = service.rerank

    async def held(*args, **kwargs):
        await asyncio.to_thread(gate.wait, 30)
        return await rerank(*args, **kwargs)

    service.rerank = held
    return service


def test_queue_limit_answers_429_and_shutdown_drains_requests_in_flight(service):
    gate = threading.Event()
    running = LoopbackServer(create_app(_slow_service(service, gate), ServerSettings(max_in_flight=2)))
    results: list[httpx.Response] = []

    def post() -> None:
        results.append(httpx.post(f"{running.url}/rerank", json={"query": QUERY, "texts": TEXTS}, timeout=60))

    held = [threading.Thread(target=post) for _ in range(2)]
    for thread in held:
        thread.start()
    deadline = time.monotonic() + 10
    while "rerank_plugins_in_flight 2.0" not in httpx.get(f"{running.url}/metrics").text:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    busy = httpx.post(f"{running.url}/rerank", json={"query": QUERY, "texts": TEXTS})
    assert busy.status_code == 429 and busy.json()["error_type"] == "Overloaded"

    running.server.should_exit = True  # shutdown begins with two requests in flight
    time.sleep(0.3)
    gate.set()
    for thread in held:
        thread.join(30)
    running.thread.join(30)
    assert [r.status_code for r in results] == [200, 200]


# -- real clients ----------------------------------------------------------------------------------------------------


def _by_index(pairs) -> dict[int, float]:
    return {int(i): float(s) for i, s in pairs}


def test_cohere_sdk_v1_and_v2(server, service):
    cohere = pytest.importorskip("cohere")
    expected = dict(enumerate(expected_sigmoid(service).tolist()))
    v2 = cohere.ClientV2(api_key="k", base_url=server.url).rerank(model="m", query=QUERY, documents=TEXTS, top_n=5)
    assert _by_index((r.index, r.relevance_score) for r in v2.results) == pytest.approx(expected, abs=ATOL)
    v1 = cohere.Client(api_key="k", base_url=server.url).rerank(model="m", query=QUERY, documents=TEXTS)
    assert _by_index((r.index, r.relevance_score) for r in v1.results) == pytest.approx(expected, abs=ATOL)


def test_openai_sdk_embeddings_base64_by_default(server, service):
    openai = pytest.importorskip("openai")
    result = openai.OpenAI(api_key="k", base_url=f"{server.url}/v1").embeddings.create(model="m", input=TEXTS[:2])
    np.testing.assert_allclose(
        np.asarray([d.embedding for d in result.data]), service.embedder.encode_texts(TEXTS[:2]), atol=ATOL
    )


def test_langchain_cohere_rerank_and_openai_embeddings(server, service):
    langchain_cohere = pytest.importorskip("langchain_cohere")
    langchain_openai = pytest.importorskip("langchain_openai")
    from langchain_core.documents import Document as LCDocument

    reranker = langchain_cohere.CohereRerank(base_url=server.url, cohere_api_key="k", model="m", top_n=5)
    ranked = reranker.compress_documents([LCDocument(page_content=t) for t in TEXTS], QUERY)
    expected = expected_sigmoid(service)
    for document in ranked:
        index = TEXTS.index(document.page_content)
        assert document.metadata["relevance_score"] == pytest.approx(float(expected[index]), abs=ATOL)
    embeddings = langchain_openai.OpenAIEmbeddings(
        base_url=f"{server.url}/v1", api_key="k", model="m", check_embedding_ctx_length=False
    )
    np.testing.assert_allclose(
        np.asarray(embeddings.embed_documents(TEXTS[:2])), service.embedder.encode_texts(TEXTS[:2]), atol=ATOL
    )


@pytest.mark.parametrize("client_kind", ["tei", "cohere", "jina"])
def test_llamaindex_rerank_postprocessors(server, service, client_kind):
    from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode

    if client_kind == "tei":
        module = pytest.importorskip("llama_index.postprocessor.tei_rerank")
        reranker = module.TextEmbeddingInference(base_url=server.url, top_n=5)
    elif client_kind == "cohere":
        module = pytest.importorskip("llama_index.postprocessor.cohere_rerank")
        reranker = module.CohereRerank(api_key="k", base_url=server.url, model="m", top_n=5)
    else:
        module = pytest.importorskip("llama_index.postprocessor.jinaai_rerank")
        reranker = module.JinaRerank(api_key="k", base_url=f"{server.url}/v1", model="m", top_n=5)
    nodes = [NodeWithScore(node=TextNode(text=t, id_=str(i)), score=0.0) for i, t in enumerate(TEXTS)]
    ranked = reranker.postprocess_nodes(nodes, QueryBundle(QUERY))
    expected = expected_sigmoid(service)
    assert len(ranked) == len(TEXTS)
    for hit in ranked:
        assert hit.score == pytest.approx(float(expected[int(hit.node.node_id)]), abs=ATOL)
    assert [int(h.node.node_id) for h in ranked] == np.argsort(-expected, kind="stable").tolist()


def test_llamaindex_embedding_clients(server, service):
    tei = pytest.importorskip("llama_index.embeddings.text_embeddings_inference")
    openai_like = pytest.importorskip("llama_index.embeddings.openai_like")
    expected = service.embedder.encode_texts(TEXTS[:2])
    tei_model = tei.TextEmbeddingsInference(base_url=server.url, model_name="m")
    np.testing.assert_allclose(np.asarray(tei_model.get_text_embedding_batch(TEXTS[:2])), expected, atol=ATOL)
    like = openai_like.OpenAILikeEmbedding(model_name="m", api_base=f"{server.url}/v1", api_key="k")
    np.testing.assert_allclose(np.asarray(like.get_text_embedding_batch(TEXTS[:2])), expected, atol=ATOL)


# -- command line and Ray Serve ----------------------------------------------------------------------------------


def test_cli_serve_needs_something_to_serve(capsys):
    from rerank_plugins.cli import main

    assert main(["serve"]) == 2
    assert "at least one of --cross-encoder, --bi-encoder, --index" in capsys.readouterr().err


def test_cli_serve_builds_the_service_it_was_asked_for(tiny_cross_path, tiny_bi_path):
    from rerank_plugins.cli import _parser
    from rerank_plugins.cli.serve import build_service

    args = _parser().parse_args(
        ["serve", "--cross-encoder", str(tiny_cross_path), "--bi-encoder", str(tiny_bi_path), "--fusion-weight", "0.3"]
        + ["--long-documents", "window", "--max-documents", "7", "--top-n", "2"]
    )
    service = build_service(args)
    assert service.reranker.model_name == str(tiny_cross_path) and service.embedder.model_name == str(tiny_bi_path)
    assert service.first_stage is None and service.limits.max_documents == 7
    assert (service.options.fusion_weight, service.options.long_documents, service.options.top_n) == (0.3, "window", 2)


def reranker_service(model: str) -> Service:
    """A picklable recipe for a service (Ray ships it to each replica, which builds its own)."""
    return Service(get_cross_encoder(model))


def test_ray_deployment_is_built_or_names_the_extra(tiny_cross_path):
    import functools

    from rerank_plugins.distributed.serve import ray_deployment

    build = functools.partial(reranker_service, str(tiny_cross_path))
    try:
        from ray import serve  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"rerank-plugins\[serve-ray\]"):
            ray_deployment(build, replicas=2)
    else:
        app = ray_deployment(build, replicas=2)
        assert type(app).__name__ == "Application"

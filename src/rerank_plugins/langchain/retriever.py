"""LangChain ``BaseRetriever``: any first stage's top-k (ours, or a retriever you have), then a cross-encoder rerank."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForRetrieverRun,
    CallbackManager,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import get_config_list
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from rerank_plugins._validation import check_positive_int, check_query
from rerank_plugins.adapter_common import CandidateCountCheck
from rerank_plugins.first_stage import DocumentStore, FirstStage, build_first_stage, load_first_stage
from rerank_plugins.langchain._convert import to_document, to_langchain
from rerank_plugins.langchain.compressor import CrossEncoderReranker
from rerank_plugins.langchain.embeddings import BiEncoderEmbeddings
from rerank_plugins.langchain.first_stage import LangChainFirstStage
from rerank_plugins.rerank import DEFAULT_TOP_N, RerankingStage, first_stage_results
from rerank_plugins.schema import SearchHit


class TwoStageRetriever(BaseRetriever):
    """Two-stage retrieval for LangChain: ``top_k`` candidates from a first stage, reranked to ``top_n``.

    The first stage is ours (``first_stage=``, or ``from_documents(first_stage="dense"|"lexical"|"hybrid")``;
    ``index=`` is the same field) or any LangChain retriever (``base_retriever=``), whose own settings then
    decide how many candidates come back. Without a ``reranker`` the first stage's own top-n is returned.
    ``top_n`` (here, or per call: ``invoke(query, top_n=5)``) sets how many documents come back; left None, the
    reranker's own ``top_n`` decides (read on every call), or 5 without a reranker. Returned documents are
    new objects with ``retrieval_score`` (and ``rerank_score`` / ``rerank_scale``) in their metadata. ``batch``
    runs all inputs through one first-stage batch and one rerank pass, with one traced retriever run per input.
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True, populate_by_name=True, validate_assignment=True, extra="forbid"
    )

    first_stage: FirstStage | None = Field(default=None, alias="index", description="Our first stage (or `index`).")
    base_retriever: BaseRetriever | None = Field(default=None, description="Any LangChain retriever as first stage.")
    reranker: CrossEncoderReranker | None = Field(default=None, description="Second stage; None: first-stage top-n.")
    top_k: int = Field(default=30, gt=0, description="First-stage candidates handed to the reranker (at most).")
    top_n: int | None = Field(
        default=None, gt=0, description="Documents returned; None: the reranker's top_n (5 without a reranker)."
    )

    _candidate_check: CandidateCountCheck = PrivateAttr(
        default_factory=lambda: CandidateCountCheck("Raise its k, e.g. store.as_retriever(search_kwargs={'k': 30}).")
    )

    @model_validator(mode="after")
    def _one_first_stage(self) -> TwoStageRetriever:
        if (self.first_stage is None) == (self.base_retriever is None):
            raise ValueError("give exactly one of first_stage (index) and base_retriever")
        return self

    @property
    def index(self) -> FirstStage | None:
        """The same as :attr:`first_stage` (the name older code used)."""
        return self.first_stage

    @classmethod
    def from_documents(
        cls,
        documents: Sequence[LCDocument],
        embeddings: BiEncoderEmbeddings | None = None,
        reranker: CrossEncoderReranker | None = None,
        *,
        first_stage: str = "hybrid",
        analyzer: Any = "auto",
        index_type: str = "flat",
        long_documents: str = "truncate",
        hybrid_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Index ``documents`` in a new first stage and wrap it.

        ``first_stage``: ``"dense"`` (FAISS; ``index_type`` flat, hnsw or ivf), ``"lexical"`` (BM25; ``analyzer``
        "auto", "english", "korean-bigram", "korean-morph", "generic" or a callable) or ``"hybrid"`` (both).
        ``hybrid_options`` (hybrid only): ``fusion`` ("weighted" or "rrf"), ``dense_weight``, ``rrf_k``, ``candidates``.
        ``long_documents="split"`` embeds every passage of documents longer than the embedding model's limit.
        """
        embeddings = embeddings if embeddings is not None or first_stage == "lexical" else BiEncoderEmbeddings()
        stage = build_first_stage(
            first_stage,
            [to_document(d) for d in documents],
            embeddings.backend if embeddings else None,
            analyzer=analyzer,
            hybrid_options=hybrid_options,
            dense_options={
                "index_type": index_type,
                "long_documents": long_documents,
                "batch_size": embeddings.batch_size if embeddings else 32,
            },
        )
        return cls(first_stage=stage, reranker=reranker, **kwargs)

    @classmethod
    def load(
        cls,
        path: str | os.PathLike[str],
        embeddings: BiEncoderEmbeddings | None = None,
        reranker: CrossEncoderReranker | None = None,
        *,
        analyzer: Any = None,
        **kwargs: Any,
    ) -> TwoStageRetriever:
        """Load a first stage saved with :meth:`save`; refused if ``embeddings`` is not the model it was built with."""
        embeddings = embeddings or BiEncoderEmbeddings()
        return cls(
            first_stage=load_first_stage(path, embeddings.backend, analyzer=analyzer), reranker=reranker, **kwargs
        )

    def save(self, path: str | os.PathLike[str]) -> None:
        self._store().save(path)

    def add_documents(self, documents: Sequence[LCDocument]) -> list[str]:
        return self._store().add_documents([to_document(d) for d in documents])

    def delete(self, ids: Sequence[str]) -> int:
        return self._store().delete(ids)

    def _store(self) -> DocumentStore:
        if not isinstance(self.first_stage, DocumentStore):
            raise TypeError("this retriever's first stage does not hold its own documents (a base_retriever does)")
        return self.first_stage

    # -- retrieval -------------------------------------------------------------------------------------

    def _stage(self) -> FirstStage:
        return self.first_stage if self.first_stage is not None else LangChainFirstStage(self.base_retriever)

    def _search(self, queries: list[str], children: list[Any], return_exceptions: bool = False) -> list[Any]:
        """Each query's hits; ``return_exceptions``: a base retriever's error for one query stays in its place."""
        stage = self._stage()
        if isinstance(stage, LangChainFirstStage):
            configs = [{"callbacks": c} for c in children]
            return stage.search_batch(queries, self.top_k, configs=configs, return_exceptions=return_exceptions)
        return stage.search_batch(queries, self.top_k)

    async def _asearch(self, queries: list[str], children: list[Any], return_exceptions: bool = False) -> list[Any]:
        stage = self._stage()
        if isinstance(stage, LangChainFirstStage):
            configs = [{"callbacks": c} for c in children]
            return await stage.asearch_batch(queries, self.top_k, configs=configs, return_exceptions=return_exceptions)
        return await stage.asearch_batch(queries, self.top_k)

    def _top_n(self, call_options: dict[str, Any]) -> int | None:
        """The per-call ``top_n`` if given (checked), else ours; unknown per-call options are refused."""
        unknown = set(call_options) - {"top_n", "verbose"}  # invoke reads `verbose` itself, then passes it on
        if unknown:
            raise TypeError(f"unexpected keyword arguments {sorted(unknown)}: per call, only top_n is read")
        top_n = call_options.get("top_n")
        return self.top_n if top_n is None else check_positive_int(top_n, "top_n")

    def _rerank_stage(self, top_n: int | None) -> RerankingStage:
        return self.reranker.stage_for(top_n, self._stage().describe())

    def _finish(
        self, queries: list[str], candidates: list[list[SearchHit]], top_n: int | None
    ) -> list[list[LCDocument]]:
        if self.reranker is None:
            results = [first_stage_results(hits, top_n or DEFAULT_TOP_N) for hits in candidates]
        else:
            stage = self._rerank_stage(top_n)
            if self.base_retriever is not None:
                self._candidate_check([len(hits) for hits in candidates], stage.options.top_n)
            results = stage.rerank_batch(list(zip(queries, candidates)))
        return [[to_langchain(r) for r in row] for row in results]

    def _finish_each(self, queries: list[str], found: list[Any], top_n: int | None) -> list[Any]:
        """:meth:`_finish` for the queries whose search worked; a failed search keeps its error in place."""
        ok = [j for j, hits in enumerate(found) if not isinstance(hits, Exception)]
        out = list(found)
        if ok:
            for j, documents in zip(ok, self._finish([queries[j] for j in ok], [found[j] for j in ok], top_n)):
                out[j] = documents
        return out

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **call_options: Any
    ) -> list[LCDocument]:
        top_n = self._top_n(call_options)
        query = check_query(query)
        return self._finish([query], self._search([query], [run_manager.get_child()]), top_n)[0]

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **call_options: Any
    ) -> list[LCDocument]:
        top_n = self._top_n(call_options)
        query = check_query(query)
        hits = await self._asearch([query], [run_manager.get_child()])
        if self.reranker is None:
            return self._finish([query], hits, top_n)[0]
        stage = self._rerank_stage(top_n)
        if self.base_retriever is not None:
            self._candidate_check([len(hits[0])], stage.options.top_n)
        results = await stage.arerank(query, hits[0])
        return [to_langchain(r) for r in results]

    # -- batches: one pass for all inputs, one traced run per input --------------------------------------

    def batch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[LCDocument]]:
        """All inputs through one first-stage batch and one rerank pass (in groups of ``max_concurrency``).

        Each input still gets its own retriever run, configured from its config (callbacks, tags, metadata,
        run name, and tracers set by environment or context), ended with its documents or its error.
        """
        top_n = self._top_n(kwargs)
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        out: list[Any] = []
        for start, stop in _groups(len(inputs), configs[0].get("max_concurrency")):
            managers = [
                self._start_run(CallbackManager, q, c, **kwargs)
                for q, c in zip(inputs[start:stop], configs[start:stop])
            ]
            valid, results = _checked(inputs[start:stop])
            if valid:
                queries = [inputs[start + i] for i in valid]
                try:
                    hits = self._search(queries, [managers[i].get_child() for i in valid], return_exceptions=True)
                    found = self._finish_each(queries, hits, top_n)
                except Exception as error:  # noqa: BLE001 - ended on every run of this group, then raised or returned
                    found = [error] * len(valid)
                for i, documents in zip(valid, found):
                    results[i] = documents
            for manager, result in zip(managers, results):
                _end_run(manager, result)
            out.extend(results)
        return _raise_or_return(out, return_exceptions)

    async def abatch(
        self,
        inputs: list[str],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any,
    ) -> list[list[LCDocument]]:
        """:meth:`batch` for async code: model work runs in worker threads, never on the event loop."""
        top_n = self._top_n(kwargs)
        if not inputs:
            return []
        configs = get_config_list(config, len(inputs))
        out: list[Any] = []
        for start, stop in _groups(len(inputs), configs[0].get("max_concurrency")):
            managers = [
                await self._start_run(AsyncCallbackManager, q, c, **kwargs)
                for q, c in zip(inputs[start:stop], configs[start:stop])
            ]
            valid, results = _checked(inputs[start:stop])
            if valid:
                queries = [inputs[start + i] for i in valid]
                try:
                    hits = await self._asearch(
                        queries, [managers[i].get_child() for i in valid], return_exceptions=True
                    )
                    found = await asyncio.to_thread(self._finish_each, queries, hits, top_n)
                except Exception as error:  # noqa: BLE001 - ended on every run of this group, then raised or returned
                    found = [error] * len(valid)
                for i, documents in zip(valid, found):
                    results[i] = documents
            for manager, result in zip(managers, results):
                await _aend_run(manager, result)
            out.extend(results)
        return _raise_or_return(out, return_exceptions)

    def _start_run(self, manager_class: Any, query: Any, config: RunnableConfig, **kwargs: Any) -> Any:
        """What :meth:`BaseRetriever.invoke` does before retrieving: configure callbacks, start the run."""
        manager = manager_class.configure(
            config.get("callbacks"),
            None,
            verbose=kwargs.get("verbose", False),
            inheritable_tags=config.get("tags"),
            local_tags=self.tags,
            inheritable_metadata={**(config.get("metadata") or {}), **self._get_ls_params(**kwargs)},
            local_metadata=self.metadata,
        )
        return manager.on_retriever_start(
            None, query, name=config.get("run_name") or self.get_name(), run_id=config.get("run_id")
        )


def _groups(n: int, max_concurrency: int | None) -> list[tuple[int, int]]:
    size = check_positive_int(max_concurrency, "max_concurrency") if max_concurrency is not None else n
    return [(start, min(n, start + size)) for start in range(0, n, size)]


def _checked(queries: Sequence[Any]) -> tuple[list[int], list[Any]]:
    """Positions of valid queries, and results holding the error of each invalid one."""
    valid, results = [], [None] * len(queries)
    for i, query in enumerate(queries):
        try:
            check_query(query)
            valid.append(i)
        except (TypeError, ValueError) as error:
            results[i] = error
    return valid, results


def _end_run(manager: Any, result: Any) -> None:
    if isinstance(result, Exception):
        manager.on_retriever_error(result)
    else:
        manager.on_retriever_end(result)


async def _aend_run(manager: Any, result: Any) -> None:
    if isinstance(result, Exception):
        await manager.on_retriever_error(result)
    else:
        await manager.on_retriever_end(result)


def _raise_or_return(results: list[Any], return_exceptions: bool) -> list[Any]:
    if not return_exceptions:
        for result in results:
            if isinstance(result, Exception):
                raise result
    return results

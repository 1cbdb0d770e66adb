"""Any LangChain ``BaseRetriever`` as a first stage, so our reranker goes on top of the retriever a chain has."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document as LCDocument
from langchain_core.retrievers import BaseRetriever
from langchain_core.runnables import RunnableConfig

from rerank_plugins.adapter_common import first_stage_score
from rerank_plugins.first_stage.base import FirstStage, check_search_args
from rerank_plugins.schema import Document, SearchHit


class LangChainFirstStage(FirstStage):
    """Candidates from ``retriever`` (a vector store's ``as_retriever()``, an ``EnsembleRetriever``, ...).

    The retriever's own settings decide how many candidates come back (``k`` only caps them). Its score, when it
    puts one in the metadata (``score``, ``relevance_score``, ``similarity``), becomes the hit's score; without
    one the score is None: reranking works, fusion with the first stage needs scores and says so. The
    retriever's sync and async paths are used as they are; its documents are copied, never changed.
    """

    def __init__(self, retriever: BaseRetriever) -> None:
        if not isinstance(retriever, BaseRetriever):
            raise TypeError(f"base_retriever must be a langchain BaseRetriever, got {type(retriever).__name__}")
        self.retriever = retriever

    def describe(self) -> dict[str, str]:
        return {"kind": "langchain-retriever", "retriever": type(self.retriever).__name__}

    def search_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        configs: Sequence[RunnableConfig] | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """``configs`` (one per query) carry the callbacks of the run that asked, so the base run nests in it.

        ``return_exceptions``: a query the retriever failed on gets its error in place, so one bad query does
        not fail the others (what ``retriever.batch`` does).
        """
        queries = check_search_args(queries, k)
        found = self.retriever.batch(queries, list(configs) if configs else None, return_exceptions=return_exceptions)
        return [_hits_or_error(documents, k, return_exceptions) for documents in found]

    async def asearch_batch(
        self,
        queries: Sequence[str],
        k: int = 10,
        *,
        configs: Sequence[RunnableConfig] | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        queries = check_search_args(queries, k)
        found = await self.retriever.abatch(
            queries, list(configs) if configs else None, return_exceptions=return_exceptions
        )
        return [_hits_or_error(documents, k, return_exceptions) for documents in found]


def _hits_or_error(found: Any, k: int, return_exceptions: bool) -> Any:
    if not return_exceptions:
        return _hits(found, k)
    if isinstance(found, Exception):
        return found
    try:
        return _hits(found, k)
    except TypeError as error:
        return error


def _hits(documents: Sequence[LCDocument], k: int) -> list[SearchHit]:
    for i, doc in enumerate(documents):
        if not isinstance(doc, LCDocument):
            raise TypeError(f"the base retriever returned a {type(doc).__name__} at position {i}, not a Document")
    return [
        SearchHit(Document(doc.page_content, doc.id or "", dict(doc.metadata)), i, first_stage_score(doc.metadata))
        for i, doc in enumerate(documents[:k])
    ]

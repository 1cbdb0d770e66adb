"""Pseudo-queries from a LangChain chat model or LLM: the model becomes the async call the core generator needs."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import BaseLanguageModel
from langchain_core.messages import BaseMessage

from rerank_plugins.training.pseudo_queries import LLMQueryGenerator


def query_generator(llm: BaseLanguageModel, **options: Any) -> LLMQueryGenerator:
    """An :class:`~rerank_plugins.training.pseudo_queries.LLMQueryGenerator` calling ``llm.ainvoke``.

    ``options`` go to the generator (``prompt``, ``queries_per_document``, ``concurrency``, ``cache_path``, ...).
    The cache is keyed by the model's name, so answers from one model are never reused for another.
    """
    if not isinstance(llm, BaseLanguageModel):
        raise TypeError(f"expected a LangChain chat model or LLM, got {type(llm).__name__}")

    async def complete(prompt: str) -> str:
        answer = await llm.ainvoke(prompt)
        return answer.text if isinstance(answer, BaseMessage) else str(answer)

    name = getattr(llm, "model_name", None) or getattr(llm, "model", None) or llm._llm_type
    return LLMQueryGenerator(complete, model_name=f"langchain:{name}", **options)

"""Pseudo-queries from a LlamaIndex ``LLM``: the model becomes the async call the core generator needs."""

from __future__ import annotations

from typing import Any

from llama_index.core.llms import LLM

from rerank_plugins.training.pseudo_queries import LLMQueryGenerator


def query_generator(llm: LLM, **options: Any) -> LLMQueryGenerator:
    """An :class:`~rerank_plugins.training.pseudo_queries.LLMQueryGenerator` calling ``llm.acomplete``.

    ``options`` go to the generator (``prompt``, ``queries_per_document``, ``concurrency``, ``cache_path``, ...).
    The cache is keyed by the model's name, so answers from one model are never reused for another.
    """
    if not isinstance(llm, LLM):
        raise TypeError(f"expected a LlamaIndex LLM, got {type(llm).__name__}")

    async def complete(prompt: str) -> str:
        return (await llm.acomplete(prompt)).text

    return LLMQueryGenerator(complete, model_name=f"llamaindex:{llm.metadata.model_name}", **options)

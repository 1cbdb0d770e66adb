"""Pseudo-queries: training queries made from a corpus that has none, offline or with an LLM the user already has.

Offline strategies need nothing but the text (what the quickstart and the tests use):

- ``sentence``: one sentence of a passage is the query and the rest of the passage its positive (the inverse
  cloze task of Lee et al., 2019). The sentence is removed from the passage, so the pair teaches matching by
  meaning, not by copying; the corpus the models train and are checked on holds the passages without it.
- ``title``: a document's title is the query for its body (BEIR corpora and JSONL with ``title``).
- ``terms``: the passage's most distinctive words (tf-idf), in their order of appearance.

With an LLM, :class:`LLMQueryGenerator` calls any async ``prompt -> text`` function; the LangChain and LlamaIndex
adapter packages build one from a chat model / ``LLM``. Outputs are parsed, validated and de-duplicated, and the
raw outputs are cached on disk so a run resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import random
import re
import unicodedata
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from rerank_plugins._validation import check_positive_int
from rerank_plugins.data import DataError, RetrievalDataset
from rerank_plugins.data.corpus import CorpusDocument

logger = logging.getLogger(__name__)

OFFLINE_STRATEGIES = ("sentence", "title", "terms")
SENTENCE_END = re.compile(r"(?<=[.!?。？！])\s+|\n+")
WORD = re.compile(r"\w+")
MIN_QUERY_WORDS = 3
MAX_QUERY_CHARS = 300
TERMS_PER_QUERY = 6

DEFAULT_PROMPT = (
    "Write {n} different questions or search queries that the passage below answers. Write them in the same "
    "language as the passage, one per line, without numbering. Do not copy sentences from the passage.\n\n"
    "Passage:\n{passage}\n\nQueries:"
)


@dataclass
class PseudoQueries:
    """Generated queries as a data set (each query's positive is its passage) and what was thrown away, why."""

    dataset: RetrievalDataset
    source: str
    rejected: Counter[str] = field(default_factory=Counter)
    failed: dict[str, str] = field(default_factory=dict)
    """Document id -> error, for documents whose LLM calls kept failing (nothing was generated for them)."""

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "queries": len(self.dataset.queries),
            "documents_with_queries": len({d for rel in self.dataset.qrels.values() for d in rel}),
            "corpus": len(self.dataset.corpus),
            "rejected": dict(self.rejected),
            "failed_documents": len(self.failed),
        }


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text`` (after ., !, ?, their full-width forms, or a line break); works for Korean too."""
    return [s.strip() for s in SENTENCE_END.split(text) if s.strip()]


def dominant_script(text: str) -> str | None:
    """The writing system of most letters in ``text`` (``HANGUL``, ``LATIN``, ``CJK``, ...), None without letters."""
    scripts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            name = unicodedata.name(char, "")
            scripts[name.split(" ")[0] if name else "OTHER"] += 1
    return scripts.most_common(1)[0][0] if scripts else None


def _normalise(text: str) -> str:
    return " ".join(WORD.findall(text.lower()))


def rejection_reason(query: str, passage: str, *, max_chars: int = MAX_QUERY_CHARS) -> str | None:
    """Why ``query`` is not a usable query for ``passage`` (None when it is)."""
    query = query.strip()
    if not WORD.search(query):
        return "empty"
    if len(query) > max_chars:
        return "too long"
    words = _normalise(query)
    if len(words.split()) >= 6 and words in _normalise(passage):
        return "copies the passage"
    query_script, passage_script = dominant_script(query), dominant_script(passage)
    if query_script and passage_script and query_script != passage_script:
        return "wrong language"
    return None


def offline_pseudo_queries(
    documents: Sequence[CorpusDocument],
    strategy: str = "sentence",
    *,
    queries_per_document: int = 1,
    max_documents: int | None = None,
    seed: int = 0,
) -> PseudoQueries:
    """Pseudo-queries from the text alone (see the module docstring for the strategies).

    With ``sentence``, up to ``queries_per_document`` sentences of each passage become queries and are removed
    from it; passages with too few sentences are counted in ``rejected`` ("too short to make a query").
    ``max_documents``: make queries from a seeded sample of that many documents (all stay in the corpus, the
    others unchanged), which bounds training time on a large corpus.
    """
    if strategy not in OFFLINE_STRATEGIES:
        raise ValueError(f"strategy must be one of {OFFLINE_STRATEGIES}, got {strategy!r}")
    check_positive_int(queries_per_document, "queries_per_document")
    _check_documents(documents)
    if max_documents is not None:
        check_positive_int(max_documents, "max_documents")
    corpus = {d.id: d.full_text for d in documents}
    made: dict[str, tuple[str, str]] = {}  # query id -> (query, document id)
    rejected: Counter[str] = Counter()
    if strategy == "terms":
        idf = _inverse_document_frequencies(documents)
    chosen = set(
        random.Random(seed).sample(range(len(documents)), min(max_documents or len(documents), len(documents)))
    )
    for position, document in enumerate(documents):
        if position not in chosen:
            continue
        if strategy == "sentence":
            queries, rest = _sentence_queries(document, queries_per_document, seed)
            if queries:
                corpus[document.id] = rest
        elif strategy == "title":
            queries = [document.title] if document.title and document.text else []
            if queries:
                corpus[document.id] = document.text
        else:
            queries = [_salient_terms(document.full_text, idf)]
        queries = [q for q in queries if len(WORD.findall(q)) >= MIN_QUERY_WORDS or strategy == "title"]
        if not queries:
            rejected["too short to make a query" if strategy != "title" else "no title"] += 1
        for number, query in enumerate(queries):
            made[f"{document.id}#{strategy}{number}"] = (query, document.id)
    rejected = _dedupe(made, rejected)
    return PseudoQueries(_as_dataset(made, corpus, f"pseudo-queries ({strategy})"), strategy, rejected)


def _check_documents(documents: Sequence[CorpusDocument]) -> None:
    if not documents:
        raise DataError("the corpus is empty: pseudo-queries need documents")
    bad = [getattr(d, "id", repr(d)) for d in documents if not isinstance(d, CorpusDocument)]
    if bad:
        raise DataError(f"{len(bad)} corpus entries are not CorpusDocument (use data.load_corpus): {bad[:5]}")


def _sentence_queries(document: CorpusDocument, count: int, seed: int) -> tuple[list[str], str]:
    """Up to ``count`` sentences of the body as queries, and the document's text without them."""
    sentences = split_sentences(document.text)
    usable = [
        i for i, s in enumerate(sentences) if len(WORD.findall(s)) >= MIN_QUERY_WORDS and len(s) <= MAX_QUERY_CHARS
    ]
    # Keep at least one sentence of the body (or the title) as the positive.
    limit = min(count, len(usable), len(sentences) - (0 if document.title else 1))
    if limit <= 0:
        return [], document.full_text
    chosen = sorted(random.Random(f"{seed}:{document.id}").sample(usable, limit))
    rest = " ".join(s for i, s in enumerate(sentences) if i not in chosen)
    return [sentences[i] for i in chosen], f"{document.title} {rest}".strip()


def _inverse_document_frequencies(documents: Sequence[CorpusDocument]) -> dict[str, float]:
    counts: Counter[str] = Counter()
    for document in documents:
        counts.update(set(WORD.findall(document.full_text.lower())))
    return {word: math.log(len(documents) / count) for word, count in counts.items()}


def _salient_terms(text: str, idf: dict[str, float]) -> str:
    words = WORD.findall(text)
    frequency = Counter(w.lower() for w in words)
    candidates = [w for w in frequency if not w.isdigit() and len(w) > 1]
    best = set(sorted(candidates, key=lambda w: (-frequency[w] * idf.get(w, 0.0), w))[:TERMS_PER_QUERY])
    return " ".join(dict.fromkeys(w for w in words if w.lower() in best))


def _dedupe(made: dict[str, tuple[str, str]], rejected: Counter[str]) -> Counter[str]:
    """Drop queries made for more than one document: such a query has no single right answer."""
    owners: dict[str, set[str]] = {}
    for query, doc_id in made.values():
        owners.setdefault(_normalise(query), set()).add(doc_id)
    for query_id, (query, _) in list(made.items()):
        if len(owners[_normalise(query)]) > 1:
            del made[query_id]
            rejected["same query for several documents"] += 1
    return rejected


def _as_dataset(made: dict[str, tuple[str, str]], corpus: dict[str, str], name: str) -> RetrievalDataset:
    if not made:
        raise DataError(f"{name}: no document gave a usable query (are the documents very short?)")
    return RetrievalDataset(
        corpus,
        {q: query for q, (query, _) in made.items()},
        {q: {doc_id: 1} for q, (_, doc_id) in made.items()},
        name=name,
    )


def parse_queries(output: str) -> list[str]:
    """Queries from an LLM's answer: a JSON list of strings, or one per line (bullets and numbering removed)."""
    text = output.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        if isinstance(parsed, list):
            return [str(q).strip() for q in parsed if str(q).strip()]
    lines = (re.sub(r"^\s*(?:[-*•]+|\(?\d+[.):]|Q\d*[.:)])\s*", "", line).strip() for line in text.splitlines())
    return [line.strip("\"'“”‘’ ") for line in lines if line.strip("\"'“”‘’ ")]


def estimate_tokens(text: str) -> int:
    """A rough token count for cost estimates: ~4 ASCII characters per token, ~1.5 other characters per token."""
    ascii_chars = sum(1 for c in text if ord(c) < 128)
    return math.ceil(ascii_chars / 4 + (len(text) - ascii_chars) / 1.5)


class LLMQueryGenerator:
    """Pseudo-queries from an LLM: ``complete`` is any async ``prompt -> answer text`` function.

    ``prompt`` must contain ``{passage}`` and may contain ``{n}`` (``queries_per_document``). At most
    ``concurrency`` calls run at once; a call that raises is retried ``max_retries`` times, then the document is
    reported in ``PseudoQueries.failed``. With ``cache_path`` every raw answer is appended to a JSONL file keyed by
    (model, prompt, n, passage): a rerun, or a run after a crash, calls the LLM only for what is missing.
    """

    def __init__(
        self,
        complete: Callable[[str], Awaitable[str]],
        *,
        model_name: str,
        prompt: str = DEFAULT_PROMPT,
        queries_per_document: int = 3,
        concurrency: int = 4,
        cache_path: str | os.PathLike[str] | None = None,
        max_retries: int = 2,
        retry_delay_s: float = 1.0,
        show_progress: bool = True,
    ) -> None:
        if "{passage}" not in prompt:
            raise ValueError("prompt must contain '{passage}' (and may contain '{n}')")
        check_positive_int(queries_per_document, "queries_per_document")
        check_positive_int(concurrency, "concurrency")
        self.complete = complete
        self.model_name = model_name
        self.prompt = prompt
        self.queries_per_document = queries_per_document
        self.concurrency = concurrency
        self.cache_path = Path(cache_path) if cache_path is not None else None
        self.max_retries = max_retries
        self.retry_delay_s = retry_delay_s
        self.show_progress = show_progress

    def _prompt_for(self, document: CorpusDocument) -> str:
        return self.prompt.replace("{n}", str(self.queries_per_document)).replace("{passage}", document.full_text)

    def _key(self, document: CorpusDocument) -> str:
        material = json.dumps([self.model_name, self.prompt, self.queries_per_document, document.full_text])
        return hashlib.sha256(material.encode("utf-8")).hexdigest()

    def _cached(self) -> dict[str, str]:
        """Raw answers already in the cache; a line cut short by a crash is skipped (it will be asked again)."""
        answers: dict[str, str] = {}
        if self.cache_path is None or not self.cache_path.is_file():
            return answers
        with self.cache_path.open(encoding="utf-8") as handle:
            for line in handle:
                try:
                    row = json.loads(line)
                    answers[row["key"]] = row["output"]
                except (ValueError, KeyError, TypeError):
                    continue
        return answers

    def estimate_cost(self, documents: Sequence[CorpusDocument]) -> dict[str, int]:
        """What a run would cost before it starts: LLM calls (cached documents are free) and estimated tokens."""
        _check_documents(documents)
        cached = self._cached()
        todo = [d for d in documents if self._key(d) not in cached]
        return {
            "documents": len(documents),
            "cached": len(documents) - len(todo),
            "calls": len(todo),
            "prompt_tokens": sum(estimate_tokens(self._prompt_for(d)) for d in todo),
            "output_tokens": len(todo) * self.queries_per_document * 24,
        }

    def generate(self, documents: Sequence[CorpusDocument]) -> PseudoQueries:
        """Blocking form of :meth:`agenerate` (inside a running event loop, await :meth:`agenerate` instead)."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(documents))
        raise RuntimeError("generate() was called inside a running event loop: use `await agenerate(...)`")

    async def agenerate(self, documents: Sequence[CorpusDocument]) -> PseudoQueries:
        cost = self.estimate_cost(documents)
        logger.info(
            "pseudo-queries with %s: %d LLM calls (%d documents cached), about %d prompt + %d output tokens",
            self.model_name,
            cost["calls"],
            cost["cached"],
            cost["prompt_tokens"],
            cost["output_tokens"],
        )
        answers = self._cached()
        failed: dict[str, str] = {}
        todo = [d for d in documents if self._key(d) not in answers]
        if self.cache_path is not None:
            self.cache_path.parent.mkdir(parents=True, exist_ok=True)
            self._end_cut_line()
        gate = asyncio.Semaphore(self.concurrency)
        with tqdm(total=len(todo), desc="Generating queries", unit="doc", disable=not self.show_progress) as bar:

            async def ask(document: CorpusDocument) -> None:
                async with gate:
                    try:
                        output = await self._call(self._prompt_for(document))
                    except Exception as error:  # the LLM's own errors are reported per document, not fatal
                        failed[document.id] = f"{type(error).__name__}: {error}"
                        bar.update(1)
                        return
                answers[self._key(document)] = output
                self._append(self._key(document), document.id, output)
                bar.update(1)

            await asyncio.gather(*(ask(d) for d in todo))
        if todo and len(failed) == len(todo) and not any(self._key(d) in answers for d in documents):
            raise RuntimeError(f"every LLM call failed; the first error: {next(iter(failed.values()))}")
        return self._collect(documents, answers, failed)

    async def _call(self, prompt: str) -> str:
        for attempt in range(self.max_retries + 1):
            try:
                output = await self.complete(prompt)
                if not isinstance(output, str):
                    raise TypeError(f"the LLM returned {type(output).__name__}, not text")
                return output
            except Exception:
                if attempt == self.max_retries:
                    raise
                await asyncio.sleep(self.retry_delay_s * 2**attempt)
        raise AssertionError("unreachable")

    def _end_cut_line(self) -> None:
        """A crash can leave the last line without its newline: end it, so new answers start on a line of their own."""
        if self.cache_path is None or not self.cache_path.is_file() or not self.cache_path.stat().st_size:
            return
        with self.cache_path.open("rb+") as handle:
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                handle.write(b"\n")

    def _append(self, key: str, doc_id: str, output: str) -> None:
        if self.cache_path is None:
            return
        with self.cache_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "id": doc_id, "model": self.model_name, "output": output}) + "\n")
            handle.flush()

    def _collect(
        self, documents: Iterable[CorpusDocument], answers: dict[str, str], failed: dict[str, str]
    ) -> PseudoQueries:
        made: dict[str, tuple[str, str]] = {}
        rejected: Counter[str] = Counter()
        corpus = {}
        for document in documents:
            corpus[document.id] = document.full_text
            output = answers.get(self._key(document))
            if output is None:
                continue
            seen: set[str] = set()
            parsed = parse_queries(output)
            if len(parsed) > self.queries_per_document:
                rejected["more than n in one answer"] += len(parsed) - self.queries_per_document
            for query in parsed[: self.queries_per_document]:
                reason = rejection_reason(query, document.full_text)
                if reason is None and _normalise(query) in seen:
                    reason = "duplicate"
                if reason:
                    rejected[reason] += 1
                    continue
                seen.add(_normalise(query))
                made[f"{document.id}#llm{len(seen) - 1}"] = (query, document.id)
        rejected = _dedupe(made, rejected)
        return PseudoQueries(
            _as_dataset(made, corpus, f"pseudo-queries ({self.model_name})"), f"llm:{self.model_name}", rejected, failed
        )

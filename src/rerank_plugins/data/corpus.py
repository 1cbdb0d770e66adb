"""A corpus without labels: documents with ids, text and (where the source has one) a title.

``adapt`` and pseudo-query generation start from here: most users have documents and no labelled queries.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rerank_plugins.data.datasets import DataError, _find, _open_text, _problem, _read_jsonl, _text_id, _text_of


@dataclass(frozen=True)
class CorpusDocument:
    """``text`` is the body; ``title`` is kept apart so a title can serve as a query for its body."""

    id: str
    text: str
    title: str = ""

    @property
    def full_text(self) -> str:
        """Title and text joined by one space: the text the first stage indexes (BEIR's rule)."""
        return f"{self.title} {self.text}".strip()


def load_corpus(source: str | os.PathLike[str] | Iterable[Any] | Mapping[str, Any]) -> list[CorpusDocument]:
    """Documents from a path or from memory.

    Paths: a BEIR folder (its ``corpus.jsonl[.gz]``), a JSONL file (``_id`` or ``id``, ``text``, optional
    ``title``), a SQuAD/KorQuAD ``.json[.gz]`` (its paragraphs, ids as in :func:`load_squad`) or a ``.txt`` file
    (one document per non-empty line). In memory: a mapping id -> text, or an iterable of strings, LangChain
    ``Document``s or LlamaIndex nodes (ids from their ``id``/``id_`` when they have one, else from the text).
    Raises :class:`DataError` naming the entries that are not non-empty text, and on an empty corpus.
    """
    if isinstance(source, (str, os.PathLike)):
        documents, name = _from_path(Path(source)), str(source)
    elif isinstance(source, Mapping):
        documents, name = _from_items(source.items()), "corpus"
    else:
        documents, name = _from_items((_object_id(item), item) for item in source), "corpus"
    if not documents:
        raise DataError(f"{name}: the corpus is empty")
    duplicates = sorted(_duplicate_ids(documents))
    if duplicates:
        raise _problem("duplicate document ids", duplicates, name)
    return documents


def _duplicate_ids(documents: list[CorpusDocument]) -> set[str]:
    seen: set[str] = set()
    repeated = set()
    for document in documents:
        if document.id in seen:
            repeated.add(document.id)
        seen.add(document.id)
    return repeated


def _object_id(item: Any) -> str | None:
    for attribute in ("id", "id_", "node_id"):
        value = getattr(item, attribute, None)
        if isinstance(value, str) and value:
            return value
    return None


def _from_items(items: Iterable[tuple[str | None, Any]]) -> list[CorpusDocument]:
    documents, bad = [], []
    for position, (doc_id, item) in enumerate(items):
        text = _text_of(item)
        if not isinstance(text, str) or not text.strip():
            bad.append(doc_id if doc_id is not None else f"#{position} ({type(item).__name__})")
            continue
        documents.append(CorpusDocument(str(doc_id) if doc_id is not None else _text_id(text.strip()), text.strip()))
    if bad:
        raise _problem("corpus entries that are not non-empty text (id or position)", bad, "corpus")
    return documents


def _from_path(path: Path) -> list[CorpusDocument]:
    if path.is_dir():
        path = _find(path, "corpus")
    elif not path.exists():
        raise DataError(f"{path} does not exist")
    name = path.name
    if name.endswith((".json", ".json.gz")):
        return _from_squad(path)
    if name.endswith(".txt"):
        with _open_text(path) as handle:
            lines = [line.strip() for line in handle]
        return [CorpusDocument(f"line{n}", line) for n, line in enumerate(lines, 1) if line]
    if not name.endswith((".jsonl", ".jsonl.gz")):
        raise DataError(f"{path}: expected a BEIR folder, .jsonl[.gz], .json[.gz] (SQuAD) or .txt")
    documents, bad = [], []
    for number, row in enumerate(_read_jsonl(path), 1):
        doc_id = row.get("_id", row.get("id"))
        text, title = row.get("text"), row.get("title") or ""
        if doc_id is None or not isinstance(text, str) or not text.strip() or not isinstance(title, str):
            bad.append(number)
            continue
        documents.append(CorpusDocument(str(doc_id), text.strip(), title.strip()))
    if bad:
        raise _problem("records without an id or a non-empty 'text' (record numbers)", bad, path)
    return documents


def _from_squad(path: Path) -> list[CorpusDocument]:
    try:
        with _open_text(path) as handle:
            data = json.load(handle)["data"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not SQuAD-style JSON with a top-level 'data' list ({error})") from None
    documents: dict[str, CorpusDocument] = {}
    seen: set[str] = set()
    for a, article in enumerate(data):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            context = str(paragraph.get("context") or "").strip()
            if context and context not in seen:
                seen.add(context)
                documents[f"a{a}p{p}"] = CorpusDocument(f"a{a}p{p}", context, "")
    return list(documents.values())

"""Bi-encoder backend: queries and documents encoded separately into float32 vectors."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from rerank_plugins._validation import check_non_negative_int, check_positive_int, check_texts
from rerank_plugins.batching import MicroBatcher, run_grouped
from rerank_plugins.models._base import LazyModelBackend
from rerank_plugins.models.disk_cache import DiskEmbeddingCache
from rerank_plugins.models.lru import LRUCache, text_digest
from rerank_plugins.models.resolve import model_fingerprint

logger = logging.getLogger(__name__)

PROGRESS_BAR_MIN_TEXTS = 256
"""Inputs at least this long show a progress bar unless ``show_progress`` says otherwise."""


DEFAULT_CACHE_SIZE = 50_000
"""Embeddings kept in memory per backend (about 75 MB for a 384-dimensional model)."""


class BiEncoderBackend(LazyModelBackend):
    """A sentence-transformers embedding model behind a small, framework-free API.

    Queries and documents go through ``encode_query`` / ``encode_document``, so prompts saved with
    the model (e.g. ``"query: "`` for E5-style models) are applied. Embeddings are L2-normalised by
    default, which makes inner product equal cosine similarity.

    An LRU cache (``cache_size`` entries; 0 turns it off) keyed by query/document role, normalisation and
    the text's hash makes re-embedding unchanged texts free; it lives with this backend, so it is
    specific to this model, revision and prompt set.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        cache_size: int = DEFAULT_CACHE_SIZE,
        disk_cache: str | os.PathLike[str] | None = None,
        disk_cache_max_entries: int = 1_000_000,
        **options: Any,
    ) -> None:
        """``disk_cache``: an SQLite file that also keeps embeddings across processes (keyed by the model's content)."""
        super().__init__(model, **options)
        self.disk_cache_path = disk_cache
        self.disk_cache_max_entries = disk_cache_max_entries
        self._disk: DiskEmbeddingCache | None = None
        self._cache: LRUCache[np.ndarray] = LRUCache(cache_size)
        self._batcher: MicroBatcher | None = None
        self._onnx: Any = None
        self._pooling = "mean"
        self._normalizes = False

    def _load(self, path: Path) -> Any:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(
            str(path),
            device=self.device,
            trust_remote_code=self.trust_remote_code,
            local_files_only=True,
        )
        if self._requested_max_length is not None:
            model.max_seq_length = self._requested_max_length
        model.eval()
        if self.runtime != "torch":
            from rerank_plugins.models.runtimes.select import load_runtime

            self._pooling, self._normalizes = _onnx_compatible_stack(model, self.model_name)
            transformer = model[0]
            self._onnx, self.effective_runtime = load_runtime(
                path,
                transformer.auto_model,
                transformer.tokenizer,
                self.runtime,
                lambda run: self._runtime_agreement(model, run),
                max_length=model.max_seq_length,
                pairs=False,
            )
        return model

    def _runtime_agreement(self, model: Any, candidate: Any) -> dict[str, float]:
        """Retrieval rankings with reduced-precision embeddings against fp32 torch ones, on the check set."""
        from rerank_plugins.models.runtimes.guard import check_set, ranking_agreement, reads_hangul

        reference, quantized = [], []
        for query, docs in check_set(korean=reads_hangul(model.tokenizer)):
            q = model.encode_query([query], normalize_embeddings=True, convert_to_numpy=True)[0]
            d = model.encode_document(docs, normalize_embeddings=True, convert_to_numpy=True)
            reference.append(d @ q)
            qi = self._onnx_encode(model, [query], "query", 32, True, candidate)[0]
            di = self._onnx_encode(model, docs, "document", 32, True, candidate)
            quantized.append(di @ qi)
        return ranking_agreement(reference, quantized)

    def _onnx_encode(
        self, model: Any, texts: list[str], kind: str, batch_size: int, normalize: bool, run: Any
    ) -> np.ndarray:
        """Tokenize once, sort by token length, pad each batch to its own longest, pool like the model does."""
        prompt = (model.prompts or {}).get(kind) or ""
        tokenizer = model[0].tokenizer
        encoded = tokenizer([prompt + t for t in texts], truncation=True, max_length=model.max_seq_length)
        names = [n for n in tokenizer.model_input_names if n in encoded]
        order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
        out = np.empty((len(texts), _dimension(model)), dtype=np.float32)  # not self.dimension: may run inside _load
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            features = dict(tokenizer.pad({n: [encoded[n][i] for i in batch] for n in names}, return_tensors="np"))
            hidden = np.asarray(run(features), dtype=np.float32)
            mask = features["attention_mask"][..., None].astype(np.float32)
            if self._pooling == "cls":
                pooled = hidden[:, 0]
            elif self._pooling == "max":
                pooled = np.where(mask > 0, hidden, -np.inf).max(axis=1)
            else:
                pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            if normalize or self._normalizes:
                pooled = pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            out[batch] = pooled
        return out

    @property
    def dimension(self) -> int:
        """Length of the embeddings."""
        return _dimension(self.model)

    @property
    def max_length(self) -> int:
        """Longest input in tokens; longer texts are truncated (see :meth:`count_truncated`)."""
        return int(self.model.max_seq_length)

    def encode_queries(
        self, texts: list[str], *, batch_size: int = 32, normalize: bool = True, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed search queries: shape ``(len(texts), dimension)``, float32."""
        return self._encode(texts, "query", batch_size, normalize, show_progress)

    def encode_documents(
        self, texts: list[str], *, batch_size: int = 32, normalize: bool = True, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed documents to be searched: shape ``(len(texts), dimension)``, float32."""
        return self._encode(texts, "document", batch_size, normalize, show_progress)

    def encode_texts(
        self, texts: list[str], *, batch_size: int = 32, normalize: bool = True, show_progress: bool | None = None
    ) -> np.ndarray:
        """Embed ``texts`` exactly as given, without the model's query or document prompt (what an embedding server
        whose caller adds its own prompts must do)."""
        return self._encode(texts, "text", batch_size, normalize, show_progress)

    async def aencode_queries(self, texts: list[str], *, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """:meth:`encode_queries` for async callers: concurrent calls share one pass in a worker thread."""
        return await self._submit(texts, "query", batch_size, normalize)

    async def aencode_documents(self, texts: list[str], *, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """:meth:`encode_documents` for async callers: concurrent calls share one pass in a worker thread."""
        return await self._submit(texts, "document", batch_size, normalize)

    async def aencode_texts(self, texts: list[str], *, batch_size: int = 32, normalize: bool = True) -> np.ndarray:
        """:meth:`encode_texts` for async callers: concurrent calls share one pass in a worker thread."""
        return await self._submit(texts, "text", batch_size, normalize)

    async def _submit(self, texts: list[str], kind: str, batch_size: int, normalize: bool) -> np.ndarray:
        texts = check_texts(texts)
        check_positive_int(batch_size, "batch_size")
        if self._batcher is None:
            self._batcher = MicroBatcher(
                lambda items: run_grouped(items, key=lambda item: item[:3], process_group=self._encode_group),
                weight=lambda item: max(1, len(item[3])),
                max_weight=512,
            )
        return await self._batcher.submit((kind, normalize, batch_size, texts))

    def _encode_group(self, items: list[tuple[str, bool, int, list[str]]]) -> list[np.ndarray]:
        kind, normalize, batch_size = items[0][:3]
        vectors = self._encode([t for item in items for t in item[3]], kind, batch_size, normalize, False)
        bounds = np.cumsum([0] + [len(item[3]) for item in items])
        return [vectors[start:end] for start, end in zip(bounds[:-1], bounds[1:])]

    def count_truncated(self, texts: list[str]) -> int:
        """How many of ``texts``, embedded as documents (their prompt included), are longer than :attr:`max_length`
        tokens (and so lose their ends)."""
        texts = check_texts(texts)
        if not texts:
            return 0
        prompt = (self.model.prompts or {}).get("document") or ""
        with self.lock:
            lengths = self.model.tokenizer(
                [prompt + t for t in texts],
                add_special_tokens=True,
                truncation=False,
                return_length=True,
                verbose=False,
            )["length"]
        return int(sum(length > self.max_length for length in lengths))

    def split_to_fit(self, texts: list[str], *, overlap: int = 32) -> list[list[str]]:
        """Each text as consecutive passages that each fit :attr:`max_length` tokens, overlapping by ``overlap``.

        A text that fits is returned whole (one passage). Passages are slices of the original string that
        start and end on word boundaries (a word cut at a passage's end is whole in the next one, thanks to the
        overlap), so nothing of a long document is lost when each passage is embedded separately.
        """
        texts = check_texts(texts)
        check_non_negative_int(overlap, "overlap")
        if not texts:
            return []
        tokenizer = self.model.tokenizer
        if not getattr(tokenizer, "is_fast", False):
            raise ValueError(f"{self.model_name}: splitting documents needs a fast tokenizer (character offsets)")
        prompt = (self.model.prompts or {}).get("document") or ""
        reserved = tokenizer.num_special_tokens_to_add(pair=False)
        if prompt:
            reserved += len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
        room = self.max_length - reserved
        if room <= overlap:
            raise ValueError(f"overlap ({overlap}) must be smaller than the {room} tokens a passage can hold")
        with self.lock:
            encoded = tokenizer(texts, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        out = []
        for row, text in enumerate(texts):
            spans = encoded["offset_mapping"][row]
            if len(spans) <= room:
                out.append([text])
                continue
            words = encoded.word_ids(row)
            starts_word = [j == 0 or words[j] is None or words[j] != words[j - 1] for j in range(len(spans))] + [True]
            passages = []
            for nominal in range(0, len(spans) - overlap, room - overlap):
                start = next((j for j in range(nominal, len(spans)) if starts_word[j]), nominal)
                end = min(start + room, len(spans))
                cut = next((j for j in range(end, start, -1) if starts_word[j]), end)
                passages.append(text[spans[start][0] : spans[cut - 1][1]])
            out.append(passages)
        return out

    def _encode(
        self, texts: list[str], kind: str, batch_size: int, normalize: bool, show_progress: bool | None
    ) -> np.ndarray:
        texts = check_texts(texts)
        check_positive_int(batch_size, "batch_size")
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        keys = [(kind, normalize, text_digest(t)) for t in texts]
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        missing: dict[tuple[str, bool, bytes], list[int]] = {}
        with self.lock:
            for i, key in enumerate(keys):
                if key in missing:
                    missing[key].append(i)
                    continue
                cached = self._cache.get(key)
                if cached is None:
                    missing[key] = [i]
                else:
                    out[i] = cached
            if missing and self.disk_cache_path is not None:
                by_disk_key = {_disk_key(key): key for key in missing}
                for disk_key, vector in self._disk_cache().get_many(list(by_disk_key)).items():
                    key = by_disk_key[disk_key]
                    out[missing.pop(key)] = vector
                    self._cache.hits += 1
                    self._cache.misses -= 1
                    self._cache.put(key, vector)
            if missing:
                todo = [texts[positions[0]] for positions in missing.values()]
                if show_progress is None:
                    show_progress = len(todo) >= PROGRESS_BAR_MIN_TEXTS
                model = self.model
                if self._onnx is not None:
                    vectors = self._onnx_encode(model, todo, kind, batch_size, normalize, self._onnx)
                else:
                    encode = {"query": model.encode_query, "document": model.encode_document}.get(kind)
                    if encode is None:  # "text": no prompt at all, not even a default one
                        encode = functools.partial(model.encode, prompt="")
                    vectors = encode(
                        todo,
                        batch_size=batch_size,
                        normalize_embeddings=normalize,
                        convert_to_numpy=True,
                        show_progress_bar=show_progress,
                    ).astype(np.float32, copy=False)
                for (key, positions), vector in zip(missing.items(), vectors):
                    out[positions] = vector
                    self._cache.put(key, vector.copy())
                if self.disk_cache_path is not None:
                    self._disk_cache().put_many([(_disk_key(key), vector) for key, vector in zip(missing, vectors)])
        return out

    def _disk_cache(self) -> DiskEmbeddingCache:
        if self._disk is None:
            namespace = f"{model_fingerprint(self.path)}:{self.runtime}:{self.model.max_seq_length}"
            self._disk = DiskEmbeddingCache(
                self.disk_cache_path, namespace, self.dimension, self.disk_cache_max_entries
            )
        return self._disk


def _onnx_compatible_stack(model: Any, name: str) -> tuple[str, bool]:
    """(pooling mode, has a Normalize module) for a Transformer + Pooling [+ Normalize] model; else raise."""
    modules = [type(m).__name__ for m in model]
    pooling = model[1].get_config_dict() if len(modules) > 1 and modules[1] == "Pooling" else {}
    if (
        modules[0] != "Transformer"
        or not pooling
        or pooling.get("pooling_mode") not in ("mean", "cls", "max")
        or pooling.get("include_prompt") is False
        or any(m != "Normalize" for m in modules[2:])
    ):
        raise ValueError(
            f"runtime='onnx' supports Transformer + Pooling(mean|cls|max) [+ Normalize] models; {name} has {modules} "
            f"({pooling}). Use runtime='torch'."
        )
    return pooling["pooling_mode"], "Normalize" in modules[2:]


def _disk_key(key: tuple[str, bool, bytes]) -> bytes:
    kind, normalize, digest = key
    return f"{kind}:{int(normalize)}:".encode() + digest


def _dimension(model: Any) -> int:
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    dim = getter()
    if dim is None:
        raise ValueError("the embedding model does not report an embedding dimension")
    return int(dim)

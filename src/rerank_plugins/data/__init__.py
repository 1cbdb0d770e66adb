"""Retrieval data sets and their loaders (BEIR, SQuAD/KorQuAD, pair files, in-memory), and the bundled demo data.

The bottom layer: evaluation, mining, training, the quantization guard and the quickstart all read data
through here, and nothing here imports the rest of the library.
"""

from rerank_plugins.data.datasets import (
    DataError,
    RetrievalDataset,
    beir_document_text,
    from_pairs,
    load_beir,
    load_dataset,
    load_pairs,
    load_squad,
)
from rerank_plugins.data.demo import demo_data_path

__all__ = [
    "DataError",
    "RetrievalDataset",
    "beir_document_text",
    "demo_data_path",
    "from_pairs",
    "load_beir",
    "load_dataset",
    "load_pairs",
    "load_squad",
]

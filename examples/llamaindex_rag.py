"""RAG with LlamaIndex and two-stage retrieval, fully offline.

Indexes the bundled SciFact abstracts in a hybrid first stage (packaged all-MiniLM-L6-v2 + BM25), reranks
the top-30 with a cross-encoder trained by rerank-plugins (the quickstart's, or one trained now in ~3 minutes),
and answers through a RetrieverQueryEngine. The LLM is LlamaIndex's MockLLM, so this runs without a network
or key.

    python examples/llamaindex_rag.py "Vitamin D deficiency is linked to depression."
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import TextNode

from rerank_plugins.data import demo_data_path, load_beir
from rerank_plugins.llamaindex import BiEncoderEmbedding, CrossEncoderRerank, TwoStageRetriever
from rerank_plugins.quickstart import demo_reranker

question = sys.argv[1] if len(sys.argv) > 1 else "Vitamin D deficiency is linked to depression."

corpus = load_beir(demo_data_path(), "test").corpus
nodes = [TextNode(id_=doc_id, text=text, metadata={"source": f"scifact:{doc_id}"}) for doc_id, text in corpus.items()]

retriever = TwoStageRetriever.from_nodes(
    nodes,
    BiEncoderEmbedding(),  # sentence-transformers/all-MiniLM-L6-v2, packaged for offline use
    CrossEncoderRerank(model=str(demo_reranker()), top_n=3, fusion_weight="auto"),  # weight tuned at training
    first_stage="hybrid",  # MiniLM + BM25, the quickstart's default (see the README's first-stage benchmarks)
    top_k=30,
)

# Swap in a real LLM with one line, e.g.:
#   from llama_index.llms.openai import OpenAI; llm = OpenAI(model="gpt-4o-mini")
llm = MockLLM(max_tokens=24)
engine = RetrieverQueryEngine.from_args(retriever, llm=llm)
response = engine.query(question)

print(f"Question: {question}\nAnswer (MockLLM, a stand-in that emits filler text): {str(response).strip()[:60]}...")
print("Sources (reranked top-3 of the hybrid first stage's top-30):")
for rank, hit in enumerate(response.source_nodes, 1):
    meta = hit.node.metadata
    print(
        f"  {rank}. {meta['source']}  score={hit.score:+.3f}  "
        f"rerank_score={meta['rerank_score']:+.3f} ({meta['rerank_scale']})  "
        f"retrieval_score={meta['retrieval_score']:.3f}  {hit.node.get_content()[:80]}..."
    )

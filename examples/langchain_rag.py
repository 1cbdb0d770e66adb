"""RAG with LangChain and two-stage retrieval, fully offline.

Indexes the bundled SciFact abstracts in a hybrid first stage (packaged all-MiniLM-L6-v2 + BM25), reranks
the top-30 with a cross-encoder trained by rerank-plugins (the quickstart's, or one trained now in ~3 minutes),
and answers through an LCEL chain. The LLM is LangChain's fake chat model, so this runs without a network or
key.

    python examples/langchain_rag.py "Vitamin D deficiency is linked to depression."
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from rerank_plugins.data import demo_data_path, load_beir
from rerank_plugins.langchain import BiEncoderEmbeddings, CrossEncoderReranker, TwoStageRetriever
from rerank_plugins.quickstart import demo_reranker

question = sys.argv[1] if len(sys.argv) > 1 else "Vitamin D deficiency is linked to depression."

corpus = load_beir(demo_data_path(), "test").corpus
documents = [
    Document(page_content=text, metadata={"source": f"scifact:{doc_id}"}, id=doc_id) for doc_id, text in corpus.items()
]

retriever = TwoStageRetriever.from_documents(
    documents,
    BiEncoderEmbeddings(),  # sentence-transformers/all-MiniLM-L6-v2, packaged for offline use
    CrossEncoderReranker(model=str(demo_reranker()), top_n=3, fusion_weight="auto"),  # weight tuned at training
    first_stage="hybrid",  # MiniLM + BM25, the quickstart's default (see the README's first-stage benchmarks)
    top_k=30,
)

# Swap in a real LLM with one line, e.g.:
#   from langchain_openai import ChatOpenAI; llm = ChatOpenAI(model="gpt-4o-mini")
llm = FakeListChatModel(responses=["(offline stand-in LLM) The sources below are what a real LLM would answer from."])
prompt = ChatPromptTemplate.from_template(
    "Answer from the context only.\n\nContext:\n{context}\n\nQuestion: {question}"
)


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{d.metadata['source']}] {d.page_content}" for d in docs)


chain = {"docs": retriever, "question": RunnablePassthrough()} | RunnablePassthrough.assign(
    answer=(
        {"context": lambda x: format_docs(x["docs"]), "question": lambda x: x["question"]}
        | prompt
        | llm
        | StrOutputParser()
    )
)
result = chain.invoke(question)

print(f"Question: {question}\nAnswer: {result['answer']}\nSources (reranked top-3 of the hybrid first stage's top-30):")
for rank, doc in enumerate(result["docs"], 1):
    meta = doc.metadata
    fused = f"fused_score={meta['fused_score']:+.2f}  " if "fused_score" in meta else ""
    print(
        f"  {rank}. {meta['source']}  {fused}rerank_score={meta['rerank_score']:+.3f} ({meta['rerank_scale']})  "
        f"retrieval_score={meta['retrieval_score']:.3f}  {doc.page_content[:80]}..."
    )

"""An unmodified LangChain app on Milvus Lite, audited by `opentelemetry-instrument`.

Nothing here mentions milvus-audit except `enduser()`, which says whom a request is for.
Run it under the OpenTelemetry launcher and every Milvus call LangChain makes is audited:

    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_LOGS_EXPORTER=otlp \\
        opentelemetry-instrument python examples/langchain_app.py [DB]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_milvus import Milvus

import milvus_audit


def main() -> None:
    db = sys.argv[1] if len(sys.argv) > 1 else str(Path(tempfile.mkdtemp()) / "langchain.db")
    store = Milvus(embedding_function=DeterministicFakeEmbedding(size=16), connection_args={"uri": db},
                   collection_name="handbook", auto_id=True)
    store.add_texts(["The vacation policy is 30 days a year.", "Expense reports are due monthly.",
                     "The VPN password rotates every quarter."])
    with milvus_audit.enduser("alice@example.com"):
        hits = store.similarity_search("how many vacation days?", k=2)
    print(f"{len(hits)} hits")


if __name__ == "__main__":
    main()

"""``python -m rerank_plugins.cli``, as ``python -m`` ran the single-file command before it became a package."""

from rerank_plugins.cli import main

raise SystemExit(main())

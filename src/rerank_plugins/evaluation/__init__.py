"""Metrics (pure functions), two-stage evaluation, and reports (JSON, Markdown, PNG)."""

"""Importing and starting Ray: one error naming the extra, one place deciding local or cluster."""

from __future__ import annotations

from typing import Any


def require_ray() -> Any:
    """The ``ray`` module, or an ImportError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401 - the data library ships with the ray[data] extra
    except ImportError as error:
        raise ImportError(
            f"Ray is not installed ({error}); install it with: pip install 'rerank-plugins[ray]'"
        ) from None
    return ray


def start_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at ``address``, or start a local one (``None``) unless Ray is already running.

    Returns whether this call started it (so the caller shuts down only what it started).
    """
    ray = require_ray()
    if ray.is_initialized():
        return False
    ray.init(address=address, include_dashboard=False, configure_logging=False)
    return True

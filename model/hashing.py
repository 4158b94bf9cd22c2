"""The short settings hash that resume points, run records and model bundles share.

Kept apart from ``model.training`` so that the pipeline's lightweight steps (run records, report
tables) can compute it without importing torch.
"""

from __future__ import annotations

import hashlib
import json

__all__ = ["fingerprint"]


def fingerprint(payload: dict) -> str:
    """A short hash (16 hex digits of sha256) of JSON-serialisable settings: equal settings, equal hash."""
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]

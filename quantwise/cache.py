"""Where prepared models and texts live: $QUANTWISE_CACHE or ~/.cache/quantwise."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    base = Path(os.environ.get("QUANTWISE_CACHE") or Path.home() / ".cache" / "quantwise")
    return base / sub if sub else base

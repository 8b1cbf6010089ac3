"""Data files shipped with quantwise; each row carries its source."""

from __future__ import annotations

import csv
from importlib import resources
from pathlib import Path


def read_rows(name_or_path: str | Path) -> list[dict[str, str]]:
    """Rows of a packaged CSV (by file name) or of a user's CSV (by path)."""
    path = Path(name_or_path)
    if path.suffix == ".csv" and (path.is_absolute() or path.exists() or len(path.parts) > 1):
        if not path.exists():
            raise FileNotFoundError(f"no such file: {path}")
        text = path.read_text(encoding="utf-8")
    else:
        text = resources.files(__name__).joinpath(str(name_or_path)).read_text(encoding="utf-8")
    return list(csv.DictReader(text.splitlines()))

"""Picking rows of a named table by user-given names, with one clear error for a typo."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


def pick(table: dict[str, T], names: list[str] | None, what: str) -> list[T]:
    """Entries by key (case-insensitive); all of them when names is empty."""
    if not names:
        return list(table.values())
    chosen = []
    for name in names:
        key = name.strip().lower()
        if key not in table:
            raise ValueError(f"unknown {what} {name!r}; known: {', '.join(table)}")
        chosen.append(table[key])
    return chosen

"""Printers for lists of result dataclasses: a rich table for people, JSON for programs."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table


@dataclass(frozen=True)
class Column:
    """header: shown title; field: attribute of the row; fmt: how a value prints."""

    header: str
    field: str
    fmt: Callable[[Any], str] = str
    justify: str = "right"


def to_jsonable(value: Any) -> Any:
    """Dataclasses, enums, tuples and non-finite floats as plain JSON values (inf -> null)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def print_json(payload: Any, stream=None) -> None:
    json.dump(to_jsonable(payload), stream or sys.stdout, indent=2)
    (stream or sys.stdout).write("\n")


def print_table(rows: Sequence[Any], columns: Sequence[Column], title: str | None = None,
                console: Console | None = None) -> None:
    table = Table(title=title, show_lines=False)
    for column in columns:
        table.add_column(column.header, justify=column.justify)
    for row in rows:
        # cells are data, not rich markup: a name like "[kernels] run" must print as written
        table.add_row(*(escape(column.fmt(getattr(row, column.field))) for column in columns))
    (console or make_console()).print(table)


def make_console() -> Console:
    """A terminal's own width; 160 columns when writing to a pipe or file, so tables do not wrap."""
    return Console() if sys.stdout.isatty() else Console(width=160)


def fixed(digits: int) -> Callable[[Any], str]:
    """Formatter: a float with `digits` decimals, '-' for None."""
    def fmt(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float) and math.isinf(value):
            return "inf"
        return f"{value:,.{digits}f}"
    return fmt

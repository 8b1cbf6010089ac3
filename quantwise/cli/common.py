"""Option parsing shared by the commands."""

from __future__ import annotations

import math
import re

import click

_SUFFIX = {"": 1.0, "k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}


def parse_quantity(text: str) -> float:
    """'10M' -> 1e7, '250k' -> 2.5e5, '1.5B' -> 1.5e9, '1e6' -> 1e6."""
    match = re.fullmatch(r"\s*(-?[0-9]*\.?[0-9]+(?:e[+-]?\d+)?)\s*([kmbgt]?)\s*", text.lower())
    if not match:
        raise ValueError(f"not a quantity: {text!r} (examples: 10M, 250k, 1.5B)")
    return float(match[1]) * _SUFFIX[match[2]]


def split_list(text: str | None) -> list[str]:
    return [item.strip() for item in (text or "").split(",") if item.strip()]


def int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(item) for item in split_list(text)]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise ValueError(f"{what} must be positive integers, got {text!r}")
    return values


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON instead of tables.")
gpu_file_option = click.option("--gpu-file", type=click.Path(dir_okay=False), default=None,
                               help="CSV with extra GPUs or overrides (same columns as the packaged gpus.csv).")
assume_option = click.option("--assume", "assume", multiple=True, metavar="NAME=VALUE",
                             help="Override a planner assumption, e.g. bandwidth_efficiency=0.8 (repeatable). "
                                  "See `quantwise assumptions`.")
allow_pickle_option = click.option("--allow-pickle", is_flag=True,
                                   help="Allow pickle .bin weights (loaded with torch.load(weights_only=True)).")
encoding_option = click.option("--encoding", default=None, metavar="NAME",
                               help="Encoding of the text files (default: a byte-order mark decides, else strict "
                                    "UTF-8), e.g. latin-1.")


class FiniteFloat(click.FloatRange):
    """A float option that refuses nan and inf (click's FloatRange lets nan through: every
    comparison with nan is false) and, optionally, values outside [min, max]."""

    name = "finite number"

    def convert(self, value, param, ctx):
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)

"""Quantization methods: RTN, GPTQ, AWQ, SmoothQuant, LLM.int8(), one interface."""

import dataclasses

from .configs import AWQ, GPTQ, METHODS, RTN, LLMInt8, SmoothQuant, rescale_stats
from .gptq_math import GPTQOptions
from .stats import LinearStats

__all__ = ["AWQ", "GPTQ", "METHODS", "RTN", "GPTQOptions", "LLMInt8", "SmoothQuant", "LinearStats",
           "rescale_stats", "build_method"]


def build_method(name: str, fmt: str | None = None, **options):
    """A method config from its CLI name, format and options (unknown names fail loudly)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; known: {', '.join(METHODS)}")
    cls = METHODS[name]
    gptq_keys = {f.name for f in dataclasses.fields(GPTQOptions)}
    gptq = {k: options.pop(k) for k in list(options) if k in gptq_keys}
    if gptq and name in ("gptq", "awq", "smoothquant"):
        options["options"] = GPTQOptions(**gptq)
    elif gptq:
        raise ValueError(f"{', '.join(gptq)} apply to GPTQ only")
    if fmt is not None:
        options["format"] = fmt
    return cls(**options)

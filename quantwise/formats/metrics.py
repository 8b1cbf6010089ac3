"""Error metrics between a reference tensor and its reconstruction."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ErrorMetrics:
    mse: float
    max_abs: float
    sqnr_db: float  # 10 log10(signal power / error power); inf when exact
    cosine: float


def error_metrics(reference: torch.Tensor, approx: torch.Tensor) -> ErrorMetrics:
    ref = reference.double().reshape(-1)
    err = approx.double().reshape(-1) - ref
    if ref.numel() == 0:
        raise ValueError("cannot measure error on an empty tensor")
    return ErrorMetrics(mse=float(err.pow(2).mean()), max_abs=float(err.abs().max()),
                        sqnr_db=sqnr_db(reference, approx),
                        cosine=float(torch.nn.functional.cosine_similarity(ref, approx.double().reshape(-1), dim=0)))


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    ref = reference.double()
    noise = (approx.double() - ref).pow(2).sum()
    signal = ref.pow(2).sum()
    if noise == 0:
        return math.inf
    return float(10 * torch.log10(signal / noise))

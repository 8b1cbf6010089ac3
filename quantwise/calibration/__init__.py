"""Calibration and evaluation text: sources, mixing, tokenized samples."""

from .text import CalibrationConfig, calibration_hash, load_texts, mix_texts, token_samples

__all__ = ["CalibrationConfig", "calibration_hash", "load_texts", "mix_texts", "token_samples"]

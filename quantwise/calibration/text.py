"""Text in (files, jsonl, directories), token windows out, deterministic for a seed."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import torch

from .decoding import read_text_file, warn_if_unlike_language


@dataclass(frozen=True)
class CalibrationConfig:
    """paths: text sources; generic_paths: optional generic text mixed in at generic_fraction
    (the lesson's 50/50 domain + generic); samples x seq_len tokens; seed fixes the windows."""

    paths: tuple[str, ...]
    samples: int = 128
    seq_len: int = 512
    seed: int = 0
    generic_paths: tuple[str, ...] = ()
    generic_fraction: float = 0.5
    encoding: str | None = None         # None: a byte-order mark decides, else strict UTF-8

    def __post_init__(self) -> None:
        if not self.paths:
            raise ValueError("no calibration text given")
        if self.samples < 1 or self.seq_len < 2:
            raise ValueError(f"need samples >= 1 and seq_len >= 2, got {self.samples} x {self.seq_len}")
        if not 0.0 <= self.generic_fraction <= 1.0:
            raise ValueError("generic_fraction must be in [0, 1]")


def _read_one(path: Path, encoding: str | None) -> list[str]:
    text = read_text_file(path, encoding)
    warn_if_unlike_language(text, str(path))
    if path.suffix == ".jsonl":
        texts = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{path}:{number} is not valid JSON") from None
            if not isinstance(record, dict) or not isinstance(record.get("text"), str):
                raise ValueError(f"{path}:{number} has no string field 'text'")
            texts.append(record["text"])
        return texts
    return [text]


def load_texts(paths: tuple[str, ...] | list[str], encoding: str | None = None) -> list[str]:
    """Documents from .txt/.jsonl files or directories of them (sorted, so order is stable)."""
    documents = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.suffix in (".txt", ".jsonl", ".md"))
            if not files:
                raise ValueError(f"{path} holds no .txt or .jsonl files")
        elif path.exists():
            files = [path]
        else:
            raise FileNotFoundError(f"no calibration text at {path}")
        for file in files:
            documents.extend(_read_one(file, encoding))
    documents = [d for d in documents if d.strip()]
    if not documents:
        raise ValueError(f"calibration text is empty: {', '.join(map(str, paths))}")
    return documents


def mix_texts(domain: list[str], generic: list[str], generic_fraction: float, seed: int) -> list[str]:
    """Documents drawn so that about `generic_fraction` of the characters are generic text."""
    if not generic or generic_fraction == 0:
        return domain
    rng = random.Random(seed)
    domain_chars = sum(map(len, domain))
    want = domain_chars * generic_fraction / max(1e-9, 1 - generic_fraction) if generic_fraction < 1 else domain_chars
    picked, total = [], 0
    for document in rng.sample(generic, len(generic)):
        if total >= want:
            break
        picked.append(document[: int(want - total) + 1])
        total += len(picked[-1])
    return (domain if generic_fraction < 1 else []) + picked


def token_samples(tokenizer, documents: list[str], samples: int, seq_len: int, seed: int) -> torch.Tensor:
    """(samples, seq_len) token windows at seeded random offsets of the joined documents; tokenizer:
    a `models.tokenizer.TextTokenizer`."""
    ids = tokenizer.ids("\n\n".join(documents))
    if ids.numel() < seq_len:
        raise ValueError(f"calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}")
    generator = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, ids.numel() - seq_len + 1, (samples,), generator=generator)
    windows = torch.stack([ids[s: s + seq_len] for s in starts.tolist()])
    if tokenizer.bos_id is not None:
        windows[:, 0] = tokenizer.bos_id  # models trained with BOS (Gemma) expect it at position 0
    return windows


def calibration_hash(tokens: torch.Tensor) -> str:
    return hashlib.sha256(tokens.to(torch.int64).numpy().tobytes()).hexdigest()[:16]

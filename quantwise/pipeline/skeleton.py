"""A model without its decoder blocks: embeddings, rotary tables, final norm, lm_head on CPU,
and recorders in place of the blocks that capture each block's inputs and keyword arguments.

Built from the config with zero layers, so nothing of the blocks is allocated; the blocks are then
built one at a time from the checkpoint (`build_block`). Works for any transformers causal LM
whose decoder blocks sit in one ModuleList and are called with the hidden states first.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..models.source import TensorSource
from ..sysinfo import native_bf16_matmul


class BlockRecorder(nn.Module):
    """Stands in for block i: records (hidden_states, kwargs) per call, passes hidden states on."""

    def __init__(self, index: int, attention_type: str | None):
        super().__init__()
        self.index = index
        self.attention_type = attention_type
        self.calls: list[dict] = []
        self.inputs: list[torch.Tensor] = []  # kept for block 0 only: the pipeline's first inputs

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs):
        if args:
            raise ValueError("decoder blocks called with positional arguments are not supported")
        self.calls.append({k: v for k, v in kwargs.items() if k not in ("cache", "past_key_values", "use_cache")})
        if self.index == 0:
            self.inputs.append(hidden_states.detach().clone())
        return hidden_states


@dataclass
class Skeleton:
    model: nn.Module                 # the causal LM with recorders in place of its blocks
    config: object
    layers_path: str                 # e.g. "model.layers"
    block_classes: list[type]
    recorders: list[BlockRecorder]

    @property
    def inner(self) -> nn.Module:
        """The module that runs embeddings -> blocks -> final norm (no lm_head)."""
        return self.model.get_submodule(self.layers_path.rsplit(".", 1)[0])


def _find_layers(model: nn.Module, count: int) -> str:
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name.split(".")[-1] in ("layers", "h"):
            return name
    raise ValueError("could not find the decoder blocks (a ModuleList named layers or h) in this architecture")


def load_config(model_dir):
    """The model's transformers config, refused when config.json leaves out the block count:
    transformers would fill in its class default and build blocks the weights do not have."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(str(model_dir), local_files_only=True)
    except (ValueError, KeyError, OSError) as exc:
        raise ValueError(f"unknown or unsupported architecture in {model_dir}/config.json: {exc}") from None
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    raw = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    raw_text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else raw
    names = {"num_hidden_layers", text.attribute_map.get("num_hidden_layers", "num_hidden_layers")}
    if not any(name in raw_text or name in raw for name in names):
        raise ValueError(f"{model_dir}/config.json does not give num_hidden_layers (the number of decoder blocks)")
    return config


def _check_weights_match(model_dir, config, source, layers_path: str, count: int, unexpected: list[str]) -> None:
    """Every block the config promises is in the weights and no block or tensor is left over:
    a config over another model's weights fails here, naming what differs, instead of running on
    freshly initialised modules."""
    prefix = layers_path + "."
    found = {int(name[len(prefix):].split(".", 1)[0]) for name in source.names()
             if name.startswith(prefix) and name[len(prefix):].split(".", 1)[0].isdigit()}
    if not found:
        return  # blocks come from elsewhere (a quantwise checkpoint's layer files)
    missing, extra = sorted(set(range(count)) - found), sorted(found - set(range(count)))
    if missing or extra:
        raise ValueError(f"{model_dir}: config.json says {count} decoder blocks but the weights hold blocks "
                         f"{_ranges(sorted(found))}")
    stray = [name for name in unexpected if not name.startswith(prefix)]
    if stray:
        raise ValueError(f"{model_dir}: the weights do not belong to config.json's architecture "
                         f"{config.model_type!r}: unexpected tensors {', '.join(stray[:4])}"
                         + (f" and {len(stray) - 4} more" if len(stray) > 4 else ""))


def _first_mismatch(exc: RuntimeError) -> str:
    return next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))


def _ranges(numbers: list[int]) -> str:
    return f"{numbers[0]}-{numbers[-1]}" if numbers == list(range(numbers[0], numbers[-1] + 1)) else str(numbers[:8])


def build_skeleton(model_dir, source: TensorSource, allow_missing: tuple[str, ...] = ()) -> Skeleton:
    from transformers import AutoModelForCausalLM

    config = load_config(model_dir)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    count = text.num_hidden_layers
    try:
        with torch.device("meta"):
            full = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    except ValueError as exc:
        raise ValueError(f"unknown architecture {config.model_type!r}: {exc}") from None
    layers_path = _find_layers(full, count)
    classes = [type(block) for block in full.get_submodule(layers_path)]
    del full
    empty = copy.deepcopy(config)
    empty_text = empty.get_text_config() if hasattr(empty, "get_text_config") else empty
    empty_text.num_hidden_layers = 0
    with torch.device("meta"):  # no random init, no second copy of the embeddings
        model = AutoModelForCausalLM.from_config(empty, dtype=torch.float32)
    empty_text.num_hidden_layers = count  # the modules share this config: forward now walks every block
    layer_types = getattr(text, "layer_types", None)
    recorders = [BlockRecorder(i, layer_types[i] if layer_types else None) for i in range(count)]
    parent, child = layers_path.rsplit(".", 1)
    setattr(model.get_submodule(parent), child, nn.ModuleList(recorders))
    persistent = set(model.state_dict())
    derived = {name for name, _ in model.named_buffers() if name not in persistent}
    model.to_empty(device="cpu")
    _fill_derived_buffers(model, empty, derived)
    prefix = layers_path + "."
    state = {name: source.get(name).float() for name in source.names() if not name.startswith(prefix)}
    try:
        missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    except RuntimeError as exc:  # size mismatches: the weights do not belong to this config
        raise ValueError(f"{model_dir}: weights disagree with config.json ({_first_mismatch(exc)})") from None
    if getattr(text, "tie_word_embeddings", False) or getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
        missing = [m for m in missing if not m.startswith("lm_head")]
    missing = [m for m in missing if m not in derived and m not in allow_missing]
    if missing:
        raise ValueError(f"{model_dir}: the weights lack {', '.join(missing[:4])}"
                         + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
                         + f" (config.json's architecture is {config.model_type!r})")
    _check_weights_match(model_dir, config, source, layers_path, count, unexpected)
    model.eval()
    return Skeleton(model, config, layers_path, classes, recorders)


def _fill_derived_buffers(model: nn.Module, config, names: set[str]) -> None:
    """Non-persistent buffers (rotary frequencies, embedding scales) are computed at construction,
    not stored: compute them on a copy of the model with a one-token vocabulary and copy them over."""
    if not names:
        return
    from transformers import AutoModelForCausalLM

    small = copy.deepcopy(config)
    small_text = small.get_text_config() if hasattr(small, "get_text_config") else small
    layers, small_text.num_hidden_layers = small_text.num_hidden_layers, 0
    small_text.vocab_size, small_text.pad_token_id = 1, None
    probe = AutoModelForCausalLM.from_config(small, dtype=torch.float32)
    small_text.num_hidden_layers = layers
    buffers = dict(probe.named_buffers())
    with torch.no_grad():
        for name in names:
            if name in buffers:
                model.get_buffer(name).copy_(buffers[name])


def build_block(skeleton: Skeleton, index: int, tensors: dict[str, torch.Tensor]) -> nn.Module:
    """Block `index` with its weights, built on meta then filled (no random init)."""
    text = skeleton.config.get_text_config() if hasattr(skeleton.config, "get_text_config") else skeleton.config
    cls = skeleton.block_classes[index]
    with torch.device("meta"):
        block = cls(text, index)
    block.to_empty(device="cpu")
    persistent = set(block.state_dict())
    stray = [name for name, _ in block.named_buffers() if name not in persistent]
    if stray:
        block = cls(text, index)  # non-persistent buffers need the real constructor
    try:
        result = block.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=False)
    except RuntimeError as exc:  # size mismatches: the weights do not belong to this config
        raise ValueError(f"block {index}: weights disagree with config.json ({_first_mismatch(exc)})") from None
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"block {index}: tensors do not match the architecture "
                         f"(missing {result.missing_keys[:3]}, unexpected {result.unexpected_keys[:3]})")
    return block.eval()


COMPUTE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def resolve_compute_dtype(name: str) -> str:
    """'auto' -> bfloat16 where the CPU multiplies bf16 in hardware, float32 elsewhere; a named
    dtype as it is."""
    if name == "auto":
        return "bfloat16" if native_bf16_matmul() else "float32"
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"unknown compute dtype {name!r}; choose auto, {', '.join(COMPUTE_DTYPES)}")
    return name


def run_block(block: nn.Module, hidden: torch.Tensor, kwargs: dict, compute_dtype: str = "float32") -> torch.Tensor:
    """The block's output for `hidden`, in hidden's dtype. With a lower `compute_dtype`, torch's
    autocast runs the matrix products (linears, attention) in it from float32 weights, which stay
    as they are for the solve; the residual stream stays float32 (float32 + bf16 is float32), and
    the models' RMSNorms upcast. GPU GPTQ runs calibrate in bf16 too; on a bf16 CPU it cut
    Gemma-3-270M's calibration forwards 22 -> 10 s."""
    lower = COMPUTE_DTYPES[compute_dtype]
    with torch.no_grad(), torch.autocast("cpu", dtype=lower, enabled=lower != torch.float32):
        out = block(hidden, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    return out.to(hidden.dtype)

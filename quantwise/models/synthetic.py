"""Random-weight models with a real architecture's shapes, for speed measurements.

Kernel speed depends on matrix shapes, not on weight values: SmolLM2's 576-wide matrices stream
far below a 4096-wide model's. A preset's architecture (data/models.csv) with a few of its blocks
gives those shapes on any machine, with no download. Never use these for quality numbers.

The model is written one shard at a time (embeddings, each decoder block, final norm + lm_head),
so a model larger than RAM can be made: the names and shapes come from transformers' own class
built on the `meta` device (no memory), each shard's modules are materialised, initialised by the
class's `_init_weights`, written and released before the next.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import QuantwiseError
from ..reporting.progress import ProgressCallback
from .arch import ModelArch, resolve_arch

SYNTHETIC_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")
SYNTHETIC_DTYPES = ("bfloat16", "float16", "float32")
# config.json, tokenizer and safetensors headers, with room to spare
DISK_SLACK_BYTES = 64 * 2**20


def hf_config(arch: ModelArch, layers: int):
    """A transformers config with the architecture's shapes and `layers` decoder blocks."""
    from transformers import AutoConfig

    if arch.model_type not in SYNTHETIC_TYPES:
        raise ValueError(f"{arch.name}: no synthetic model for {arch.model_type!r} "
                         f"(dense decoders only: {', '.join(SYNTHETIC_TYPES)})")
    if layers < 1 or layers > arch.layers:
        raise ValueError(f"{arch.name} has {arch.layers} blocks; --layers must be 1..{arch.layers}, got {layers}")
    extra = {}
    if arch.model_type == "gemma3_text":
        extra["layer_types"] = ["full_attention"] * layers
    return AutoConfig.for_model(
        arch.model_type, hidden_size=arch.hidden, intermediate_size=arch.intermediate, num_hidden_layers=layers,
        num_attention_heads=arch.heads, num_key_value_heads=arch.kv_heads, head_dim=arch.head_dim,
        vocab_size=arch.vocab, tie_word_embeddings=arch.tied, max_position_embeddings=4096, **extra)


@dataclass(frozen=True)
class Shard:
    """One safetensors file: the modules materialised together and the tensors written from them."""

    label: str                        # for progress: "embeddings", "block 3", "final norm + lm_head"
    modules: tuple[str, ...]          # module names to materialise (a whole block is one)
    tensors: tuple[str, ...]          # state-dict names written to this file
    nbytes: int


def torch_dtype(name: str):
    import torch

    if name not in SYNTHETIC_DTYPES:
        raise QuantwiseError(f"unknown dtype {name!r}; choose one of {', '.join(SYNTHETIC_DTYPES)}")
    return getattr(torch, name)


def meta_model(config, dtype: str):
    """transformers' model class for `config` with every tensor on the meta device: names, shapes
    and dtypes, no memory."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, dtype=torch_dtype(dtype))


def saved_tensor_names(model) -> list[str]:
    """The state-dict names a checkpoint holds: persistent tensors, each tied parameter once (a tied
    lm_head shares the embedding's parameter and is not written, as save_pretrained does)."""
    unique = dict(model.named_parameters())
    every = dict(model.named_parameters(remove_duplicate=False))
    return [name for name in model.state_dict() if name in unique or name not in every]


def layers_path(model, count: int) -> str:
    """The dotted name of the ModuleList that holds the decoder blocks."""
    from torch import nn

    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count and name.rsplit(".", 1)[-1] in ("layers", "h"):
            return name
    raise ValueError("could not find the decoder blocks (a ModuleList named layers or h) in this architecture")


def plan_shards(model, blocks: int) -> list[Shard]:
    """Tensors before the blocks, each block, tensors after: in state-dict order, one file each."""
    state = model.state_dict()
    prefix = layers_path(model, blocks) + "."
    head, tail, per_block = [], [], [[] for _ in range(blocks)]
    for name in saved_tensor_names(model):
        if name.startswith(prefix):
            per_block[int(name[len(prefix):].split(".", 1)[0])].append(name)
        else:
            (tail if any(per_block) else head).append(name)

    def shard(label: str, names: list[str], modules: tuple[str, ...]) -> Shard:
        nbytes = sum(state[n].numel() * state[n].element_size() for n in names)
        return Shard(label, modules, tuple(names), nbytes)

    def owners(names: list[str]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name.rsplit(".", 1)[0] for name in names))

    shards = [shard("embeddings", head, owners(head))] if head else []
    shards += [shard(f"block {i}", names, (f"{prefix}{i}",)) for i, names in enumerate(per_block)]
    if tail:
        shards.append(shard(" + ".join(owners(tail)), tail, owners(tail)))
    return shards


def shard_file(index: int, count: int) -> str:
    return f"model-{index + 1:05d}-of-{count:05d}.safetensors"


def module_seed(seed: int, module_name: str) -> int:
    """A seed per module name, the same in every process (Python's hash() is salted): a block's
    weights do not depend on how many blocks are built or in which order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{module_name}".encode()).digest()[:8], "little")


def materialize(model, module_name: str, seed: int) -> None:
    """Allocate `module_name` on the CPU and fill it as the class's `_init_weights` does (normal with
    std = initializer_range for linears and embeddings, zero biases, ones for RMSNorm weights or
    zeros where the norm scales by 1 + weight, as Gemma's do), the RNG seeded per submodule."""
    import torch

    module = model.get_submodule(module_name)
    module.to_empty(device="cpu")
    for name, submodule in module.named_modules(prefix=module_name):
        with torch.random.fork_rng(devices=[]):  # seeding must not leak into the caller's RNG
            torch.manual_seed(module_seed(seed, name))
            model._init_weights(submodule)


def release(model, module_names: tuple[str, ...]) -> None:
    for name in module_names:
        model.get_submodule(name).to_empty(device="meta")


def shard_tensors(model, shard: Shard) -> dict:
    state = {}
    for module_name in shard.modules:
        module_state = model.get_submodule(module_name).state_dict(prefix=module_name + ".")
        state.update({name: tensor for name, tensor in module_state.items() if name in shard.tensors})
    missing = set(shard.tensors) - set(state)
    if missing:
        raise ValueError(f"tensors not found in their modules: {', '.join(sorted(missing))}")
    return state


def sharded_index(shards: list[Shard], total_parameters: int) -> dict:
    """model.safetensors.index.json as transformers writes it for a sharded checkpoint."""
    weight_map = {name: shard_file(i, len(shards)) for i, shard in enumerate(shards) for name in shard.tensors}
    return {"metadata": {"total_parameters": total_parameters, "total_size": sum(s.nbytes for s in shards)},
            "weight_map": dict(sorted(weight_map.items()))}


def existing_ancestor(path: Path) -> Path:
    path = path.absolute()
    while not path.exists():
        path = path.parent
    return path


def require_free_space(out: Path, needed: int) -> None:
    """Refuse before writing anything when the filesystem of `out` cannot hold `needed` bytes."""
    free = shutil.disk_usage(existing_ancestor(out)).free
    if free < needed + DISK_SLACK_BYTES:
        raise QuantwiseError(f"not enough disk for {out}: the model needs {needed / 1e9:,.2f} GB, "
                             f"{free / 1e9:,.2f} GB free")


def write_synthetic_model(config, out: Path, dtype: str = "bfloat16", seed: int = 0, overwrite: bool = False,
                          progress: ProgressCallback | None = None) -> Path:
    """Write a random-weight model for `config` to `out`, one shard in memory at a time: config.json,
    sharded safetensors with their index, a byte-level tokenizer. Staged beside `out` and renamed
    into place at the end, so `out` is never half-written."""
    from ..checkpoint.atomic import atomic_save_tensors, staged_directory
    from ..sysinfo import return_freed_memory
    from .tokenizer import byte_level_tokenizer

    return_freed_memory()  # each shard's tensors go back to the OS when released, not into the heap
    out = Path(out)
    model = meta_model(config, dtype)
    shards = plan_shards(model, config.num_hidden_layers)
    total_parameters = sum(model.state_dict()[name].numel() for shard in shards for name in shard.tensors)
    with staged_directory(out, overwrite) as staging:  # refuses a non-empty `out` first
        require_free_space(out, sum(shard.nbytes for shard in shards))
        for index, shard in enumerate(shards):
            if progress:
                progress(index, len(shards), f"writing {shard.label}")
            for module_name in shard.modules:
                materialize(model, module_name, seed)
            atomic_save_tensors(shard_tensors(model, shard), staging / shard_file(index, len(shards)),
                                metadata={"format": "pt"})  # the format tag transformers' loader checks
            release(model, shard.modules)
        (staging / "model.safetensors.index.json").write_text(
            json.dumps(sharded_index(shards, total_parameters), indent=2) + "\n", encoding="utf-8")
        model.config.architectures = [type(model).__name__]  # as save_pretrained records it
        model.config.save_pretrained(staging)
        if model.generation_config is not None:
            model.generation_config.save_pretrained(staging)
        byte_level_tokenizer().save_pretrained(staging)
        if progress:
            progress(len(shards), len(shards), "done")
    return out


def synthetic_model(preset: str, layers: int, out: Path, seed: int = 0, dtype: str = "bfloat16",
                    overwrite: bool = False, progress: ProgressCallback | None = None) -> Path:
    """A random-weight model with `preset`'s shapes and `layers` blocks (see write_synthetic_model)."""
    config = hf_config(resolve_arch(preset), layers)
    return write_synthetic_model(config, Path(out), dtype, seed, overwrite, progress)

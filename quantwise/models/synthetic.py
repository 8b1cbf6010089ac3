"""Random-weight models with a real architecture's shapes, for speed measurements.

Kernel speed depends on matrix shapes, not on weight values: SmolLM2's 576-wide matrices stream
far below a 4096-wide model's. A preset's architecture (data/models.csv) with a few of its blocks
gives those shapes on any machine, with no download. Never use these for quality numbers.
"""

from __future__ import annotations

from pathlib import Path

from .arch import ModelArch, resolve_arch

SYNTHETIC_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text")


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


def synthetic_model(preset: str, layers: int, out: Path, seed: int = 0) -> Path:
    """Write a random-weight model directory (config.json, bf16 safetensors, a byte-level tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM

    from .tokenizer import byte_level_tokenizer

    config = hf_config(resolve_arch(preset), layers)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)  # bf16: half the disk
    out = Path(out)
    model.save_pretrained(out)
    byte_level_tokenizer().save_pretrained(out)
    return out

"""Tiny random causal LMs saved as real Hugging Face directories (config.json, safetensors,
tokenizer), so the loading and pipeline code runs exactly as on a downloaded model."""

from __future__ import annotations

from pathlib import Path

import torch

from quantwise.models.tokenizer import byte_level_tokenizer as byte_tokenizer

TEXT = ("It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in "
        "want of a wife. However little known the feelings or views of such a man may be on his first entering a "
        "neighbourhood, this truth is so well fixed in the minds of the surrounding families, that he is "
        "considered the rightful property of some one or other of their daughters. ") * 20


def make_tiny_model(path: Path, arch: str = "llama", layers: int = 2, seed: int = 0, hidden: int = 64,
                    intermediate: int = 96, head_dim: int = 16) -> Path:
    from transformers import AutoModelForCausalLM, Gemma3TextConfig, LlamaConfig

    torch.manual_seed(seed)
    common = dict(hidden_size=hidden, intermediate_size=intermediate, num_attention_heads=4, num_key_value_heads=2,
                  num_hidden_layers=layers, vocab_size=256, head_dim=head_dim, max_position_embeddings=256)
    if arch == "llama":
        config = LlamaConfig(**common, tie_word_embeddings=False)
    elif arch == "gemma3":
        config = Gemma3TextConfig(**common, sliding_window=16, layer_types=["sliding_attention", "full_attention"]
                                  * (layers // 2) + ["sliding_attention"] * (layers % 2))
    else:
        raise ValueError(arch)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.normal_(0.0 if arch == "gemma3" else 1.0, 0.2)
    model.save_pretrained(path)
    byte_tokenizer().save_pretrained(path)
    return path


def write_text(path: Path, text: str = TEXT) -> Path:
    path.write_text(text, encoding="utf-8")
    return path

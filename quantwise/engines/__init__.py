"""Serving engines run through their own code: llama.cpp's binaries, vLLM in its own environment."""

"""Damaged inputs are built by the tests themselves, from the tiny models in tests/tiny_models.py."""

from __future__ import annotations

import pytest


@pytest.fixture
def model_copy(tiny_llama, tmp_path):
    """A fresh copy of the tiny Llama that a test may damage."""
    import shutil

    def make(name="model"):
        return shutil.copytree(tiny_llama, tmp_path / name)
    return make

import pytest
import torch


@pytest.fixture
def correlated_inputs():
    """Inputs with correlated channels, as real activations have (GPTQ's gain comes from this)."""
    gen = torch.Generator().manual_seed(0)
    mix = torch.randn(256, 256, generator=gen) * 0.3 + torch.eye(256)
    return torch.randn(2048, 256, generator=gen) @ mix


@pytest.fixture
def weight():
    return torch.randn(96, 256, generator=torch.Generator().manual_seed(1)) * 0.05

"""GPU catalogue (sourced data) and the format x GPU support matrix derived from it."""

from .catalog import GPU, load_catalog, resolve_gpus
from .support import ComputePath, support_matrix

__all__ = ["GPU", "load_catalog", "resolve_gpus", "ComputePath", "support_matrix"]

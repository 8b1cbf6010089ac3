"""Model architectures (from config.json or presets) and their parameter counts."""

from .arch import LinearShape, ModelArch, ParamBreakdown, linear_shapes, load_presets, param_breakdown, resolve_arch

__all__ = ["LinearShape", "ModelArch", "ParamBreakdown", "linear_shapes", "load_presets", "param_breakdown",
           "resolve_arch"]

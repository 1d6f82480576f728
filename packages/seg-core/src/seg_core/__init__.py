"""seg-core: the shared typed interfaces of seg.

Frozen pydantic models for everything serialised, ``typing.Protocol`` seams between packages, and frozen
dataclasses for tensor bundles. Imports no torch at module level.
"""

from seg_core.__about__ import __version__
from seg_core.base import ConfigError, SegModel, format_validation_error
from seg_core.configs import (
    EvalConfig,
    MethodConfig,
    ScheduleConfig,
    TrainConfig,
    method_config_class,
    parse_method_config,
    registered_methods,
)

__all__ = [
    "ConfigError",
    "EvalConfig",
    "MethodConfig",
    "ScheduleConfig",
    "SegModel",
    "TrainConfig",
    "__version__",
    "format_validation_error",
    "method_config_class",
    "parse_method_config",
    "registered_methods",
]

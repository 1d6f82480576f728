"""Model folders: one place decides how weights are written and how a method's JSON description is read.

Every model folder of seg (the reference CLIP, ReCo+, GroupViT, PGSeg ...) stores a safetensors ``state_dict``;
:func:`export_state_dict` makes it contiguous CPU tensors, optionally with floating-point tensors in float16 (half
the size; ``load_state_dict`` copies them back into float32 parameters). :func:`read_method_json` reads the JSON
file that names a folder's method (``zutis.json``, ``reclip.json``) with errors that say what the folder is not.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from seg_core import ConfigError

__all__ = ["export_state_dict", "export_tensors", "read_method_json", "state_mismatch"]


def read_method_json(path: Path, *, method: str, display_name: str, hint: str) -> dict[str, Any]:
    """The JSON object in ``path`` whose ``"method"`` must be ``method``.

    Args:
        path: The folder's description file (it exists: the caller has checked the folder).
        method: The method name the file must hold (``"zutis"``).
        display_name: The method as people write it (``"ZUTIS"``), for the messages.
        hint: How to get a right folder, appended to every message.

    Raises:
        ConfigError: Malformed JSON, not an object, or another method.
    """
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"malformed JSON in {path}: {error}") from None
    if not isinstance(info, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(info).__name__}; {hint}")
    found = info.get("method")
    if found != method:
        raise ConfigError(f"{path}: method is {found!r}, not {method!r}, so this is not a {display_name} model; {hint}")
    return info


def export_state_dict(module: nn.Module, *, fp16: bool = False) -> dict[str, Tensor]:
    """``module.state_dict()`` as detached, contiguous CPU tensors; floating-point ones in float16 when ``fp16``.

    Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) keep their dtype.
    """
    return export_tensors(module.state_dict(), fp16=fp16)


def export_tensors(state: Mapping[str, Tensor], *, fp16: bool = False) -> dict[str, Tensor]:
    """:func:`export_state_dict` for any mapping of tensors (e.g. a filtered state dict)."""
    return {
        key: (value.half() if fp16 and value.is_floating_point() else value).detach().to("cpu").contiguous()
        for key, value in state.items()
    }


def state_mismatch(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor]
) -> tuple[list[str], list[str], list[str]]:
    """How a loaded ``state`` fails to fit a model's ``expected`` state dict: sorted missing keys, unexpected keys
    and keys whose shapes differ (all empty when it fits)."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        key for key in set(state) & set(expected) if tuple(state[key].shape) != tuple(expected[key].shape)
    )
    return missing, unexpected, mismatched

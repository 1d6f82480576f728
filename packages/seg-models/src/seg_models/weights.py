"""Weights as they are written to model folders: one place decides dtype, device and layout.

Every model folder of seg (the reference CLIP, ReCo+, GroupViT, PGSeg ...) stores a safetensors ``state_dict``;
:func:`export_state_dict` makes it contiguous CPU tensors, optionally with floating-point tensors in float16 (half
the size; ``load_state_dict`` copies them back into float32 parameters).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["export_state_dict"]


def export_state_dict(module: nn.Module, *, fp16: bool = False) -> dict[str, Tensor]:
    """``module.state_dict()`` as detached, contiguous CPU tensors; floating-point ones in float16 when ``fp16``.

    Integer tensors (e.g. BatchNorm's ``num_batches_tracked``) keep their dtype.
    """
    return {
        key: (value.half() if fp16 and value.is_floating_point() else value).detach().to("cpu").contiguous()
        for key, value in module.state_dict().items()
    }

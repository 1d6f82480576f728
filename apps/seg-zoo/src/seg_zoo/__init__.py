"""seg-zoo: The seg model zoo: registry and Hugging Face Hub I/O with safetensors.

Status: skeleton. The modules below exist so the package map is complete and installable; each is empty until
the issue named beside it lands (see docs/architecture.md):

    seg_zoo.registry: The zoo table keyed ``method-arch.tag``, listing with wildcards (seg-zoo issue).
    seg_zoo.hub: ``load`` / ``save_pretrained`` / ``push_to_hub`` with safetensors, config.json and a model card
        (seg-zoo issue).
"""

from seg_zoo.__about__ import __version__

SKELETON_MODULES: tuple[str, ...] = (
    "registry",
    "hub",
)

__all__ = ["SKELETON_MODULES", "__version__"]

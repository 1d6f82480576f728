"""``load`` / ``save_pretrained`` / ``push_to_hub`` with safetensors, config.json and a model card.

Skeleton: not implemented yet. The content arrives with the seg-zoo issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []

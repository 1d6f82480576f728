"""Archive curation per concept and archive purity (precision@k).

Skeleton: not implemented yet. The content arrives with the ReCo issue; until then this
module exports nothing, so nothing can be mistaken for a working implementation.
"""

__all__: list[str] = []

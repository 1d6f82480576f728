"""Models shipped inside the seg-zoo wheel, usable with no network at all.

``synthetic-clip``: the reference CLIP trained from scratch on the synthetic world (``seg_trainers.clip``), an
open_clip ``local-dir:`` folder with fp16 safetensors weights and ``training.json`` (recipe, data seed and the
metrics it reached on a world seed it never saw). It is the default model of ``seg demo``, ``seg eval`` and
``seg predict`` for the CLIP-based methods. Regenerate it with ``python tools/train_reference_clip.py``.

``reco-synthetic``: ReCo's reference embeddings of the world's 21 classes, retrieved and co-segmented from the
``index`` split of world seed 0 with the reference CLIP (``reco.json`` names it). ``reco-plus-synthetic``: the
DeepLabv3+ trained on that model's pseudo-labels (``seg_trainers.reco``). Regenerate both with
``python tools/train_reference_reco.py``.

``groupvit-synthetic`` and ``pgseg-synthetic``: GroupViT and PGSeg trained on the world's image-text pairs
(``seg_trainers.groupvit``, training seed 0). Regenerate both with
``python tools/train_reference_groupvit.py --run runs/pgseg-ref --continue-steps 2500 --bundle``.

``simcon-synthetic``: the 4,000-step GroupViT base of ``groupvit-synthetic`` fine-tuned with MV-SimCon on clean
captions (``seg_trainers.simcon``, training seed 0). Regenerate it with
``python tools/train_reference_simcon.py --bundle`` (after the GroupViT bases above).

``reclip-synthetic``: the ReCLIP++ student distilled from the bundled CLIP rectified on the ``index`` images of
world seed 0 (``seg_trainers.reclip``, training seed 0; ``reclip.json`` names the CLIP). Regenerate it with
``python tools/train_reference_reclip.py --seeds 0 --variants reclip --distill-seeds 0 --bundle``.

``zutis-synthetic``: ZUTIS's fine-tuned vision tower and instance decoder, trained on copy-paste images of the
saliency pseudo-masks of the things' archives retrieved from world seed 0 (``seg_trainers.zutis``, training seed 0;
``zutis.json`` names the reference CLIP, whose text tower classifies). Regenerate it with
``python tools/train_reference_zutis.py --bundle``.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

__all__ = [
    "BUNDLED_MODELS",
    "REFERENCE_CLIP",
    "REFERENCE_GROUPVIT",
    "REFERENCE_PGSEG",
    "REFERENCE_RECLIP",
    "REFERENCE_RECO",
    "REFERENCE_RECO_PLUS",
    "REFERENCE_SIMCON",
    "REFERENCE_ZUTIS",
    "bundled_model_dir",
    "bundled_model_info",
]

REFERENCE_CLIP = "synthetic-clip"
REFERENCE_RECO = "reco-synthetic"
REFERENCE_RECO_PLUS = "reco-plus-synthetic"
REFERENCE_GROUPVIT = "groupvit-synthetic"
REFERENCE_PGSEG = "pgseg-synthetic"
REFERENCE_SIMCON = "simcon-synthetic"
REFERENCE_RECLIP = "reclip-synthetic"
REFERENCE_ZUTIS = "zutis-synthetic"
_MARKERS = {
    REFERENCE_CLIP: "open_clip_config.json",
    REFERENCE_RECO: "reco.json",
    REFERENCE_RECO_PLUS: "reco_plus.json",
    REFERENCE_GROUPVIT: "config.json",
    REFERENCE_PGSEG: "pgseg.json",
    REFERENCE_SIMCON: "config.json",
    REFERENCE_RECLIP: "reclip.json",
    REFERENCE_ZUTIS: "zutis.json",
}
_REGENERATE = {
    REFERENCE_CLIP: "python tools/train_reference_clip.py",
    REFERENCE_RECO: "python tools/train_reference_reco.py",
    REFERENCE_RECO_PLUS: "python tools/train_reference_reco.py",
    REFERENCE_GROUPVIT: "python tools/train_reference_groupvit.py --run runs/pgseg-ref --continue-steps 2500 --bundle",
    REFERENCE_PGSEG: "python tools/train_reference_groupvit.py --run runs/pgseg-ref --continue-steps 2500 --bundle",
    REFERENCE_SIMCON: "python tools/train_reference_simcon.py --bundle",
    REFERENCE_RECLIP: "python tools/train_reference_reclip.py --seeds 0 --variants reclip --distill-seeds 0 --bundle",
    REFERENCE_ZUTIS: "python tools/train_reference_zutis.py --bundle",
}
BUNDLED_MODELS: tuple[str, ...] = tuple(_MARKERS)


def bundled_model_dir(name: str = REFERENCE_CLIP) -> Path:
    """The folder of a bundled model (for the CLIP: pass it to ``load_clip(f"local-dir:{folder}")``).

    Raises:
        KeyError: ``name`` is not a bundled model.
        FileNotFoundError: The model's files are missing from this installation.
    """
    if name not in BUNDLED_MODELS:
        raise KeyError(f"no bundled model {name!r}; bundled: {', '.join(BUNDLED_MODELS)}")
    folder = Path(str(resources.files("seg_zoo") / "bundled" / name))
    if not (folder / _MARKERS[name]).is_file():
        raise FileNotFoundError(
            f"the bundled model {name!r} is missing from {folder}; reinstall seg-zoo, or train it with "
            f"`{_REGENERATE[name]}` in a checkout of seg"
        )
    return folder


def bundled_model_info(name: str = REFERENCE_CLIP) -> dict[str, Any]:
    """``training.json`` of a bundled model: recipe, data seed, steps and evaluation metrics."""
    info: dict[str, Any] = json.loads((bundled_model_dir(name) / "training.json").read_text())
    return info

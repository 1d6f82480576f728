"""The zoo table keyed ``method-arch.tag``, listing with wildcards (as timm's and open_clip's pretrained tables).

Two kinds of entries:

- the synthetic-world checkpoints of every method, trained by the project's own recipes. Their weights ship inside
  the seg-zoo wheel (``bundled``), so they load with no network; ``hf_hub_id`` names the repository
  ``tools/publish_zoo.py`` pushes them to;
- the public upstream weights the methods are built on (open_clip's OpenAI CLIPs, NVIDIA's GroupViT), which a
  user with internet loads by the same names.

:func:`register` adds entries at run time (a lab's own checkpoints).
"""

from __future__ import annotations

import difflib
import fnmatch

from seg_core import CLIP_MEAN_STD, ConfigError, PaperRef, Preprocessing, UpstreamWeights, ZooEntry, ZooResult
from seg_zoo import bundled as _bundled
from seg_zoo.card import results_from_training
from seg_zoo.formats import read_training
from seg_zoo.papers import PAPERS

__all__ = ["HUB_ORG", "default_entry", "entries", "get_entry", "list_models", "register"]

HUB_ORG = "seg-toolkit"
"""The Hub organisation the project's own checkpoints are published under."""

_CLIP = "maskclip-vit-tiny-p8.synthetic"
_SYNTHETIC_SIZE = Preprocessing(image_size=64, normalization=CLIP_MEAN_STD, interpolation="bicubic")


def _bundled_results(name: str, kind: str) -> tuple[ZooResult, ...]:
    try:
        folder = _bundled.bundled_model_dir(name)
    except (KeyError, FileNotFoundError):
        return ()
    return results_from_training(read_training(folder), kind)


def _synthetic(  # noqa: PLR0917 (one row of the table per call)
    name: str, method: str, bundled: str, kind: str, paper: PaperRef, description: str, *, clip: bool = False
) -> ZooEntry:
    results = _bundled_results(bundled, kind)
    return ZooEntry(
        name=name,
        method=method,
        hf_hub_id=f"{HUB_ORG}/{name.replace('.', '-')}",
        bundled=bundled,
        preprocessing=_SYNTHETIC_SIZE,
        preset=next((r.preset for r in results if r.preset), "synthetic"),
        upstream=(UpstreamWeights(name="clip", source=_CLIP, license="apache-2.0"),) if clip else (),
        license="apache-2.0",
        paper=paper,
        description=description,
        results=results,
    )


def _builtin() -> dict[str, ZooEntry]:
    table = [
        _synthetic(
            _CLIP,
            "maskclip",
            _bundled.REFERENCE_CLIP,
            "clip",
            PAPERS["maskclip"],
            "the reference CLIP trained from scratch on the synthetic world (ViT 4x128, patch 8, 64 px)",
        ),
        _synthetic(
            "reco-vit-tiny-p8.synthetic",
            "reco",
            _bundled.REFERENCE_RECO,
            "reco",
            PAPERS["reco"],
            "ReCo reference embeddings of the 21 world classes, retrieved and co-segmented with the reference CLIP",
            clip=True,
        ),
        _synthetic(
            "reco-plus-deeplab-r18-tiny.synthetic",
            "reco-plus",
            _bundled.REFERENCE_RECO_PLUS,
            "reco-plus",
            PAPERS["reco"],
            "ReCo+: a tiny DeepLabv3+ trained on ReCo's pseudo-labels",
        ),
        _synthetic(
            "groupvit-tiny.synthetic",
            "groupvit",
            _bundled.REFERENCE_GROUPVIT,
            "groupvit",
            PAPERS["groupvit"],
            "GroupViT trained with InfoNCE on the world's image-text pairs (4,000 steps)",
        ),
        _synthetic(
            "pgseg-groupvit-tiny.synthetic",
            "pgseg",
            _bundled.REFERENCE_PGSEG,
            "pgseg",
            PAPERS["pgseg"],
            "PGSeg: the GroupViT base fine-tuned with prototype guidance",
        ),
        _synthetic(
            "simcon-groupvit-tiny.synthetic",
            "simcon",
            _bundled.REFERENCE_SIMCON,
            "groupvit",
            PAPERS["simcon"],
            "the GroupViT base fine-tuned with MV-SimCon on clean captions",
        ),
        _synthetic(
            "reclip-deeplab-r18-tiny.synthetic",
            "reclip",
            _bundled.REFERENCE_RECLIP,
            "reclip",
            PAPERS["reclip"],
            "ReCLIP++ student distilled from the reference CLIP rectified on the world's index images",
        ),
        _synthetic(
            "zutis-vit-tiny-p8.synthetic",
            "zutis",
            _bundled.REFERENCE_ZUTIS,
            "zutis",
            PAPERS["zutis"],
            "ZUTIS: the reference CLIP's vision tower fine-tuned into its text space, with an instance decoder",
            clip=True,
        ),
        ZooEntry(
            name="maskclip-vit-b16.openai",
            method="maskclip",
            weights_format="open_clip",
            open_clip="ViT-B-16/openai",
            preprocessing=Preprocessing(image_size=224, normalization=CLIP_MEAN_STD),
            upstream=(UpstreamWeights(name="clip", source="open_clip:ViT-B-16/openai", license="mit"),),
            license="mit",
            paper=PAPERS["maskclip"],
            description="OpenAI's CLIP ViT-B/16 read densely (the baseline of ReCo, ZUTIS and ReCLIP++)",
        ),
        ZooEntry(
            name="maskclip-vit-l14-336.openai",
            method="maskclip",
            weights_format="open_clip",
            open_clip="ViT-L-14-336/openai",
            preprocessing=Preprocessing(image_size=336, normalization=CLIP_MEAN_STD),
            upstream=(UpstreamWeights(name="clip", source="open_clip:ViT-L-14-336/openai", license="mit"),),
            license="mit",
            paper=PAPERS["maskclip"],
            description="OpenAI's CLIP ViT-L/14@336 read densely (ReCo's DenseCLIP)",
        ),
        ZooEntry(
            name="groupvit-gcc-yfcc.nvidia",
            method="groupvit",
            hf_hub_id="nvidia/groupvit-gcc-yfcc",
            weights_format="transformers",
            preprocessing=Preprocessing(image_size=224, normalization=CLIP_MEAN_STD),
            license="other",
            paper=PAPERS["groupvit"],
            description="NVIDIA's GroupViT trained on CC3M+CC12M+YFCC (transformers format)",
        ),
        ZooEntry(
            name="groupvit-gcc-redcaps.nvidia",
            method="groupvit",
            hf_hub_id="nvidia/groupvit-gcc-redcaps",
            weights_format="transformers",
            preprocessing=Preprocessing(image_size=224, normalization=CLIP_MEAN_STD),
            license="other",
            paper=PAPERS["groupvit"],
            description="NVIDIA's GroupViT trained on CC3M+CC12M+RedCaps (transformers format)",
        ),
    ]
    return {entry.name: entry for entry in table}


_ENTRIES: dict[str, ZooEntry] = _builtin()


def register(entry: ZooEntry, *, overwrite: bool = False) -> ZooEntry:
    """Add ``entry`` to the table (e.g. a lab's own checkpoints on the Hub).

    Raises:
        ConfigError: An entry of that name exists and ``overwrite`` is false.
    """
    if entry.name in _ENTRIES and not overwrite:
        raise ConfigError(f"zoo entry {entry.name!r} exists; pass overwrite=True to replace it")
    _ENTRIES[entry.name] = entry
    return entry


def list_models(pattern: str = "*", *, method: str | None = None) -> list[str]:
    """Sorted names matching the shell-style ``pattern`` (``reco*``, ``*.synthetic``), optionally of one method."""
    return sorted(
        name
        for name, entry in _ENTRIES.items()
        if fnmatch.fnmatchcase(name, pattern) and (method is None or entry.method == method)
    )


def entries() -> tuple[ZooEntry, ...]:
    """Every entry, sorted by name."""
    return tuple(_ENTRIES[name] for name in sorted(_ENTRIES))


def get_entry(name: str) -> ZooEntry:
    """The entry named ``name``.

    Raises:
        KeyError: No such entry; the message suggests the closest names and ``seg zoo list``.
    """
    if name in _ENTRIES:
        return _ENTRIES[name]
    close = difflib.get_close_matches(name, list(_ENTRIES), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise KeyError(f"no zoo entry {name!r}.{hint} See `seg zoo list`.")


def default_entry(method: str) -> ZooEntry:
    """The synthetic-world entry of ``method`` (``dense-clip`` runs the reference CLIP, as ``maskclip``)."""
    wanted = "maskclip" if method == "dense-clip" else method
    for entry in _ENTRIES.values():
        if entry.method == wanted and entry.bundled is not None and entry.tag == "synthetic":
            return entry
    raise KeyError(f"no synthetic-world zoo entry for method {method!r}")

"""Dataset views: a dataset seen through another label list, without rewriting its files.

:class:`BackgroundView` is the COCO-Object construction (COCO-Stuff's 80 things on one "background" label) for any
dataset: the kept classes are renumbered ``1..K`` in the order given, every other class falls into label 0
(background), and the ignore label stays the ignore label. Ground-truth instances of kept classes are relabelled the
same way, the others dropped. ZUTIS (Shin et al.) is evaluated this way, with a literal "background" prompt.

:func:`view_for_preset` picks the view a protocol preset asks for: the dataset itself when the preset's class names
are the dataset's (or left to the dataset), a :class:`BackgroundView` when they are a background name followed by
some of the dataset's classes.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from seg_eval.datasets.base import LabelArray, Sample, SegmentationDataset

if TYPE_CHECKING:  # importing seg_eval.datasets stays free of torch and pycocotools
    from seg_core import ProtocolPreset
    from seg_eval.metrics.mask_ap import InstanceTargets

__all__ = ["BACKGROUND_NAMES", "BackgroundView", "view_for_preset"]

BACKGROUND_NAMES: frozenset[str] = frozenset({"background", "bg", "_background_", "other", "others"})
"""Names (lower-cased) taken for a background label, as :func:`~seg_eval.presets.preset_concepts` takes them."""


def _is_background(name: str) -> bool:
    return name.lower() in BACKGROUND_NAMES


def _numpy(value: Any) -> npt.NDArray[Any]:
    """A numpy array or a torch tensor (on any device) as a numpy array."""
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def _unknown_names(names: Sequence[str], known: Sequence[str]) -> list[str]:
    """``names`` not in ``known``, each with its close matches (``"cw" (did you mean 'cow'?)``)."""
    described = []
    for name in names:
        if name in known:
            continue
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
        described.append(f"{name!r}{hint}")
    return described


class BackgroundView:
    """A dataset relabelled onto ``("background", *kept_names)``.

    Label ``k`` of the view (``k >= 1``) is ``kept_names[k - 1]``; every pixel of another class of the dataset is
    background (0); the dataset's ignore pixels stay ``ignore_index``. Instances (``Sample.instances``) of kept
    classes are relabelled to their view label, the others dropped. Images and image ids are the dataset's.

    Args:
        dataset: Any :class:`~seg_eval.datasets.SegmentationDataset`.
        class_names: The view's labels: a background name first (``"background"``, ``"bg"``, ``"_background_"``,
            ``"other"`` or ``"others"``), then distinct class names of ``dataset``, in the order wanted.

    Raises:
        ValueError: ``class_names`` is empty, does not start with a background name, keeps no class, repeats a
            name, or names a class the dataset does not have (the message lists close matches).

    Example:
        >>> from seg_eval.world import WorldConfig
        >>> from seg_eval.world.benchmark import RenderedWorldBenchmark
        >>> view = BackgroundView(RenderedWorldBenchmark(WorldConfig(seed=0), "val", 2), ("background", "cow"))
        >>> view.class_names, int(view[0].label.max()) <= 1
        (('background', 'cow'), True)
    """

    def __init__(self, dataset: SegmentationDataset, class_names: Sequence[str]) -> None:
        names = tuple(class_names)
        source = tuple(dataset.class_names)
        if not names:
            raise ValueError(
                'class_names is empty; give ("background", *kept_names), e.g. ("background", "cow", "car")'
            )
        if not _is_background(names[0]):
            raise ValueError(
                f"class_names must start with a background name ({', '.join(sorted(BACKGROUND_NAMES))}), but its "
                f"first name is {names[0]!r}; put 'background' first"
            )
        kept = names[1:]
        if not kept:
            raise ValueError(
                f"class_names {list(names)} keeps no class of the dataset: name at least one of "
                f"{list(source[:8])}{'...' if len(source) > 8 else ''} after {names[0]!r}"
            )
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"class_names repeats {repeated}: give each class once")
        unknown = _unknown_names(kept, source)
        if unknown:
            raise ValueError(
                f"class_names holds names the dataset does not have: {', '.join(unknown)}; the dataset's classes are "
                f"{list(source)}"
            )
        ignore = int(dataset.ignore_index)
        if 0 <= ignore < len(names):
            raise ValueError(
                f"the view has {len(names)} labels but the dataset's ignore_index is {ignore}: view labels would "
                "collide with the ignore label; keep fewer classes"
            )
        self.dataset = dataset
        self.class_names: tuple[str, ...] = names
        self.ignore_index: int = ignore
        self.lookup: npt.NDArray[np.int64] = np.zeros(len(source), dtype=np.int64)
        """Dataset label id -> view label id (0 for every class not kept)."""
        for view_id, name in enumerate(kept, start=1):
            self.lookup[source.index(name)] = view_id

    @property
    def name(self) -> str:
        """The wrapped dataset's ``name`` (``""`` when it has none)."""
        return str(getattr(self.dataset, "name", ""))

    @property
    def split(self) -> str:
        """The wrapped dataset's ``split`` (``""`` when it has none)."""
        return str(getattr(self.dataset, "split", ""))

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Sample:
        sample = self.dataset[index]
        return Sample(
            image=sample.image,
            label=self.relabel(sample.label, sample.image_id),
            image_id=sample.image_id,
            instances=None if sample.instances is None else self.relabel_instances(sample.instances, sample.image_id),
        )

    def __repr__(self) -> str:
        return f"BackgroundView({self.dataset!r}, class_names={list(self.class_names)})"

    def relabel(self, label: LabelArray, image_id: str = "") -> LabelArray:
        """A label map of the dataset in the view's labels (uint8 stays uint8, anything else becomes int64).

        Args:
            label: ``(H, W)`` dataset label ids and ``ignore_index``.
            image_id: For the error message.

        Raises:
            ValueError: ``label`` holds a value that is neither a dataset class id nor ``ignore_index``.
        """
        values = label.astype(np.int64, copy=False)
        ignored = values == self.ignore_index
        known = (values >= 0) & (values < len(self.lookup))
        bad = ~(known | ignored)
        if bad.any():
            shown = sorted({int(v) for v in values[bad]})[:8]
            raise ValueError(
                f"image {image_id!r}: label values {shown} are neither class ids (0..{len(self.lookup) - 1}) nor the "
                f"ignore label {self.ignore_index}; the dataset and its class_names do not match"
            )
        relabelled = np.full(values.shape, self.ignore_index, dtype=np.int64)
        relabelled[known] = self.lookup[values[known]]
        if label.dtype == np.uint8:
            return relabelled.astype(np.uint8)
        return relabelled

    def relabel_instances(self, instances: InstanceTargets, image_id: str = "") -> InstanceTargets:
        """Instances of kept classes with their view labels, in their order; instances of other classes dropped.

        Args:
            instances: Ground truth in the dataset's labels (``[M, H, W]`` masks, ``[M]`` labels).
            image_id: For the error message.

        Raises:
            ValueError: An instance label is not a dataset class id.
        """
        labels = _numpy(instances.labels).astype(np.int64).reshape(-1)
        out_of_range = (labels < 0) | (labels >= len(self.lookup))
        if out_of_range.any():
            raise ValueError(
                f"image {image_id!r}: instance labels {sorted({int(v) for v in labels[out_of_range]})} are not class "
                f"ids of the dataset (0..{len(self.lookup) - 1})"
            )
        from seg_eval.metrics.mask_ap import InstanceTargets

        new_labels = self.lookup[labels]
        keep = new_labels > 0
        crowd = None if instances.iscrowd is None else _numpy(instances.iscrowd).reshape(-1)[keep]
        return InstanceTargets(masks=_numpy(instances.masks)[keep], labels=new_labels[keep], iscrowd=crowd)


def view_for_preset(dataset: SegmentationDataset, preset: ProtocolPreset) -> SegmentationDataset:
    """The dataset as ``preset`` scores it.

    * ``preset.class_names`` is ``None`` or equals the dataset's: the dataset itself.
    * It is a background name followed by class names of the dataset: a :class:`BackgroundView` onto them (e.g. the
      ``synthetic-object`` preset on the synthetic world: things kept, every stuff pixel background).

    Args:
        dataset: Any :class:`~seg_eval.datasets.SegmentationDataset`.
        preset: The protocol.

    Raises:
        ValueError: The preset's class names are neither the dataset's nor a background view of them (the message
            names the classes the dataset lacks, with close matches).
    """
    wanted = preset.class_names
    source = tuple(dataset.class_names)
    if wanted is None or tuple(wanted) == source:
        return dataset
    mismatch = (
        f"preset {preset.name!r} is for classes {list(wanted)[:5]}{'...' if len(wanted) > 5 else ''}, but the "
        f"dataset has {list(source)[:5]}{'...' if len(source) > 5 else ''}"
    )
    if not wanted or not _is_background(wanted[0]) or len(wanted) < 2:
        raise ValueError(f"{mismatch}; choose the preset of this dataset")
    unknown = _unknown_names(wanted[1:], source)
    if unknown:
        raise ValueError(
            f"{mismatch}; as a background view it names classes the dataset does not have: {', '.join(unknown)}; "
            "choose the preset of this dataset"
        )
    return BackgroundView(dataset, wanted)

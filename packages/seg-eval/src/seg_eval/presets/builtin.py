"""The published evaluation protocols, as data.

Each preset is named ``<method>-<dataset>``; its ``dataset`` is an :func:`seg_eval.datasets.open_dataset` name. The
settings come from the official repositories (``docs/reference/official-implementations.md`` §0 and the field
anchors); what a preset cannot express is in its :class:`~seg_eval.presets.PresetInfo`.

Class names: a preset's ``class_names`` are the dataset's label names in label order, ``"background"`` first where
the dataset has it (VOC21, Context60, COCO-Object); with a background policy label 0 is background and the
concepts are labels 1, 2, ... What a method prompts for each label (renames such as GroupViT's "table", SCLIP's
"ship" and synonyms) is in ``PresetInfo.prompt_names`` / ``synonyms``, read from the shipped prompt files;
:func:`~seg_eval.presets.preset_concepts` turns both into the :class:`~seg_core.ConceptSet`.
"""

from __future__ import annotations

from seg_core import (
    CLIP_MEAN_STD,
    IMAGENET_MEAN_STD,
    BackgroundClass,
    BackgroundPolicy,
    BackgroundThreshold,
    NoBackground,
    Normalization,
    ProtocolPreset,
    ResizeRule,
    SlidingWindow,
)
from seg_eval.presets.class_names import read_class_names, read_prompt_names
from seg_eval.presets.registry import PresetInfo, register_preset
from seg_eval.world.classes import CLASSES

__all__ = ["BUILTIN_PRESETS", "DATASET_LABEL_FILES", "register_builtin_presets"]

DATASET_LABEL_FILES: dict[str, str] = {
    "voc21": "voc21",
    "voc20": "voc20",
    "context60": "context60",
    "context59": "context59",
    "coco-object": "coco-object81",
    "coco-stuff171": "coco-stuff171",
    "coco-stuff27": "coco-stuff27",
    "cityscapes19": "cityscapes19",
    "cityscapes27": "cityscapes27",
    "ade20k": "ade20k150",
    "kitti-step": "kitti-step19",
}
"""The label file of each dataset name (ImageNet-S and the synthetic world take their names from the data)."""

_MMSEG_LONG_SIDE_CAP = 2048
"""mmseg's ``Resize(scale=(2048, S), keep_ratio=True)``: short side to S, long side at most 2048."""

_GROUPVIT = "GroupViT (Xu et al., CVPR 2022)"
_PGSEG = "PGSeg (Zhang et al., NeurIPS 2023)"
_SIMCON = "MV-SimCon (Patel et al.)"
_SCLIP = "SCLIP (Wang et al., ECCV 2024)"
_SCLIP_FAMILY = "NACLIP, ClearCLIP, ProxyCLIP, ResCLIP (same template, own scales and thresholds)"
_RECLIP = "ReCLIP++ (Wang and Kang, TPAMI)"
_MASKCLIP = "MaskCLIP (Zhou et al., ECCV 2022)"
_RECO = "ReCo (Shin et al., NeurIPS 2022)"
_ZUTIS = "ZUTIS (Shin et al.)"

BUILTIN_PRESETS: list[tuple[ProtocolPreset, PresetInfo]] = []


def _preset(
    name: str,
    dataset: str,
    *,
    resize: ResizeRule,
    templates: str,
    background: BackgroundPolicy,
    normalization: Normalization,
    info: PresetInfo,
    window: SlidingWindow | None = None,
    logit_scale: float | None = None,
) -> None:
    """Add a preset whose class names are the dataset's label file."""
    label_file = DATASET_LABEL_FILES[dataset]
    preset = ProtocolPreset(
        name=name,
        dataset=dataset,
        resize=resize,
        mode="whole" if window is None else "slide",
        window=window,
        class_names=read_class_names(label_file),
        class_names_file=f"{label_file}.txt",
        templates=templates,
        background=background,
        normalization=normalization,
        logit_scale=logit_scale,
    )
    BUILTIN_PRESETS.append((preset, info))


def _info(
    prompt_file: str | None,
    *,
    papers: tuple[str, ...],
    source: str,
    notes: str,
    background_row: bool = False,
    prediction_map: str | None = None,
) -> PresetInfo:
    """A :class:`PresetInfo`, with prompt names (first form of each row) and synonyms (the other forms) from a
    prompt file; with ``background_row``, row 0 is background's forms (they go to the policy) and is prompted as
    ``"background"``."""
    if prompt_file is None:
        return PresetInfo(papers=papers, source=source, notes=notes, prediction_map=prediction_map)
    rows = read_prompt_names(prompt_file)
    concepts = rows[1:] if background_row else rows
    names = tuple(row[0] for row in concepts)
    return PresetInfo(
        papers=papers,
        source=source,
        notes=notes,
        prompt_names=("background", *names) if background_row else names,
        prompt_file=f"{prompt_file}.txt",
        synonyms={row[0]: row[1:] for row in concepts if len(row) > 1},
        prediction_map=prediction_map,
    )


# --- GroupViT / PGSeg / MV-SimCon: short side 448, slide 448/224, background below a score threshold ----------------

_GROUPVIT_NOTES = (
    "Single prompt 'a photo of a {}.'. A pixel is background where the best class probability is below "
    "min(threshold, the image's max affinity); group-to-class scores are restricted to the image-level top-5 "
    "classes. The released thresholds differ from the paper's (0.9/0.5) because the released models were "
    "re-trained (GroupViT issues #31, #56). MV-SimCon evaluates with GroupViT's code."
)
_GROUPVIT_DATA: dict[str, tuple[str | None, float, float]] = {
    # dataset: (prompt file, GroupViT bg_thresh, PGSeg bg_thresh)
    "voc21": ("voc21_groupvit", 0.95, 0.95),
    "context60": ("context60_groupvit", 0.35, 0.36),
    "coco-object": (None, 0.95, 0.85),
}
for _dataset, (_file, _groupvit_threshold, _pgseg_threshold) in _GROUPVIT_DATA.items():
    for _method, _threshold, _papers, _repository in (
        ("groupvit", _groupvit_threshold, (_GROUPVIT, _SIMCON), "NVlabs/GroupViT"),
        ("pgseg", _pgseg_threshold, (_PGSEG,), "Ferenas/PGSeg"),
    ):
        _preset(
            f"{_method}-{_dataset}",
            _dataset,
            resize=ResizeRule(short_side=448, max_long_side=_MMSEG_LONG_SIDE_CAP),
            window=SlidingWindow(crop=448, stride=224),
            templates="single",
            background=BackgroundThreshold(threshold=_threshold, score="probability"),
            normalization=IMAGENET_MEAN_STD,
            info=_info(
                _file,
                papers=_papers,
                source=f"{_repository} segmentation/configs/_base_/datasets/*.py, segmentation/datasets/*.py",
                notes=_GROUPVIT_NOTES,
            ),
        )

# --- SCLIP family: short side 336 (COCO-Stuff 448, Cityscapes 560), slide 224/112, 80 templates, CLIP stats ---------

_SCLIP_DATA: dict[str, tuple[str | None, int, float, str]] = {
    # dataset: (prompt file, short side, logit scale, thresholds the preset cannot hold)
    "voc21": ("voc21_sclip", 336, 65.0, "prob_thd 0.1 and area_thd 0.1 on top of the background synonyms."),
    "voc20": ("voc20_sclip", 336, 40.0, ""),
    "context60": (None, 336, 50.0, "prob_thd 0.1 on top of the 'background' class."),
    "context59": (None, 336, 40.0, ""),
    "coco-object": ("coco-object81_sclip", 336, 50.0, "prob_thd 0.1 on top of the background synonyms."),
    "coco-stuff171": ("coco-stuff171_sclip", 448, 40.0, ""),
    "cityscapes19": ("cityscapes19_sclip", 560, 40.0, ""),
    "ade20k": ("ade20k150_sclip", 336, 40.0, ""),
}
for _dataset, (_file, _short, _scale, _thresholds) in _SCLIP_DATA.items():
    _has_background = read_class_names(DATASET_LABEL_FILES[_dataset])[0] == "background"
    _background: BackgroundPolicy = NoBackground()
    if _has_background:  # the prompt file's row 0 lists background's forms; without one, the word "background"
        _background = BackgroundClass(names=read_prompt_names(_file)[0] if _file else ("background",))
    _notes = (
        "Training-free CLIP protocol (mmseg 1.x); each surface form is a query of its own and a label scores the max "
        "over its queries after the softmax."
    )
    if _thresholds:
        _notes += f" {_thresholds} ProtocolPreset has no field for these thresholds: the method must apply them."
    _preset(
        f"sclip-{_dataset}",
        _dataset,
        resize=ResizeRule(short_side=_short, max_long_side=_MMSEG_LONG_SIDE_CAP),
        window=SlidingWindow(crop=224, stride=112),
        templates="imagenet80",
        background=_background,
        normalization=CLIP_MEAN_STD,
        logit_scale=_scale,
        info=_info(
            _file,
            papers=(_SCLIP, _SCLIP_FAMILY),
            source="wangf3014/SCLIP configs/cfg_*.py, configs/cls_*.txt, clip_segmentor.py",
            notes=_notes,
            background_row=_has_background,
        ),
    )

# --- ReCLIP++: whole image at short side 336/448/512, no background, 85 templates, CLIP stats ------------------------

_RECLIP_SHORT_SIDE = {"voc20": 336, "context59": 448, "ade20k": 512, "cityscapes19": 448, "coco-stuff27": 512}
for _dataset, _short in _RECLIP_SHORT_SIDE.items():
    _preset(
        f"reclip-{_dataset}",
        _dataset,
        resize=ResizeRule(short_side=_short),
        templates="imagenet85",
        background=NoBackground(),
        normalization=CLIP_MEAN_STD,
        info=PresetInfo(
            papers=(_RECLIP,),
            source="dogehhh/ReCLIP config/*_test_ori_cfg.yaml (SCALE), tools/test.py",
            notes=(
                "Single whole-image pass, logits resized bilinearly to the original size. ReCLIP's own mIoU counts "
                "classes absent from both prediction and ground truth as 0 (seg_eval leaves them out). Test-time "
                "class pruning (TEST.PD) is part of the method, not of this preset. Prompted names: the label "
                "names (ReCLIP's own name lists were not checked)."
            ),
        ),
    )

# --- MaskCLIP: whole image at short side 512 (Context: long side 520), no background, 85 templates, ImageNet stats --

for _dataset, _cap in {"voc20": _MMSEG_LONG_SIDE_CAP, "context59": 520, "coco-stuff171": _MMSEG_LONG_SIDE_CAP}.items():
    _preset(
        f"maskclip-{_dataset}",
        _dataset,
        resize=ResizeRule(short_side=512, max_long_side=_cap),
        templates="imagenet85",
        background=NoBackground(),
        normalization=IMAGENET_MEAN_STD,
        info=PresetInfo(
            papers=(_MASKCLIP, _RECLIP),
            source="chongzhou96/MaskCLIP configs/maskclip/*.py (mmseg 0.20)",
            notes="Key smoothing and prompt denoising are off in the released configs (thresholds 0).",
        ),
    )

# --- ReCo: resize 320 (nearest) + centre crop 320 (KITTI-STEP: full resolution), whole, 85 templates, ImageNet stats -

_RECO_NOTES = (
    "The ground truth is resized (nearest) and centre-cropped the same way and scored at 320x320 (STEGO's "
    "protocol). Context categories (tree, sky, building, road, person) and the archive are method settings."
)
_RECO_DATA = {
    # dataset: (resize, prompt file, prediction map, extra notes, source)
    "cityscapes27": (
        ResizeRule(short_side=320, center_crop=320, interpolation="nearest"),
        "cityscapes27_reco",
        None,
        _RECO_NOTES + " 'parking' and 'vegetation' are prompted as 'parking lot' and 'tree' (ReCo paper §4.2; the "
        "official code renames parking and reuses the tree context embedding for vegetation).",
        "NoelShin/reco datasets/cityscapes.py, eval.py",
    ),
    "coco-stuff27": (
        ResizeRule(short_side=320, center_crop=320, interpolation="nearest"),
        "coco-stuff171_reco",
        "coco-stuff171_to_27",
        _RECO_NOTES + " ReCo prompts the 171 fine classes and maps the argmax to the 27 coarse classes. ReCo's own "
        "171->27 table is shifted by one id after 'tv' (tv, book and banner land in the wrong coarse class); "
        "seg-eval maps by the COCO-Stuff hierarchy (coco-stuff171_to_27.tsv). ReCo evaluates the curated list "
        "curated/val2017/Coco164kFull_Stuff_Coarse.txt (COCOStuff(..., image_list=...)).",
        "NoelShin/reco datasets/coco_stuff.py, eval.py",
    ),
    "kitti-step": (
        ResizeRule(),
        "kitti-step19_reco",
        None,
        "Full resolution. 'vegetation' is prompted as 'tree' (ReCo paper §4.2).",
        "NoelShin/reco datasets/kitti_step.py, eval.py",
    ),
}
for _dataset, (_resize, _file, _map, _reco_notes, _source) in _RECO_DATA.items():
    _preset(
        f"reco-{_dataset}",
        _dataset,
        resize=_resize,
        templates="imagenet85",
        background=NoBackground(),
        normalization=IMAGENET_MEAN_STD,
        info=_info(_file, papers=(_RECO,), source=_source, notes=_reco_notes, prediction_map=_map),
    )

# --- ZUTIS: original resolution, literal "background" class, bare names, ImageNet stats ------------------------------

_ZUTIS_NOTES = (
    "Classifier text embeddings of the bare category names (no template), 'background' prompted as class 0; "
    "logits are plain cosines (no logit scale)."
)
_preset(
    "zutis-coco-object",
    "coco-object",
    resize=ResizeRule(),
    templates="bare",
    background=BackgroundClass(names=("background",)),
    normalization=IMAGENET_MEAN_STD,
    info=PresetInfo(papers=(_ZUTIS,), source="NoelShin/zutis networks/zutis.py, datasets/*.py", notes=_ZUTIS_NOTES),
)


BUILTIN_PRESETS.append(
    (
        ProtocolPreset(
            name="zutis-imagenet-s919",
            dataset="imagenet-s919",
            resize=ResizeRule(max_long_side=1024),
            mode="whole",
            class_names=None,
            templates="bare",
            background=BackgroundClass(names=("background",)),
            normalization=IMAGENET_MEAN_STD,
            ignore_index=1000,  # ImageNet-S's ignore id (seg_eval.datasets.IMAGENET_S_IGNORE_INDEX)
        ),
        PresetInfo(
            papers=(_ZUTIS,),
            source="NoelShin/zutis datasets/*.py",
            notes=(
                _ZUTIS_NOTES + " Images with a long side over 1024 are downsized to 1024. Class names come from the "
                "dataset (ImageNetS reads the release's category list; readable names need an ImageNet synset file)."
            ),
        ),
    )
)

# --- the synthetic world: 64 px images, whole inference, no resize, names from the dataset ---------------------------

BUILTIN_PRESETS.append(
    (
        ProtocolPreset(
            name="synthetic",
            dataset="synthetic",
            resize=ResizeRule(),
            mode="whole",
            class_names=None,
            templates="imagenet85",
            background=NoBackground(),
            normalization=CLIP_MEAN_STD,
        ),
        PresetInfo(
            papers=("seg (this project)",),
            source="seg_eval.world",
            notes=(
                "The synthetic world's 64 px images are segmented whole at their size; class names are read from "
                "the written world (world.json) at evaluation time. Every pixel is a stuff or a thing: no background."
            ),
        ),
    )
)

# --- the synthetic world, COCO-Object style: the 14 things on background (stuff is background), ZUTIS's protocol ----

BUILTIN_PRESETS.append(
    (
        ProtocolPreset(
            name="synthetic-object",
            dataset="synthetic",
            resize=ResizeRule(),
            mode="whole",
            class_names=("background", *(c.name for c in CLASSES if c.kind == "thing")),
            templates="imagenet85",
            background=BackgroundClass(names=("background",)),
            normalization=CLIP_MEAN_STD,
        ),
        PresetInfo(
            papers=("seg (this project)",),
            source="seg_eval.world, seg_eval.datasets.views.BackgroundView",
            notes=(
                "COCO-Object-style view of the world: the 14 things and background; every stuff pixel is "
                "background. The protocol of ZUTIS (literal 'background' prompt)."
            ),
        ),
    )
)


def register_builtin_presets() -> None:
    """Register every built-in preset (done on import of :mod:`seg_eval.presets`; safe to call again)."""
    for preset, info in BUILTIN_PRESETS:
        register_preset(preset, info, replace=True)

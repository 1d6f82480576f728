"""seg-core: the shared typed interfaces of seg.

Frozen pydantic models for everything serialised (configs, presets, concept sets, archives, pseudo-mask records,
zoo entries, checkpoint manifests), ``typing.Protocol`` seams between packages, and frozen dataclasses for tensor
bundles. Imports no torch at module level.
"""

from seg_core.__about__ import __version__
from seg_core.base import ConfigError, SegModel, format_validation_error
from seg_core.concepts import BackgroundClass, BackgroundPolicy, BackgroundThreshold, ConceptSet, NoBackground
from seg_core.configs import (
    EvalConfig,
    MethodConfig,
    ScheduleConfig,
    TrainConfig,
    method_config_class,
    parse_method_config,
    registered_methods,
)
from seg_core.outputs import InstancePredictions, SegmentationOutput
from seg_core.protocol import (
    CLIP_MEAN_STD,
    IMAGENET_MEAN_STD,
    Normalization,
    ProtocolPreset,
    ResizeRule,
    SlidingWindow,
)
from seg_core.protocols import CoSegmenter, ImageTextEncoder, MaskRefiner, Retriever, Segmenter
from seg_core.records import Archive, ArchiveItem, ConceptArchive, PseudoMaskRecord, PseudoMaskSet
from seg_core.templates import IMAGENET_TEMPLATES, SCENE_TEMPLATES, TEMPLATE_SETS, resolve_templates
from seg_core.zoo import (
    MANIFEST_FORMAT_VERSION,
    CheckpointManifest,
    FileDigest,
    PaperRef,
    Preprocessing,
    UpstreamWeights,
    ZooEntry,
    ZooResult,
)

__all__ = [
    "CLIP_MEAN_STD",
    "IMAGENET_MEAN_STD",
    "IMAGENET_TEMPLATES",
    "MANIFEST_FORMAT_VERSION",
    "SCENE_TEMPLATES",
    "TEMPLATE_SETS",
    "Archive",
    "ArchiveItem",
    "BackgroundClass",
    "BackgroundPolicy",
    "BackgroundThreshold",
    "CheckpointManifest",
    "CoSegmenter",
    "ConceptArchive",
    "ConceptSet",
    "ConfigError",
    "EvalConfig",
    "FileDigest",
    "ImageTextEncoder",
    "InstancePredictions",
    "MaskRefiner",
    "MethodConfig",
    "NoBackground",
    "Normalization",
    "PaperRef",
    "Preprocessing",
    "ProtocolPreset",
    "PseudoMaskRecord",
    "PseudoMaskSet",
    "ResizeRule",
    "Retriever",
    "ScheduleConfig",
    "SegModel",
    "SegmentationOutput",
    "Segmenter",
    "SlidingWindow",
    "TrainConfig",
    "UpstreamWeights",
    "ZooEntry",
    "ZooResult",
    "__version__",
    "format_validation_error",
    "method_config_class",
    "parse_method_config",
    "registered_methods",
    "resolve_templates",
]

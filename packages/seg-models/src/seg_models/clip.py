"""CLIP from open_clip, prompt ensembling and the text-embedding cache.

CLIP (Radford et al., "Learning Transferable Visual Models From Natural Language Supervision", ICML 2021) always
comes from open_clip's own factory (``open_clip.create_model_and_transforms``), so a real pretrained model
(``load_clip("ViT-B-16", "openai")``), a Hub model (``load_clip("hf-hub:org/name")``) and the project's locally
trained synthetic CLIP (``load_clip("local-dir:runs/clip")``) take exactly the same code path.

Prompt ensembling (CLIP §3.1.4): every surface form of a class (its name and its synonyms) is put into every
template; each prompt embedding is L2-normalised, the embeddings are averaged over templates and re-normalised;
the surface forms of one class are then averaged and re-normalised the same way. Background names of a
:class:`seg_core.BackgroundClass` policy are *not* averaged: each gets its own ensembled embedding and the
similarity of label 0 is the maximum over them (see :class:`ConceptEmbeddings`).

Contents, in order: the local-dir layout and custom model configs; the typed wrapper :class:`ClipModel`;
prompt ensembling and the cache; loaders.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import open_clip
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from seg_core import ConceptSet, Normalization
from seg_models.dense_clip import DenseVariant, dense_clip_features, global_clip_features

__all__ = [
    "CONFIG_FILE_NAME",
    "SYNTHETIC_CLIP_CONFIG",
    "SYNTHETIC_CLIP_NAME",
    "WEIGHTS_FILE_NAME",
    "ClipModel",
    "ConceptEmbeddings",
    "TextEmbeddingCache",
    "concept_embeddings",
    "ensemble_text_embeddings",
    "load_clip",
    "local_dir_config",
    "register_model_config",
]

TextEncodeFn = Callable[[Sequence[str]], Tensor]

# ---------------------------------------------------------------------------------------------------------------
# The local-dir layout and custom model configs
# ---------------------------------------------------------------------------------------------------------------

CONFIG_FILE_NAME = "open_clip_config.json"
"""The config file of a ``local-dir:`` or ``hf-hub:`` source: ``{"model_cfg": ..., "preprocess_cfg": ...}``."""

WEIGHTS_FILE_NAME = "open_clip_model.safetensors"
"""The weights file open_clip prefers in a ``local-dir:`` or ``hf-hub:`` source (a plain state_dict)."""

SYNTHETIC_CLIP_NAME = "seg-synth-ViT-T-8-64"
"""Name under which :func:`register_model_config` registers :data:`SYNTHETIC_CLIP_CONFIG` by default."""

SYNTHETIC_CLIP_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_cfg": {"image_size": 64, "layers": 4, "width": 128, "head_width": 32, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
}
"""The tiny CLIP the project trains from scratch on the synthetic world (ViT w128 L4 4 heads, patch 8 at 64 px,
CLS pooling; text w128 L4 4 heads, context 32; embed 128), in open_clip's ``model_cfg`` format."""

_REGISTERED_CONFIGS: dict[str, Path] = {}  # "dir": the per-process folder holding registered configs
_REGISTRY_LOCK = threading.Lock()


def register_model_config(
    name: str = SYNTHETIC_CLIP_NAME, model_cfg: Mapping[str, Any] | None = None, *, overwrite: bool = False
) -> str:
    """Make a custom open_clip architecture loadable by name (``load_clip(name)``, ``open_clip.create_model``).

    open_clip only learns configs from JSON files (``open_clip.add_model_config``), so the config is written to a
    per-process temporary folder as ``{name}.json`` and that file is added to open_clip's search path.
    Registering the same config twice is a no-op. A ``local-dir:`` source needs no registration: its
    ``open_clip_config.json`` carries the config.

    Args:
        name: Architecture name, e.g. ``"seg-synth-ViT-T-8-64"``.
        model_cfg: open_clip ``model_cfg`` with ``embed_dim``, ``vision_cfg`` and ``text_cfg``; defaults to
            :data:`SYNTHETIC_CLIP_CONFIG`.
        overwrite: Replace an existing config of that name that differs.

    Returns:
        The name, for chaining into :func:`load_clip`.

    Raises:
        ValueError: The config lacks a required key, or ``name`` already names a different config and
            ``overwrite`` is false.
    """
    config = dict(SYNTHETIC_CLIP_CONFIG if model_cfg is None else model_cfg)
    missing = [key for key in ("embed_dim", "vision_cfg", "text_cfg") if key not in config]
    if missing:
        raise ValueError(
            f"model_cfg for {name!r} lacks {missing}; an open_clip config needs embed_dim, vision_cfg, text_cfg"
        )
    if not name or "/" in name or name.startswith(("hf-hub:", "local-dir:")):
        raise ValueError(f"name must be a plain architecture name such as 'my-clip', got {name!r}")
    existing = open_clip.get_model_config(name)
    if existing is not None:
        if _canonical(existing) == _canonical(config):
            return name
        if not overwrite:
            raise ValueError(
                f"open_clip already has a different config named {name!r}; pick another name or pass overwrite=True"
            )
    with _REGISTRY_LOCK:
        folder = _REGISTERED_CONFIGS.get("dir")
        if folder is None:
            folder = _REGISTERED_CONFIGS["dir"] = Path(tempfile.mkdtemp(prefix="seg-open-clip-configs-"))
        config_file = folder / f"{name}.json"
        config_file.write_text(json.dumps(config, indent=2))
        open_clip.add_model_config(config_file)  # appends the file to open_clip's search path and rescans
    return name


def local_dir_config(
    model_cfg: Mapping[str, Any],
    normalization: Normalization,
    *,
    interpolation: str = "bicubic",
    resize_mode: str = "shortest",
) -> dict[str, Any]:
    """The content of ``open_clip_config.json`` for a ``local-dir:`` (or Hub) source.

    A folder open_clip loads with ``local-dir:PATH`` holds this JSON as :data:`CONFIG_FILE_NAME` and the model's
    ``state_dict()`` as :data:`WEIGHTS_FILE_NAME` (safetensors; write it with ``safetensors.torch.save_file``).

    Args:
        model_cfg: The open_clip model config (``embed_dim``, ``vision_cfg``, ``text_cfg``).
        normalization: Pixel mean/std the model was trained with.
        interpolation: Resize interpolation of open_clip's preprocessing.
        resize_mode: open_clip's inference resize mode (``"shortest"``, ``"longest"``, ``"squash"``).
    """
    return {
        "model_cfg": dict(model_cfg),
        "preprocess_cfg": {
            "mean": list(normalization.mean),
            "std": list(normalization.std),
            "interpolation": interpolation,
            "resize_mode": resize_mode,
        },
    }


def _canonical(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


# ---------------------------------------------------------------------------------------------------------------
# Prompt ensembling and the text-embedding cache
# ---------------------------------------------------------------------------------------------------------------


def ensemble_text_embeddings(
    encode_text: TextEncodeFn,
    classes: Sequence[Sequence[str]],
    templates: Sequence[str],
    *,
    batch_size: int = 256,
) -> Tensor:
    """Prompt-ensembled, L2-normalised text embeddings, one per class.

    For each surface form ``s`` of a class and each template ``t``, ``e = normalize(encode_text(t.format(s)))``;
    a form's embedding is ``normalize(mean_t e)``; a class's embedding is ``normalize(mean_s form)``.

    Args:
        encode_text: Maps ``N`` strings to ``[N, D]`` embeddings (e.g. :meth:`ClipModel.encode_text`).
        classes: For each class, its surface forms (name first, then synonyms), each non-empty.
        templates: Prompt templates with one ``{}`` each.
        batch_size: Prompts per ``encode_text`` call.

    Returns:
        ``[C, D]`` float32 L2-normalised embeddings on the encoder's device.
    """
    if not templates:
        raise ValueError("templates is empty; pass at least one template such as 'a photo of a {}.'")
    bad = [template for template in templates if template.count("{}") != 1]
    if bad:
        raise ValueError(f"each template needs exactly one '{{}}' placeholder; bad: {bad[:3]}")
    if any(not forms for forms in classes):
        raise ValueError("every class needs at least one surface form (its name)")
    prompts = [template.format(form) for forms in classes for form in forms for template in templates]
    if not prompts:
        raise ValueError("classes is empty; nothing to embed")
    chunks = [encode_text(prompts[start : start + batch_size]) for start in range(0, len(prompts), batch_size)]
    prompt_embeddings = F.normalize(torch.cat(chunks).float(), dim=-1)
    per_form = prompt_embeddings.reshape(-1, len(templates), prompt_embeddings.shape[-1])
    form_embeddings = F.normalize(per_form.mean(dim=1), dim=-1)
    class_embeddings = []
    start = 0
    for forms in classes:
        class_embeddings.append(F.normalize(form_embeddings[start : start + len(forms)].mean(dim=0), dim=-1))
        start += len(forms)
    return torch.stack(class_embeddings)


class TextEmbeddingCache:
    """Ensembled class embeddings keyed by model identity + templates + surface forms, in memory and on disk.

    Entries are per class, so two concept sets sharing a class share its entry. The in-memory store is this
    object's; with ``directory`` every entry is also written there (one small ``.pt`` tensor per class, loaded
    with ``weights_only=True``) and read back by any later cache pointing at the same folder. Disk entries are only
    written for models whose identity is stable (named weights, a weights file digest); a randomly initialised
    model keeps its entries in memory. The cache assumes the text tower does not change: call :meth:`clear` after
    training it.

    Attributes:
        directory: On-disk cache folder, or ``None`` for memory only.
        hits: Classes served from memory or disk since creation.
        misses: Classes that had to be encoded.
    """

    def __init__(self, directory: str | Path | None = None) -> None:
        self.directory = Path(directory) if directory is not None else None
        self._entries: dict[str, Tensor] = {}
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay; delete the folder to drop them)."""
        self._entries.clear()

    def embeddings(
        self,
        encode_text: TextEncodeFn,
        identity: str,
        classes: Sequence[Sequence[str]],
        templates: Sequence[str],
        *,
        persistent: bool = True,
    ) -> Tensor:
        """``[C, D]`` ensembled embeddings (see :func:`ensemble_text_embeddings`), encoding only unseen classes.

        Args:
            encode_text: Maps ``N`` strings to ``[N, D]``.
            identity: Names the model's weights; equal identities must mean equal text towers.
            classes: Surface forms per class.
            templates: Prompt templates.
            persistent: Whether entries may be written to / read from :attr:`directory`.

        Returns:
            ``[C, D]`` float32 embeddings on the device ``encode_text`` returns (CPU for cached-only results).
        """
        keys = [_cache_key(identity, templates, forms) for forms in classes]
        found: dict[int, Tensor] = {}
        for index, key in enumerate(keys):
            entry = self._entries.get(key)
            if entry is None and persistent and self.directory is not None:
                path = self.directory / f"{key}.pt"
                if path.is_file():
                    entry = torch.load(path, map_location="cpu", weights_only=True)
                    self._entries[key] = entry
            if entry is not None:
                found[index] = entry
        missing = [index for index in range(len(keys)) if index not in found]
        self.hits += len(found)
        self.misses += len(missing)
        device: torch.device | None = None
        if missing:
            computed = ensemble_text_embeddings(encode_text, [classes[i] for i in missing], templates)
            device = computed.device
            for row, index in enumerate(missing):
                entry = computed[row].detach().to("cpu", torch.float32).clone()
                self._entries[keys[index]] = entry
                found[index] = entry
                if persistent and self.directory is not None:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    _atomic_torch_save(entry, self.directory / f"{keys[index]}.pt")
        stacked = torch.stack([found[index] for index in range(len(keys))])
        return stacked if device is None else stacked.to(device)


def _cache_key(identity: str, templates: Sequence[str], forms: Sequence[str]) -> str:
    payload = json.dumps({"model": identity, "templates": list(templates), "forms": list(forms)}, sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


def _atomic_torch_save(tensor: Tensor, path: Path) -> None:
    tmp = path.with_suffix(f".{uuid.uuid4().hex}.tmp")
    torch.save(tensor, tmp)
    tmp.replace(path)


@dataclass(frozen=True, eq=False)
class ConceptEmbeddings:
    """The text side of a concept set: ensembled embeddings and the output label of each.

    Attributes:
        embeddings: ``[K, D]`` L2-normalised text embeddings: one per concept, plus one per background name
            under a :class:`seg_core.BackgroundClass` policy (those come first).
        row_labels: ``K`` label ids (into ``label_names``), one per row; background rows map to 0.
        label_names: The concept set's ``label_names``.
        text_labels: Labels that have text rows, in order (all labels except a thresholded background).
    """

    embeddings: Tensor
    row_labels: tuple[int, ...]
    label_names: tuple[str, ...]
    text_labels: tuple[int, ...]

    def __post_init__(self) -> None:
        if self.embeddings.ndim != 2 or self.embeddings.shape[0] != len(self.row_labels):
            raise ValueError(
                f"embeddings must be [K, D] with K={len(self.row_labels)} rows, got {tuple(self.embeddings.shape)}"
            )

    def similarities(self, features: Tensor) -> Tensor:
        """Cosine similarity of dense features to each text label.

        Args:
            features: ``[B, D, h, w]`` dense features (any norm; normalised here).

        Returns:
            ``[B, T, h, w]`` with ``T = len(text_labels)``: per label, the maximum cosine over its rows.
        """
        if features.ndim != 4 or features.shape[1] != self.embeddings.shape[1]:
            raise ValueError(
                f"features must be [B, {self.embeddings.shape[1]}, h, w] to match the text embeddings, "
                f"got {tuple(features.shape)}"
            )
        text = self.embeddings.to(device=features.device, dtype=features.dtype)
        return self.reduce_rows(torch.einsum("bdhw,kd->bkhw", F.normalize(features, dim=1), text))

    def reduce_rows(self, row_scores: Tensor) -> Tensor:
        """``[B, K, ...]`` scores per text row -> ``[B, T, ...]`` per text label (the maximum over a label's rows)."""
        if len(set(self.row_labels)) == len(self.row_labels):
            return row_scores
        rows = torch.tensor(self.row_labels, device=row_scores.device)
        return torch.stack([row_scores[:, rows == label].amax(dim=1) for label in self.text_labels], dim=1)


def concept_embeddings(
    encode_text: TextEncodeFn,
    concepts: ConceptSet,
    *,
    identity: str | None = None,
    cache: TextEmbeddingCache | None = None,
    persistent: bool = True,
) -> ConceptEmbeddings:
    """Ensembled text embeddings of a concept set under its templates, synonyms and background policy.

    Args:
        encode_text: Maps ``N`` strings to ``[N, D]``.
        concepts: The classes, templates, synonyms and background policy.
        identity: Model identity for the cache (required with ``cache``).
        cache: Optional :class:`TextEmbeddingCache`.
        persistent: Whether the cache may use its disk folder for this model.
    """
    templates = concepts.template_list()
    classes: list[tuple[str, ...]] = []
    row_labels: list[int] = []
    background = concepts.background
    offset = 1 if concepts.has_background else 0
    if background.kind == "class":
        classes.extend((name,) for name in background.names)
        row_labels.extend(0 for _ in background.names)
    for index, name in enumerate(concepts.names):
        classes.append(concepts.prompts_for(name))
        row_labels.append(index + offset)
    if cache is not None:
        if identity is None:
            raise ValueError("concept_embeddings got a cache but no identity; pass identity=clip.identity")
        embeddings = cache.embeddings(encode_text, identity, classes, templates, persistent=persistent)
    else:
        embeddings = ensemble_text_embeddings(encode_text, classes, templates)
    text_labels = tuple(dict.fromkeys(row_labels))
    return ConceptEmbeddings(
        embeddings=embeddings,
        row_labels=tuple(row_labels),
        label_names=concepts.label_names,
        text_labels=text_labels,
    )


# ---------------------------------------------------------------------------------------------------------------
# The model wrapper
# ---------------------------------------------------------------------------------------------------------------


class ClipModel(nn.Module):
    """A typed open_clip model implementing :class:`seg_core.ImageTextEncoder`.

    Build it with :func:`load_clip`. Images given to :meth:`encode_image` and :meth:`dense_features` are
    normalised pixels ``[B, 3, H, W]`` of any size (ViT positional embeddings are interpolated); texts are strings,
    tokenised with the model's own open_clip tokenizer.

    Attributes:
        model: The open_clip model (``CLIP`` or ``CustomTextCLIP``).
        name: The model name as given to :func:`load_clip` (``"ViT-B-16"``, ``"hf-hub:..."``, ``"local-dir:..."``).
        pretrained: The pretrained tag or file, or ``None``.
        normalization: Pixel mean/std of the model's preprocessing.
        image_size: ``(height, width)`` the model was trained at.
        preprocess: open_clip's inference transform (PIL image -> normalised tensor).
        dense_variant: What :meth:`dense_features` returns (see :func:`seg_models.dense_clip.dense_clip_features`).
        text_cache: The cache :meth:`concept_embeddings` uses.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        *,
        name: str,
        pretrained: str | None = None,
        preprocess: Callable[[Any], Tensor] | None = None,
        weights_digest: str | None = None,
        dense_variant: DenseVariant = "maskclip",
        text_cache: TextEmbeddingCache | None = None,
    ) -> None:
        super().__init__()
        visual = getattr(model, "visual", None)
        if not isinstance(visual, nn.Module):
            raise TypeError(f"{type(model).__name__} has no vision tower at .visual; pass an open_clip CLIP model")
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.pretrained = pretrained
        self.preprocess = preprocess
        self.dense_variant: DenseVariant = dense_variant
        self.text_cache = text_cache if text_cache is not None else TextEmbeddingCache()
        preprocess_cfg: dict[str, Any] = dict(getattr(visual, "preprocess_cfg", {}) or {})
        mean = preprocess_cfg.get("mean", getattr(visual, "image_mean", None)) or open_clip.OPENAI_DATASET_MEAN
        std = preprocess_cfg.get("std", getattr(visual, "image_std", None)) or open_clip.OPENAI_DATASET_STD
        self.normalization = Normalization(mean=_triple(mean, "mean"), std=_triple(std, "std"))
        size = preprocess_cfg.get("size", getattr(visual, "image_size", 224))
        height, width = (size, size) if isinstance(size, int) else size
        self.image_size: tuple[int, int] = (int(height), int(width))
        self._weights_digest = weights_digest
        self._random_id = (
            uuid.uuid4().hex if weights_digest is None and pretrained is None and not _is_schema(name) else None
        )

    @property
    def visual(self) -> nn.Module:
        """The open_clip vision tower."""
        visual = self.model.visual
        assert isinstance(visual, nn.Module)
        return visual

    @property
    def embed_dim(self) -> int:
        """Dimension of the joint embedding space."""
        projection = getattr(self.model, "text_projection", None)
        if isinstance(projection, nn.Linear):
            return int(projection.out_features)
        if isinstance(projection, Tensor):
            return int(projection.shape[-1])
        output_dim = getattr(self.visual, "output_dim", None)
        if isinstance(output_dim, int):
            return output_dim
        raise AttributeError(f"cannot tell the embedding size of {type(self.model).__name__}")

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    @property
    def identity(self) -> str:
        """What names these weights, for caches: name, tag or weights digest; unique per random model."""
        parts = [self.name]
        if self.pretrained is not None:
            parts.append(f"pretrained={self.pretrained}")
        if self._weights_digest is not None:
            parts.append(f"sha256={self._weights_digest}")
        if self._random_id is not None:
            parts.append(f"random={self._random_id}")
        return "|".join(parts)

    @property
    def has_stable_identity(self) -> bool:
        """Whether :attr:`identity` names the same weights in another process (not randomly initialised)."""
        return self._random_id is None

    def tokenize(self, texts: Sequence[str]) -> Tensor:
        """``[N, context_length]`` token ids from the model's own tokenizer, on the model's device."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string; wrap it in a list")
        return self.tokenizer(list(texts)).to(self.device)

    def encode_text(self, texts: Sequence[str]) -> Tensor:
        """Embed ``N`` texts into ``[N, D]`` (not L2-normalised)."""
        encode = cast(Callable[[Tensor], Tensor], self.model.encode_text)
        return encode(self.tokenize(texts))

    def encode_image(self, images: Tensor) -> Tensor:
        """Embed normalised images ``[B, 3, H, W]`` of any size into ``[B, D]`` (not L2-normalised).

        At the training size this equals open_clip's ``model.encode_image``; at other sizes the positional
        embedding is interpolated (ViT) or the attention pool's is (ModifiedResNet).
        """
        return global_clip_features(self.visual, images)

    def dense_features(self, images: Tensor) -> Tensor:
        """Per-location embeddings ``[B, D, H // s, W // s]`` in the joint space (``s``: the tower's stride)."""
        return dense_clip_features(self.visual, images, variant=self.dense_variant)

    def forward(self, images: Tensor) -> Tensor:
        """Same as :meth:`encode_image`."""
        return self.encode_image(images)

    @torch.no_grad()
    def concept_embeddings(self, concepts: ConceptSet) -> ConceptEmbeddings:
        """Ensembled, cached text embeddings of a concept set (see :func:`concept_embeddings`)."""
        return concept_embeddings(
            self.encode_text,
            concepts,
            identity=self.identity,
            cache=self.text_cache,
            persistent=self.has_stable_identity,
        )


def _triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    if len(values) != 3:
        raise ValueError(f"the model's preprocessing {what} must have 3 values (RGB), got {list(values)}")
    return float(values[0]), float(values[1]), float(values[2])


def _is_schema(name: str) -> bool:
    return name.startswith(("hf-hub:", "local-dir:"))


# ---------------------------------------------------------------------------------------------------------------
# Loaders
# ---------------------------------------------------------------------------------------------------------------


def load_clip(
    name: str,
    pretrained: str | None = None,
    *,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    cache_dir: str | Path | None = None,
    text_cache: TextEmbeddingCache | None = None,
    dense_variant: DenseVariant = "maskclip",
    **open_clip_kwargs: Any,
) -> ClipModel:
    """Load any open_clip model through open_clip's own factory, with its preprocessing and tokenizer.

    Args:
        name: A built-in or registered architecture (``"ViT-B-16"``, ``"RN50"``, see
            :func:`register_model_config`), ``"hf-hub:org/name"`` or ``"local-dir:PATH"`` (a folder with
            :data:`CONFIG_FILE_NAME` and :data:`WEIGHTS_FILE_NAME`).
        pretrained: For a plain architecture name: an open_clip pretrained tag (``"openai"``) or a checkpoint
            file; ``None`` gives random weights. Must be ``None`` for ``hf-hub:`` and ``local-dir:``, whose
            weights come from the source.
        device: Where to put the model.
        precision: open_clip precision (``"fp32"``, ``"bf16"``, ``"fp16"``, ...).
        cache_dir: open_clip's download cache.
        text_cache: Cache for ensembled text embeddings (a fresh in-memory one by default).
        dense_variant: What :meth:`ClipModel.dense_features` returns.
        **open_clip_kwargs: Passed to ``open_clip.create_model_and_transforms`` (e.g. ``force_quick_gelu``).

    Returns:
        The model in eval mode.

    Raises:
        ValueError: ``pretrained`` given together with a ``hf-hub:``/``local-dir:`` name.
        FileNotFoundError: A ``local-dir:`` folder, its config or its weights are missing.
    """
    weights_digest: str | None = None
    if _is_schema(name):
        if pretrained is not None:
            raise ValueError(
                f"pretrained={pretrained!r} cannot be combined with {name!r}: the weights of a hf-hub:/local-dir: "
                "source come from the source itself; pass pretrained=None"
            )
        if name.startswith("local-dir:"):
            weights_digest = _file_digest(_local_dir_weights(Path(name.removeprefix("local-dir:"))))
    elif pretrained is not None and Path(pretrained).is_file():
        weights_digest = _file_digest(Path(pretrained))
    model, _, preprocess = open_clip.create_model_and_transforms(
        name,
        pretrained=pretrained,
        device=device,
        precision=precision,
        cache_dir=None if cache_dir is None else str(cache_dir),
        **open_clip_kwargs,
    )
    tokenizer = open_clip.get_tokenizer(name, cache_dir=None if cache_dir is None else str(cache_dir))
    model.eval()
    return ClipModel(
        model,
        tokenizer,
        name=name,
        pretrained=pretrained,
        preprocess=preprocess,
        weights_digest=weights_digest,
        dense_variant=dense_variant,
        text_cache=text_cache,
    )


def _local_dir_weights(folder: Path) -> Path:
    if not folder.is_dir():
        raise FileNotFoundError(f"local-dir:{folder} is not a folder; give the folder holding {CONFIG_FILE_NAME}")
    if not (folder / CONFIG_FILE_NAME).is_file():
        raise FileNotFoundError(
            f"local-dir:{folder} has no {CONFIG_FILE_NAME}; write seg_models.clip.local_dir_config(...) there as JSON"
        )
    preferred = folder / WEIGHTS_FILE_NAME
    if preferred.is_file():
        return preferred
    others = sorted(p for suffix in ("*.safetensors", "*.bin", "*.pth") for p in folder.glob(suffix))
    if not others:
        raise FileNotFoundError(
            f"local-dir:{folder} has a config but no weights; save the model's state_dict() as {WEIGHTS_FILE_NAME} "
            "(safetensors.torch.save_file) so the model does not silently load with random weights"
        )
    # open_clip picks among several files by its own preference order; hashing them all keeps the identity honest.
    return others[0] if len(others) == 1 else folder


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]

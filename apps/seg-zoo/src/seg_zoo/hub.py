"""``load`` / ``save_pretrained`` / ``push_to_hub`` / ``pull``: zoo checkpoints on disk and on the Hugging Face Hub.

Sources :func:`load` understands (timm's and open_clip's grammar, plus seg's own):

- a zoo name ``method-arch.tag`` (``seg zoo list``): the bundled copy when the wheel ships it, else its Hub repo;
- ``hf-hub:org/name[@revision]``: a seg checkpoint (``config.json`` manifest + ``model.safetensors``); for the CLIP
  methods an open_clip Hub model, for ``groupvit`` a transformers GroupViT (``nvidia/groupvit-gcc-yfcc``);
- ``local-dir:PATH`` or ``PATH``: a folder written by :func:`save_pretrained` or by a ``seg train`` recipe; an
  official GroupViT ``.pth`` only with ``allow_pickle=True`` (then read with ``torch.load(weights_only=True)``);
- ``bundled:NAME``: a model shipped in the wheel (:mod:`seg_zoo.bundled`);
- for ``maskclip`` / ``dense-clip``: an open_clip ``NAME/TAG`` such as ``ViT-B-16/openai``;
- ``None``: the method's synthetic-world checkpoint.

A zoo checkpoint is refused, with the field or file named, when its manifest has unknown fields or another major
``format_version``, when ``model.safetensors`` differs from the sha256 in the manifest, or when it ships pickle
weights and the caller has not opted in.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from seg_core import (
    CLIP_MEAN_STD,
    CheckpointManifest,
    ConfigError,
    Normalization,
    Preprocessing,
    Segmenter,
    ZooEntry,
    ZooResult,
)
from seg_core.zoo import ZOO_NAME_PATTERN
from seg_zoo import bundled as _bundled
from seg_zoo.build import (
    CLIP_METHODS,
    PresetSpec,
    build_clip_segmenter,
    build_grouping_segmenter,
    build_native,
    check_method,
    trained_method,
)
from seg_zoo.card import model_card, results_from_training
from seg_zoo.formats import (
    MANIFEST_FILE,
    NATIVE_FORMATS,
    PICKLE_SUFFIXES,
    WEIGHTS_FILE,
    NativeFormat,
    check_files,
    detect_native,
    file_digest,
    is_zoo_folder,
    native_format,
    read_manifest,
    read_training,
    stage_native,
)
from seg_zoo.registry import default_entry, entries, get_entry

if TYPE_CHECKING:
    from seg_models.clip import ClipModel

__all__ = [
    "ResolvedModel",
    "build_resolved",
    "load",
    "load_clip_model",
    "pull",
    "push_to_hub",
    "resolve",
    "save_pretrained",
]

SourceKind = Literal["zoo", "native", "open_clip", "transformers", "pickle"]
_HUB_SOURCE = re.compile(r"^hf-hub:([A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(.+))?$")
_CARD_FILE = "README.md"


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model source's files are and how to read them.

    Attributes:
        method: The method it runs as.
        source: The name to record in results (``hf-hub:org/name@rev``, a zoo name, ``bundled:NAME`` ...).
        kind: ``zoo`` (manifest folder), ``native`` (a ``seg train`` folder), ``open_clip`` (loaded by open_clip from
            ``target``), ``transformers`` (a transformers GroupViT at ``target``) or ``pickle`` (a torch file).
        folder: The local folder, for ``zoo`` and ``native``.
        target: What ``open_clip``/``transformers``/``pickle`` sources hand to their loader.
        manifest: The parsed ``config.json`` of a zoo folder.
        native: The native layout of a ``native`` folder.
        entry: The zoo entry it came from, if any.
    """

    method: str
    source: str
    kind: SourceKind
    folder: Path | None = None
    target: str | None = None
    manifest: CheckpointManifest | None = None
    native: NativeFormat | None = None
    entry: ZooEntry | None = None

    def description(self) -> dict[str, Any]:
        """The model's native description (``reco.json``, ``reclip.json`` ...), from its folder or its manifest;
        ``{}`` for open_clip, transformers and pickle weights."""
        if self.manifest is not None:
            native = self.manifest.architecture.get("native")
            return dict(native) if isinstance(native, dict) else {}
        if self.folder is not None and self.native is not None:
            content = json.loads((self.folder / self.native.sidecar).read_text(encoding="utf-8"))
            return content if isinstance(content, dict) else {}
        return {}


# Segmenters loaded by :func:`load` remember where they came from, so ``save_pretrained(segmenter, ...)`` works.
_PROVENANCE: weakref.WeakKeyDictionary[Any, ResolvedModel] = weakref.WeakKeyDictionary()


# ---------------------------------------------------------------------------------------------------------------
# Resolving a source
# ---------------------------------------------------------------------------------------------------------------


def _parse_hub(source: str) -> tuple[str, str | None]:
    match = _HUB_SOURCE.match(source)
    if match is None:
        raise ConfigError(f"model {source!r}: write a Hub source as 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
    return match.group(1), match.group(2)


def _resolve_folder(folder: Path, method: str | None, source: str, allow_pickle: bool) -> ResolvedModel:
    if is_zoo_folder(folder):
        manifest = read_manifest(folder)
        kind = manifest.architecture.get("kind")
        try:
            layout = native_format(str(kind))
        except ConfigError as error:
            raise ConfigError(f"{folder / MANIFEST_FILE}: architecture.kind: {error}") from None
        chosen = check_method(method, manifest.method, layout, str(folder))
        return ResolvedModel(chosen, source, "zoo", folder=folder, manifest=manifest, native=layout)
    fmt = detect_native(folder)
    if fmt is None:
        pickles = sorted(p.name for p in folder.glob("*") if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            return _resolve_pickle(folder / pickles[0], method, source, allow_pickle)
        raise ConfigError(
            f"model {source}: {folder} holds no seg model (no config.json manifest and none of "
            f"{', '.join(sorted({f.sidecar for f in NATIVE_FORMATS}))}); pass a folder written by "
            "seg_zoo.save_pretrained or `seg train METHOD`"
        )
    chosen = check_method(method, trained_method(folder, fmt), fmt, str(folder))
    return ResolvedModel(chosen, source, "native", folder=folder, native=fmt)


def _resolve_pickle(path: Path, method: str | None, source: str, allow_pickle: bool) -> ResolvedModel:
    if not allow_pickle:
        raise ConfigError(
            f"model {source}: {path.name} is a pickle checkpoint, which can run code when loaded; seg loads "
            "safetensors. Pass allow_pickle=True (--allow-pickle) only for a file you trust: it is then read with "
            "torch.load(weights_only=True)"
        )
    if method not in (None, "groupvit"):
        raise ConfigError(
            f"model {source}: pickle checkpoints are read for groupvit only (official .pth), not {method}"
        )
    return ResolvedModel("groupvit", source, "pickle", target=str(path))


def _resolve_hub(repo_id: str, revision: str | None, method: str | None, source: str, **hub: Any) -> ResolvedModel:
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        config = Path(hf_hub_download(repo_id, MANIFEST_FILE, revision=revision, **hub))
    except LocalEntryNotFoundError:
        raise  # offline and not cached: say so, rather than guess another format
    except (EntryNotFoundError, RepositoryNotFoundError):
        # No config.json: an open_clip Hub model (open_clip_config.json) for the CLIP methods.
        if method in CLIP_METHODS or method is None:
            return ResolvedModel(method or "maskclip", source, "open_clip", target=source)
        raise
    if is_zoo_folder(config.parent):
        folder = Path(snapshot_download(repo_id, revision=revision, **hub))
        return _resolve_folder(folder, method, source, allow_pickle=False)
    content = json.loads(config.read_text(encoding="utf-8"))
    if isinstance(content, dict) and content.get("model_type") == "groupvit":
        chosen = "groupvit" if method is None else method
        if chosen != "groupvit":
            raise ConfigError(f"model {source}: a transformers GroupViT runs as groupvit, not {method}")
        return ResolvedModel("groupvit", source, "transformers", target=source)
    if method in CLIP_METHODS:
        return ResolvedModel(method, source, "open_clip", target=source)
    raise ConfigError(
        f"model {source}: its config.json is neither a seg manifest nor a transformers GroupViT; "
        "is it a seg checkpoint? (seg zoo info / seg zoo push write them)"
    )


def _bundled_available(name: str) -> Path | None:
    try:
        return _bundled.bundled_model_dir(name)
    except (KeyError, FileNotFoundError):
        return None


def _resolve_entry(entry: ZooEntry, method: str | None, *, prefer_bundled: bool, **hub: Any) -> ResolvedModel:
    folder = _bundled_available(entry.bundled) if entry.bundled and prefer_bundled else None
    if folder is not None:
        return replace(_resolve_folder(folder, method, entry.name, False), source=entry.name, entry=entry)
    if entry.weights_format == "open_clip":
        chosen = method if method in CLIP_METHODS else entry.method
        target = entry.open_clip if entry.open_clip else f"hf-hub:{entry.hf_hub_id}"
        return ResolvedModel(chosen, entry.name, "open_clip", target=target, entry=entry)
    if entry.hf_hub_id is None:
        raise ConfigError(f"zoo entry {entry.name}: its bundled weights are not installed and it names no Hub repo")
    source = f"hf-hub:{entry.hf_hub_id}@{entry.revision}"
    if entry.weights_format == "transformers":
        return ResolvedModel(entry.method, entry.name, "transformers", target=source, entry=entry)
    resolved = _resolve_hub(entry.hf_hub_id, entry.revision, method or entry.method, source, **hub)
    return replace(resolved, source=entry.name, entry=entry)


def resolve(
    source: str | Path | None = None,
    *,
    method: str | None = None,
    allow_pickle: bool = False,
    prefer_bundled: bool = True,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> ResolvedModel:
    """Find a model's files (downloading Hub checkpoints into the cache) and decide how to read them.

    Args:
        source: Any source of the module docstring; ``None`` is ``method``'s synthetic-world checkpoint.
        method: The method to run it as; ``None``: the one that trained it. Another method's checkpoint is refused.
        allow_pickle: Accept pickle checkpoints (read with ``weights_only=True``).
        prefer_bundled: For zoo names with bundled weights, use those (no network); false: the Hub repo.
        cache_dir: Hub cache folder (default: huggingface_hub's).
        token: Hub token for private repositories.

    Raises:
        ConfigError: Bad source, another method's model, an invalid manifest or a pickle without opt-in.
        KeyError: An unknown zoo name (with close matches).
        FileNotFoundError: A local path that does not exist.
    """
    hub: dict[str, Any] = {"cache_dir": cache_dir, "token": token}
    if source is None:
        if method is None:
            raise ConfigError("model: give a source (zoo name, hf-hub:, local-dir:) or a method for its default")
        return _resolve_entry(default_entry(method), method, prefer_bundled=prefer_bundled, **hub)
    text = str(source)
    if text.startswith("bundled:"):
        name = text.removeprefix("bundled:")
        return _resolve_folder(_bundled.bundled_model_dir(name), method, text, allow_pickle)
    if text.startswith("hf-hub:"):
        repo_id, revision = _parse_hub(text)
        return _resolve_hub(repo_id, revision, method, text, **hub)
    path = Path(text.removeprefix("local-dir:")).expanduser()
    if text.startswith("local-dir:") or path.exists() or isinstance(source, Path):
        if path.is_dir():
            return _resolve_folder(path, method, text, allow_pickle)
        if path.is_file() and path.suffix in PICKLE_SUFFIXES:
            return _resolve_pickle(path, method, text, allow_pickle)
        raise FileNotFoundError(f"model {text}: no model folder at {path}")
    if text.startswith(("/", ".", "~")) or text.count("/") > 1:
        raise FileNotFoundError(
            f"model {text}: no folder at {path}; pass a folder written by `seg train METHOD` or save_pretrained"
        )
    if ZOO_NAME_PATTERN.match(text):
        return _resolve_entry(get_entry(text), method, prefer_bundled=prefer_bundled, **hub)
    if method in CLIP_METHODS or (method is None and "/" in text):
        return ResolvedModel(method or "maskclip", text, "open_clip", target=text)
    raise ConfigError(
        f"model {text!r} is not a zoo name (seg zoo list), hf-hub:org/name[@rev], local-dir:PATH or an existing "
        "folder" + (f", and {method} models are not open_clip names" if method else "")
    )


# ---------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------


def _open_clip(target: str, device: str) -> ClipModel:
    from seg_models.clip import load_clip

    if target.startswith(("hf-hub:", "local-dir:")):
        return load_clip(target, device=device)
    name, _, tag = target.removeprefix("open_clip:").partition("/")
    return load_clip(name, tag or None, device=device)


def load_clip_model(source: str | None = None, *, device: str = "cpu") -> tuple[ClipModel, str]:
    """A CLIP from any source (zoo name, ``hf-hub:``, ``local-dir:``, ``bundled:``, open_clip ``NAME/TAG``);
    ``None`` is the reference synthetic-world CLIP. Returns the model and the name to record."""
    from seg_models.clip import load_clip

    resolved = resolve(source, method="maskclip")
    if resolved.kind == "open_clip":
        return _open_clip(str(resolved.target), device), resolved.source
    if resolved.native is None or resolved.native.kind != "clip" or resolved.folder is None:
        raise ConfigError(f"model {resolved.source}: holds a {resolved.method} model, not a CLIP")
    if resolved.kind == "native":
        return load_clip(f"local-dir:{resolved.folder}", device=device), resolved.source
    with tempfile.TemporaryDirectory(prefix="seg-zoo-") as tmp:
        assert resolved.manifest is not None
        check_files(resolved.folder, resolved.manifest)
        _, native = stage_native(resolved.folder, resolved.manifest, Path(tmp))
        return load_clip(f"local-dir:{native}", device=device), resolved.source


def build_resolved(
    resolved: ResolvedModel, *, preset: PresetSpec = None, device: str = "cpu", allow_pickle: bool = False
) -> Segmenter:
    """The segmenter of a model :func:`resolve` found (what :func:`load` does after resolving).

    The segmenter remembers its source, so :func:`save_pretrained` can save it again.
    """
    segmenter = _build(resolved, preset, device, allow_pickle)
    # A segmenter that cannot be weakly referenced simply cannot be re-saved by identity.
    with contextlib.suppress(TypeError):
        _PROVENANCE[segmenter] = resolved
    return segmenter


def _build(resolved: ResolvedModel, preset: PresetSpec, device: str, allow_pickle: bool) -> Segmenter:
    def clip_loader(source: str) -> ClipModel:
        return load_clip_model(source, device=device)[0]

    if resolved.kind == "open_clip":
        return build_clip_segmenter(resolved.method, _open_clip(str(resolved.target), device), preset)
    if resolved.kind in ("transformers", "pickle"):
        from seg_models.groupvit import load_groupvit

        return build_grouping_segmenter(load_groupvit(str(resolved.target), device=device), preset)
    assert resolved.folder is not None
    assert resolved.native is not None
    if resolved.kind == "native":
        return build_native(resolved.method, resolved.folder, resolved.native, preset, clip_loader, device=device)
    assert resolved.manifest is not None
    check_files(resolved.folder, resolved.manifest, allow_pickle=allow_pickle)
    if preset is None and resolved.manifest.protocol is not None:
        preset = resolved.manifest.protocol
    with tempfile.TemporaryDirectory(prefix="seg-zoo-") as tmp:
        fmt, native = stage_native(resolved.folder, resolved.manifest, Path(tmp))
        return build_native(resolved.method, native, fmt, preset, clip_loader, device=device)


def load(
    source: str | Path | None = None,
    *,
    method: str | None = None,
    preset: PresetSpec = None,
    device: str = "cpu",
    allow_pickle: bool = False,
    prefer_bundled: bool = True,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> Segmenter:
    """A ready :class:`seg_core.Segmenter` from a zoo name, ``hf-hub:``, ``local-dir:`` or folder.

    Args:
        source: See the module docstring; ``None`` with ``method``: its synthetic-world checkpoint.
        method: The method to run it as (``None``: the one that trained it; ``dense-clip`` runs a MaskCLIP CLIP).
        preset: Protocol preset, or a function of the model's geometry returning one; ``None``: the preset its
            manifest records, else the segmenter's default.
        device: Where the weights go.
        allow_pickle: Accept pickle checkpoints, read with ``torch.load(weights_only=True)``.
        prefer_bundled: Zoo names with weights in the wheel load those (no network).
        cache_dir: Hub cache folder.
        token: Hub token.

    Example:
        >>> segmenter = seg_zoo.load("reclip-deeplab-r18-tiny.synthetic")  # doctest: +SKIP
        >>> output = segmenter.segment(images, ConceptSet(names=("cow", "grass")))  # doctest: +SKIP
    """
    resolved = resolve(
        source,
        method=method,
        allow_pickle=allow_pickle,
        prefer_bundled=prefer_bundled,
        cache_dir=cache_dir,
        token=token,
    )
    return build_resolved(resolved, preset=preset, device=device, allow_pickle=allow_pickle)


def pull(
    source: str,
    out: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> Path:
    """Download a zoo checkpoint from the Hub (a zoo name or ``hf-hub:org/name[@rev]``) into the cache.

    Args:
        source: Zoo name (its Hub repo, even when the wheel bundles it) or ``hf-hub:`` source.
        out: Also copy its files into this folder.

    Returns:
        The folder holding the files (``out`` when given).
    """
    resolved = resolve(source, prefer_bundled=False, cache_dir=cache_dir, token=token)
    if resolved.kind != "zoo" or resolved.folder is None:
        raise ConfigError(
            f"model {source}: pull downloads seg checkpoints; this one is {resolved.kind} weights "
            f"({resolved.target}), which load() fetches through their own library"
        )
    assert resolved.manifest is not None
    check_files(resolved.folder, resolved.manifest)
    if out is None:
        return resolved.folder
    target = Path(out)
    target.mkdir(parents=True, exist_ok=True)
    for item in resolved.folder.iterdir():
        if item.is_file():
            shutil.copyfile(item, target / item.name)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Saving and publishing
# ---------------------------------------------------------------------------------------------------------------


def _dig(mapping: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def _preprocessing(sidecar: Mapping[str, Any], training: Mapping[str, Any] | None) -> Preprocessing:
    sizes = (
        _dig(sidecar, "image_size"),
        _dig(sidecar, "vision", "image_size"),
        _dig(sidecar, "groupvit", "vision", "image_size"),
        _dig(sidecar, "model_cfg", "vision_cfg", "image_size"),
        _dig(sidecar, "recipe", "world", "size"),
        _dig(training, "recipe", "world", "size"),
    )
    size = next((s for s in sizes if s is not None), 224)
    size = int(size[0] if isinstance(size, list) else size)
    stats = (
        _dig(sidecar, "normalization"),
        _dig(sidecar, "groupvit", "normalization"),
        _dig(sidecar, "preprocess_cfg"),
    )
    found = next((s for s in stats if isinstance(s, Mapping) and "mean" in s and "std" in s), None)
    normalization = (
        Normalization(mean=tuple(found["mean"]), std=tuple(found["std"])) if found is not None else CLIP_MEAN_STD
    )
    interpolation = _dig(sidecar, "preprocess_cfg", "interpolation")
    return Preprocessing(
        image_size=size,
        normalization=normalization,
        interpolation=interpolation if interpolation in ("nearest", "bilinear") else "bicubic",
    )


def _label_names(fmt: NativeFormat, folder: Path, sidecar: Mapping[str, Any]) -> tuple[str, ...]:
    names = _dig(sidecar, "label_names") or _dig(sidecar, "config", "class_names")
    if isinstance(names, list):
        return tuple(str(n) for n in names)
    if fmt.kind == "reco":
        from seg_models.reco import load_reference_embeddings

        return load_reference_embeddings(folder).names
    return ()


def _public_upstream(source: str) -> str:
    """A zoo name for ``bundled:NAME`` upstream weights; other public sources unchanged; local paths refused."""
    if source.startswith("bundled:"):
        name = source.removeprefix("bundled:")
        for entry in entries():
            if entry.bundled == name:
                return entry.name
        return source
    if source.startswith("hf-hub:") or ZOO_NAME_PATTERN.match(source) or re.match(r"^[\w.-]+/[\w.-]+$", source):
        return source
    raise ConfigError(
        f"upstream: the model's CLIP is the local folder {source!r}, which a published checkpoint cannot name; "
        "pass upstream={'clip': ZOO_NAME or 'hf-hub:org/name'} (--upstream-clip) naming where it is published"
    )


def _versions() -> dict[str, str]:
    """The installed seg distributions' versions, recorded in a checkpoint's manifest."""
    from seg_core.versions import NOT_INSTALLED, installed_versions

    return {name: version for name, version in installed_versions() if version != NOT_INSTALLED}


def _protocol_and_signatures(
    results: Sequence[ZooResult], label_names: Sequence[str]
) -> tuple[Any, tuple[ZooResult, ...]]:
    from seg_eval.presets import get_preset

    names = {r.preset for r in results if r.preset}
    if len(names) != 1:
        return None, tuple(results)
    protocol = get_preset(names.pop())
    signature = protocol.signature(list(label_names) or None)
    return protocol, tuple(r if r.signature else r.model_copy(update={"signature": signature}) for r in results)


def _native_source(model: object, staging: Path) -> ResolvedModel:
    """A :class:`ResolvedModel` for what ``save_pretrained`` was given (written natively into ``staging`` when it
    is an in-memory GroupViT/PGSeg)."""
    if isinstance(model, str | Path):
        return resolve(model)
    remembered = _PROVENANCE.get(model) if _weakrefable(model) else None
    if remembered is not None:
        return remembered
    from seg_models.groupvit import GroupViT, GroupViTSegmenter
    from seg_models.pgseg import PGSeg, save_pgseg

    network = model.model if isinstance(model, GroupViTSegmenter) else model
    if isinstance(network, PGSeg):
        save_pgseg(network, staging)
        return resolve(staging)
    if isinstance(network, GroupViT):
        from seg_models.groupvit import save_groupvit

        save_groupvit(network, staging)
        return resolve(staging)
    raise TypeError(
        f"save_pretrained: cannot save a {type(model).__name__}; pass a model folder (written by `seg train METHOD`"
        " or save_pretrained), a segmenter returned by seg_zoo.load, or a GroupViT/PGSeg (or its segmenter)"
    )


def _weakrefable(model: object) -> bool:
    try:
        weakref.ref(model)
    except TypeError:
        return False
    return True


def save_pretrained(
    model: object,
    folder: str | Path,
    *,
    name: str | None = None,
    upstream: Mapping[str, str] | None = None,
    results: Sequence[ZooResult] | None = None,
    license: str = "apache-2.0",
    repo_id: str | None = None,
) -> Path:
    """Write a zoo checkpoint: ``model.safetensors``, ``config.json`` (manifest) and ``README.md`` (model card).

    Args:
        model: A model folder (``seg train`` output or another zoo folder), any :func:`load` source, a segmenter
            returned by :func:`load`, or an in-memory GroupViT/PGSeg (or its ``GroupViTSegmenter``).
        folder: Where to write; created, or its three files replaced (other files are left alone).
        name: The zoo name it is published as (``method-arch.tag``).
        upstream: Weights it needs by role (``{"clip": "maskclip-vit-tiny-p8.synthetic"}``); default: the CLIP its
            folder names, with ``bundled:`` names turned into zoo names.
        results: Its numbers; default: those its ``training.json`` records.
        license: SPDX id of the weights' license (the model card's ``license``).
        repo_id: The Hub repo it will be pushed to (used in the card's loading example).

    Returns:
        ``folder``.

    Raises:
        ConfigError: The model names its CLIP by a local path and ``upstream`` is not given; or the source is not a
            seg checkpoint (open_clip or transformers weights are loaded from their own hubs, not republished).
    """
    target = Path(folder)
    with tempfile.TemporaryDirectory(prefix="seg-zoo-save-") as tmp:
        resolved = _native_source(model, Path(tmp) / "in-memory")
        if resolved.kind == "zoo":
            assert resolved.manifest is not None
            assert resolved.folder is not None
            check_files(resolved.folder, resolved.manifest)
            manifest = resolved.manifest
            weights = resolved.folder / WEIGHTS_FILE
            updates: dict[str, Any] = {}
            if name is not None:
                updates["name"] = name
            if upstream is not None:
                updates["upstream"] = dict(upstream)
            if results is not None:
                updates["results"] = tuple(results)
            manifest = manifest.model_copy(update=updates)
        elif resolved.kind == "native":
            assert resolved.folder is not None
            assert resolved.native is not None
            manifest, weights = _manifest_from_native(resolved, name, upstream, results)
        else:
            raise ConfigError(
                f"save_pretrained: {resolved.source} is {resolved.kind} weights ({resolved.target}); they are loaded "
                "from their own hub by name (a zoo entry with weights_format), not republished as seg checkpoints"
            )
        staged = Path(tmp) / "out"
        staged.mkdir()
        shutil.copyfile(weights, staged / WEIGHTS_FILE)
        manifest = manifest.model_copy(update={"files": {WEIGHTS_FILE: file_digest(staged / WEIGHTS_FILE)}})
        (staged / _CARD_FILE).write_text(model_card(manifest, repo_id=repo_id, license=license), encoding="utf-8")
        (staged / MANIFEST_FILE).write_text(manifest.to_json() + "\n", encoding="utf-8")
        # Everything was written before the target is touched: a failure above leaves it as it was.
        target.mkdir(parents=True, exist_ok=True)
        for item in (WEIGHTS_FILE, _CARD_FILE, MANIFEST_FILE):
            shutil.move(str(staged / item), str(target / item))
    return target


def _manifest_from_native(
    resolved: ResolvedModel,
    name: str | None,
    upstream: Mapping[str, str] | None,
    results: Sequence[ZooResult] | None,
) -> tuple[CheckpointManifest, Path]:
    folder, fmt = resolved.folder, resolved.native
    assert folder is not None
    assert fmt is not None
    sidecar: dict[str, Any] = json.loads((folder / fmt.sidecar).read_text(encoding="utf-8"))
    training = read_training(folder)
    needs_clip = isinstance(sidecar.get("clip"), str) and not (
        fmt.kind == "reclip" and sidecar.get("kind") == "student"
    )
    links = dict(upstream) if upstream is not None else {}
    if upstream is None and needs_clip:
        links["clip"] = _public_upstream(str(sidecar["clip"]))
    label_names = _label_names(fmt, folder, sidecar)
    found = tuple(results) if results is not None else results_from_training(training, fmt.kind)
    protocol, found = _protocol_and_signatures(found, label_names)
    recipe = _dig(training, "recipe")
    entry_name = name or (resolved.entry.name if resolved.entry is not None else None)
    manifest = CheckpointManifest(
        name=entry_name,
        method=resolved.method,
        method_config=recipe if isinstance(recipe, dict) and "method" in recipe else {},
        architecture={"kind": fmt.kind, "native": sidecar},
        preprocessing=_preprocessing(sidecar, training),
        label_names=label_names,
        protocol=protocol,
        upstream=links,
        training=training,
        results=found,
        versions=_versions(),
    )
    return manifest, folder / fmt.weights


def push_to_hub(
    model: object,
    repo_id: str,
    *,
    tag: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    token: str | None = None,
    **save_options: Any,
) -> str:
    """Save ``model`` as a zoo checkpoint and upload it to the Hub repo ``repo_id`` (created if missing).

    Args:
        model: What :func:`save_pretrained` accepts.
        repo_id: ``org/name``.
        tag: Also tag the new commit (load it later as ``hf-hub:org/name@TAG``).
        private: Create the repo as private.
        commit_message: Default: ``"Upload <name or method> with seg-zoo"``.
        token: Hub token (default: the logged-in one).
        **save_options: ``name``, ``upstream``, ``results``, ``license`` of :func:`save_pretrained`.

    Returns:
        The commit sha.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="seg-zoo-push-") as tmp:
        folder = save_pretrained(model, Path(tmp) / "checkpoint", repo_id=repo_id, **save_options)
        manifest = read_manifest(folder)
        api.create_repo(repo_id, private=private, exist_ok=True)
        message = commit_message or f"Upload {manifest.name or manifest.method} with seg-zoo"
        commit = api.upload_folder(repo_id=repo_id, folder_path=folder, commit_message=message)
    if tag is not None:
        api.create_tag(repo_id, tag=tag, revision=commit.oid)
    return str(commit.oid)

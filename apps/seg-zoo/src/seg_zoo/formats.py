"""The model folders seg's trainers write, and how a zoo checkpoint wraps one.

Every trainer writes a *native* folder: one safetensors file of weights next to one JSON file that describes the
network (``reclip.json``, ``zutis.json``, ...; GroupViT's is transformers-like ``config.json``) and a
``training.json`` (recipe, seeds, metrics). A *zoo* checkpoint, what :func:`seg_zoo.save_pretrained` writes and the
Hub holds, is the timm/open_clip layout instead::

    model.safetensors   the same tensors
    config.json         a seg_core.CheckpointManifest: the native description under ``architecture``, the
                        training record, upstream weights, results, and the sha256 of model.safetensors
    README.md           the model card

Loading a zoo checkpoint checks the manifest and the digest, then lays the native folder out again in a temporary
folder (a hard link, no copy of the weights) so that each method's own loader reads it: one reader per method.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seg_core import CheckpointManifest, ConfigError, FileDigest

__all__ = [
    "MANIFEST_FILE",
    "NATIVE_FORMATS",
    "WEIGHTS_FILE",
    "NativeFormat",
    "check_files",
    "detect_native",
    "file_digest",
    "is_zoo_folder",
    "native_format",
    "read_manifest",
    "read_training",
    "stage_native",
]

MANIFEST_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
TRAINING_FILE = "training.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


@dataclass(frozen=True)
class NativeFormat:
    """One native folder layout.

    Attributes:
        kind: The layout's name (``clip``, ``reco``, ``groupvit`` ...).
        sidecar: The JSON file describing the network.
        weights: The safetensors file.
        methods: The methods that can run it; the first is the one a folder without ``training.json`` is read as.
    """

    kind: str
    sidecar: str
    weights: str
    methods: tuple[str, ...]


# Order matters: GroupViT's ``config.json`` is the least specific marker, so it is tried last.
NATIVE_FORMATS: tuple[NativeFormat, ...] = (
    NativeFormat("clip", "open_clip_config.json", "open_clip_model.safetensors", ("maskclip", "dense-clip")),
    NativeFormat("reco", "reco.json", "reco_references.safetensors", ("reco",)),
    NativeFormat("reco-plus", "reco_plus.json", "model.safetensors", ("reco-plus",)),
    NativeFormat("pgseg", "pgseg.json", "model.safetensors", ("pgseg", "simcon")),
    NativeFormat("reclip", "reclip.json", "model.safetensors", ("reclip",)),
    NativeFormat("zutis", "zutis.json", "model.safetensors", ("zutis",)),
    NativeFormat("groupvit", "config.json", "model.safetensors", ("groupvit", "simcon")),
)
_BY_KIND = {fmt.kind: fmt for fmt in NATIVE_FORMATS}


def native_format(kind: str) -> NativeFormat:
    """The native layout named ``kind``."""
    try:
        return _BY_KIND[kind]
    except KeyError:
        raise ConfigError(f"unknown model folder kind {kind!r}; known: {', '.join(_BY_KIND)}") from None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ConfigError(f"malformed JSON in {path}: {error}") from None


def is_zoo_folder(folder: Path) -> bool:
    """Whether ``folder`` holds a zoo checkpoint (its ``config.json`` is a manifest with a ``format_version``)."""
    path = folder / MANIFEST_FILE
    if not path.is_file():
        return False
    content = _read_json(path)
    return isinstance(content, dict) and "format_version" in content and "method" in content


def detect_native(folder: Path) -> NativeFormat | None:
    """The native layout of ``folder``, or ``None`` when it holds none (a zoo folder is not native)."""
    if is_zoo_folder(folder):
        return None
    for fmt in NATIVE_FORMATS:
        if (folder / fmt.sidecar).is_file() and (folder / fmt.weights).is_file():
            return fmt
    return None


def read_training(folder: Path) -> dict[str, Any] | None:
    """``training.json`` of a native folder, or ``None``."""
    path = folder / TRAINING_FILE
    content = _read_json(path) if path.is_file() else None
    return content if isinstance(content, dict) else None


def file_digest(path: Path) -> FileDigest:
    """sha256 and size of ``path``, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return FileDigest(sha256=digest.hexdigest(), size=path.stat().st_size)


def read_manifest(folder: Path) -> CheckpointManifest:
    """Parse and validate ``config.json`` of a zoo folder.

    Raises:
        ConfigError: Unknown fields, another major ``format_version``, or malformed values; the message names the
            field (``config.json: format_version: ...``).
    """
    path = folder / MANIFEST_FILE
    if not path.is_file():
        raise ConfigError(f"{folder} is not a seg checkpoint: it has no {MANIFEST_FILE}")
    content = _read_json(path)
    if not isinstance(content, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(content).__name__}")
    try:
        return CheckpointManifest.parse(content)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def check_files(folder: Path, manifest: CheckpointManifest, *, allow_pickle: bool = False) -> None:
    """Refuse a checkpoint whose files differ from the digests in its manifest, or that ships pickles.

    Raises:
        ConfigError: A file listed in the manifest is missing or its sha256/size differs; or the folder holds a
            pickle weights file (``.bin``, ``.pt`` ...) and ``allow_pickle`` is false.
    """
    if WEIGHTS_FILE not in manifest.files:
        raise ConfigError(f"{folder / MANIFEST_FILE}: files has no digest of {WEIGHTS_FILE}; re-save the checkpoint")
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ConfigError(f"{folder}: {name} is listed in {MANIFEST_FILE} but missing")
        found = file_digest(path)
        if found != expected:
            raise ConfigError(
                f"{path}: sha256 {found.sha256[:12]}... ({found.size} bytes) differs from {MANIFEST_FILE} "
                f"({expected.sha256[:12]}..., {expected.size} bytes): the file is corrupt or was replaced; "
                "download it again (seg zoo pull) or re-save the checkpoint"
            )
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles and not allow_pickle:
        raise ConfigError(
            f"{folder} holds pickle files ({', '.join(pickles)}), which can run code when loaded; seg reads only "
            f"{WEIGHTS_FILE}. Remove them, or pass allow_pickle=True if you trust the source"
        )


def stage_native(folder: Path, manifest: CheckpointManifest, into: Path) -> tuple[NativeFormat, Path]:
    """Lay a zoo checkpoint out as its native folder under ``into`` (hard links, copies where links fail).

    The manifest's ``upstream["clip"]`` replaces the ``clip`` the native description names, so a checkpoint
    published with a zoo name for its CLIP loads that CLIP.

    Returns:
        The native layout and the staged folder.
    """
    kind = manifest.architecture.get("kind")
    if not isinstance(kind, str):
        raise ConfigError(f"{folder / MANIFEST_FILE}: architecture.kind is missing; re-save the checkpoint")
    fmt = native_format(kind)
    native = dict(manifest.architecture.get("native") or {})  # type: ignore[arg-type]
    if "clip" in manifest.upstream:
        native["clip"] = manifest.upstream["clip"]
    target = into / "native"
    target.mkdir(parents=True, exist_ok=True)
    (target / fmt.sidecar).write_text(json.dumps(native, indent=2) + "\n", encoding="utf-8")
    if manifest.training is not None:
        (target / TRAINING_FILE).write_text(json.dumps(manifest.training, indent=2) + "\n", encoding="utf-8")
    # The Hub cache holds relative symlinks to its blobs: link the blob itself, not the symlink.
    weights = (folder / WEIGHTS_FILE).resolve()
    try:
        os.link(weights, target / fmt.weights)
    except OSError:
        shutil.copyfile(weights, target / fmt.weights)
    return fmt, target

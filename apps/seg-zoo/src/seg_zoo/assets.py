"""Retrieval assets on the Hub: an embedding store and its faiss index as a Hugging Face *dataset* repository.

ReCo and ZUTIS retrieve images for a concept from an embedded collection (:mod:`seg_retrieval`). Embedding a large
collection is the expensive step, and none of the official code bases hosts its embeddings; here a store (and,
optionally, a faiss index built over it) is pushed and pulled like a checkpoint, so a second user curates archives
for new concepts without touching the images. Layout of the repository::

    retrieval.json     a RetrievalAssets record: encoder, count, dim, index kind, sha256 and size of every file
    README.md          a dataset card (tags, encoder, how to load)
    store/             the store folder as seg_retrieval.store writes it (plan, shards, ids, manifest)
    index/             the index folder as seg_retrieval.index writes it (optional)

A pulled repository whose files differ from ``retrieval.json`` is refused, as a checkpoint is.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import Field

from seg_core import ConfigError, FileDigest, SegModel
from seg_zoo.formats import file_digest

__all__ = [
    "ASSETS_FILE",
    "PulledAssets",
    "RetrievalAssets",
    "pull_retrieval_assets",
    "push_retrieval_assets",
    "save_retrieval_assets",
]

ASSETS_FILE = "retrieval.json"
_STORE, _INDEX = "store", "index"


class RetrievalAssets(SegModel):
    """``retrieval.json`` of a retrieval-assets repository.

    Attributes:
        format: Always ``seg-retrieval-assets``.
        format_version: ``MAJOR.MINOR``; another major is refused.
        encoder: The encoder the store records (a zoo name, open_clip name ...): queries must use the same one.
        count: Images in the store.
        dim: Embedding width.
        index_kind: The faiss index kind, or ``None`` when the repository holds the store only.
        files: sha256 and size of every file, by path relative to the repository root.
    """

    format: str = "seg-retrieval-assets"
    format_version: str = "1.0"
    encoder: str
    count: int = Field(ge=0)
    dim: int = Field(gt=0)
    index_kind: str | None = None
    files: dict[str, FileDigest] = Field(default_factory=dict)


@dataclass(frozen=True)
class PulledAssets:
    """Where a pulled repository's parts are: open them with ``EmbeddingStore.open`` / ``EmbeddingIndex.load``."""

    root: Path
    store: Path
    index: Path | None
    record: RetrievalAssets


def _card(record: RetrievalAssets, repo_id: str | None) -> str:
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(
        license="other",
        tags=["seg", "retrieval", "embeddings", "faiss", "language-guided-segmentation"],
        pretty_name=f"seg retrieval assets ({record.encoder})",
    )
    source = f"hf-hub:{repo_id}" if repo_id else "hf-hub:ORG/NAME"
    return "\n".join(
        [
            f"---\n{data.to_yaml()}\n---",
            f"# Retrieval assets: {record.count} images embedded by `{record.encoder}`",
            "",
            f"A [seg](https://github.com/seg-toolkit/seg) embedding store ({record.count} x {record.dim}, float16)"
            + (f" and its faiss index ({record.index_kind})." if record.index_kind else "."),
            "The images are not included; their ids are. Their licence is the collection's.",
            "",
            "```python",
            "import seg_zoo",
            "from seg_retrieval.index import EmbeddingIndex",
            "from seg_retrieval.store import EmbeddingStore",
            "",
            f'assets = seg_zoo.pull_retrieval_assets("{source}")',
            "store = EmbeddingStore.open(assets.store)",
            "index = EmbeddingIndex.load(assets.index)",
            "```",
            "",
            f"Query it with the same encoder (`{record.encoder}`): `seg retrieve curate --index INDEX_DIR ...`.",
            "",
        ]
    )


def _digests(root: Path) -> dict[str, FileDigest]:
    return {
        str(path.relative_to(root)): file_digest(path)
        for path in sorted(root.rglob("*"))
        if path.is_file() and path.name not in (ASSETS_FILE, "README.md")
    }


def save_retrieval_assets(
    store: str | Path, folder: str | Path, *, index: str | Path | None = None, repo_id: str | None = None
) -> Path:
    """Lay out a store (and its index) as a retrieval-assets repository in ``folder`` (which must not exist).

    Raises:
        ConfigError: The store or index is incomplete (no manifest), or the index was not built over this store's
            encoder.
    """
    from seg_retrieval.index import EmbeddingIndex, IndexManifest
    from seg_retrieval.store import EmbeddingStore

    opened = EmbeddingStore.open(store)
    index_kind = None
    if index is not None:
        built = EmbeddingIndex.load(index)
        if len(built.ids) != len(opened) or built.encoder != opened.encoder:
            raise ConfigError(
                f"index: {index} indexes {len(built.ids)} images of {built.encoder!r}, the store "
                f"{store} holds {len(opened)} of {opened.encoder!r}; build the index over this store "
                "(seg retrieve index STORE --out DIR)"
            )
        index_kind = built.config.kind
    target = Path(folder)
    if target.exists():
        raise ConfigError(f"out: {target} exists; give a new folder")
    with tempfile.TemporaryDirectory(
        prefix="seg-zoo-assets-", dir=target.parent if target.parent.exists() else None
    ) as tmp:
        staged = Path(tmp) / "assets"
        shutil.copytree(Path(store), staged / _STORE, ignore=shutil.ignore_patterns(".*"))
        if index is not None:
            shutil.copytree(Path(index), staged / _INDEX, ignore=shutil.ignore_patterns(".*"))
            # The index names its store by a local path; the copy names the store next to it.
            manifest_path = staged / _INDEX / "index.json"
            manifest = IndexManifest.load(manifest_path).model_copy(update={"store": f"../{_STORE}"})
            manifest_path.write_text(manifest.to_json() + "\n", encoding="utf-8")
        record = RetrievalAssets(
            encoder=opened.encoder,
            count=len(opened),
            dim=opened.dim,
            index_kind=index_kind,
            files=_digests(staged),
        )
        (staged / "README.md").write_text(_card(record, repo_id), encoding="utf-8")
        (staged / ASSETS_FILE).write_text(record.to_json() + "\n", encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staged), str(target))
    return target


def push_retrieval_assets(
    store: str | Path,
    repo_id: str,
    *,
    index: str | Path | None = None,
    tag: str | None = None,
    private: bool = False,
    token: str | None = None,
) -> str:
    """Upload a store (and its index) as the dataset repository ``repo_id``; returns the commit sha."""
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="seg-zoo-assets-push-") as tmp:
        folder = save_retrieval_assets(store, Path(tmp) / "assets", index=index, repo_id=repo_id)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id, repo_type="dataset", folder_path=folder, commit_message="Upload retrieval assets with seg"
        )
    if tag is not None:
        api.create_tag(repo_id, tag=tag, revision=commit.oid, repo_type="dataset")
    return str(commit.oid)


def _check(root: Path) -> RetrievalAssets:
    path = root / ASSETS_FILE
    if not path.is_file():
        raise ConfigError(f"{root} holds no {ASSETS_FILE}: it is not a seg retrieval-assets repository")
    try:
        record = RetrievalAssets.from_json(path.read_text(encoding="utf-8"))
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    if record.format_version.split(".", 1)[0] != "1":
        raise ConfigError(f"{path}: format_version {record.format_version!r}; this seg-zoo reads 1.x, upgrade it")
    found = _digests(root)
    for name, expected in record.files.items():
        if found.get(name) != expected:
            raise ConfigError(f"{root / name}: missing, or its sha256/size differs from {ASSETS_FILE}; pull it again")
    return record


def pull_retrieval_assets(
    source: str | Path,
    out: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    token: str | None = None,
) -> PulledAssets:
    """Download (``hf-hub:org/name[@rev]``) or open (a folder) retrieval assets, checking every file's digest.

    Args:
        source: A dataset repository on the Hub, or a folder written by :func:`save_retrieval_assets`.
        out: Also copy the files into this folder.
    """
    text = str(source)
    if text.startswith("hf-hub:"):
        from huggingface_hub import snapshot_download

        repo_id, _, revision = text.removeprefix("hf-hub:").partition("@")
        hub: dict[str, Any] = {"cache_dir": cache_dir, "token": token}
        root = Path(snapshot_download(repo_id, repo_type="dataset", revision=revision or None, **hub))
    else:
        root = Path(text.removeprefix("local-dir:"))
    record = _check(root)
    if out is not None:
        target = Path(out)
        shutil.copytree(root, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
        root = target
    index = root / _INDEX if record.index_kind is not None else None
    return PulledAssets(root=root, store=root / _STORE, index=index, record=record)

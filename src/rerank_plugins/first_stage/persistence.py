"""Saving and loading first stages as directories: atomic writes, a manifest with checksums, no pickle.

Every persisted stage (dense, lexical, hybrid, shards) goes through here, so each gives the same guarantees:
a save is a complete new directory or the old one, never half; a load verifies the format, version and
every file's SHA-256 before reading anything, and refuses a corrupt, truncated or foreign directory
without touching it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.schema import Document

MANIFEST_FILE = "manifest.json"
FORMAT_PREFIX = "rerank-plugins-"
BACKUP_MARK = ".old-"
"""The previous index waits beside the target as ``.<name>.old-<random>`` while a save swaps directories."""
TRASH_MARK = ".trash-"
"""A backup being removed is renamed ``.<name>.trash-<random>`` first; the next load or save finishes the job."""
"""Every index format this library writes starts with it (``rerank-plugins-faiss``, ``-bm25``, ...)."""
DOCUMENTS_FILE = "documents.jsonl"

logger = logging.getLogger(__name__)


class IndexLoadError(ValueError):
    """The directory is not a loadable index for these settings; nothing was changed."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_our_index(directory: Path) -> bool:
    """Whether ``directory`` holds an index this library wrote: a manifest whose format is one of ours."""
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("format", "")).startswith(FORMAT_PREFIX)


def save_directory(path: str | os.PathLike[str], write_files: Callable[[Path], None], manifest: dict[str, Any]) -> Path:
    """Write an index directory atomically.

    ``write_files(staging)`` writes the data files (and sub-directories) into a fresh staging directory; the
    manifest gets the SHA-256 of each file under ``files`` (relative POSIX paths) and is written last; then the
    staging directory replaces ``path``. A ``path`` that exists and is neither empty nor one of our indexes (its
    manifest names a rerank-plugins format) is never overwritten: a ``manifest.json`` of anything else is not ours.
    """
    target = Path(path)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not is_our_index(target))):
        raise FileExistsError(f"{target} exists and is not a rerank-plugins index; refusing to overwrite it")
    target.parent.mkdir(parents=True, exist_ok=True)
    recover_interrupted_save(target)
    staging = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        write_files(staging)
        names = sorted(p.relative_to(staging).as_posix() for p in staging.rglob("*") if p.is_file())
        manifest = {**manifest, "files": {name: sha256_file(staging / name) for name in names}}
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        _fsync_tree(staging)  # the data is on disk before any rename makes it the index
        backup = target.parent / f".{target.name}{BACKUP_MARK}{uuid.uuid4().hex}"
        if target.exists():
            os.replace(target, backup)  # a crash from here to the next rename leaves the old index as the backup,
        os.replace(staging, target)  # which recover_interrupted_save puts back on the next load or save
        _fsync_directory(target.parent)
        _discard(backup)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def recover_interrupted_save(target: Path) -> None:
    """Put back the previous index when a save stopped between its two renames (``target`` missing, its backup
    there): the newest backup that is one of our indexes is renamed to ``target``. A backup beside a complete
    index is what a save stopped before removing it left, and a ``.<name>.trash-*`` directory is one whose removal
    was cut off: both are removed. Nothing else is touched."""
    for trash in target.parent.glob(f".{target.name}{TRASH_MARK}*"):
        shutil.rmtree(trash, ignore_errors=True)
    backups = [b for b in target.parent.glob(f".{target.name}{BACKUP_MARK}*") if b.is_dir() and is_our_index(b)]
    if target.exists():
        if is_our_index(target):
            for backup in backups:
                _discard(backup)
        return
    if not backups:
        return
    newest = max(backups, key=lambda b: b.stat().st_mtime_ns)
    os.replace(newest, target)
    _fsync_directory(target.parent)
    logger.warning("%s: a save was interrupted; the index it was replacing is back in place", target)


def _discard(backup: Path) -> None:
    """Remove a backup: renamed to a trash name first (atomic), so a removal cut off midway never leaves a
    half-deleted directory under the backup name, where it would no longer be recognised as ours."""
    trash = backup.with_name(backup.name.replace(BACKUP_MARK, TRASH_MARK, 1))
    try:
        os.replace(backup, trash)
    except FileNotFoundError:
        return  # no previous index, or another process removed it
    shutil.rmtree(trash, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):  # files before their folders
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
        else:
            _fsync_directory(path)
    _fsync_directory(root)


def _fsync_directory(directory: Path) -> None:
    """Make a directory's entries (new files, renames) durable; a no-op where directories cannot be opened."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems (and Windows) refuse fsync on a directory
    finally:
        os.close(descriptor)


def read_manifest(
    directory: str | os.PathLike[str], format_name: str, format_version: int, required: Sequence[str] = ()
) -> dict[str, Any]:
    """The manifest of ``directory`` after checking its format, version and required keys."""
    directory = Path(directory)
    recover_interrupted_save(directory)
    if not directory.is_dir():
        raise IndexLoadError(f"{directory} is not a directory")
    try:
        manifest = json.loads((directory / MANIFEST_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IndexLoadError(f"{directory} is not a rerank-plugins index (no {MANIFEST_FILE})") from None
    except ValueError as error:
        raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is not valid JSON: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != format_name:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is not a {format_name} manifest (format {found!r})")
    if manifest.get("format_version") != format_version:
        raise IndexLoadError(
            f"{directory} has {format_name} format version {manifest.get('format_version')}; "
            f"this version reads {format_version}"
        )
    missing = [key for key in (*required, "files") if key not in manifest]
    if missing or not isinstance(manifest["files"], dict):
        raise IndexLoadError(f"{directory}/{MANIFEST_FILE} is incomplete or invalid (missing {missing})")
    return manifest


def verify_files(directory: str | os.PathLike[str], manifest: dict[str, Any], expected: Iterable[str]) -> None:
    """Refuse unless the manifest lists exactly ``expected`` and every file matches its checksum."""
    directory = Path(directory)
    expected = set(expected)
    if set(manifest["files"]) != expected:
        raise IndexLoadError(
            f"{directory}/{MANIFEST_FILE} lists {sorted(manifest['files'])}, expected {sorted(expected)}"
        )
    for name, checksum in manifest["files"].items():
        file = directory / name
        if not file.is_file():
            raise IndexLoadError(f"{directory}: {name} is missing")
        if sha256_file(file) != checksum:
            raise IndexLoadError(f"{directory}: {name} does not match its checksum (corrupt or modified)")


def write_documents(path: Path, documents: Iterable[Document]) -> None:
    """One JSON object per line: id, text, metadata."""
    with path.open("w", encoding="utf-8") as handle:
        for doc in documents:
            handle.write(json.dumps({"id": doc.id, "text": doc.text, "metadata": doc.metadata}, ensure_ascii=False))
            handle.write("\n")


def read_documents(path: Path) -> list[Document]:
    """The documents written by :func:`write_documents`; a malformed line is an :class:`IndexLoadError`."""
    documents = []
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            try:
                row = json.loads(line)
                if not isinstance(row["text"], str) or not isinstance(row["id"], str):
                    raise TypeError("id and text must be strings")
                if not isinstance(row["metadata"], dict):
                    raise TypeError("metadata must be an object")
                documents.append(Document(text=row["text"], id=row["id"], metadata=row["metadata"]))
            except (ValueError, KeyError, TypeError) as error:
                raise IndexLoadError(f"{path.parent}: {path.name} line {line_number} is malformed: {error}") from None
    if len({d.id for d in documents}) != len(documents):
        raise IndexLoadError(f"{path.parent}: {path.name} holds duplicate document ids")
    return documents

"""Folders of derived model files built once on this machine, verified on every use.

:class:`~aof_index.embeddings.onnx.OnnxEmbedding` (an ONNX export of the local weights) and
:class:`~aof_index.embeddings.static.StaticEmbedding` (a model2vec distillation of them) both
keep what they build under ``$AOF_INDEX_HOME/models/<name>/``, next to a JSON manifest that
records what the folder was built from (``expected``: the source weights' fingerprint and the
build settings) and what it holds (a ``describe`` of its files: sizes and SHA-256).

:func:`cached_folder` returns such a folder, building it first when it is missing, was built
from other weights or settings, or no longer matches its manifest (truncated, damaged).  A
build runs in a temporary sibling folder and is renamed into place under a file lock, so a
crash mid-build never leaves a half-written folder and two processes never build one folder
at the same time; leftovers of crashed builds are removed by the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "Describe",
    "cached_folder",
    "file_record",
    "fingerprint",
    "folder_record",
    "locked",
    "sha256_file",
    "slug",
]

logger = logging.getLogger(__name__)

Describe = Callable[[Path], dict[str, Any]]
"""What a built folder holds, as its manifest records it (raises ``OSError`` when a file
is missing)."""


def slug(name: str) -> str:
    """A folder name for model ``name`` (a model name or a path: its last part, lowercased)."""
    return re.sub(r"[^a-z0-9.]+", "-", Path(name).name.lower()).strip("-.") or "model"


def fingerprint(source: Path) -> str:
    """What identifies a folder of source weights: every file's relative path, size and mtime."""
    digest = hashlib.sha256(str(source.resolve()).encode())
    for path in sorted(p for p in source.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(source)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def sha256_file(path: Path) -> str:
    """SHA-256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(functools.partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_record(path: Path) -> dict[str, Any]:
    """``{"size": ..., "sha256": ...}`` of one file."""
    return {"size": path.stat().st_size, "sha256": sha256_file(path)}


def folder_record(folder: Path, *, manifest: str) -> dict[str, Any]:
    """``{"files": {relative path: file_record}}`` of every file but the manifest."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != manifest)
    return {"files": {str(p.relative_to(folder)): file_record(p) for p in files}}


def cached_folder(
    folder: Path,
    *,
    manifest: str,
    expected: dict[str, Any],
    describe: Describe,
    make: Callable[[Path], None],
    what: str,
) -> Path:
    """``folder``, verified against its manifest, built first when needed.

    Args:
        folder: the folder to return (its parent is created if missing).
        manifest: file name of the manifest inside ``folder``.
        expected: what the folder must have been built from; a manifest that differs in any
            of these keys means building again.
        describe: what the folder holds (e.g. ``file_record`` of its model file); a
            manifest that no longer matches it means the folder is damaged.
        make: writes the folder's files into the (empty, temporary) folder it is given.
        what: what is built, for log messages (``ONNX model``, ``static model``).

    Exceptions raised by ``make`` propagate; ``folder`` is then left as it was.
    """
    if _verified(folder, manifest, expected, describe, what):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with locked(folder.parent / f".{folder.name}.lock"):
        if _verified(folder, manifest, expected, describe, what):  # built while we waited
            return folder
        _remove_leftovers(folder)
        _build(folder, manifest, expected, describe, make)
    return folder


def _verified(
    folder: Path, manifest: str, expected: dict[str, Any], describe: Describe, what: str
) -> bool:
    """The folder was built from ``expected`` and still holds what its manifest says."""
    try:
        recorded = json.loads((folder / manifest).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(recorded, dict):
        return False
    if any(recorded.get(key) != value for key, value in expected.items()):
        return False
    try:
        found = describe(folder)
    except OSError:
        found = None
    if found is None or any(recorded.get(key) != value for key, value in found.items()):
        logger.warning("Cached %s in %s is damaged; building it again", what, folder)
        return False
    return True


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two builds of one folder never interleave)."""
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders of builds that crashed (the lock is held: none is in progress)."""
    for stale in folder.parent.glob(f".{folder.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def _build(
    folder: Path,
    manifest: str,
    expected: dict[str, Any],
    describe: Describe,
    make: Callable[[Path], None],
) -> None:
    """Build in a temporary sibling, write the manifest, then rename it into place."""
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        make(work)
        record = {**expected, **describe(work)}
        (work / manifest).write_text(json.dumps(record, indent=2))
        work.chmod(0o755)  # mkdtemp makes it private
        if folder.exists():
            old = Path(
                tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent)
            )
            folder.rename(old / "old")
        work.rename(folder)
    finally:
        _remove_leftovers(folder)

"""Integrity manifests: every file of a finished Zarr store with its size and content hash.

Zarr reads a missing chunk file as the array's fill value, so a store that lost a chunk (a
deleted file, a partial copy, a disk error) still opens and silently yields zeros. A manifest,
recorded when the artifact is finalised, lets a reader notice::

    {"hash": "sha256/128", "files": 280, "bytes": 11327417,
     "entries": {"obs/zarr.json": [2314, "9c0f..."], "obs/c/0/0/0/0": [48113, "1a7e..."], ...}}

``entries`` maps every file below the store root (POSIX paths relative to it) to its size in
bytes and the first 128 bits of its SHA-256 (:func:`genreward.store.hashing.hash_file`), except
the root ``zarr.json``: that file holds the manifest itself (``attrs["genreward"]["manifest"]``,
beside the ``complete`` flag it is written with). Chunks that Zarr never wrote (all fill value)
are simply not listed, and stay legitimately absent (the episode writer writes every chunk).

Checking sizes costs one ``stat`` per file; checking hashes reads the whole store (SHA-256
runs at about 1.5 GB/s on one core). See :func:`genreward.store.artifacts.open_artifact` for
when each is done.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from genreward.store.hashing import hash_file

HASH = "sha256/128"
ROOT_META = "zarr.json"  # holds the manifest, so it cannot be listed in it


def file_digest(path: str | Path) -> str:
    """The manifest's content hash of one file: the first 128 bits of its SHA-256, in hex."""
    return hash_file(path)[:32]


def store_files(root: str | Path) -> list[str]:
    """Every file below ``root`` but the root ``zarr.json``, as sorted relative POSIX paths."""
    root = Path(root)
    out = []
    for dirpath, _, filenames in os.walk(root):
        base = Path(dirpath).relative_to(root)
        for name in filenames:
            rel = (base / name).as_posix()
            if rel != ROOT_META:
                out.append(rel)
    return sorted(out)


def build_manifest(root: str | Path) -> dict[str, Any]:
    """The manifest of the store at ``root`` as it is on disk now (call once all data is written)."""
    root = Path(root)
    entries = {}
    for rel in store_files(root):
        path = root / rel
        entries[rel] = [path.stat().st_size, file_digest(path)]
    return {
        "hash": HASH,
        "files": len(entries),
        "bytes": sum(size for size, _ in entries.values()),
        "entries": entries,
    }


def _what(rel: str) -> str:
    return "metadata file" if rel.rsplit("/", 1)[-1] == ROOT_META else "chunk"


def check_manifest(root: str | Path, manifest: dict[str, Any], hashes: bool) -> list[str]:
    """What is wrong with the store at ``root`` against ``manifest`` (empty: nothing found).

    Always: every listed file exists with its recorded size. With ``hashes``: also its content
    hash, and no file is there that the manifest does not list (an extra chunk would be read
    as data)."""
    root = Path(root)
    if manifest.get("hash") != HASH:
        return [f"manifest hash {manifest.get('hash')!r} is not {HASH!r}"]
    problems = []
    # metadata files first: a lost one means a lost array, the most telling problem to report
    order = sorted(manifest["entries"].items(), key=lambda item: (_what(item[0]) == "chunk", item[0]))
    for rel, (size, digest) in order:
        path = root / rel
        try:
            actual = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{_what(rel)} {rel} is missing")
            continue
        if actual != size:
            problems.append(f"{_what(rel)} {rel} has size {actual} != {size} recorded")
        elif hashes and file_digest(path) != digest:
            problems.append(f"{_what(rel)} {rel} has a hash mismatch (same size, other content)")
    if hashes:
        listed = manifest["entries"]
        problems += [f"unexpected file {rel} (not in the manifest)" for rel in store_files(root) if rel not in listed]
    return problems

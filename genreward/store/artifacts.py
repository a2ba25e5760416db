"""Zarr v3 artifacts with provenance, written atomically and validated on read.

Every artifact is a Zarr v3 group whose ``attrs["genreward"]`` block says what produced it::

    {"kind": "goal_video", "format": 1, "complete": true, "created": "...",
     "code": {"package": ..., "git_commit": ..., "git_dirty": ...}, "runtime": {...},
     "params": {...the config subset the stage used...}, "inputs": {"name": "sha256..."}}

Stage-specific attributes (prompt, model id, ...) live beside it at the top level of attrs.
``complete`` is written last inside the temp folder, and the folder only appears under its
real name through a rename, so a crashed writer leaves nothing a reader would accept.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from genreward.store.atomic import atomic_dir
from genreward.store.hashing import canonical_json, hash_array
from genreward.store.provenance import code_version, runtime_info, utc_now

FORMAT_VERSION = 1
META_KEY = "genreward"


class ArtifactError(RuntimeError):
    pass


def _zarr():
    import zarr

    return zarr


@contextlib.contextmanager
def write_artifact(
    path: str | Path,
    kind: str,
    *,
    params: Mapping[str, Any] | None = None,
    inputs: Mapping[str, str] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """Create a Zarr v3 group at ``path`` atomically; yields the group to fill.

    ``inputs`` maps input names to content hashes (see ``genreward.store.hashing``).
    """
    zarr = _zarr()
    path = Path(path)
    with atomic_dir(path) as tmp:
        group = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        yield group
        meta = {
            "kind": kind,
            "format": FORMAT_VERSION,
            "created": utc_now(),
            "code": code_version(),
            "runtime": runtime_info(),
            "params": dict(params or {}),
            "inputs": dict(inputs or {}),
        }
        # Round-trip through canonical JSON so attrs hold only plain JSON values.
        import json

        full = {**json.loads(canonical_json(dict(attrs or {}))), META_KEY: json.loads(canonical_json(meta))}
        full[META_KEY]["complete"] = True
        group.attrs.update(full)


def add_array(
    group: Any,
    name: str,
    data: np.ndarray,
    *,
    chunks: tuple[int, ...] | None = None,
    shards: tuple[int, ...] | None = None,
    attrs: Mapping[str, Any] | None = None,
) -> Any:
    """Write ``data`` as a zstd-compressed array (chunking per first axis by default)."""
    data = np.asarray(data)
    if chunks is None:
        chunks = (1,) + data.shape[1:] if data.ndim >= 3 else data.shape or (1,)
        chunks = tuple(max(1, c) for c in chunks)
    if shards is None and data.ndim >= 3 and data.shape[0] > 1:
        # One shard file holds many per-frame chunks: few files for DVC to hash.
        shards = (data.shape[0],) + tuple(chunks[1:])
    arr = group.create_array(
        name,
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        shards=shards,
        compressors=_zstd(),
        fill_value=0 if data.dtype.kind in "biuf" else None,
    )
    arr[...] = data
    if attrs:
        arr.attrs.update(dict(attrs))
    return arr


def _zstd():
    from zarr.codecs import ZstdCodec

    return ZstdCodec(level=3)


def open_artifact(path: str | Path, kind: str | None = None) -> Any:
    """Open a complete genreward artifact read-only; raise :class:`ArtifactError` otherwise."""
    zarr = _zarr()
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact not found (has its stage run? try `dvc repro`)")
    if not (path / "zarr.json").exists():
        raise ArtifactError(f"{path}: not a Zarr v3 store (no zarr.json); delete it and re-run its stage")
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        meta = dict(group.attrs.get(META_KEY) or {})
    except Exception as e:  # corrupt metadata JSON and the like
        raise ArtifactError(f"{path}: unreadable Zarr store ({type(e).__name__}: {e})") from None
    if not meta:
        raise ArtifactError(f"{path}: not a genreward artifact (no '{META_KEY}' provenance attrs)")
    if not meta.get("complete"):
        raise ArtifactError(f"{path}: incomplete artifact (a crashed writer?); delete it and re-run its stage")
    if meta.get("format") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: artifact format {meta.get('format')} != {FORMAT_VERSION}; re-run its stage")
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{path}: expected a {kind!r} artifact, found {meta.get('kind')!r}")
    return group


def provenance(path_or_group: Any) -> dict[str, Any]:
    group = open_artifact(path_or_group) if isinstance(path_or_group, (str, Path)) else path_or_group
    return dict(group.attrs[META_KEY])


def read_array(group: Any, name: str, *, ndim: int | None = None, dtype: Any = None) -> np.ndarray:
    """Read a whole array, checking presence, rank and dtype with a message naming the store."""
    if name not in group:
        raise ArtifactError(f"{group.store}: missing array {name!r} (has: {sorted(group.array_keys())})")
    data = group[name][...]
    if ndim is not None and data.ndim != ndim:
        raise ArtifactError(f"{group.store}: array {name!r} has shape {data.shape}, expected {ndim} dims")
    if dtype is not None and data.dtype != np.dtype(dtype):
        raise ArtifactError(f"{group.store}: array {name!r} has dtype {data.dtype}, expected {np.dtype(dtype)}")
    return data


def artifact_hash(path: str | Path) -> str:
    """Content hash of an artifact's arrays (for downstream ``inputs`` provenance)."""
    group = open_artifact(path)
    from genreward.store.hashing import stable_hash

    return stable_hash({name: hash_array(group[name][...]) for name in sorted(group.array_keys())})

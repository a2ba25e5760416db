"""Zarr v3 artifacts with provenance, written atomically and validated on read.

Every artifact is a Zarr v3 group whose ``attrs["genreward"]`` block says what produced it::

    {"kind": "goal_video", "format": 1, "complete": true, "created": "...",
     "code": {"package": ..., "git_commit": ..., "git_dirty": ...}, "runtime": {...},
     "params": {...the config subset the stage used...}, "inputs": {"name": "sha256..."},
     "stage": "generate_goal_videos", "manifest": {...every file, its size and hash...}}

Stage-specific attributes (prompt, model id, ...) live beside it at the top level of attrs.
``complete`` is written last inside the temp folder, and the folder only appears under its
real name through a rename, so a crashed writer leaves nothing a reader would accept.
``manifest`` (:mod:`genreward.store.manifest`) is computed just before, from the files on disk,
so a reader also notices a store that lost or changed a chunk afterwards. ``stage`` (and
``cache_entry`` for a cache entry's store) is the producer the writer ran under
(:func:`genreward.store.provenance.producer`); errors use it to name the stage to re-run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import numpy as np

from genreward.store.atomic import atomic_dir
from genreward.store.hashing import canonical_json, hash_array
from genreward.store.manifest import build_manifest, check_manifest
from genreward.store.provenance import code_version, current_producer, runtime_info, utc_now

FORMAT_VERSION = 1
META_KEY = "genreward"
# open_artifact(verify="auto") checks content hashes of artifacts up to this size (sum of their
# files): about 45 ms (SHA-256 reads ~1.5 GB/s on one core). Larger ones (the paper profile's
# exploration data, domain videos) get the stat-only check unless a caller asks for verify="hash".
HASH_VERIFY_MAX_BYTES = 64 << 20
RERUN = "re-run the stage that writes it"

Verify = Literal["auto", "size", "hash"]


class ArtifactError(RuntimeError):
    """A missing, incomplete, damaged or otherwise unusable artifact (one-line message).

    ``path``: the artifact, when known. ``rerun``: the fix is re-running the stage that writes
    ``path``, which the message could not name (the stage layer adds the command)."""

    def __init__(self, message: str, *, path: str | Path | None = None, rerun: bool = False):
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.rerun = rerun


def remedy(meta: Mapping[str, Any]) -> str:
    """How to rebuild the artifact whose provenance block is ``meta`` (from its recorded producer)."""
    stage, entry = meta.get("stage"), meta.get("cache_entry")
    fix = f"re-run `dvc repro {stage}`" if stage else RERUN
    return f"remove the cache entry (`genreward cache rm {entry}`) and {fix}" if entry else fix


def finalise(group: Any, root: str | Path, meta: Mapping[str, Any], attrs: Mapping[str, Any] | None = None) -> None:
    """Mark the store ``group`` (on disk at ``root``, all data written) complete: ``meta`` plus
    the producer, the integrity manifest and ``complete`` go into ``attrs[META_KEY]`` (and
    ``attrs`` beside it) in one write of the root ``zarr.json``. Every artifact writer ends here."""
    import json

    full = dict(meta)
    full.update(current_producer())
    full["manifest"] = build_manifest(root)
    full["complete"] = True
    group.attrs.update({**json.loads(canonical_json(dict(attrs or {}))), META_KEY: json.loads(canonical_json(full))})


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
        finalise(group, tmp, meta, attrs)


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


def open_artifact(path: str | Path, kind: str | None = None, *, verify: Verify = "auto") -> Any:
    """Open a complete genreward artifact read-only; raise :class:`ArtifactError` otherwise.

    Besides completeness, format and ``kind``, the store is checked against the integrity
    manifest recorded when it was finalised (:mod:`genreward.store.manifest`):

    - ``verify="size"``: every listed file exists with its recorded size (one ``stat`` each);
    - ``verify="hash"``: also every file's content hash, and no unlisted file (reads it all);
    - ``verify="auto"`` (default): ``"hash"`` for artifacts up to :data:`HASH_VERIFY_MAX_BYTES`,
      ``"size"`` above.

    A missing, resized or changed file fails with one line naming the artifact, the file and
    the stage to re-run. Artifacts written before manifests existed (no ``manifest`` in their
    provenance) are refused the same way, "written by an older genreward": they cannot be
    checked, and a lost chunk would read as zeros.
    """
    zarr = _zarr()
    path = Path(path)
    if not path.exists():
        raise ArtifactError(f"{path}: artifact not found (has its stage run? try `dvc repro`)", path=path)
    if not (path / "zarr.json").exists():
        raise ArtifactError(f"{path}: not a Zarr v3 store (no zarr.json); delete it and {RERUN}", path=path, rerun=True)
    try:
        group = zarr.open_group(str(path), mode="r", zarr_format=3)
        meta = dict(group.attrs.get(META_KEY) or {})
    except Exception as e:  # corrupt metadata JSON and the like
        raise ArtifactError(
            f"{path}: unreadable Zarr store ({type(e).__name__}: {e}); {RERUN}", path=path, rerun=True
        ) from None
    if not meta:
        raise ArtifactError(f"{path}: not a genreward artifact (no '{META_KEY}' provenance attrs)", path=path)
    if not meta.get("complete"):
        raise ArtifactError(
            f"{path}: incomplete artifact (a crashed writer?); delete it and {remedy(meta)}",
            path=path,
            rerun=not meta.get("stage"),
        )
    if meta.get("format") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: artifact format {meta.get('format')} != {FORMAT_VERSION}; {remedy(meta)}",
            path=path,
            rerun=not meta.get("stage"),
        )
    if kind is not None and meta.get("kind") != kind:
        raise ArtifactError(f"{path}: expected a {kind!r} artifact, found {meta.get('kind')!r}", path=path)
    verify_manifest(path, meta, verify)
    return group


def verify_manifest(path: str | Path, meta: Mapping[str, Any], verify: Verify = "auto") -> None:
    """Check the store at ``path`` against the manifest in its provenance block ``meta`` (see
    :func:`open_artifact`); raise :class:`ArtifactError` naming the first problem."""
    path = Path(path)
    manifest = meta.get("manifest")
    if not isinstance(manifest, dict) or "entries" not in manifest:
        raise ArtifactError(
            f"{path}: no integrity manifest (written by an older genreward); {remedy(meta)}",
            path=path,
            rerun=not meta.get("stage"),
        )
    if verify not in ("auto", "size", "hash"):
        raise ValueError(f"verify={verify!r}: expected 'auto', 'size' or 'hash'")
    hashes = verify == "hash" or (verify == "auto" and manifest.get("bytes", 0) <= HASH_VERIFY_MAX_BYTES)
    problems = check_manifest(path, manifest, hashes)
    if problems:
        more = f" (and {len(problems) - 1} more damaged file(s))" if len(problems) > 1 else ""
        raise ArtifactError(
            f"{path}: damaged artifact: {problems[0]}{more}; {remedy(meta)}", path=path, rerun=not meta.get("stage")
        )


def provenance(path_or_group: Any) -> dict[str, Any]:
    group = open_artifact(path_or_group) if isinstance(path_or_group, (str, Path)) else path_or_group
    return dict(group.attrs[META_KEY])


def store_path(group: Any) -> Path | str:
    """Where ``group`` lives on disk (its store's root), for messages; the store itself otherwise."""
    root = getattr(group.store, "root", None)
    path = getattr(group, "path", "")
    return Path(root) / path if root is not None else group.store


def check_finite(data: np.ndarray, where: Any, name: str) -> np.ndarray:
    """``data`` unchanged when all its values are finite (always, for non-float dtypes); else an
    :class:`ArtifactError` naming ``where`` (the artifact), the array and the first bad index."""
    if data.dtype.kind not in "fc":
        return data
    bad = ~np.isfinite(data)
    if bad.any():
        first = np.unravel_index(int(np.argmax(bad)), data.shape)
        index = tuple(int(i) for i in first)
        raise ArtifactError(
            f"{where}: array {name!r} holds {int(bad.sum())} non-finite value(s), "
            f"the first ({data[index]}) at index {index}",
            path=where if isinstance(where, (str, Path)) else None,
        )
    return data


def read_array(
    group: Any, name: str, *, ndim: int | None = None, dtype: Any = None, finite: bool = False
) -> np.ndarray:
    """Read a whole array, checking presence, rank and dtype with a message naming the store.

    ``finite``: also require every value to be finite (:func:`check_finite`): actions, states,
    latents, which downstream code would otherwise turn into NaN losses or rewards."""
    if name not in group:
        raise ArtifactError(f"{group.store}: missing array {name!r} (has: {sorted(group.array_keys())})")
    data = group[name][...]
    if ndim is not None and data.ndim != ndim:
        raise ArtifactError(f"{group.store}: array {name!r} has shape {data.shape}, expected {ndim} dims")
    if dtype is not None and data.dtype != np.dtype(dtype):
        raise ArtifactError(f"{group.store}: array {name!r} has dtype {data.dtype}, expected {np.dtype(dtype)}")
    return check_finite(data, store_path(group), name) if finite else data


def artifact_hash(path: str | Path) -> str:
    """Content hash of an artifact's arrays (for downstream ``inputs`` provenance)."""
    group = open_artifact(path)
    from genreward.store.hashing import stable_hash

    return stable_hash({name: hash_array(group[name][...]) for name in sorted(group.array_keys())})

"""Stable content hashes: canonical JSON of inputs, files, folders, arrays."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path, PurePath
from typing import Any

import numpy as np


def _canon(obj: Any) -> Any:
    if isinstance(obj, dict):
        keys = [str(k) for k in obj]
        if len(set(keys)) != len(keys):
            raise ValueError("canonical_json: keys collide after str()")
        return {str(k): _canon(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_canon(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": hash_array(obj)}
    if isinstance(obj, np.generic):
        return _canon(obj.item())
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"canonical_json: non-finite float {obj!r}")
        return int(obj) if obj.is_integer() and abs(obj) < 2**53 else obj
    if isinstance(obj, PurePath):
        return str(obj)
    if hasattr(obj, "model_dump"):  # pydantic models
        return _canon(obj.model_dump(mode="json"))
    if obj is None or isinstance(obj, (str, int, bool)):
        return obj
    raise TypeError(f"canonical_json: cannot hash a {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys, no whitespace, numpy/pydantic/path values normalised.

    Integral floats hash like ints (``2.0`` == ``2``), so YAML ``7.5`` vs ``7.50`` agree.
    """
    return json.dumps(_canon(obj), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def stable_hash(obj: Any) -> str:
    """sha256 hex digest of :func:`canonical_json`."""
    return hashlib.sha256(canonical_json(obj).encode()).hexdigest()


def hash_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_array(arr: np.ndarray) -> str:
    arr = np.ascontiguousarray(arr)
    h = hashlib.sha256(f"{arr.dtype.str}|{arr.shape}|".encode())
    h.update(arr.data)  # the contiguous buffer itself: the same bytes as tobytes(), without the copy
    return h.hexdigest()


def hash_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_tree(path: str | Path, ignore: tuple[str, ...] = (".git", "__pycache__", ".cache")) -> str:
    """Hash of a file or a folder (relative names + contents), e.g. a model weights folder."""
    path = Path(path)
    if path.is_file():
        return hash_file(path)
    if not path.is_dir():
        raise FileNotFoundError(f"hash_tree: {path} does not exist")
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        rel = f.relative_to(path)
        if any(part in ignore for part in rel.parts):
            continue
        h.update(str(rel.as_posix()).encode() + b"\0" + hash_file(f).encode() + b"\n")
    return h.hexdigest()


def tree_signature(path: str | Path) -> str:
    """Cheap fingerprint of a file/folder: relative names, sizes and mtimes (no content read)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    h = hashlib.sha256()
    for f in files:
        st = f.stat()
        rel = f.name if f == path else f.relative_to(path).as_posix()
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def hash_tree_memo(path: str | Path, memo_file: str | Path | None) -> str:
    """:func:`hash_tree`, memoised on disk by :func:`tree_signature` (multi-GB weight folders).

    The content is re-hashed whenever any file's name, size or mtime changes.
    """
    path = Path(path).resolve()
    if memo_file is None:
        return hash_tree(path)
    from filelock import FileLock

    memo_file = Path(memo_file)
    memo_file.parent.mkdir(parents=True, exist_ok=True)
    sig = tree_signature(path)
    with FileLock(str(memo_file) + ".lock"):
        memo = json.loads(memo_file.read_text()) if memo_file.exists() else {}
        hit = memo.get(str(path))
        if hit and hit.get("signature") == sig:
            return hit["sha256"]
        digest = hash_tree(path)
        memo[str(path)] = {"signature": sig, "sha256": digest}
        tmp = memo_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(memo, indent=1, sort_keys=True))
        tmp.replace(memo_file)
    return digest

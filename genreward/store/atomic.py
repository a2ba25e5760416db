"""Atomic directory writes: build under a hidden temp name beside the target, then rename.

A reader therefore sees either the previous complete directory or the new complete one, never a
half-written one. Temp names carry the writer's PID so a later writer can remove leftovers of
crashed writers without touching a live writer's work.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(target: Path) -> list[Path]:
    """Remove temp/old siblings of ``target`` left by writers that no longer run."""
    removed = []
    parent = target.parent
    if not parent.is_dir():
        return removed
    for p in parent.glob(f".{target.name}.*-*"):
        kind_pid = p.name[len(target.name) + 2 :].split("-")
        if len(kind_pid) >= 2 and kind_pid[0] in ("tmp", "old") and kind_pid[1].isdigit():
            if not _pid_alive(int(kind_pid[1])):
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def temp_sibling(target: Path, kind: str = "tmp") -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def replace_dir(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` to ``target``, replacing an existing ``target``."""
    old = None
    if target.exists():
        old = temp_sibling(target, "old")
        os.rename(target, old)
    os.rename(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temp folder; on normal exit it becomes ``target`` atomically, on error it is removed."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    clean_stale(target)
    tmp = temp_sibling(target)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside ``path`` (same suffix); on normal exit it replaces ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write a small text file (JSON metrics, CSV) atomically."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def non_finite(obj, prefix: str = "") -> list[str]:
    """Dotted paths (``a.b[2]``) of the NaN and infinite floats in a JSON-like ``obj``."""
    import math

    if isinstance(obj, float):
        return [] if math.isfinite(obj) else [prefix or "(top level)"]
    if isinstance(obj, dict):
        return [p for k, v in obj.items() for p in non_finite(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(obj, (list, tuple)):
        return [p for i, v in enumerate(obj) for p in non_finite(v, f"{prefix}[{i}]")]
    return []


def write_json_atomic(path: str | Path, obj, allow_nan: bool = False):
    """``obj`` as indented, key-sorted JSON, written atomically; returns ``obj`` (a stage's summary).

    A NaN or infinity (not JSON; a metric is a number, or null with its reason) raises
    ``ValueError`` naming the file and the keys that hold one, and nothing is written: an earlier
    file stays as it was. ``allow_nan=True`` writes them as ``NaN``/``Infinity``."""
    import json

    bad = [] if allow_nan else non_finite(obj)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise ValueError(f"{path}: not written, non-finite value (NaN or infinity) at {shown}")
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True, allow_nan=allow_nan))
    return obj


def write_csv_atomic(path: str | Path, rows: list[dict]) -> Path:
    """``rows`` (dicts with the same keys, in order) as CSV with a header, written atomically."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return write_text_atomic(path, buf.getvalue())

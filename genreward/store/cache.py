"""Content-addressed cache shared across experiments (goal videos, ...).

An entry is a folder ``<root>/<namespace>/<key>/`` whose name is the hash of a canonical JSON
of everything that determines its content. It appears through an atomic rename, so its
existence means it is complete; ``entry.json`` inside records the inputs. Writers of the same
key serialise on a file lock: the first one builds the entry, the others find it and return
it (both succeed, one entry, one build).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from filelock import FileLock

from genreward.store.atomic import atomic_dir
from genreward.store.hashing import canonical_json, stable_hash
from genreward.store.provenance import code_version, producer, utc_now

ENTRY_FILE = "entry.json"
KEY_LEN = 32  # hex chars: 128 bits


@dataclass(frozen=True)
class CacheResult:
    key: str
    path: Path
    hit: bool


@dataclass(frozen=True)
class CacheEntry:
    namespace: str
    key: str
    path: Path
    meta: dict[str, Any]

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())


class CacheError(RuntimeError):
    pass


class ContentCache:
    def __init__(self, root: str | Path, namespace: str, lock_timeout: float = 3600.0):
        if not namespace or "/" in namespace or namespace.startswith("."):
            raise ValueError(f"bad cache namespace {namespace!r}")
        self.root = Path(root)
        self.namespace = namespace
        self.dir = self.root / namespace
        self.lock_timeout = lock_timeout

    def key(self, inputs: Mapping[str, Any]) -> str:
        return stable_hash({"namespace": self.namespace, "inputs": dict(inputs)})[:KEY_LEN]

    def path(self, key: str) -> Path:
        return self.dir / key

    def get(self, key: str) -> Path | None:
        p = self.path(key)
        return p if (p / ENTRY_FILE).is_file() else None

    def get_or_create(self, inputs: Mapping[str, Any], create: Callable[[Path], Any]) -> CacheResult:
        """Return the entry for ``inputs``, calling ``create(folder)`` to fill it on a miss."""
        key = self.key(inputs)
        hit = self.get(key)
        if hit is not None:
            return CacheResult(key, hit, True)
        self.dir.mkdir(parents=True, exist_ok=True)
        locks = self.dir / ".locks"
        locks.mkdir(exist_ok=True)
        lock = locks / f"{key}.lock"
        with FileLock(str(lock), timeout=self.lock_timeout):
            hit = self.get(key)
            if hit is not None:
                lock.unlink(missing_ok=True)
                return CacheResult(key, hit, True)
            target = self.path(key)
            with atomic_dir(target) as tmp:
                with producer(cache_entry=f"{self.namespace}/{key}"):  # its artifacts name the entry
                    create(tmp)
                meta = {
                    "key": key,
                    "namespace": self.namespace,
                    "created": utc_now(),
                    "code": code_version(),
                    "inputs": json.loads(canonical_json(dict(inputs))),
                }
                (tmp / ENTRY_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True))
            # The entry exists, so no later caller takes this lock (they return on the first
            # get()); one still waiting holds the file open and finds the entry once it gets it.
            lock.unlink(missing_ok=True)
        return CacheResult(key, target, False)

    def entries(self) -> list[CacheEntry]:
        if not self.dir.is_dir():
            return []
        out = []
        for p in sorted(self.dir.iterdir()):
            f = p / ENTRY_FILE
            if p.name.startswith(".") or not f.is_file():
                continue
            try:
                meta = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                meta = {"error": "unreadable entry.json"}
            out.append(CacheEntry(self.namespace, p.name, p, meta))
        return out

    def resolve(self, prefix: str) -> CacheEntry:
        """The one entry whose key starts with ``prefix`` (like git's short hashes)."""
        matches = [e for e in self.entries() if e.key.startswith(prefix)]
        if not matches:
            raise CacheError(f"no {self.namespace} cache entry with key {prefix!r} under {self.dir}")
        if len(matches) > 1:
            raise CacheError(f"key prefix {prefix!r} is ambiguous: {', '.join(e.key for e in matches)}")
        return matches[0]

    def remove(self, key_prefix: str) -> CacheEntry:
        entry = self.resolve(key_prefix)
        with FileLock(str(self.dir / ".locks" / f"{entry.key}.lock"), timeout=self.lock_timeout):
            shutil.rmtree(entry.path)
        return entry


def namespaces(root: str | Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))

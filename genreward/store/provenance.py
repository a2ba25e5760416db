"""What produced an artifact: code version, time, host, Python/torch versions, producing stage."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import functools
import importlib.metadata
import platform
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import genreward

_REPO = Path(__file__).resolve().parents[2]


@functools.lru_cache(maxsize=1)
def code_version() -> dict[str, object]:
    """Package version plus git commit and dirty flag of the checkout (when there is one)."""
    info: dict[str, object] = {"package": genreward.__version__, "git_commit": None, "git_dirty": None}
    try:
        commit = subprocess.run(
            ["git", "-C", str(_REPO), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        if commit.returncode == 0:
            info["git_commit"] = commit.stdout.strip()
            status = subprocess.run(
                [
                    "git",
                    "-C",
                    str(_REPO),
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    "genreward",
                    "stages",
                    "flows",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            )
            info["git_dirty"] = bool(status.stdout.strip()) if status.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def runtime_info() -> dict[str, object]:
    """Python/torch versions and host; ``torch_threads`` (this thread's intra-op count) when the
    process has loaded torch and, once :func:`genreward.runtime.configure_process` ran, whether
    the allocator settings are on. It does not import torch (about 1.5 s): a process that ran no
    torch work records the installed version only."""
    from genreward.runtime import process_settings

    info: dict[str, object] = {
        "python": platform.python_version(),
        "host": platform.node(),
        "platform": platform.platform(),
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    else:
        try:
            info["torch"] = importlib.metadata.version("torch")
        except importlib.metadata.PackageNotFoundError:  # pragma: no cover
            pass
    settings = process_settings()
    if settings:
        info["malloc_tuning"] = settings["malloc_tuning"]
    return info


# Who writes the artifacts created in the current context: ``stage`` (set around every stage
# item by ``stages.table.Stage.run_item``) and ``cache_entry`` (``<namespace>/<key>``, set by
# ``ContentCache`` while it builds an entry). Artifacts record it, so their errors name the fix.
_PRODUCER: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("genreward_producer", default={})
PRODUCER_KEYS = ("stage", "cache_entry")


@contextlib.contextmanager
def producer(**info: str) -> Iterator[None]:
    """Within the block, artifacts record ``info`` (keys of :data:`PRODUCER_KEYS`) as their producer."""
    unknown = set(info) - set(PRODUCER_KEYS)
    if unknown:
        raise ValueError(f"producer: unknown keys {sorted(unknown)}; valid: {PRODUCER_KEYS}")
    token = _PRODUCER.set({**_PRODUCER.get(), **info})
    try:
        yield
    finally:
        _PRODUCER.reset(token)


def current_producer() -> dict[str, str]:
    """What :func:`producer` set around the caller (empty outside any stage or cache build)."""
    return dict(_PRODUCER.get())

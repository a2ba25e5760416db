"""What produced an artifact: code version, time, host, Python/torch versions."""

from __future__ import annotations

import datetime as _dt
import functools
import platform
import subprocess
from pathlib import Path

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


def runtime_info() -> dict[str, str]:
    info = {"python": platform.python_version(), "host": platform.node(), "platform": platform.platform()}
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:  # pragma: no cover
        pass
    return info

"""Helpers shared by stages (no Prefect)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping


def task_paths(paths: Mapping[str, Path], task: str, defaults: Mapping[str, Path]) -> dict[str, Path]:
    """``defaults`` overridden by entries of ``paths`` named ``"<task>:<name>"``."""
    out = dict(defaults)
    prefix = f"{task}:"
    out.update({k[len(prefix):]: Path(v) for k, v in paths.items() if k.startswith(prefix)})
    return out

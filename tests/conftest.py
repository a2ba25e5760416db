from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def repo_root() -> Path:
    return REPO


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the installed ``genreward`` console script (the path DVC uses)."""
    exe = shutil.which("genreward") or str(Path(sys.executable).parent / "genreward")
    return subprocess.run(
        [exe, *args], cwd=cwd or REPO, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )

"""Figures for DVC plots: a headless pyplot and an atomic PNG save."""

from __future__ import annotations

from pathlib import Path

from genreward.store.atomic import atomic_file


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str | Path) -> Path:
    """Write ``fig`` to ``path`` atomically and close it."""
    with atomic_file(path) as tmp:
        fig.savefig(tmp)
    pyplot().close(fig)
    return Path(path)

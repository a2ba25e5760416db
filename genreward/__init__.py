"""genreward: goal-driven rewards from video diffusion models for reinforcement learning."""

from __future__ import annotations

__version__ = "0.1.0"


def _prepare_torchvision() -> None:
    # Must run before anything imports torchvision (transformers, open_clip, timm do).
    import importlib.util

    if importlib.util.find_spec("torchvision") is not None:
        from genreward.compat.torchvision_ops import ensure_importable

        ensure_importable()


_prepare_torchvision()

"""CLIP key-frame scoring (open_clip)."""

from genreward.vision.config import KeyframeConfig

__all__ = ["KeyframeConfig"]

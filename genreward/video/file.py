"""Goal videos imported from the user's files (.mp4, .gif, .npy), validated and resampled."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genreward.store.hashing import hash_file
from genreward.video.base import GenerationError, VideoSpec
from genreward.video.config import FileConfig
from genreward.video.io import VideoError, read_video, resample_frames, resize_video


class FileGenerator:
    name = "file"

    def __init__(self, cfg: FileConfig, task: str):
        if task not in cfg.paths:
            raise GenerationError(
                f"goal_video.backend=file but goal_video.file.paths has no entry for {task!r} "
                f"(has: {sorted(cfg.paths) or 'none'})"
            )
        self.path = Path(cfg.paths[task])
        self.key = f"goal_video.file.paths.{task}"
        if not self.path.is_file():
            raise GenerationError(f"goal video file for {task!r} not found: {self.path.resolve()} ({self.key})")
        self._hash = hash_file(self.path)

    def identity(self) -> dict[str, Any]:
        return {"backend": self.name, "file_sha256": self._hash}

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "path": str(self.path)}

    def generate(self, spec: VideoSpec) -> np.ndarray:
        try:
            video = read_video(self.path)
        except VideoError as e:
            raise GenerationError(f"{e}; set {self.key} to a video file (.mp4, .gif or .npy)") from None
        if len(video) < 2:
            raise GenerationError(f"{self.path}: a goal video needs at least 2 frames, found {len(video)}")
        return resize_video(resample_frames(video, spec.num_frames), spec.height, spec.width)

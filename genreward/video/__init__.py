"""Goal videos: generators (diffusers CogVideoX, scripted oracle, file), video I/O, caching.

Importing this package is light; backends import torch/diffusers/MuJoCo when used.
"""

from genreward.video.base import GenerationError, GoalVideoGenerator, VideoSpec
from genreward.video.config import DEFAULT_PROMPTS, GoalVideoConfig
from genreward.video.io import VideoError, read_video, validate_video

__all__ = [
    "DEFAULT_PROMPTS",
    "GenerationError",
    "GoalVideoConfig",
    "GoalVideoGenerator",
    "VideoError",
    "VideoSpec",
    "read_video",
    "validate_video",
]

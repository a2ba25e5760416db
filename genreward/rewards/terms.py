"""The individual reward terms, each a pure function of stored frames (and actions).

Frames are the agent's single RGB observations, uint8 ``[T, 3, H, W]`` as stored in replay.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class RewardInputError(ValueError):
    """Frames, actions or goal arrays of the wrong shape or type."""


def _frames(frames: np.ndarray, name: str = "frames") -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
        raise RewardInputError(f"{name}: expected uint8 [T, 3, H, W] frames, got {frames.dtype} {list(frames.shape)}")
    if len(frames) == 0:
        raise RewardInputError(f"{name}: no frames")
    return frames


def to_agent_frame(frame_hwc: np.ndarray, size: int) -> np.ndarray:
    """A goal-video frame uint8 [H, W, 3] -> the agent's observation format uint8 [3, size, size]."""
    from genreward.video.io import resize_video

    frame = np.asarray(frame_hwc)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise RewardInputError(f"goal frame: expected uint8 [H, W, 3], got {frame.dtype} {list(frame.shape)}")
    return resize_video(frame[None], size, size)[0].transpose(2, 0, 1).copy()


class VideoReward:
    """Cosine similarity between the VAE latent of an agent window and the goal-video latent."""

    name = "video"

    def __init__(self, encoder, goal_latent: np.ndarray):
        self.encoder = encoder
        self.goal = np.asarray(goal_latent, np.float32).ravel()
        if not np.isfinite(self.goal).all() or not self.goal.any():
            raise RewardInputError("goal latent is empty, zero or not finite; re-run encode_goal_latents")

    def windows(self, windows: Sequence[np.ndarray]) -> np.ndarray:
        """Rewards [N] for N windows of frames uint8 [T, 3, H, W] (T >= 2)."""
        from genreward.video.latents import latent_cosine

        clips = [_frames(w, "video-reward window").transpose(0, 2, 3, 1) for w in windows]
        if any(len(c) < 2 for c in clips):
            raise RewardInputError("video-reward windows need at least 2 frames")
        latents = self.encoder.encode_batch(clips)
        if latents[0].size != self.goal.size:
            raise RewardInputError(
                f"agent-window latent has {latents[0].size} values, the goal latent {self.goal.size}: "
                "encode both with the same latents config"
            )
        return np.array([latent_cosine(z.ravel(), self.goal) for z in latents], np.float32)


class FrameReward:
    """r_FB(s, a) = min_k F_k(s, a, z)ᵀz, z = B(key frame): how likely (s, a) leads to the goal frame."""

    name = "frame"

    def __init__(self, fb_model, goal_frame: np.ndarray):
        self.model = fb_model
        goal = _frames(np.asarray(goal_frame)[None], "goal frame")[0]
        if tuple(goal.shape) != tuple(fb_model.obs_shape):
            raise RewardInputError(
                f"goal frame shape {list(goal.shape)} does not match the FB model's input {list(fb_model.obs_shape)}"
            )
        self.z = fb_model.goal_z(goal)

    def steps(self, frames: np.ndarray, actions: np.ndarray, batch_size: int = 512) -> np.ndarray:
        frames = _frames(frames)
        actions = np.asarray(actions, np.float32)
        if actions.shape != (len(frames), self.model.action_dim):
            raise RewardInputError(
                f"actions: expected [{len(frames)}, {self.model.action_dim}], got {list(actions.shape)}"
            )
        out = [
            self.model.frame_reward(frames[i : i + batch_size], actions[i : i + batch_size], z=self.z)
            for i in range(0, len(frames), batch_size)
        ]
        return np.concatenate(out).astype(np.float32)


class CLIPReward:
    """VLM-RM-style baseline: per-step cosine between a frame's CLIP embedding and the prompt's."""

    name = "clip"

    def __init__(self, scorer, prompts: Sequence[str]):
        self.scorer = scorer
        self.text = scorer.encode_text(list(prompts))

    def steps(self, frames: np.ndarray) -> np.ndarray:
        frames = _frames(frames)
        return self.scorer.similarity(self.scorer.encode_frames(frames.transpose(0, 2, 3, 1)), self.text)

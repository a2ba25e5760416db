"""Scripted-expert goal videos: an oracle upper bound and the offline fallback.

The video is a rendered Meta-World scripted-expert rollout of the task (not generated from
the prompt): frames from the reset to ``tail_frames`` steps after the first success,
uniformly resampled to ``num_frames``. Artifacts record ``oracle: true``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from genreward.envs.config import EnvConfig
from genreward.video.base import GenerationError, VideoSpec
from genreward.video.config import ScriptedConfig


class ScriptedGenerator:
    name = "scripted"

    def __init__(self, cfg: ScriptedConfig, env_cfg: EnvConfig):
        self.cfg = cfg
        self.env_cfg = env_cfg

    def identity(self) -> dict[str, Any]:
        import metaworld

        return {
            "backend": self.name,
            "metaworld": getattr(metaworld, "__version__", "unknown"),
            "camera": self.env_cfg.camera,
            "episode_length": self.env_cfg.episode_length,
            "fast_render": self.env_cfg.fast_render,
            "noise_std": self.cfg.noise_std,
            "tail_frames": self.cfg.tail_frames,
        }

    def describe(self) -> dict[str, Any]:
        return {**self.identity(), "oracle": True, "note": "scripted-expert rollout, not generated from the prompt"}

    def generate(self, spec: VideoSpec) -> np.ndarray:
        from genreward.envs.experts import expert_clip, expert_policy
        from genreward.envs.metaworld_env import MetaWorldPixelEnv

        if spec.task is None:
            raise GenerationError("the scripted generator needs the Meta-World task of the spec")
        env_cfg = self.env_cfg.model_copy(update={"frame_stack": 1, "action_repeat": 1, "randomize": True})
        env = MetaWorldPixelEnv(spec.task, env_cfg, seed=spec.seed, render_size=(spec.height, spec.width))
        try:
            video, self.last_success, _ = expert_clip(
                env, expert_policy(spec.task), spec.seed, self.cfg.noise_std, spec.num_frames, self.cfg.tail_frames
            )
        finally:
            env.close()
        return video

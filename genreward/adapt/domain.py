"""Domain clips for adapting the video model: scripted-expert Meta-World episodes, rendered.

Each clip is :func:`genreward.envs.experts.expert_clip`: reset to ``tail_frames`` steps after
the first success, resampled to ``num_frames``, rendering only those frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from genreward.adapt.config import DomainVideoConfig
from genreward.envs.config import EnvConfig
from genreward.envs.workers import ExpertEnvs
from genreward.store.artifacts import open_artifact, read_array

TRAIN, VAL = 0, 1
KIND = "domain_videos"  # artifact kind of the stage's Zarr store
# Validation seeds live far from training seeds: no clip of one split shares an initial state with the other.
VAL_SEED_OFFSET = 1_000_003


@dataclass(frozen=True)
class ClipJob:
    task: str
    task_id: int
    split: int  # TRAIN | VAL
    index: int  # clip index within (task, split)

    def noise_std(self, cfg: DomainVideoConfig) -> float:
        return float(cfg.noise_stds[self.index % len(cfg.noise_stds)])

    def seeds(self, cfg: DomainVideoConfig) -> list[int]:
        """Env seeds tried in order (a failed expert episode moves on to the next one)."""
        base = cfg.seed * 7919 + self.task_id * 100_003 + (VAL_SEED_OFFSET if self.split == VAL else 0)
        return [base + self.index * cfg.max_attempts + k for k in range(cfg.max_attempts)]


@dataclass
class Clip:
    job: ClipJob
    video: np.ndarray  # uint8 [T, H, W, 3]
    seed: int
    success: bool
    episode_steps: int  # env steps of the rendered span
    attempts: int


def plan_jobs(tasks: list[str], cfg: DomainVideoConfig) -> list[ClipJob]:
    jobs = []
    for tid, task in enumerate(tasks):
        jobs += [ClipJob(task, tid, TRAIN, i) for i in range(cfg.episodes_per_task)]
        jobs += [ClipJob(task, tid, VAL, i) for i in range(cfg.val_episodes_per_task)]
    return jobs


class ClipWorker(ExpertEnvs):
    """Renders clips; keeps one env per task (used in worker processes and inline)."""

    def __init__(self, cfg: DomainVideoConfig, env_cfg: EnvConfig):
        self.cfg = cfg
        env_cfg = env_cfg.model_copy(update={"frame_stack": 1, "action_repeat": 1, "randomize": True})
        super().__init__(env_cfg, render_size=(cfg.height, cfg.width))

    def __call__(self, job: ClipJob) -> Clip:
        env, policy = self.expert_env(job.task)
        seeds = job.seeds(self.cfg)
        from genreward.envs.experts import expert_clip

        for attempt, seed in enumerate(seeds, 1):
            video, success, steps = expert_clip(
                env, policy, seed, job.noise_std(self.cfg), self.cfg.num_frames, self.cfg.tail_frames
            )
            if success or self.cfg.keep_failures or attempt == len(seeds):
                return Clip(job, video, seed, success, steps, attempt)
        raise AssertionError("unreachable")


def render_clips(
    jobs: list[ClipJob], cfg: DomainVideoConfig, env_cfg: EnvConfig, workers: int = 1, progress: bool = False
):
    """Yield a :class:`Clip` per job (any order), in ``workers`` worker processes (1: inline)."""
    from functools import partial

    from genreward.envs.workers import run_jobs

    return run_jobs(partial(ClipWorker, cfg, env_cfg), jobs, workers, progress, "domain clips")


class DomainClips:
    """The ``collect_domain_videos`` store, read back (validated): clips, task ids, split, prompts."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        g = open_artifact(self.path, KIND)
        self.group = g
        self.tasks: list[str] = list(g.attrs["tasks"])
        self.prompts: list[str] = list(g.attrs["prompts"])
        self.video = read_array(g, "video", ndim=5, dtype=np.uint8)
        self.task_id = read_array(g, "task_id", ndim=1)
        self.split = read_array(g, "split", ndim=1)
        n = len(self.video)
        if len(self.task_id) != n or len(self.split) != n:
            raise ValueError(
                f"{self.path}: video/task_id/split lengths differ ({n}, {len(self.task_id)}, {len(self.split)})"
            )

    def indices(self, split: int) -> np.ndarray:
        return np.flatnonzero(self.split == split)

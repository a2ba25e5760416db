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


class ClipWorker:
    """Renders clips; keeps one env per task (used in worker processes and inline)."""

    def __init__(self, cfg: DomainVideoConfig, env_cfg: EnvConfig):
        self.cfg = cfg
        self.env_cfg = env_cfg.model_copy(update={"frame_stack": 1, "action_repeat": 1, "randomize": True})
        self._envs: dict[str, tuple[object, object]] = {}

    def _env(self, task: str):
        if task not in self._envs:
            from genreward.envs.experts import expert_policy
            from genreward.envs.metaworld_env import MetaWorldPixelEnv

            env = MetaWorldPixelEnv(task, self.env_cfg, render_size=(self.cfg.height, self.cfg.width))
            self._envs[task] = (env, expert_policy(task))
        return self._envs[task]

    def __call__(self, job: ClipJob) -> Clip:
        env, policy = self._env(job.task)
        seeds = job.seeds(self.cfg)
        from genreward.envs.experts import expert_clip

        for attempt, seed in enumerate(seeds, 1):
            video, success, steps = expert_clip(
                env, policy, seed, job.noise_std(self.cfg), self.cfg.num_frames, self.cfg.tail_frames
            )
            if success or self.cfg.keep_failures or attempt == len(seeds):
                return Clip(job, video, seed, success, steps, attempt)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for env, _ in self._envs.values():
            env.close()
        self._envs.clear()


_WORKER: ClipWorker | None = None


def _init_worker(cfg_json: str, env_json: str) -> None:
    global _WORKER
    import atexit
    import os

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER = ClipWorker(DomainVideoConfig.model_validate_json(cfg_json), EnvConfig.model_validate_json(env_json))
    atexit.register(_WORKER.close)  # free GL contexts before the interpreter tears down


def _run_job(job: ClipJob) -> Clip:
    assert _WORKER is not None
    return _WORKER(job)


def render_clips(
    jobs: list[ClipJob], cfg: DomainVideoConfig, env_cfg: EnvConfig, workers: int = 1, progress: bool = False
):
    """Yield a :class:`Clip` per job (any order), in ``workers`` spawned processes (1: inline)."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(jobs), desc="domain clips", disable=not progress)
    if workers <= 1:
        worker = ClipWorker(cfg, env_cfg)
        try:
            for job in jobs:
                yield worker(job)
                bar.update()
        finally:
            worker.close()
            bar.close()
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: a forked child must never inherit a live GL context
    with ProcessPoolExecutor(
        workers,
        mp_context=mp.get_context("spawn"),
        initializer=_init_worker,
        initargs=(cfg.model_dump_json(), env_cfg.model_dump_json()),
    ) as pool:
        futures = [pool.submit(_run_job, job) for job in jobs]
        try:
            for fut in as_completed(futures):
                yield fut.result()
                bar.update()
        finally:
            for fut in futures:
                fut.cancel()
            bar.close()


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

"""Stage collect_domain_videos: scripted- and noisy-expert clips per task, for adapting the video model.

inputs:  none (config: tasks, prompts, domain_videos, env)
outputs: ``<data>/domain_videos.zarr``: ``video[N,T,H,W,3] uint8``, ``task_id[N]``, ``split[N]``
         (0 train, 1 validation), ``seed[N]``, ``noise_std[N]``, ``success[N]``, ``episode_steps[N]``;
         attrs ``tasks`` and ``prompts`` (the captions, by task id); ``<data>/domain_videos_previews/<task>.gif``
         (the task's first training clips side by side)
Clips are rendered in ``runtime.num_workers`` processes; the store is written atomically once
all clips exist, ordered by (task, split, index) whatever order the workers finish in.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genreward.adapt.domain import KIND, TRAIN, VAL, plan_jobs, render_clips
from genreward.config import Config
from genreward.store.artifacts import add_array, write_artifact
from genreward.store.atomic import write_json_atomic
from genreward.video.io import write_gif
from stages.table import Stage

log = logging.getLogger(__name__)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    dv = cfg.domain_videos
    tasks = list(cfg.tasks)
    jobs = plan_jobs(tasks, dv)
    clips = {}
    for clip in render_clips(
        jobs, dv, cfg.env, workers=min(cfg.runtime.num_workers, len(jobs)), progress=cfg.runtime.progress
    ):
        clips[clip.job] = clip
    ordered = [clips[j] for j in jobs]
    arrays = {
        "video": np.stack([c.video for c in ordered]),
        "task_id": np.array([c.job.task_id for c in ordered], np.int32),
        "split": np.array([c.job.split for c in ordered], np.int8),
        "clip_index": np.array([c.job.index for c in ordered], np.int32),
        "seed": np.array([c.seed for c in ordered], np.int64),
        "noise_std": np.array([c.job.noise_std(dv) for c in ordered], np.float32),
        "success": np.array([c.success for c in ordered], bool),
        "episode_steps": np.array([c.episode_steps for c in ordered], np.int32),
    }
    per_task = {}
    for tid, task in enumerate(tasks):
        sel = arrays["task_id"] == tid
        per_task[task] = {
            "train_clips": int((sel & (arrays["split"] == TRAIN)).sum()),
            "val_clips": int((sel & (arrays["split"] == VAL)).sum()),
            "success_rate": float(arrays["success"][sel].mean()),
            "mean_episode_steps": float(arrays["episode_steps"][sel].mean()),
            "attempts": int(sum(c.attempts for c in ordered if c.job.task_id == tid)),
        }
        if per_task[task]["success_rate"] < 1.0:
            log.warning(
                "%s: %d of %d clips end without success (experts failed %d tries)",
                task,
                int((~arrays["success"][sel]).sum()),
                int(sel.sum()),
                dv.max_attempts,
            )
    prompts = [dv.captions[t] for t in tasks]  # the training text of the video model
    with write_artifact(
        outputs["dataset"],
        KIND,
        params=cfg.section("domain_videos", "env", "tasks"),
        attrs={"tasks": tasks, "prompts": prompts, "per_task": per_task, "fps": cfg.goal_video.fps},
    ) as g:
        for name, value in arrays.items():
            if name == "video":
                add_array(g, name, value, chunks=(1,) + value.shape[1:], shards=(len(value),) + value.shape[1:])
            else:
                add_array(g, name, value)
    outputs["previews"].mkdir(parents=True, exist_ok=True)
    for tid, task in enumerate(tasks):
        sel = np.flatnonzero((arrays["task_id"] == tid) & (arrays["split"] == TRAIN))[:4]
        strip = np.concatenate(list(arrays["video"][sel]), axis=2)  # clips side by side
        write_gif(outputs["previews"] / f"{task}.gif", strip, fps=cfg.goal_video.fps, scale=2)
    metrics = {"clips": len(ordered), "per_task": per_task, "success_rate": float(arrays["success"].mean())}
    write_json_atomic(outputs["metrics"], metrics)
    log.info(
        "domain videos: %d clips (%d train, %d val) of %d tasks -> %s",
        len(ordered),
        int((arrays["split"] == TRAIN).sum()),
        int((arrays["split"] == VAL).sum()),
        len(tasks),
        outputs["dataset"],
    )
    return metrics


STAGE = Stage(
    "collect_domain_videos",
    "Scripted/noisy-expert domain clips per task, for adapting the video model",
    run,
    outputs={
        "dataset": "{data}/domain_videos.zarr",
        "previews": "{data}/domain_videos_previews",
        "metrics": "{data}/domain_videos_metrics.json",
    },
    params=("tasks", "env", "domain_videos"),
)

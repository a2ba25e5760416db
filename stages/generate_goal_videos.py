"""Stage generate_goal_videos: one goal video per task, through the shared content cache.

inputs:  none (config: prompts, goal_video, env)
outputs: per task ``<data>/goal_videos/<task>.zarr`` (``video[T,H,W,3] uint8``) and previews
         ``<data>/goal_videos/previews/<task>.gif`` and ``<data>/goal_videos/mp4/<task>.mp4``
returns: per-task summary (cache key, hit, generation seconds)

The cache key covers everything that determines the video (backend identity: model id +
revision or weights hash, LoRA hash, dtype; prompt, negative prompt, conditioning-image hash,
seed, frames, size, steps, guidance). A hit loads no model.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from genreward.config import Config
from genreward.store.artifacts import add_array, write_artifact
from genreward.store.cache import ContentCache
from genreward.video.generate import (
    CACHE_NAMESPACE,
    CachedVideo,
    cache_inputs,
    generate_cached,
    make_generator,
    make_spec,
)
from genreward.video.io import write_gif, write_mp4
from stages.table import Stage

log = logging.getLogger(__name__)


def goal_video_cache(cfg: Config) -> ContentCache:
    return ContentCache(cfg.store.cache_dir, CACHE_NAMESPACE)


def plan(cfg: Config, task: str):
    """(generator, spec, cache key) for ``task``; cheap: loads no model."""
    gv = cfg.goal_video
    device = cfg.resolve_device() if gv.backend == "diffusers" else "cpu"
    generator = make_generator(
        gv,
        task,
        cfg.env,
        device=device,
        cache_dir=cfg.store.cache_dir,
        progress=cfg.runtime.progress,
        diffusers=cfg.diffusers_config(),
    )
    spec = make_spec(task, cfg.prompt(task), gv, cfg.env)
    return generator, spec, goal_video_cache(cfg).key(cache_inputs(generator, spec))


def generate_task(cfg: Config, task: str, cache: ContentCache | None = None) -> CachedVideo:
    generator, spec, _ = plan(cfg, task)
    return generate_cached(generator, spec, cache or goal_video_cache(cfg))


def write_outputs(cfg: Config, task: str, result: CachedVideo, outputs: dict[str, Path]) -> None:
    gv = cfg.goal_video
    attrs = {
        "task": task,
        "prompt": cfg.prompt(task),
        "negative_prompt": gv.negative_prompt,
        "generator": result.generator,
        "oracle": bool(result.generator.get("oracle", False)),
        "seed": gv.seed,
        "steps": gv.steps,
        "guidance": gv.guidance,
        "fps": gv.fps,
        "cache_key": result.key,
        "cache_hit": result.hit,
        "generation_seconds": result.seconds,
    }
    params = cfg.section("goal_video", "env")
    params["prompt"] = cfg.prompt(task)
    with write_artifact(
        outputs["video"], "goal_video", params=params, inputs={"goal_video_cache_key": result.key}, attrs=attrs
    ) as g:
        add_array(g, "video", result.video)
    scale = max(1, 128 // max(result.video.shape[1:3]))
    write_gif(outputs["gif"], result.video, fps=gv.fps, scale=scale)
    write_mp4(outputs["mp4"], result.video, fps=gv.fps)


def run(
    cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path], generated: dict[str, float] | None = None
) -> dict:
    """``generated`` (task -> seconds): videos the caller generated into the cache just before, in
    the same run (the flow's cached Prefect task); they are recorded as new, not as cache hits."""
    (task,) = cfg.tasks
    result = generate_task(cfg, task)
    if generated and task in generated and result.hit:
        result = dataclasses.replace(result, hit=False, seconds=generated[task])
    write_outputs(cfg, task, result, outputs)
    log.info("%s: %s goal video -> %s", task, "cached" if result.hit else "new", outputs["video"])
    return {
        "cache_key": result.key,
        "cache_hit": result.hit,
        "generation_seconds": result.seconds,
        "video": str(outputs["video"]),
    }


STAGE = Stage(
    "generate_goal_videos",
    "Goal video per task, through the content-addressed cache shared by experiments",
    run,
    over="task",
    # the adapted video model (used when ``goal_video.diffusers.use_adapted``; DVC tracks it always)
    inputs={"video_model": "{video_model}"},
    outputs={
        "video": "{data}/goal_videos/{task}.zarr",
        "gif": "{data}/goal_videos/previews/{task}.gif",
        "mp4": "{data}/goal_videos/mp4/{task}.mp4",
    },
    params=("env", "goal_video", "video_model", "prompts/{task}"),
)

"""Build goal-video specs and generators from the config; generate through the shared cache."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genreward.store.artifacts import add_array, open_artifact, read_array, write_artifact
from genreward.store.cache import ContentCache
from genreward.video.base import GenerationError, GoalVideoGenerator, VideoSpec
from genreward.video.config import DiffusersConfig, GoalVideoConfig

log = logging.getLogger(__name__)

CACHE_NAMESPACE = "goal_videos"
ENTRY_STORE = "video.zarr"


def needs_condition_image(gv: GoalVideoConfig) -> bool:
    return gv.backend == "diffusers" and gv.diffusers.mode == "i2v" and gv.condition == "first_frame"


def condition_frame(task: str, gv: GoalVideoConfig, env_cfg) -> np.ndarray:
    """The task's first rendered observation at the goal-video size (seeded by ``gv.seed``)."""
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    env = MetaWorldPixelEnv(
        task, env_cfg.model_copy(update={"frame_stack": 1}), seed=gv.seed, render_size=(gv.height, gv.width)
    )
    try:
        env.reset(seed=gv.seed)
        return env.render()
    finally:
        env.close()


# The goal_video knobs that a VideoSpec takes as they are (besides the prompt, seed, task and image).
SPEC_KNOBS = ("num_frames", "height", "width", "steps", "guidance", "negative_prompt")


def goal_spec(gv: GoalVideoConfig, prompt: str, seed: int, **extra: Any) -> VideoSpec:
    """The spec of ``prompt`` with ``gv``'s frames, size, steps, guidance and negative prompt
    (``extra``: ``task``, ``image``)."""
    return VideoSpec(prompt=prompt, seed=seed, **{k: getattr(gv, k) for k in SPEC_KNOBS}, **extra)


def make_spec(task: str, prompt: str, gv: GoalVideoConfig, env_cfg) -> VideoSpec:
    image = condition_frame(task, gv, env_cfg) if needs_condition_image(gv) else None
    return goal_spec(gv, prompt, gv.seed, task=task, image=image)


def make_generator(
    gv: GoalVideoConfig,
    task: str,
    env_cfg,
    device: str = "cpu",
    cache_dir: Path | None = None,
    progress: bool = True,
    diffusers: DiffusersConfig | None = None,
) -> GoalVideoGenerator:
    """The configured backend. Cheap: no model is loaded until ``generate`` is called.

    ``diffusers`` replaces ``gv.diffusers`` (``Config.diffusers_config()``: the adapted model filled in)."""
    if gv.backend == "scripted":
        from genreward.video.scripted import ScriptedGenerator

        return ScriptedGenerator(gv.scripted, env_cfg)
    if gv.backend == "file":
        from genreward.video.file import FileGenerator

        return FileGenerator(gv.file, task)
    if gv.backend == "diffusers":
        from genreward.video.diffusers_backend import DiffusersGenerator

        memo = None if cache_dir is None else Path(cache_dir) / "weight_hashes.json"
        return DiffusersGenerator(diffusers or gv.diffusers, device=device, memo_file=memo, progress=progress)
    raise GenerationError(f"unknown goal_video.backend {gv.backend!r}")


@dataclass
class CachedVideo:
    video: np.ndarray
    key: str
    hit: bool
    seconds: float  # generation time (0 on a hit)
    path: Path  # the cache entry folder
    generator: dict[str, Any]


def cache_inputs(generator: GoalVideoGenerator, spec: VideoSpec) -> dict[str, Any]:
    return {"generator": generator.identity(), "spec": spec.cache_inputs()}


def generate_cached(generator: GoalVideoGenerator, spec: VideoSpec, cache: ContentCache) -> CachedVideo:
    """Return the video for (generator, spec) from the cache, generating it on a miss."""
    inputs = cache_inputs(generator, spec)
    key = cache.key(inputs)
    timing = {"seconds": 0.0}

    def create(folder: Path) -> None:
        t0 = time.perf_counter()
        video = generator.generate(spec)
        timing["seconds"] = time.perf_counter() - t0
        expected = (spec.num_frames, spec.height, spec.width, 3)
        if video.shape != expected or video.dtype != np.uint8:
            raise GenerationError(f"{generator.name} returned {video.dtype} {video.shape}, expected uint8 {expected}")
        with write_artifact(
            folder / ENTRY_STORE,
            "goal_video_cache",
            inputs={"cache_key": key},
            attrs={
                "generator": generator.describe(),
                "spec": spec.cache_inputs(),
                "generation_seconds": timing["seconds"],
            },
        ) as g:
            add_array(g, "video", video)

    res = cache.get_or_create(inputs, create)
    group = open_artifact(res.path / ENTRY_STORE, "goal_video_cache")
    video = read_array(group, "video", ndim=4, dtype=np.uint8)
    if res.hit:
        log.info("goal video cache hit %s (no generation)", res.key[:12])
    else:
        log.info("goal video generated in %.2f s, cached as %s", timing["seconds"], res.key[:12])
    return CachedVideo(video, res.key, res.hit, timing["seconds"], res.path, dict(group.attrs["generator"]))

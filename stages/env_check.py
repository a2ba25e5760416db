"""Stage env_check: render one upright frame per task to PNG and measure env throughput.

inputs:  none (config only)
outputs: ``thumbnails`` folder (``<task>.png`` + ``provenance.json``), ``metrics`` JSON file
returns: the metrics dict
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.envs import gl
from genreward.envs.config import ACTION_DIM
from genreward.store.atomic import atomic_dir, write_json_atomic
from genreward.store.provenance import code_version, runtime_info, utc_now
from stages.table import Stage

log = logging.getLogger(__name__)


def measure_task(task: str, cfg: Config, steps: int) -> dict[str, float]:
    """Agent steps/s of our pixel env, and raw physics steps/s of the same Meta-World env."""
    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    env = MetaWorldPixelEnv(task, cfg.env, seed=cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    actions = rng.uniform(-1, 1, size=(steps, ACTION_DIM)).astype(np.float32)
    try:
        env.reset(seed=cfg.seed)
        t0 = time.perf_counter()
        for a in actions:
            _, _, _, truncated, _ = env.step(a)
            if truncated:
                env.reset()
        pixel_rate = steps / (time.perf_counter() - t0)
        raw = env.unwrapped_metaworld
        raw.reset()
        t0 = time.perf_counter()
        for a in actions:
            raw.step(a)
            if raw.curr_path_length >= raw.max_path_length:
                raw.reset()
        physics_rate = steps / (time.perf_counter() - t0)
    finally:
        env.close()
    return {"pixel_steps_per_s": pixel_rate, "physics_steps_per_s": physics_rate}


def render_thumbnail(task: str, cfg: Config, path: Path) -> np.ndarray:
    from PIL import Image

    from genreward.envs.metaworld_env import MetaWorldPixelEnv

    env = MetaWorldPixelEnv(
        task, cfg.env.model_copy(update={"image_size": cfg.env_check.thumbnail_size}), seed=cfg.seed
    )
    try:
        env.reset(seed=cfg.seed)
        frame = env.render()
    finally:
        env.close()
    Image.fromarray(frame).save(path)
    return frame


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    backend = gl.configure()
    log.info(backend.describe())
    per_task: dict[str, dict[str, float]] = {}
    with atomic_dir(outputs["thumbnails"]) as tmp:
        for task in cfg.tasks:
            render_thumbnail(task, cfg, tmp / f"{task}.png")
            per_task[task] = measure_task(task, cfg, cfg.env_check.steps)
            log.info(
                "%s: %.1f steps/s with rendering (%d px), %.1f steps/s physics only",
                task,
                per_task[task]["pixel_steps_per_s"],
                cfg.env.image_size,
                per_task[task]["physics_steps_per_s"],
            )
        prov = {
            "created": utc_now(),
            "code": code_version(),
            "runtime": runtime_info(),
            "params": cfg.section("env", "env_check", "tasks"),
        }
        (tmp / "provenance.json").write_text(json.dumps(prov, indent=2, sort_keys=True))
    metrics = {
        "gl_backend": backend.name,
        "image_size": cfg.env.image_size,
        "tasks": per_task,
        "mean_pixel_steps_per_s": float(np.mean([v["pixel_steps_per_s"] for v in per_task.values()])),
        "mean_physics_steps_per_s": float(np.mean([v["physics_steps_per_s"] for v in per_task.values()])),
    }
    return write_json_atomic(outputs["metrics"], metrics)


STAGE = Stage(
    "env_check",
    "Render a frame per task to PNG, measure env throughput (pixels and physics)",
    run,
    outputs={"thumbnails": "{data}/env_check/thumbnails", "metrics": "{data}/env_check/metrics.json"},
    params=("tasks", "seed", "env", "env_check"),
)

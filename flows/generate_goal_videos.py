"""Flow generate-goal-videos: per task, a Prefect task keyed on the goal-video cache key
generates (or finds) the video; then the stage writes the artifacts from the cache."""

from __future__ import annotations

from prefect import flow, get_run_logger, task

from flows.common import load_run_config, run_stage
from genreward.config import Config
from stages import generate_goal_videos as stage


def _key(context, parameters) -> str:
    return f"goal-video-{parameters['key']}"


@task(name="goal-video", cache_key_fn=_key, persist_result=True, result_serializer="json")
def goal_video(cfg: Config, task_name: str, key: str) -> dict:
    result = stage.generate_task(cfg, task_name)
    if result.key != key:  # the plan and the generation must agree on what determines the video
        raise RuntimeError(f"{task_name}: cache key changed during generation ({key} -> {result.key})")
    return {"key": result.key, "hit": result.hit, "seconds": result.seconds, "entry": str(result.path)}


@flow(name="generate-goal-videos", log_prints=True)
def generate_goal_videos_flow(
    params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None, task: str | None = None
) -> dict:
    cfg = load_run_config(params, profile, overrides, task)
    logger = get_run_logger()
    cache = stage.goal_video_cache(cfg)
    for name in cfg.tasks:
        _, _, key = stage.plan(cfg, name)
        missing = cache.get(key) is None  # e.g. removed with `genreward cache rm`: Prefect's record is stale
        info = goal_video.with_options(refresh_cache=missing)(cfg, name, key)
        logger.info("%s: goal video %s (%s)", name, key[:12], "cache hit" if not missing else f"generated in {info['seconds']:.2f} s")
    return run_stage("generate_goal_videos", cfg, {}, stage.default_outputs(cfg))

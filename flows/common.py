"""Shared flow plumbing: config loading with per-run overrides, running a stage's items as tasks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from genreward.config import Config, load_config
from stages.table import Item, get_stage


def load_run_config(
    params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None, task: str | None = None
) -> Config:
    """params.yaml + profile + overrides, narrowed to ``task`` when given."""
    cfg = load_config(params, overrides=overrides or None, profile=profile)
    return cfg if task is None else cfg.for_task(task)


@task(name="stage", persist_result=False, cache_policy=NO_CACHE)
def stage_task(stage: str, cfg: Config, item: Item, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One item of a stage: paths from its declaration, ``run`` on the config narrowed to it."""
    s = get_stage(stage)
    _, outputs = s.paths(cfg, item)
    get_run_logger().info(
        "stage %s%s: profile=%s outputs=%s",
        stage,
        f" [{item.label}]" if item.label else "",
        cfg.profile,
        {k: str(v) for k, v in outputs.items()},
    )
    return s.run_item(cfg, item, **(extra or {}))


def run_stage(stage: str, cfg: Config, task: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every item of ``stage`` (only ``task``'s when given), one Prefect task each, in order. A
    ``once`` stage returns its summary; others ``{item.label: summary}``."""
    s = get_stage(stage)
    out = {
        item.label: stage_task.with_options(task_run_name=item.named(stage))(stage, cfg, item, extra)
        for item in s.items(cfg, task)
    }
    return out[""] if s.over == "once" else out

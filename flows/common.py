"""Shared flow plumbing: config loading with per-run overrides, running a stage's items as tasks."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from flows.artifacts import label_flow_run, library_logs, progress_artifacts, publish, run_name, run_tags
from genreward.config import Config, load_config
from genreward.progress import progress_sink
from stages.reports import item_report
from stages.table import Item, get_stage


def load_run_config(
    params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None, task: str | None = None
) -> Config:
    """params.yaml + profile + overrides, narrowed to ``task`` when given."""
    cfg = load_config(params, overrides=overrides or None, profile=profile)
    return cfg if task is None else cfg.for_task(task)


def item_tags(stage: str, cfg: Config, item: Item) -> list[str]:
    """Tags of one item's task run: its stage, task, method and seed, the profile."""
    tags = [f"stage:{stage}", f"profile:{cfg.profile}"]
    fields = (("task", item.task), ("method", item.method), ("seed", item.seed))
    tags += [f"{k}:{v}" for k, v in fields if v is not None]
    return tags


@task(name="stage", persist_result=False, cache_policy=NO_CACHE)
def stage_task(stage: str, cfg: Config, item: Item, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """One item of a stage: paths from its declaration, ``run`` on the config narrowed to it; its
    log lines, progress and artifacts (summary, tables, previews) go to the run."""
    with library_logs():  # in this process, whichever started it (CLI, worker, Dask)
        return _run_item(stage, cfg, item, extra)


def _run_item(stage: str, cfg: Config, item: Item, extra: dict[str, Any] | None) -> dict[str, Any]:
    s = get_stage(stage)
    inputs, outputs = s.paths(cfg, item)
    logger = get_run_logger()
    logger.info(
        "stage %s: profile %s; inputs %s; outputs %s",
        item.named(stage),
        cfg.profile,
        {k: str(v) for k, v in inputs.items()},
        {k: str(v) for k, v in outputs.items()},
    )
    with progress_sink(progress_artifacts(item.named(stage))):
        summary = s.run_item(cfg, item, **(extra or {}))
    n = publish(item_report(s, cfg, item, inputs, outputs, summary))
    logger.info("stage %s done; %d artifact(s) published", item.named(stage), n)
    return summary


def submit_options(stage: str, cfg: Config, item: Item) -> dict[str, Any]:
    """``with_options`` arguments of an item's task run: its name and tags."""
    return {"task_run_name": item.named(stage), "tags": item_tags(stage, cfg, item)}


def label_run(cfg: Config, stage: str, task: str | None = None) -> None:
    """Name and tag the current flow run after ``stage`` (and ``task``)."""
    label_flow_run(run_name(cfg, stage, task), run_tags(cfg, stage, task))


def run_stage(stage: str, cfg: Config, task: str | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every item of ``stage`` (only ``task``'s when given), one Prefect task each, in order. A
    ``once`` stage returns its summary; others ``{item.label: summary}``. The flow run is named
    after the stage (and task) and tagged."""
    label_run(cfg, stage, task)
    s = get_stage(stage)
    out = {
        item.label: stage_task.with_options(**submit_options(stage, cfg, item))(stage, cfg, item, extra)
        for item in s.items(cfg, task)
    }
    return out[""] if s.over == "once" else out

"""Shared flow plumbing: config loading with per-run overrides, running a stage as a task."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from genreward.config import Config, load_config


def load_run_config(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None,
                    task: str | None = None) -> Config:
    """params.yaml + profile + overrides, narrowed to ``task`` for per-task stages."""
    cfg = load_config(params, overrides=overrides or None, profile=profile)
    return cfg if task is None else cfg.for_task(task)


@task(name="run-stage")
def run_stage(stage: str, cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path],
              extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """``stages.<stage>.run(cfg, inputs, outputs, **extra)``."""
    module = importlib.import_module(f"stages.{stage}")
    logger = get_run_logger()
    logger.info("stage %s: profile=%s outputs=%s", stage, cfg.profile, {k: str(v) for k, v in outputs.items()})
    return module.run(cfg, inputs, outputs, **(extra or {}))


def run_per_task_stage(stage: str, params: str, profile: str | None, overrides: list[str] | None,
                       task: str | None) -> dict[str, Any]:
    """Load the config (narrowed to ``task`` when given) and run ``stages.<stage>.run`` as a task."""
    return run_stage(stage, load_run_config(params, profile, overrides, task), {}, {})

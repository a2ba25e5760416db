"""Flow select-keyframes: the key goal frame per task (CLIP argmax or last frame)."""

from __future__ import annotations

from prefect import flow

from flows.common import run_per_task_stage


@flow(name="select-keyframes", log_prints=True)
def select_keyframes_flow(params: str = "params.yaml", profile: str | None = None,
                          overrides: list[str] | None = None, task: str | None = None) -> dict:
    return run_per_task_stage("select_keyframes", params, profile, overrides, task)

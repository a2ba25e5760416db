"""Flow collect-exploration: reward-free exploration data (all tasks in one run, resumable)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage
from stages import collect_exploration as stage


@flow(name="collect-exploration", log_prints=True)
def collect_exploration_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_run_config(params, profile, overrides)
    return run_stage("collect_exploration", cfg, {}, stage.default_outputs(cfg))

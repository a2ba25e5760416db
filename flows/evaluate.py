"""Flow evaluate: learning curves, metrics and the methods × tasks table from the RL runs."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage


@flow(name="evaluate", log_prints=True)
def evaluate_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    return run_stage("evaluate", load_run_config(params, profile, overrides), {}, {})

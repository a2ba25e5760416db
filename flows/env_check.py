"""Flow env-check: the worked example of the DVC -> CLI -> Prefect flow -> stage pattern."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage
from stages import env_check


@flow(name="env-check", log_prints=True)
def env_check_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_run_config(params, profile, overrides)
    return run_stage("env_check", cfg, {}, env_check.default_outputs(cfg))

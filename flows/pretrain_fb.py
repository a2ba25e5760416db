"""Flow pretrain-fb: FB representation from the exploration dataset (resumable)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage


@flow(name="pretrain-fb", log_prints=True)
def pretrain_fb_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_run_config(params, profile, overrides)
    return run_stage("pretrain_fb", cfg, {}, {})

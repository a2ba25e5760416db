"""Flow collect-domain-videos: scripted/noisy-expert clips per task for adapting the video model."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage


@flow(name="collect-domain-videos", log_prints=True)
def collect_domain_videos_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_run_config(params, profile, overrides)
    return run_stage("collect_domain_videos", cfg, {}, {})

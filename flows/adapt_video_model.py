"""Flow adapt-video-model: train (from scratch) or LoRA-finetune the video model on the domain clips (resumable)."""

from __future__ import annotations

from prefect import flow

from flows.common import load_run_config, run_stage


@flow(name="adapt-video-model", log_prints=True)
def adapt_video_model_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
    cfg = load_run_config(params, profile, overrides)
    return run_stage("adapt_video_model", cfg, {}, {})

"""Flow encode-goal-latents: goal videos in the 3D-VAE latent space."""

from __future__ import annotations

from prefect import flow

from flows.common import run_per_task_stage


@flow(name="encode-goal-latents", log_prints=True)
def encode_goal_latents_flow(params: str = "params.yaml", profile: str | None = None,
                             overrides: list[str] | None = None, task: str | None = None) -> dict:
    return run_per_task_stage("encode_goal_latents", params, profile, overrides, task)

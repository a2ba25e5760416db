"""Flow finetune-rl: online RL on GenReward rewards (and baselines), per task × seed × method."""

from __future__ import annotations

from prefect import flow

from flows.common import run_per_task_stage


@flow(name="finetune-rl", log_prints=True)
def finetune_rl_flow(params: str = "params.yaml", profile: str | None = None,
                     overrides: list[str] | None = None, task: str | None = None) -> dict:
    return run_per_task_stage("finetune_rl", params, profile, overrides, task)

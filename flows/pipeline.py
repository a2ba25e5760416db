"""Flow genreward-pipeline: the whole DAG in one Prefect flow, fanned out on Dask.

Per-task stages (goal videos, key frames, latents) and the RL runs (tasks × methods × seeds)
are Prefect tasks submitted to a ``DaskTaskRunner`` (prefect-dask), with ``wait_for`` edges
that mirror dvc.yaml. By default the runner starts a local Dask cluster with
``runtime.num_workers`` single-threaded worker processes; ``runtime.dask_address`` (or the
``dask_address`` parameter) points it at an existing scheduler instead, e.g. a Dask cluster on
Kubernetes/SLURM (dask-kubernetes, dask-jobqueue) or a Ray cluster through dask-on-ray. There is
no scheduler of our own. ``dvc repro`` stays the cached, reproducible path; this flow is for
sweeps on a cluster, and every stage still writes the same versioned artifacts.
"""

from __future__ import annotations

import importlib
import itertools
from typing import Any

from prefect import flow, get_run_logger, task

from flows.common import load_run_config


@task(name="stage", retries=0)
def stage_task(stage: str, params: str, profile: str | None, overrides: list[str] | None,
               task_name: str | None = None, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run ``stages.<stage>.run`` in a Dask worker, with the run's config (+ per-run overrides)."""
    import genreward  # noqa: F401  (torchvision import step before diffusers/open_clip)

    cfg = load_run_config(params, profile, [*(overrides or []), *extra], task_name)
    return importlib.import_module(f"stages.{stage}").run(cfg, {}, {})


def dask_runner(address: str | None, n_workers: int):
    import dask
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # Stages start env worker processes of their own, which daemonic Dask workers may not do.
    dask.config.set({"distributed.worker.daemon": False})
    return DaskTaskRunner(cluster_kwargs={"n_workers": n_workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": ":0"})


@flow(name="genreward-dag")
def dag_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None,
             rl_only: bool = False) -> dict:
    cfg = load_run_config(params, profile, overrides)
    common = (params, profile, overrides)
    fb, keyframes, latents = None, {}, {}
    if not rl_only:
        stage_task.submit("env_check", *common)
        domain = stage_task.submit("collect_domain_videos", *common)
        model = stage_task.submit("adapt_video_model", *common, wait_for=[domain])
        videos = {t: stage_task.submit("generate_goal_videos", *common, task_name=t, wait_for=[model]) for t in cfg.tasks}
        keyframes = {t: stage_task.submit("select_keyframes", *common, task_name=t, wait_for=[videos[t]]) for t in cfg.tasks}
        latents = {t: stage_task.submit("encode_goal_latents", *common, task_name=t, wait_for=[videos[t]]) for t in cfg.tasks}
        exploration = stage_task.submit("collect_exploration", *common)
        fb = stage_task.submit("pretrain_fb", *common, wait_for=[exploration])
    runs = []
    for t, m, s in itertools.product(cfg.rl.tasks, cfg.rl.methods, cfg.rl.seeds):
        deps = [f for f in (fb, keyframes.get(t), latents.get(t)) if f is not None]
        runs.append(stage_task.submit("finetune_rl", *common, task_name=t, extra=(f"rl.methods=[{m}]", f"rl.seeds=[{s}]"),
                                      wait_for=deps))
    report = stage_task.submit("evaluate", *common, wait_for=runs)
    return report.result()


@flow(name="genreward-pipeline", log_prints=True)
def pipeline_flow(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None,
                  rl_only: bool = False, dask_address: str | None = None) -> dict:
    """The DAG on a Dask task runner; ``rl_only`` runs only the tasks × methods × seeds sweep and
    the report (their inputs must exist)."""
    cfg = load_run_config(params, profile, overrides)
    address = dask_address or cfg.runtime.dask_address
    get_run_logger().info("genreward pipeline: profile %s, %s, Dask %s", cfg.profile,
                          "RL sweep only" if rl_only else "all stages", address or f"local ({cfg.runtime.num_workers} workers)")
    runner = dask_runner(address, cfg.runtime.num_workers)
    return dag_flow.with_options(task_runner=runner)(params, profile, overrides, rl_only)

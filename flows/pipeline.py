"""Flow genreward-pipeline: the whole DAG in one Prefect flow, fanned out on Dask.

The DAG comes from the stage declarations (:func:`stages.table.dag`): every stage item (a stage,
a task of a per-task stage, an RL run) is a Prefect task submitted to a ``DaskTaskRunner``
(prefect-dask), waiting for the items whose outputs it reads. ``dvc.yaml`` is checked against
the same declarations, so this flow and ``dvc repro`` run the same graph. By default the runner
starts a local Dask cluster with ``runtime.num_workers`` single-threaded worker processes, listening
on 127.0.0.1 only (its dashboard at ``runtime.dask_dashboard_address``, by default 127.0.0.1 too);
``runtime.dask_address`` (or the ``dask_address`` parameter) points it at an existing scheduler
instead, e.g. a Dask cluster on Kubernetes/SLURM (dask-kubernetes, dask-jobqueue) or a Ray
cluster through dask-on-ray. There is no scheduler of our own. ``dvc repro`` stays the cached,
reproducible path; this flow is for sweeps on a cluster, and every stage still writes the same
versioned artifacts.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.artifacts import label_flow_run, run_tags
from flows.common import load_run_config, stage_task, submit_options
from stages.table import dag

RL_STAGES = ("finetune_rl",)  # where `rl_only` starts: the runs and what reads them


LOOPBACK = "127.0.0.1"


def local_cluster_kwargs(n_workers: int, dashboard_address: str = f"{LOOPBACK}:0") -> dict:
    """Keyword arguments of the local Dask cluster (``distributed.LocalCluster``).

    The scheduler and the workers listen on the loopback interface only, and so does the dashboard
    unless ``dashboard_address`` (``runtime.dask_dashboard_address``, HOST:PORT) names another host.
    Dask's own default (``:8787``) would listen on every interface.
    """
    return {
        "n_workers": n_workers,
        "threads_per_worker": 1,
        "processes": True,
        "host": LOOPBACK,
        "dashboard_address": dashboard_address,
    }


def dask_runner(address: str | None, n_workers: int, dashboard_address: str = f"{LOOPBACK}:0"):
    import dask
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # Stages start env worker processes of their own, which daemonic Dask workers may not do.
    dask.config.set({"distributed.worker.daemon": False})
    # each worker's torch stages take their share of the cores (genreward/runtime.py)
    dask.config.set({"distributed.nanny.environ": {"GENREWARD_THREAD_SHARE": str(n_workers)}})
    return DaskTaskRunner(cluster_kwargs=local_cluster_kwargs(n_workers, dashboard_address))


@flow(name="genreward-dag", persist_result=False, result_serializer="json")
def dag_flow(
    params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None, rl_only: bool = False
) -> dict:
    cfg = load_run_config(params, profile, overrides)
    nodes = dag(cfg, start=RL_STAGES if rl_only else ())
    futures = []
    for node in nodes:
        # stage_task keeps no Prefect result record and no Prefect cache: the artifacts are the results
        submit = stage_task.with_options(**submit_options(node.stage.name, cfg, node.item)).submit
        futures.append(submit(node.stage.name, cfg, node.item, wait_for=[futures[i] for i in node.after]))
    results = [f.result() for f in futures]  # raises if any item failed
    return results[-1]  # the last item in DAG order: the report


@flow(name="genreward-pipeline", log_prints=True, persist_result=False, result_serializer="json")
def pipeline_flow(
    params: str = "params.yaml",
    profile: str | None = None,
    overrides: list[str] | None = None,
    rl_only: bool = False,
    dask_address: str | None = None,
) -> dict:
    """The DAG on a Dask task runner.

    Args:
        params: the params file (relative to the working directory of the run)
        profile: profile overlay from the params file (laptop, paper, ...); null: the file's `profile`
        overrides: KEY=VALUE overrides applied after the profile, recorded with every artifact
        rl_only: run only the tasks × methods × seeds sweep and the report (their inputs must exist)
        dask_address: an existing Dask scheduler (null: runtime.dask_address, else a local cluster)
    """
    cfg = load_run_config(params, profile, overrides)
    label_flow_run(f"pipeline{' rl_only' if rl_only else ''} {cfg.profile}", [*run_tags(cfg), "pipeline"])
    address = dask_address or cfg.runtime.dask_address
    get_run_logger().info(
        "genreward pipeline: profile %s, %s, Dask %s",
        cfg.profile,
        "RL sweep only" if rl_only else "all stages",
        address or f"local ({cfg.runtime.num_workers} workers)",
    )
    runner = dask_runner(address, cfg.runtime.num_workers, cfg.runtime.dask_dashboard_address)
    return dag_flow.with_options(task_runner=runner)(params, profile, overrides, rl_only)

"""Prefect deployments on a loopback server, and the Dask-backed sweep flow."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import REPO, copy_project, free_port

BIN = Path(sys.executable).parent


def _readme_bash_after(marker: str) -> str:
    """The first ```bash block after ``marker`` in the README."""
    text = (REPO / "README.md").read_text()
    rest = text[text.index(marker) :]
    return rest.split("```bash\n", 1)[1].split("```", 1)[0]


_QUERY = """
import json
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, LogFilter, LogFilterFlowRunId

out = []
with get_client(sync_client=True) as client:
    for run in client.read_flow_runs():
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id])))
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        out.append({
            "flow": str(run.flow_id), "deployment": str(run.deployment_id), "name": run.name, "tags": run.tags,
            "state": run.state_type.value,
            "logs": [log.message for log in logs],
            "artifacts": {a.key: {"type": a.type, "data": a.data if isinstance(a.data, str) else json.dumps(a.data)}
                          for a in arts if a.key},
        })
print("RESULT " + json.dumps(out))
"""


@pytest.mark.long(seconds=100)
@pytest.mark.timeout(1200)
def test_readme_prefect_loop_runs_as_pasted_and_runs_show_logs_artifacts_names_and_tags(tmp_path):
    """The README's Prefect block, run on a copy of the repository (only the port changed): a
    local server, the work pool, every deployment, a process worker, two stage deployments.
    Then, through the API: each run has the stage's and the library's log lines, its artifacts
    (markdown summary, table of numbers, image previews), its name and tags; the README's RL
    example on a fresh clone fails naming every missing input and the deployments that write them."""
    import zarr

    work = copy_project(tmp_path / "repo")
    for name in ("prefect.yaml", "README.md"):
        shutil.copy(REPO / name, work / name)
    port = free_port()
    block = _readme_bash_after("<!-- prefect-loop -->").replace("4200", str(port))
    block = block.replace("genreward server start ", f"genreward server start --port {port} ", 1)
    assert f"--port {port}" in block and "prefect --no-prompt deploy --all" in block
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("PREFECT_API_URL", None)
    api = f"http://127.0.0.1:{port}/api"
    log = tmp_path / "loop.log"  # a file, not a pipe: the worker the block starts keeps its output open
    with open(log, "w") as out:
        proc = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", block],
            cwd=work,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        assert proc.wait(timeout=900) == 0, log.read_text()[-6000:]
        rl = subprocess.run(
            ["bash", "-c", _readme_bash_after("An RL run through its deployment")],
            cwd=work,
            env={**env, "PREFECT_API_URL": api},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert rl.returncode != 0  # its inputs do not exist in a fresh clone
        query = subprocess.run(
            [sys.executable, "-c", _QUERY], env={**env, "PREFECT_API_URL": api}, capture_output=True, text=True
        )
        assert query.returncode == 0, query.stderr[-3000:]
        runs = {r["name"]: r for r in json.loads(query.stdout.split("RESULT ")[1])}
    finally:
        for sig, grace in ((signal.SIGTERM, 5), (signal.SIGKILL, 0)):  # the worker the block left running
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            time.sleep(grace)
        subprocess.run([str(BIN / "genreward"), "server", "stop"], env=env, capture_output=True, timeout=120)

    check = runs["env_check laptop"]
    assert check["state"] == "COMPLETED"
    assert {"genreward", "stage:env_check", "profile:laptop", "task:pick-place-v3"} <= set(check["tags"])
    logs = "\n".join(check["logs"])
    assert "pick-place-v3: " in logs and "steps/s with rendering" in logs  # the stage's own logger (stages.*)
    assert "MuJoCo GL backend" in logs  # the library's (genreward.*)
    arts = check["artifacts"]
    assert (
        arts["env-check"]["type"] == "markdown"
        and "| metrics | `data/env_check/metrics.json` |" in arts["env-check"]["data"]
    )
    assert (
        arts["env-check-numbers"]["type"] == "table" and "mean_pixel_steps_per_s" in arts["env-check-numbers"]["data"]
    )
    assert arts["env-check-previews"]["data"].count("data:image/png;base64,") == 5  # a thumbnail per task

    video = runs["generate_goal_videos[pick-place-v3] laptop"]
    assert video["state"] == "COMPLETED"
    assert {"stage:generate_goal_videos", "task:pick-place-v3", "backend:scripted"} <= set(video["tags"])
    assert any("goal video generated in" in line for line in video["logs"])
    assert "data:image/gif;base64," in video["artifacts"]["generate-goal-videos-pick-place-v3-previews"]["data"]
    g = zarr.open_group(str(work / "data" / "goal_videos" / "pick-place-v3.zarr"), mode="r")
    assert g.attrs["genreward"]["params"]["goal_video"]["backend"] == "scripted"  # the run's override, recorded

    failed = runs["finetune_rl[pick-place-v3] laptop"]
    assert failed["state"] == "FAILED"
    message = next((line for line in failed["logs"] if "are missing" in line), "\n".join(failed["logs"]))
    for path in ("data/goal_latents/pick-place-v3.zarr", "data/fb", "data/keyframes/pick-place-v3.zarr"):
        assert path in message
    assert "dvc repro" in message and "'pretrain-fb/pretrain_fb'" in message


def _run_flow(code: str, cwd: Path, timeout: int):
    """Run ``code`` (which prints ``RESULT <json>``) in a fresh interpreter; (process, parsed result)."""
    res = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"},
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    return res, json.loads(res.stdout.split("RESULT ")[1])


def test_local_dask_cluster_and_its_dashboard_listen_on_loopback(monkeypatch):
    """The pipeline flow's local cluster, started for real (no workers): the scheduler, its
    dashboard and the link to it are on 127.0.0.1; an address the user sets is passed through."""
    import dask
    from distributed import LocalCluster
    from distributed.comm.utils import get_tcp_server_addresses

    from flows.pipeline import dask_runner, local_cluster_kwargs
    from genreward.config import load_config

    cfg = load_config(REPO / "params.yaml")
    kwargs = local_cluster_kwargs(cfg.runtime.num_workers, cfg.runtime.dask_dashboard_address)
    assert kwargs == {
        "n_workers": 2,
        "threads_per_worker": 1,
        "processes": True,
        "host": "127.0.0.1",
        "dashboard_address": "127.0.0.1:0",
    }
    with LocalCluster(**{**kwargs, "n_workers": 0}) as cluster:
        dashboard = get_tcp_server_addresses(cluster.scheduler.http_server)
        assert len(dashboard) == 1 and dashboard[0][0] == "127.0.0.1" and dashboard[0][1] > 0
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        assert cluster.dashboard_link == f"http://127.0.0.1:{dashboard[0][1]}/status"
    # dask_runner sets a global Dask option; restored after the test
    monkeypatch.setitem(dask.config.config["distributed"]["worker"], "daemon", True)
    runner = dask_runner(None, 3, "0.0.0.0:8787")
    assert runner.cluster_kwargs["host"] == "127.0.0.1" and runner.cluster_kwargs["dashboard_address"] == "0.0.0.0:8787"
    assert dask.config.get("distributed.worker.daemon") is False
    assert dask_runner("tcp://10.0.0.5:8786", 3).address == "tcp://10.0.0.5:8786"  # an existing scheduler: no cluster


@pytest.mark.long(seconds=70)
def test_rl_sweep_fans_out_on_a_dask_task_runner(tmp_path):
    """tasks × methods × seeds through prefect-dask on a local Dask cluster (2 worker processes)."""
    code = f"""
import json
from flows.pipeline import pipeline_flow
m = pipeline_flow(params={str(REPO / "params.yaml")!r}, rl_only=True, overrides=[
    "store.data_dir={tmp_path / "data"}", "store.reports_dir={tmp_path / "reports"}", "tasks=[reach-v3]",
    "prompts.reach-v3=reach", "rl.tasks=[reach-v3]", "rl.methods=[env_only]", "rl.seeds=[0,1]", "rl.steps=32",
    "rl.seed_steps=16", "rl.drqv2.batch_size=8", "rl.drqv2.hidden_dim=32", "rl.eval_every=32", "rl.eval_episodes=1",
    "env.image_size=32", "env.episode_length=16", "runtime.progress=false", "runtime.num_workers=2"])
print("RESULT", json.dumps(m))
"""
    res, metrics = _run_flow(code, REPO, timeout=600)
    assert metrics["reach-v3"]["env_only"]["seeds"] == 2 and metrics["reach-v3"]["env_only"]["steps"] == 32
    for seed in (0, 1):
        assert (tmp_path / "data" / "rl" / "reach-v3" / "env_only" / f"seed{seed}" / "eval.parquet").exists()
    assert "Creating a new Dask cluster with `distributed.deploy.local.LocalCluster`" in res.stderr
    assert res.stderr.count("Finished in state Completed") >= 3  # two runs + the report, as Prefect tasks


@pytest.mark.long(seconds=100)
@pytest.mark.timeout(1200)
def test_pipeline_flow_runs_the_tiny_profile_on_dask_and_writes_what_dvc_declares(tmp_path):
    """The whole genreward-pipeline flow (every stage, not only the RL sweep) on a local Dask cluster
    writes exactly the outs that `dvc repro` tracks for the same params."""
    import yaml
    from dvc.repo import Repo

    from genreward.config import load_config
    from stages.table import dag

    from .conftest import tiny_params

    work = tmp_path / "proj"
    work.mkdir()
    shutil.copy(REPO / "dvc.yaml", work / "dvc.yaml")
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["runtime"].update(num_workers=2, progress=False)
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    code = """
import json
from flows.pipeline import pipeline_flow
print("RESULT", json.dumps(pipeline_flow(params="params.yaml")))
"""
    res, report = _run_flow(code, work, timeout=1100)
    assert set(report["reach-v3"]) == {"genreward", "env_only"} and report["reach-v3"]["env_only"]["steps"] == 64
    assert "Creating a new Dask cluster with `distributed.deploy.local.LocalCluster`" in res.stderr
    cfg = load_config(work / "params.yaml")
    nodes = dag(cfg)
    assert res.stderr.count("Finished in state Completed") >= len(nodes)  # every stage item, as a Prefect task
    # What DVC would track for these params (dvc.yaml resolved by DVC itself), minus the params step.
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=work, check=True, capture_output=True)
    with Repo(str(work)) as repo:
        dvc_outs = {o.def_path for st in repo.index.stages if st.name != "resolve_params" for o in st.outs}
    assert len(dvc_outs) > 20
    missing = sorted(p for p in dvc_outs if not (work / p).exists())
    assert not missing, missing
    # ...and nothing else: every file the flow wrote lies in a declared out (or the shared cache).
    roots = [Path(o) for o in dvc_outs] + [Path("data/cache")]
    written = [f.relative_to(work) for d in ("data", "reports") for f in (work / d).rglob("*") if f.is_file()]
    outside = sorted(str(f) for f in written if not any(f == r or r in f.parents for r in roots))
    assert not outside, outside

"""Prefect deployments on a loopback server, and the Dask-backed sweep flow."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import REPO

BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefect_server(tmp_path):
    """A real `prefect server start --host 127.0.0.1` with its own database, torn down after."""
    port = _free_port()
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "PREFECT_UI_ENABLED": "false",
    }
    env.pop("PREFECT_LOCAL_STORAGE_PATH", None)
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen(
        [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("prefect server did not start: " + (tmp_path / "server.log").read_text()[-2000:])
    yield env
    os.killpg(proc.pid, 15)
    proc.wait(timeout=30)
    log.close()


def _prefect(env, *args, timeout=300):
    res = subprocess.run(
        [str(BIN / "prefect"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"prefect {' '.join(args)}\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return res


def test_deployment_runs_a_stage_on_a_loopback_server_with_overrides(prefect_server, tmp_path):
    import zarr

    env = prefect_server
    _prefect(env, "work-pool", "create", "genreward-local", "--type", "process")
    _prefect(env, "--no-prompt", "deploy", "--all")
    data = tmp_path / "data"
    params = {
        "task": "pick-place-v3",
        "overrides": [
            f"store.data_dir={data}",
            "goal_video.backend=scripted",
            "goal_video.num_frames=9",
            "goal_video.height=32",
            "goal_video.width=32",
            "runtime.progress=false",
        ],
    }
    run = _prefect(env, "deployment", "run", "generate-goal-videos/default", "--params", json.dumps(params))
    assert "Created flow run" in run.stdout
    worker = _prefect(
        env, "worker", "start", "--pool", "genreward-local", "--type", "process", "--run-once", timeout=600
    )
    out = data / "goal_videos" / "pick-place-v3.zarr"
    assert out.exists(), worker.stdout[-3000:] + worker.stderr[-3000:]
    g = zarr.open_group(str(out), mode="r")
    assert g["video"].shape == (9, 32, 32, 3)
    meta = g.attrs["genreward"]
    assert meta["complete"] and meta["params"]["goal_video"]["num_frames"] == 9  # the run's parameters, recorded
    # The whole-pipeline deployment is registered too.
    listing = _prefect(env, "deployment", "ls").stdout
    assert "genreward-pipeline/default" in listing and "finetune-rl/default" in listing


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


def test_rl_sweep_fans_out_on_a_dask_task_runner(tmp_path):
    """tasks × methods × seeds through prefect-dask on a local Dask cluster (2 worker processes)."""
    code = f"""
import json
from flows.pipeline import pipeline_flow
m = pipeline_flow(params={str(REPO / "params.yaml")!r}, rl_only=True, overrides=[
    "store.data_dir={tmp_path / "data"}", "store.reports_dir={tmp_path / "reports"}", "tasks=[reach-v3]",
    "prompts.reach-v3=reach", "rl.tasks=[reach-v3]", "rl.methods=[env_only]", "rl.seeds=[0,1]", "rl.steps=32",
    "rl.seed_steps=16", "rl.batch_size=8", "rl.hidden_dim=32", "rl.eval_every=32", "rl.eval_episodes=1",
    "env.image_size=32", "env.episode_length=16", "runtime.progress=false", "runtime.num_workers=2"])
print("RESULT", json.dumps(m))
"""
    res, metrics = _run_flow(code, REPO, timeout=600)
    assert metrics["reach-v3"]["env_only"]["seeds"] == 2 and metrics["reach-v3"]["env_only"]["steps"] == 32
    for seed in (0, 1):
        assert (tmp_path / "data" / "rl" / "reach-v3" / "env_only" / f"seed{seed}" / "eval.parquet").exists()
    assert "Creating a new Dask cluster with `distributed.deploy.local.LocalCluster`" in res.stderr
    assert res.stderr.count("Finished in state Completed") >= 3  # two runs + the report, as Prefect tasks


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

"""The worked example of the DVC -> CLI -> Prefect flow -> stage pattern, end to end."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from .conftest import copy_project, run_cli, tiny_params


def test_cli_stage_runs_flow_and_writes_outputs(tmp_path):
    res = run_cli(
        "stage",
        "env_check",
        "--set",
        "tasks=[reach-v3, pick-place-v3]",
        "--set",
        "prompts.reach-v3=a robot arm reaches the target",
        "--set",
        "env_check.steps=20",
        "--set",
        "env_check.thumbnail_size=64",
        "--set",
        f"store.data_dir={tmp_path}",
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Beginning flow run" in res.stderr and "for flow 'env-check'" in res.stderr  # it went through Prefect
    metrics = json.loads((tmp_path / "env_check" / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"reach-v3", "pick-place-v3"}
    for v in metrics["tasks"].values():
        assert v["pixel_steps_per_s"] > 1 and v["physics_steps_per_s"] > v["pixel_steps_per_s"]
    thumbs = tmp_path / "env_check" / "thumbnails"
    img = np.asarray(Image.open(thumbs / "reach-v3.png"))
    assert img.shape == (64, 64, 3) and img.std() > 10
    prov = json.loads((thumbs / "provenance.json").read_text())
    assert prov["params"]["env_check"]["steps"] == 20 and prov["params"]["tasks"] == ["reach-v3", "pick-place-v3"]
    assert "stage env_check: profile laptop" in res.stderr  # stage/library logging reaches Prefect's logger


def test_cli_stage_rejects_bad_config_before_starting_prefect():
    res = run_cli("stage", "env_check", "--set", "env.image_size=0")
    assert res.returncode == 2
    assert "env.image_size" in res.stderr and "Prefect" not in res.stderr and "Traceback" not in res.stderr
    res = run_cli("stage", "no_such_stage")
    assert res.returncode == 2 and "unknown stage 'no_such_stage'; valid: " in res.stderr
    assert "env_check" in res.stderr.split("valid: ")[1] and "generate_goal_videos" in res.stderr


@pytest.mark.long(seconds=500)
@pytest.mark.timeout(1500)
def test_dvc_repro_runs_the_stage_and_then_is_a_noop(tmp_path, reused_prefect_server):
    work = copy_project(tmp_path / "proj")
    params = tiny_params(yaml.safe_load((work / "params.yaml").read_text()))  # every stage runs, in about a minute
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {
        **os.environ,
        **reused_prefect_server,  # the README's way: stage runs reuse one server
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
    }
    env.pop("PREFECT_API_URL", None)

    def git(*a):
        return subprocess.run(["git", *a], cwd=work, check=True, capture_output=True)

    git("init", "-q")
    dvc = [str(Path(sys.executable).parent / "dvc")]
    subprocess.run([*dvc, "init", "-q"], cwd=work, check=True, env=env, capture_output=True)
    first = subprocess.run([*dvc, "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    # `genreward server start` started the stage runner: every stage command ran in a fork of it
    log = (Path(reused_prefect_server["PREFECT_HOME"]) / "genreward-runner.log").read_text()
    ran = [line for line in first.stdout.splitlines() if line.startswith("Running stage")]
    stages_run = len([line for line in ran if "resolve_params" not in line])  # that one runs `genreward config`
    assert stages_run >= 10 and "declined" not in log, log
    assert log.count(": stage ") == stages_run and log.count("exit status 0") == stages_run, log
    # ... against the started server, whose UI shows every run (not an ephemeral API of its own)
    home = Path(reused_prefect_server["PREFECT_HOME"])
    ui = json.loads((home / "genreward-server.json").read_text())["api_url"].removesuffix("/api")
    assert (first.stdout + first.stderr).count(f"View at {ui}/runs/flow-run/") == stages_run
    # Every CogVideoX pipeline construction logs this line (through Prefect's logger).
    loaded = "loaded CogVideoXPipeline from"
    assert (first.stdout + first.stderr).count(loaded) >= 1  # the goal video was generated: the counter counts
    assert (work / "data/env_check/thumbnails/reach-v3.png").exists()
    for out in (
        "domain_videos.zarr",
        "video_model/pipeline/model_index.json",
        "video_model_metrics.json",
        "goal_videos/reach-v3.zarr",
        "keyframes/reach-v3.zarr",
        "goal_latents/reach-v3.zarr",
        "exploration.zarr",
        "fb/weights.safetensors",
        "fb_metrics.json",
        "rl/reach-v3/genreward/seed0/eval.parquet",
        "rl/reach-v3/env_only/seed0/rollout.gif",
    ):
        assert (work / "data" / out).exists(), out
    report = json.loads((work / "reports/metrics.json").read_text())
    assert set(report["reach-v3"]) == {"genreward", "env_only"} and report["reach-v3"]["env_only"]["steps"] == 64
    assert "| reach-v3 |" in (work / "reports/summary.md").read_text()
    assert (work / "reports/plots/reach-v3.png").exists()
    quality = json.loads((work / "reports/reward_quality.json").read_text())  # the reward benchmark, every method
    assert set(quality["methods"]) == set(params["benchmark"]["methods"]) and quality["probe_episodes"] == {
        "reach-v3": 4
    }
    assert quality["methods"]["dense"]["per_task"]["reach-v3"]["spearman_dense"] == 1.0
    assert (work / "reports/reward_quality/plots/expert_reach-v3.png").exists()
    assert json.loads((work / "data/env_check/metrics.json").read_text())["tasks"]["reach-v3"]["pixel_steps_per_s"] > 1
    second = subprocess.run([*dvc, "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert "Running stage" not in second.stdout, second.stdout
    assert (
        second.returncode == 0 and "didn't change, skipping" in second.stdout and "Running stage" not in second.stdout
    )

    # Exact deps: an edit re-runs only the stages whose resolved values changed.
    def edit_and_repro(change):
        p = yaml.safe_load((work / "params.yaml").read_text())
        change(p)
        (work / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
        res = subprocess.run([*dvc, "repro"], cwd=work, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        return set(re.findall(r"Running stage '([^']+)'", res.stdout))

    rl_runs = {"finetune_rl@reach-v3-genreward-0", "finetune_rl@reach-v3-env_only-0", "evaluate"}
    assert edit_and_repro(lambda p: p["profiles"]["paper"]["fb"].update(lr=3e-4)) == {"resolve_params"}
    assert edit_and_repro(lambda p: p["rl"]["drqv2"].update(lr=2e-4)) == {"resolve_params", *rl_runs}
    chain = {"generate_goal_videos@reach-v3", "select_keyframes@reach-v3", "encode_goal_latents@reach-v3"}
    assert edit_and_repro(lambda p: p["prompts"].update({"reach-v3": "a robot arm reaches the red target"})) == {
        "resolve_params",
        *chain,
        *rl_runs,
        "evaluate_rewards",
    }

    # Experiments reuse every goal video: `dvc exp run -S` sweeps over RL knobs build no video pipeline,
    # and going back to an earlier prompt restores its goal video from DVC's run-cache.
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "baseline")
    video = work / "data/goal_videos/reach-v3.zarr"

    def tree():
        return {f.relative_to(video): f.read_bytes() for f in sorted(video.rglob("*")) if f.is_file()}

    def exp_run(*sets):
        args = [a for s in sets for a in ("-S", s)]
        res = subprocess.run(
            [*dvc, "exp", "run", *args], cwd=work, env=env, capture_output=True, text=True, timeout=600
        )
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        out = res.stdout + res.stderr
        return (
            set(re.findall(r"Running stage '([^']+)'", res.stdout)),
            out.count(loaded),
            out.count("goal video generated in"),
        )

    before = tree()
    restored, loads, generated = exp_run("prompts.reach-v3=a robot arm reaches the target")
    assert loads == 0 and generated == 0, "a prompt seen before must not build a pipeline"
    # Prompt and rl.drqv2.lr as in an earlier run: every stage's outputs come back from the run-cache.
    assert restored == {"resolve_params", "evaluate"}, restored
    first_video = tree()
    assert first_video != before  # it is the first prompt's video again, not the edited prompt's
    for lr in ("0.0003", "0.0005"):
        ran, loads, generated = exp_run(f"rl.drqv2.lr={lr}")
        assert ran == {"resolve_params", *rl_runs} and loads == 0 and generated == 0
        assert tree() == first_video
    exps = subprocess.run(
        [*dvc, "exp", "show", "--csv", "--only-changed"], cwd=work, env=env, capture_output=True, text=True, timeout=120
    )
    assert exps.returncode == 0 and "0.0003" in exps.stdout and "0.0005" in exps.stdout, exps.stdout[-2000:]

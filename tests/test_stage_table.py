"""The stage table: dvc.yaml, prefect.yaml and the pipeline DAG agree with the stage declarations,
and a new stage needs one module plus its dvc.yaml entry."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from .conftest import REPO, copy_project, run_cli

BIN = Path(sys.executable).parent
DEFAULT_DAG_STAGES = [
    "env_check",
    "collect_domain_videos",
    "adapt_video_model",
    "generate_goal_videos",
    "select_keyframes",
    "encode_goal_latents",
    "collect_exploration",
    "pretrain_fb",
    "finetune_rl",
    "evaluate",
    "collect_probes",
    "evaluate_rewards",
]


def test_every_stage_is_declared_once_with_its_module():
    from stages.table import table

    stages = table()
    assert sorted(stages) == sorted(DEFAULT_DAG_STAGES)
    for name, s in stages.items():
        assert s.module == f"stages.{name}" and s.summary and s.over in ("once", "task", "run")


def test_dvc_yaml_agrees_with_the_stage_table():
    from flows.dvc_check import dvc_mismatches

    assert dvc_mismatches(REPO) == []


def _dvc_project(tmp_path: Path, edit=None) -> Path:
    work = tmp_path / "proj"
    work.mkdir(parents=True)
    shutil.copy(REPO / "params.yaml", work / "params.yaml")
    text = (REPO / "dvc.yaml").read_text()
    (work / "dvc.yaml").write_text(edit(text) if edit else text)
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=work, check=True, capture_output=True)
    return work


def test_the_check_names_each_disagreement(tmp_path):
    from flows.dvc_check import dvc_mismatches

    def edit(text: str) -> str:
        text = text.replace("      - data/keyframes/plots/${item}.png\n", "")  # an output DVC would not track
        text = text.replace("      - data/params/fb.json\n", "      - data/params/rl.json\n")  # the wrong params view
        return text.replace("      - stages/evaluate.py\n", "")  # the stage's own code

    problems = dvc_mismatches(_dvc_project(tmp_path, edit))
    assert (
        "dvc.yaml stage select_keyframes@pick-place-v3: outs lack data/keyframes/plots/pick-place-v3.png "
        "(declared in stages/select_keyframes.py)" in problems
    )
    assert (
        "dvc.yaml stage pretrain_fb: param deps lack data/params/fb.json (declared in stages/pretrain_fb.py)"
        in problems
    )
    assert (
        "dvc.yaml stage pretrain_fb: param deps data/params/rl.json not declared in stages/pretrain_fb.py" in problems
    )
    assert "dvc.yaml stage evaluate: deps lack its module stages/evaluate.py" in problems
    assert len(problems) == 5 + 3  # the plot of each of the 5 tasks, and the other three lines

    def drop_stage(text: str) -> str:
        doc = yaml.safe_load(text)
        del doc["stages"]["env_check"]
        return yaml.safe_dump(doc, sort_keys=False)

    assert dvc_mismatches(_dvc_project(tmp_path / "b", drop_stage)) == [
        "stage env_check: no dvc.yaml entry (declared in stages/env_check.py)"
    ]


def test_prefect_yaml_is_what_the_table_generates():
    from flows.deployments import render

    text = (REPO / "prefect.yaml").read_text()
    assert text == render(), "run `genreward deployments --write`"
    doc = yaml.safe_load(text)
    entries = {d["entrypoint"] for d in doc["deployments"]}
    assert "flows/stage_flows.py:finetune_rl_flow" in entries
    assert "flows/generate_goal_videos.py:generate_goal_videos_flow" in entries  # the hand-written flow
    assert "flows/pipeline.py:pipeline_flow" in entries and len(entries) == len(DEFAULT_DAG_STAGES) + 1


def test_deployments_are_named_after_their_stage_and_can_start_in_a_git_clone(tmp_path):
    """The README's `genreward deployments --write --git-repo URL --branch B --path F`."""
    doc = yaml.safe_load((REPO / "prefect.yaml").read_text())
    names = {d["name"] for d in doc["deployments"]}
    assert {"env_check", "finetune_rl", "pipeline"} <= names and "default" not in names
    env = doc["deployments"][0]["work_pool"]["job_variables"]["env"]
    assert env["PREFECT_LOGGING_EXTRA_LOGGERS"] == "genreward,stages,flows"

    out = tmp_path / "prefect-git.yaml"
    url = "https://example.org/lab/genreward.git"
    res = run_cli("deployments", "--write", "--git-repo", url, "--branch", "sweep", "--path", str(out))
    assert res.returncode == 0, res.stderr
    git = yaml.safe_load(out.read_text())
    assert git["pull"] == [{"prefect.deployments.steps.git_clone": {"repository": url, "branch": "sweep"}}]
    assert git["deployments"] == doc["deployments"]  # only where runs start differs


def test_generated_flows_take_the_stage_parameters():
    from flows.stage_flows import get_flow

    for name, params in (
        ("env_check", ["params", "profile", "overrides"]),
        ("select_keyframes", ["params", "profile", "overrides", "task"]),
        ("finetune_rl", ["params", "profile", "overrides", "task"]),
        ("generate_goal_videos", ["params", "profile", "overrides", "task"]),
    ):
        f = get_flow(name)
        assert f.name == name.replace("_", "-")
        assert list(f.parameters.properties) == params
    assert "KEY=VALUE" in get_flow("pretrain_fb").parameters.properties["overrides"]["description"]
    with pytest.raises(KeyError, match="unknown stage 'nope'; valid: adapt_video_model"):
        get_flow("nope")


def test_dag_orders_producers_first_and_narrows_to_the_rl_sweep():
    from genreward.config import load_config
    from stages.table import dag

    cfg = load_config(REPO / "params.yaml", overrides=["rl.seeds=[0,1]"])
    nodes = dag(cfg)
    labels = [n.label for n in nodes]
    n_tasks, n_runs = len(cfg.tasks), len(cfg.rl.tasks) * len(cfg.rl.methods) * 2
    assert len(nodes) == 6 + 4 * n_tasks + n_runs + 1  # once stages, per-task stages, runs, evaluate
    assert labels[-1] == "evaluate" and labels.index("evaluate_rewards") < labels.index(
        "finetune_rl[pick-place-v3/genreward/seed0]"
    )
    for i, n in enumerate(nodes):
        assert all(j < i for j in n.after)  # topological
    by_label = {n.label: n for n in nodes}
    after = lambda label: {nodes[j].label for j in by_label[label].after}  # noqa: E731
    assert after("generate_goal_videos[pick-place-v3]") == {"adapt_video_model"}
    assert after("select_keyframes[bin-picking-v3]") == {"generate_goal_videos[bin-picking-v3]"}
    assert after("encode_goal_latents[bin-picking-v3]") == {"generate_goal_videos[bin-picking-v3]", "adapt_video_model"}
    assert after("finetune_rl[pick-place-v3/genreward/seed1]") == {
        "generate_goal_videos[pick-place-v3]",
        "encode_goal_latents[pick-place-v3]",
        "select_keyframes[pick-place-v3]",
        "pretrain_fb",
        "adapt_video_model",
    }
    assert after("evaluate") == {n.label for n in nodes if n.stage.name == "finetune_rl"}
    assert after("env_check") == set() and after("pretrain_fb") == {"collect_exploration"}
    # the reward benchmark reads every task's probes and what the methods' terms read
    assert after("evaluate_rewards") == {
        n.label
        for n in nodes
        if n.stage.name
        in (
            "collect_probes",
            "generate_goal_videos",
            "encode_goal_latents",
            "select_keyframes",
            "pretrain_fb",
            "adapt_video_model",
        )
    }
    rl = [n.label for n in dag(cfg, start=("finetune_rl",))]
    assert len(rl) == n_runs + 1 and rl[-1] == "evaluate" and all(r.startswith("finetune_rl[") for r in rl[:-1])


HELLO = '''
"""Stage hello: a test stage (one module + its dvc.yaml entry)."""
from stages.table import Stage


def run(cfg, inputs, outputs) -> dict:
    (task,) = cfg.tasks
    outputs["text"].parent.mkdir(parents=True, exist_ok=True)
    outputs["text"].write_text(cfg.prompt(task))
    return {"chars": len(cfg.prompt(task))}


STAGE = Stage("hello", "Write each task's prompt to a text file", run, over="task",
              outputs={"text": "{data}/hello/{task}.txt"}, params=("prompts/{task}",))
'''

HELLO_DVC = """
  hello:
    foreach: ${tasks}
    do:
      cmd: genreward stage hello --task ${item}
      deps:
        - stages/hello.py
        - data/params/prompts/${item}.json
      outs:
        - data/hello/${item}.txt
"""


@pytest.mark.long(seconds=50)
@pytest.mark.timeout(900)
def test_a_new_stage_needs_one_module_and_its_dvc_entry(tmp_path):
    work = copy_project(tmp_path / "proj")
    (work / "stages" / "hello.py").write_text(textwrap.dedent(HELLO))
    text = (work / "dvc.yaml").read_text()
    (work / "dvc.yaml").write_text(text.replace("\nplots:\n", HELLO_DVC + "\nplots:\n"))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["tasks"], params["rl"]["tasks"] = ["reach-v3", "pick-place-v3"], ["pick-place-v3"]
    params["prompts"]["reach-v3"] = "a robot arm reaches the target"
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"PYTHONPATH": str(work), "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    subprocess.run(
        [str(BIN / "dvc"), "init", "-q"], cwd=work, check=True, env={**os.environ, **env}, capture_output=True
    )

    listing = run_cli("stages", "--check", cwd=work, env=env)
    assert listing.returncode == 0, listing.stdout[-2000:] + listing.stderr[-2000:]
    assert "hello[reach-v3]  (stages/hello.py)" in listing.stdout and "dvc.yaml agrees" in listing.stdout
    assert "out text         data/hello/pick-place-v3.txt" in listing.stdout
    deployments = run_cli("deployments", cwd=work, env=env)
    assert "entrypoint: flows/stage_flows.py:hello_flow" in deployments.stdout

    res = run_cli("stage", "hello", "--task", "reach-v3", cwd=work, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "for flow 'hello'" in res.stderr and "stage hello[reach-v3]: profile laptop; inputs" in res.stderr
    assert (work / "data/hello/reach-v3.txt").read_text() == "a robot arm reaches the target"
    assert not (work / "data/hello/pick-place-v3.txt").exists()

    repro = subprocess.run(
        [str(BIN / "dvc"), "repro", "hello"],
        cwd=work,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert repro.returncode == 0, repro.stdout[-3000:] + repro.stderr[-3000:]
    assert "Running stage 'hello@pick-place-v3'" in repro.stdout
    assert (work / "data/hello/pick-place-v3.txt").read_text() == params["prompts"]["pick-place-v3"]


def test_templates_resolve_under_the_configured_folders(tmp_path):
    from genreward.config import load_config
    from stages.table import Item, get_stage

    cfg = load_config(
        REPO / "params.yaml", overrides=[f"store.data_dir={tmp_path}/d", f"store.reports_dir={tmp_path}/r"]
    )
    ins, outs = get_stage("finetune_rl").paths(cfg, Item("pick-place-v3", "frame_only", 3))
    assert outs == {"run": tmp_path / "d/rl/pick-place-v3/frame_only/seed3"}
    assert (
        ins["keyframe"] == tmp_path / "d/keyframes/pick-place-v3.zarr"
        and ins["video_model"] == tmp_path / "d/video_model"
    )
    assert get_stage("evaluate").paths(cfg, Item())[1]["summary"] == tmp_path / "r/summary.md"
    narrowed = Item("pick-place-v3", "frame_only", 3).narrow(cfg)
    assert (narrowed.tasks, narrowed.rl.tasks, narrowed.rl.methods, narrowed.rl.seeds) == (
        ("pick-place-v3",),
        ("pick-place-v3",),
        ("frame_only",),
        (3,),
    )

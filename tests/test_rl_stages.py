"""finetune_rl / evaluate stages: aggregation numbers, missing runs, reward-model wiring."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from .conftest import REPO


def _cfg(tmp_path, *extra):
    from genreward.config import load_config

    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path / 'data'}",
            f"store.reports_dir={tmp_path / 'reports'}",
            "tasks=[reach-v3]",
            "prompts.reach-v3=reach",
            "rl.tasks=[reach-v3]",
            "rl.methods=[genreward,env_only]",
            "rl.seeds=[0,1]",
            *extra,
        ],
    )


def _fake_run(root, method, seed, returns, success, agent=None, distance=None):
    d = root / "data" / "rl" / "reach-v3" / method / f"seed{seed}"
    d.mkdir(parents=True)
    pd.DataFrame(
        {
            "task": "reach-v3",
            "method": method,
            "seed": seed,
            **({} if agent is None else {"agent": agent}),
            "episode": range(len(returns)),
            "step": [0, 100, 200][: len(returns)],
            "return_mean": returns,
            "return_std": 0.0,
            "success_rate": success,
            "episodes": 2,
            **({} if distance is None else {"env_reward": "sparse", "final_obj_to_target": distance}),
        }
    ).to_parquet(d / "eval.parquet")
    (d / "run.json").write_text("{}")


def test_evaluate_aggregates_seeds_into_curves_metrics_and_table(tmp_path):
    from stages import evaluate

    _fake_run(tmp_path, "genreward", 0, [1.0, 5.0, 9.0], [0, 0, 1])
    _fake_run(tmp_path, "genreward", 1, [1.0, 3.0, 5.0], [0, 0, 0])
    _fake_run(tmp_path, "env_only", 0, [1.0, 2.0, 3.0], [0, 0, 0])
    cfg = _cfg(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"1 finetune_rl run\(s\) missing.*env_only/seed1"):
        evaluate.STAGE.execute(cfg)
    _fake_run(tmp_path, "env_only", 1, [1.0, 4.0, 5.0], [0, 1, 1])
    m = evaluate.STAGE.execute(cfg)
    g = m["reach-v3"]["genreward"]
    assert (
        g["return_mean"] == 7.0
        and g["return_std"] == pytest.approx(np.std([9, 5], ddof=1))
        and g["success_rate"] == 0.5
    )
    assert m["reach-v3"]["env_only"]["return_mean"] == 4.0 and g["seeds"] == 2 and g["steps"] == 200
    assert json.loads((tmp_path / "reports/metrics.json").read_text()) == m
    curve = pd.read_csv(tmp_path / "reports/curves/reach-v3/genreward.csv")
    assert curve["step"].tolist() == [0, 100, 200] and curve["return_mean"].tolist() == [1.0, 4.0, 7.0]
    table = (tmp_path / "reports/summary.md").read_text()
    assert "| reach-v3 | drqv2 | 7.0 ± 2.8 (50%) | 4.0 ± 1.4 (50%) |" in table  # runs without an agent column
    assert g["per_seed_return"] == {"seed0": 9.0, "seed1": 5.0} and "learned from the dense env reward" in table
    assert "obj_to_target" not in table and "obj_to_target_mean" not in g
    assert (tmp_path / "reports/plots/reach-v3.png").stat().st_size > 1000


def test_evaluate_reports_the_env_reward_setting_and_the_final_distance(tmp_path):
    from stages import evaluate

    for method, seed, dist in (("genreward", 0, [0.3, 0.2, 0.1]), ("genreward", 1, [0.3, 0.2, 0.3])):
        _fake_run(tmp_path, method, seed, [1.0, 2.0, 3.0], [0, 0, 0], distance=dist)
    for seed in (0, 1):
        _fake_run(tmp_path, "env_only", seed, [1.0, 2.0, 3.0], [0, 0, 0], distance=[0.3, 0.3, 0.25])
    m = evaluate.STAGE.execute(_cfg(tmp_path))
    g = m["reach-v3"]["genreward"]
    assert g["env_reward"] == "sparse" and g["obj_to_target_mean"] == pytest.approx(0.2)
    assert g["obj_to_target_std"] == pytest.approx(np.std([0.1, 0.3], ddof=1))
    table = (tmp_path / "reports/summary.md").read_text()
    assert "learned from the sparse env reward" in table
    assert "| reach-v3 | drqv2 | 0.2000 ± 0.1414 | 0.2500 ± 0.0000 |" in table
    curve = pd.read_csv(tmp_path / "reports/curves/reach-v3/genreward.csv")
    assert curve["obj_to_target_mean"].tolist() == pytest.approx([0.3, 0.2, 0.2])


def test_evaluate_keeps_agents_apart(tmp_path):
    """The agent is a column: each agent's runs are aggregated on their own."""
    from stages import evaluate

    for seed in (0, 1):
        _fake_run(tmp_path, "genreward", seed, [1.0, 2.0, 3.0 + seed], [0, 0, 0], agent="stub")
        _fake_run(tmp_path, "env_only", seed, [1.0, 2.0, 6.0], [0, 0, 1], agent="drqv2")
    m = evaluate.STAGE.execute(_cfg(tmp_path))
    assert set(m["reach-v3"]) == {"genreward@stub", "env_only@drqv2"}
    assert m["reach-v3"]["genreward@stub"]["agent"] == "stub" and m["reach-v3"]["genreward@stub"]["return_mean"] == 3.5
    table = (tmp_path / "reports/summary.md").read_text()
    assert (
        "| reach-v3 | drqv2 | – | 6.0 ± 0.0 (100%) |" in table and "| reach-v3 | stub | 3.5 ± 0.7 (0%) | – |" in table
    )
    assert (tmp_path / "reports/curves/reach-v3/genreward@stub.csv").exists()


def test_rl_agent_names_a_registered_agent(tmp_path, monkeypatch):
    """`rl.agent` is checked against the registry at load; a registered agent's runner gets the
    run and the stage writes its results like any other agent's."""
    from genreward.agents.registry import AGENTS, AgentSpec, RunResult
    from genreward.config import ConfigError
    from stages.finetune_rl import STAGE
    from stages.table import Item

    with pytest.raises(ConfigError, match="rl.agent.*unknown agent 'nope'; choose one of drqv2"):
        _cfg(tmp_path, "rl.agent=nope")
    runs = []

    def runner(run):
        runs.append(run)
        run.agent_dir.mkdir(parents=True)
        (run.agent_dir / "weights.safetensors").write_bytes(b"stub")
        rows = [{"step": s, "episode": s // 32, "return_mean": float(s), "return_std": 0.0, "success_rate": 0.0,
                 "episodes": 1, "returns": [float(s)]} for s in (0, 32)]  # fmt: skip
        return RunResult(evals=rows, train=[{"step": 32, "episode": 0, "env_return": 1.0}], timing={"updates": 0})

    monkeypatch.setitem(AGENTS, "stub", AgentSpec(runner, section="drqv2", description="a test agent"))
    cfg = _cfg(tmp_path, "rl.agent=stub", "rl.methods=[env_only]", "rl.seeds=[3]", "rl.steps=32", "rl.seed_steps=0",
               "env.episode_length=32")  # fmt: skip
    item = Item("reach-v3", "env_only", 3)
    summary = STAGE.run_item(cfg, item)
    (run,) = runs
    assert (run.task, run.seed, run.rl.agent, run.reward_model.method) == ("reach-v3", 3, "stub", "env_only")
    out = STAGE.paths(cfg, item)[1]["run"]
    evals = pd.read_parquet(out / "eval.parquet")
    assert evals.columns[:4].tolist() == ["task", "method", "seed", "agent"] and set(evals["agent"]) == {"stub"}
    assert json.loads((out / "run.json").read_text())["agent"] == "stub" == summary["agent"]
    assert (out / "agent" / "weights.safetensors").read_bytes() == b"stub"


def test_reward_model_loads_only_what_the_method_needs_and_names_missing_inputs(tmp_path):
    from stages.finetune_rl import STAGE, reward_model
    from stages.table import Item

    cfg = _cfg(tmp_path)
    ins, _ = STAGE.paths(cfg, Item("reach-v3", "env_only", 0))
    rm, hashes = reward_model(cfg, "reach-v3", "env_only", ins)  # nothing on disk, nothing needed
    assert rm.terms == () and hashes == {}
    with pytest.raises(Exception, match="goal_videos/reach-v3.zarr"):  # video_score=progress reads the goal video
        reward_model(cfg, "reach-v3", "video_only", ins)
    cosine = _cfg(tmp_path, "rewards.video_score=cosine", "rewards.video_baseline=none")
    with pytest.raises(Exception, match="goal_latents/reach-v3.zarr"):  # the paper's cosine, its goal latent
        reward_model(cosine, "reach-v3", "video_only", ins)
    with pytest.raises(FileNotFoundError, match="no FB model; run `dvc repro pretrain_fb`"):
        reward_model(cfg, "reach-v3", "frame_only", ins)


def test_profiles_cannot_set_the_rl_matrix_axes(tmp_path):
    import yaml

    from genreward.config import ConfigError, load_config

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["profiles"]["paper"]["rl"]["seeds"] = [0, 1, 2]
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"profiles.paper.rl.seeds: set rl.seeds at the top level"):
        load_config(tmp_path / "p.yaml")
    params["profiles"]["paper"]["rl"].pop("seeds")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match=r"rl: tasks\[0\]: unknown task 'pick-plate-v3'"):
        load_config(tmp_path / "p.yaml", overrides=["rl.tasks=[pick-plate-v3]"])
    # Narrowing `tasks` is fine for other stages; the RL stages say what to fix.
    cfg = load_config(tmp_path / "p.yaml", overrides=["tasks=[reach-v3]", "prompts.reach-v3=reach"])
    from stages import evaluate, finetune_rl

    for stage in (finetune_rl, evaluate):
        with pytest.raises(ConfigError, match=r"rl.tasks: pick-place-v3 not in `tasks`.*set rl.tasks"):
            stage.STAGE.execute(cfg)


def test_a_registered_term_is_built_through_the_registry_and_recorded_in_run_json(tmp_path, monkeypatch):
    from genreward.rewards.base import TermSpec
    from genreward.rewards.config import METHODS, TERMS
    from stages.finetune_rl import STAGE, reward_model
    from stages.table import Item

    from .test_rewards import Brightness

    built = []

    def build(cfg, task, inputs, device):
        built.append((task, set(inputs), device))
        return Brightness(), {"prompt": cfg.prompt(task)}

    monkeypatch.setitem(TERMS, "brightness", TermSpec(build, weight="clip_weight"))
    monkeypatch.setitem(METHODS, "bright", ("brightness",))
    cfg = _cfg(
        tmp_path,
        "rl.methods=[bright]",
        "rl.seeds=[0]",
        "rl.steps=32",
        "rl.seed_steps=16",
        "rl.drqv2.batch_size=8",
        "rl.drqv2.hidden_dim=32",
        "rl.drqv2.feature_dim=16",
        "rl.eval_every=32",
        "rl.eval_episodes=1",
        "rl.gif_episodes=0",
        "env.image_size=32",
        "env.episode_length=32",
        "rewards.interval=16",
        "rewards.clip_weight=0.5",
    )
    item = Item("reach-v3", "bright", 0)
    ins, outs = STAGE.paths(cfg, item)
    rm, hashes = reward_model(cfg, "reach-v3", "bright", ins)
    assert rm.terms == ("brightness",) and isinstance(rm.term("brightness"), Brightness)
    assert hashes == {"prompt": "reach"} and built == [("reach-v3", set(ins), cfg.resolve_device())]

    summary = STAGE.run_item(cfg, item)
    meta = json.loads((outs["run"] / "run.json").read_text())
    assert meta["inputs"] == {"prompt": "reach"} and meta["reward_terms"] == {"brightness": {"scale": 255}}
    assert meta["reward_stats"]["brightness"]["n"] == 2 == summary["reward_stats"]["brightness"]["n"]  # 2 of 32 steps
    train = pd.read_csv(outs["run"] / "train.csv")
    assert train["brightness_sum"].iloc[0] > 0


def test_deterministic_mode_reruns_a_seed_to_the_same_returns(tmp_path):
    """rl.deterministic: one seed, rerun in a fresh process with another thread budget
    (GENREWARD_THREADS 1 and 2, which change float sums in torch's kernels and so the returns
    when left free), gives the same evaluation returns, bit for bit; run.json records the mode."""
    import os
    import subprocess
    import sys

    got = []
    for threads in (1, 2):
        data = tmp_path / f"t{threads}"
        proc = subprocess.run(
            [sys.executable, "-m", "tests.rl_rerun", str(data), "rl.deterministic=true"],
            cwd=REPO,
            env={**os.environ, "GENREWARD_THREADS": str(threads)},
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        meta = json.loads((data / "rl/reach-v3/env_only/seed0/run.json").read_text())
        assert meta["deterministic"] is True and meta["params"]["rl"]["deterministic"] is True
    assert got[0]["threads"] == got[1]["threads"] == 1
    assert len(got[0]["returns"]) == 3 and got[0]["returns"] == got[1]["returns"]

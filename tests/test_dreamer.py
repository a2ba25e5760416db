"""DreamerV3 (sheeprl) as the `dreamerv3` agent: a tiny run through the finetune_rl stage."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from genreward.agents.config import DREAMERV3_TINY


def _cfg(tmp_path, *extra):
    """The RL stage tests' reach-v3 config (a later override of a key wins), with a tiny DreamerV3."""
    from .test_rl_stages import _cfg as rl_cfg

    return rl_cfg(
        tmp_path,
        "rl.methods=[env_only]",
        "rl.seeds=[0]",
        "rl.agent=dreamerv3",
        "rl.steps=256",
        "rl.seed_steps=64",
        "rl.eval_every=128",
        "rl.eval_episodes=1",
        "env.episode_length=32",
        "rl.dreamerv3.batch_size=2",
        "rl.dreamerv3.sequence_length=8",
        "rl.dreamerv3.replay_ratio=0.25",
        "rl.dreamerv3.log_every=32",
        f"rl.dreamerv3.overrides=[{','.join(DREAMERV3_TINY)}]",
        *extra,
    )


def test_dreamerv3_run_writes_what_drqv2_runs_write_and_restarts_after_a_crash(tmp_path, monkeypatch):
    from genreward.agents import dreamer
    from genreward.agents.registry import RLDiverged
    from genreward.training import load_state
    from stages.finetune_rl import STAGE
    from stages.table import Item

    cfg = _cfg(tmp_path, "rl.env_reward=sparse", "rl.sparse_interval=16")
    item = Item("reach-v3", "env_only", 0)
    out = STAGE.paths(cfg, item)[1]["run"]
    partial = out.parent / f".{out.name}.partial"

    # A run that stops half-way (here: a diverging loss at the first logged metrics) is never
    # reported as finished: no output folder, its partial folder kept.
    real = dreamer.MetricsLog.log_metrics

    def nan_loss(self, metrics, step=None):
        if any(k.startswith("Loss/") for k in metrics):
            metrics = {**metrics, "Loss/world_model_loss": float("nan")}
        return real(self, metrics, step)

    monkeypatch.setattr(dreamer.MetricsLog, "log_metrics", nan_loss)
    with pytest.raises(RLDiverged, match="non-finite Loss/world_model_loss"):
        STAGE.run_item(cfg, item)
    assert not out.exists() and partial.is_dir()
    monkeypatch.setattr(dreamer.MetricsLog, "log_metrics", real)

    # The rerun starts from scratch and completes.
    summary = STAGE.run_item(cfg, item)
    assert not partial.exists() and summary["agent"] == "dreamerv3" and summary["steps"] == 256
    evals = pd.read_parquet(out / "eval.parquet")
    assert evals["step"].tolist() == [128, 256] and set(evals["agent"]) == {"dreamerv3"}
    assert np.isfinite(evals["return_mean"]).all() and (evals["episodes"] == 1).all()
    train = pd.read_csv(out / "train.csv")
    assert train["step"].tolist() == list(range(32, 257, 32))
    # env_only on the sparse env reward: it learns from the env reward paid every 16 steps (2 of 32);
    # the dense return is reported beside it
    np.testing.assert_allclose(train["reward_return"], train["env_reward_return"], rtol=1e-5)
    assert (train["env_return"] > 4 * train["env_reward_return"]).all() and (train["env_reward_return"] > 0).all()
    assert (evals["env_reward"] == "sparse").all() and evals["final_obj_to_target"].notna().all()
    assert (out / "rollout.gif").stat().st_size > 1000
    meta = json.loads((out / "run.json").read_text())
    assert meta["agent"] == "dreamerv3" and meta["complete"] and meta["params"]["rl"]["dreamerv3"]["size"] == "XS"
    # Weights without pickle: safetensors checkpoints only, the replay not kept.
    agent = out / "agent"
    ckpts = sorted(p.name for p in (agent / "checkpoint").iterdir())
    assert ckpts and all(n.endswith(".safetensors") for n in ckpts), ckpts
    assert not (agent / "memmap_buffer").exists() and not list(agent.rglob("*.ckpt"))
    state = load_state(agent / "checkpoint" / ckpts[-1], only=("world_model", "actor", "iter_num"))
    assert state["iter_num"] == 256 and any(k.startswith("encoder") for k in state["world_model"])
    assert (agent / "config.yaml").is_file() and (agent / "metrics.csv").stat().st_size > 0


def test_an_error_of_the_env_stops_a_dreamerv3_run_instead_of_restarting_its_env(tmp_path, monkeypatch):
    """sheeprl restarts an env that raises an Exception; a non-finite reward of ours must stop the
    run (RLDiverged), at once, and nothing is reported as finished."""
    from genreward.agents.registry import RLDiverged
    from genreward.rewards.wrapper import GenRewardWrapper
    from stages.finetune_rl import STAGE
    from stages.table import Item

    real, calls = GenRewardWrapper.step, []

    def bad_reward(self, action):
        calls.append(1)
        if len(calls) == 40:
            raise FloatingPointError("env_only: non-finite reward at step 39 (terms: {})")
        return real(self, action)

    monkeypatch.setattr(GenRewardWrapper, "step", bad_reward)
    cfg = _cfg(tmp_path)
    item = Item("reach-v3", "env_only", 0)
    with pytest.raises(RLDiverged, match="DreamerV3: env_only: non-finite reward at step 39"):
        STAGE.run_item(cfg, item)
    assert len(calls) == 40 and not STAGE.paths(cfg, item)[1]["run"].exists()


def test_dreamerv3_settings_reach_sheeprl(tmp_path):
    """The run's budget and knobs become sheeprl's settings; extra overrides come last."""
    from genreward.agents.dreamer import overrides
    from genreward.agents.registry import RLRun

    cfg = _cfg(tmp_path, "rl.dreamerv3.size=S", "rl.dreamerv3.overrides=[algo.replay_ratio=1]")
    run = RLRun("reach-v3", 3, cfg.rl, cfg.env, None, "cpu", tmp_path / "agent")
    o = overrides(run, "k", tmp_path)
    assert "algo=dreamer_v3_S" in o and "algo.total_steps=256" in o and "algo.learning_starts=64" in o
    assert "seed=3" in o and "checkpoint.every=128" in o and "buffer.checkpoint=False" in o
    assert o[-1] == "algo.replay_ratio=1" and "algo.replay_ratio=0.25" in o
    assert "torch_use_deterministic_algorithms=False" in o
    from genreward.agents.dreamer import compose
    from genreward.config import ConfigError

    bad = _cfg(tmp_path, "rl.dreamerv3.overrides=[algo.replay_ratoi=1]")  # a misspelt sheeprl key
    with pytest.raises(
        ConfigError, match=r"rl.dreamerv3.overrides .*: sheeprl refuses them: Could not override 'algo.replay_ratoi'"
    ):
        compose(RLRun("reach-v3", 3, bad.rl, bad.env, None, "cpu", tmp_path / "agent"), "k", tmp_path)
    run = RLRun("reach-v3", 3, _cfg(tmp_path, "rl.deterministic=true").rl, cfg.env, None, "cpu", tmp_path / "agent")
    o = overrides(run, "k", tmp_path)  # sheeprl sets torch's switches itself: ours must reach it
    assert "torch_use_deterministic_algorithms=True" in o and "torch_backends_cudnn_benchmark=False" in o

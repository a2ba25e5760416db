"""Stage collect_probes: held-out episodes with known outcomes (genreward/envs/probes.py)."""

from __future__ import annotations

import inspect
import json

import numpy as np
import pytest
import yaml
from pydantic import ValidationError

from genreward.config import config_from_dict
from genreward.envs.probes import (
    ARRAYS,
    EXPERT,
    KIND,
    KINDS,
    NEAR_MISS,
    NOISY,
    RANDOM,
    SEED_BASE,
    TASK_STRIDE,
    ProbeConfig,
    plan_probes,
    probe_env_config,
    probe_seed,
    read_probes,
)
from genreward.envs.tasks import METAWORLD_V3_TASKS
from genreward.store import ArtifactError
from genreward.store.artifacts import open_artifact

from .conftest import REPO, tiny_params

TASK = "reach-v3"  # its expert first succeeds after ~40-60 steps
PROBES = {
    "expert_episodes": 1,
    "noise_stds": [0.5],
    "noisy_episodes_per_level": 1,
    "near_miss_episodes": 1,
    "near_miss_fraction": [0.5, 0.9],
    "random_episodes": 1,
    "seed": 0,
}


def _cfg(data_dir, workers: int = 1):
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["env"].update(image_size=16, episode_length=64)  # long enough for the expert to succeed
    params["probes"] = dict(PROBES)
    params["store"]["data_dir"] = str(data_dir)
    params["runtime"].update(num_workers=workers, progress=False)
    return config_from_dict(params)


def test_defaults_are_small_and_bad_values_fail():
    cfg = ProbeConfig()
    assert cfg.episodes_per_task == 11  # the whole stage: about 2.5 min for the 5 default tasks on 2 cores
    plan = plan_probes("pick-place-v3", cfg)
    assert [j.kind for j in plan] == [EXPERT] * 3 + [NOISY] * 4 + [NEAR_MISS] * 2 + [RANDOM] * 2
    assert [j.noise_std for j in plan] == [0.0] * 3 + [0.3, 0.3, 1.0, 1.0] + [0.0] * 4
    for bad in (
        {"near_miss_fraction": (0.9, 0.5)},
        {"near_miss_fraction": (0.5, 1.0)},
        {"noise_stds": (0.0,)},
        {"seed": 21},
        {"expert_episodes": 0, "noisy_episodes_per_level": 0, "near_miss_episodes": 0, "random_episodes": 0},
        {"extra_knob": 1},
    ):
        with pytest.raises(ValidationError):
            ProbeConfig(**bad)


def test_seeds_are_disjoint_from_every_other_stage():
    from genreward.adapt.config import DomainVideoConfig
    from genreward.adapt.domain import TRAIN, VAL, ClipJob
    from genreward.agents import collect, online

    # Probe seeds: unique over every task, episode and probe set, inside [SEED_BASE, 2**31).
    cfg = ProbeConfig(expert_episodes=1000, noise_stds=(0.1,) * 16, noisy_episodes_per_level=1000)
    assert cfg.episodes_per_task < TASK_STRIDE
    lo = min(probe_seed(t, 0, 0) for t in METAWORLD_V3_TASKS)
    hi = max(probe_seed(t, cfg.episodes_per_task - 1, 20) for t in METAWORLD_V3_TASKS)
    assert SEED_BASE == lo and hi < 2**31
    seeds = [j.seed for s in range(21) for t in METAWORLD_V3_TASKS for j in plan_probes(t, ProbeConfig(seed=s))]
    assert len(set(seeds)) == len(seeds) and lo <= min(seeds) and max(seeds) <= hi
    # The other stages' formulas, for their seeds below 1000 and their largest counts.
    dv = DomainVideoConfig(seed=999, episodes_per_task=100_000, val_episodes_per_task=10_000, max_attempts=100)
    domain_max = max(ClipJob("x", 49, split, 100_000 - 1).seeds(dv)[-1] for split in (TRAIN, VAL))
    src_online, src_collect = inspect.getsource(online.train), inspect.getsource(collect)
    assert "eval_seed = 1_000_000 + 10_000 * seed" in src_online  # RL evaluation: eval_seed + episode
    assert "seed * 1_000_003 + episode" in src_online  # RL training episodes
    assert "seed + 10_000_000 + k + i" in src_collect and "seed + k + i" in src_collect  # exploration
    rl_eval_max = 1_000_000 + 10_000 * 999 + 10_000
    rl_train_max = 999 * 1_000_003 + 1_000_000  # up to a million training episodes
    exploration_max = 999 + 1 + 10_000_000 + 1_000_000
    assert max(domain_max, rl_eval_max, rl_train_max, exploration_max) < SEED_BASE <= min(seeds)


def _arrays(path):
    g = open_artifact(path, KIND)
    return {name: g[name][...] for name in g.array_keys()}, dict(g.attrs)


@pytest.mark.timeout(600)
def test_stage_stores_the_documented_layout_deterministically(tmp_path):
    from genreward.envs.experts import expert_policy, rollout
    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from stages.table import get_stage

    stage = get_stage("collect_probes")
    cfg = _cfg(tmp_path / "a")
    result = stage.execute(cfg)
    assert list(result) == [TASK]
    path, summary_path = tmp_path / "a/probes" / f"{TASK}.zarr", tmp_path / "a/probes" / f"{TASK}.json"
    arrays, attrs = _arrays(path)
    n, length, size = 4, cfg.env.agent_steps, cfg.env.image_size
    assert set(arrays) == set(ARRAYS)
    shapes = {
        "frames": (n, length + 1, 3, size, size),
        "action": (n, length, 4),
        "reward": (n, length),
        "success": (n, length),
    }
    for name, (ndim, dtype) in ARRAYS.items():
        assert arrays[name].dtype == np.dtype(dtype) and arrays[name].ndim == ndim, name
        assert arrays[name].shape == shapes.get(name, (n,)), name
    g = open_artifact(path, KIND)
    assert g["frames"].chunks == (1, length + 1, 3, size, size)  # one episode per chunk
    assert g["kind"].attrs["names"] == list(KINDS) == attrs["kinds"]
    assert attrs["task"] == TASK and attrs["episode_length"] == length
    assert attrs["genreward"]["params"]["probes"]["noise_stds"] == [0.5]

    # Labels agree with the per-step arrays.
    kind = arrays["kind"]
    assert kind.tolist() == [EXPERT, NOISY, NEAR_MISS, RANDOM]
    np.testing.assert_array_equal(arrays["episode_success"], arrays["success"].any(axis=1))
    first = np.where(arrays["success"].any(axis=1), arrays["success"].argmax(axis=1), -1)
    np.testing.assert_array_equal(arrays["first_success"], first)
    assert arrays["noise_std"].tolist() == [0.0, 0.5, 0.0, 0.0]
    assert arrays["seed"].tolist() == [probe_seed(TASK, i) for i in range(n)]
    assert (arrays["drift_step"][kind != NEAR_MISS] == -1).all()
    assert np.abs(arrays["action"]).max() <= 1.0

    # The expert row is a plain expert rollout from its seed (frames = the agent observations);
    # the near miss follows the expert from its own seed until it drifts, before the expert succeeds.
    env = MetaWorldPixelEnv(TASK, probe_env_config(cfg.env))
    policy = expert_policy(TASK)
    try:
        ref = rollout(env, policy, seed=int(arrays["seed"][0]))
        np.testing.assert_array_equal(arrays["frames"][0], ref.frames.transpose(0, 3, 1, 2))
        np.testing.assert_array_equal(arrays["action"][0], ref.actions)
        np.testing.assert_array_equal(arrays["reward"][0], ref.rewards)
        np.testing.assert_array_equal(arrays["success"][0], ref.successes)
        near = int(np.flatnonzero(kind == NEAR_MISS)[0])
        expert = rollout(env, policy, seed=int(arrays["seed"][near]))
        drift = int(arrays["drift_step"][near])
        assert expert.first_success is not None, "the tiny config should give the reach expert time to succeed"
        assert 0 <= drift <= expert.first_success  # the expert prefix never reaches success
        np.testing.assert_array_equal(arrays["action"][near, :drift], expert.actions[:drift])
        assert not arrays["success"][near, :drift].any()
        assert not np.array_equal(arrays["action"][near, drift:], expert.actions[drift:])
    finally:
        env.close()

    summary = json.loads(summary_path.read_text())
    assert summary == result[TASK] == attrs["summary"]
    assert summary["per_kind"]["expert"]["count"] == 1 and set(summary["per_kind"]) == set(KINDS)
    assert summary["per_kind"]["expert"]["success_rate"] == float(arrays["episode_success"][0])
    assert summary["noisy_per_level"]["0.5"]["count"] == 1
    probes = read_probes(path, TASK)
    assert len(probes) == n and probes.length == length and probes.kinds == ["expert", "noisy", "near_miss", "random"]
    np.testing.assert_array_equal(probes.dense, arrays["reward"])
    assert probes.expert_successes().tolist() == ([0] if arrays["episode_success"][0] else [])
    with pytest.raises(ArtifactError, match="expected 'pick-place-v3'"):
        read_probes(path, "pick-place-v3")

    # Same config, two worker processes: bit-identical arrays.
    stage.execute(_cfg(tmp_path / "b", workers=2))
    again, _ = _arrays(tmp_path / "b/probes" / f"{TASK}.zarr")
    for name in ARRAYS:
        np.testing.assert_array_equal(again[name], arrays[name], err_msg=name)


def test_a_crash_mid_write_leaves_no_readable_store(tmp_path, monkeypatch):
    import stages.collect_probes as mod
    from stages.table import get_stage

    length, size = 3, 8
    fake = {
        "frames": np.zeros((2, length + 1, 3, size, size), np.uint8),
        "action": np.zeros((2, length, 4), np.float32),
        "reward": np.zeros((2, length), np.float32),
        "success": np.zeros((2, length), bool),
        "kind": np.array([EXPERT, RANDOM], np.int8),
        "noise_std": np.zeros(2, np.float32),
        "seed": np.array([probe_seed(TASK, 0), probe_seed(TASK, 1)], np.int64),
        "episode_success": np.zeros(2, bool),
        "first_success": np.full(2, -1, np.int32),
        "drift_step": np.full(2, -1, np.int32),
    }
    monkeypatch.setattr(mod, "collect_probes", lambda *a, **k: fake)
    real_add = mod.add_array

    def add_array(g, name, value, **kw):
        if name == "reward":
            raise RuntimeError("killed mid-write")
        return real_add(g, name, value, **kw)

    monkeypatch.setattr(mod, "add_array", add_array)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        get_stage("collect_probes").execute(_cfg(tmp_path))
    folder = tmp_path / "probes"
    assert not (folder / f"{TASK}.zarr").exists() and not (folder / f"{TASK}.json").exists()
    with pytest.raises(ArtifactError):
        open_artifact(folder / f"{TASK}.zarr", KIND)

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from genreward.agents.coverage import coverage
from genreward.agents.replay import TransitionBuffer
from genreward.envs.config import ACTION_DIM, STATE_DIM
from genreward.store import ArtifactError
from genreward.store.episodes import FIELDS, Episode, EpisodeWriter, ExplorationDataset, partial_path

from .conftest import REPO


def _episode(k: int, length: int = 6, size: int = 8, task_id: int = 0) -> Episode:
    # Frame t of episode k is filled with 10*k + t, so stacking is checkable by value.
    obs = np.stack([np.full((3, size, size), 10 * k + t, np.uint8) for t in range(length + 1)])
    state = np.zeros((length + 1, STATE_DIM), np.float32)
    state[:, 0] = np.arange(length + 1)
    return Episode(
        obs=obs,
        state=state,
        action=np.full((length, ACTION_DIM), k, np.float32),
        success=np.zeros(length + 1, bool),
        task_id=task_id,
    )


def test_writer_dataset_round_trip_and_frame_stacking(tmp_path):
    w = EpisodeWriter(tmp_path / "d.zarr", {"a": 1}, chunk_rows=4)
    for k in range(3):
        assert w.append(_episode(k)) == k
    assert not (tmp_path / "d.zarr").exists()  # not visible until finished
    with pytest.raises(ArtifactError):
        ExplorationDataset(partial_path(tmp_path / "d.zarr"))
    w.finish({"p": 1})
    for in_memory in (True, False):
        ds = ExplorationDataset(tmp_path / "d.zarr", in_memory=in_memory)
        assert ds.n == 21 and len(ds.valid_index) == 18  # 3 episodes x (6 transitions)
        rows = np.array([7, 8, 13])  # episode 1: t=0 (start), t=1, t=6 (last valid is 12)
        stacked = ds.stacked_obs(rows, 3)
        assert stacked.shape == (3, 9, 8, 8)
        assert stacked[0, ::3, 0, 0].tolist() == [10, 10, 10]  # clamped at the episode start
        assert stacked[1, ::3, 0, 0].tolist() == [10, 10, 11]
        b = ds.sample(64, np.random.default_rng(0), frame_stack=3, extra=("state",))
        assert b["obs"].shape == (64, 9, 8, 8) and b["action"].shape == (64, ACTION_DIM)
        # s' is the next frame of the same episode, never across a boundary.
        assert np.all(b["next_obs"][:, -3, 0, 0].astype(int) == b["obs"][:, -3, 0, 0].astype(int) + 1)
        assert np.all(b["next_state"][:, 0] == b["state"][:, 0] + 1)
        assert np.all(b["action"][:, 0] == b["obs"][:, -3, 0, 0] // 10)


def test_episodes_written_together_are_the_episodes_appended_one_by_one(tmp_path):
    one, together = (EpisodeWriter(tmp_path / f"{name}.zarr", {"a": 1}, chunk_rows=4) for name in ("one", "all"))
    for k in range(3):
        one.append(_episode(k, task_id=k % 2))
    assert together.extend([]) == [] and together.committed_rows == 0
    assert together.extend([_episode(0)]) == [0]
    assert together.extend([_episode(1, task_id=1), _episode(2)]) == [1, 2]
    assert together.committed_episodes == 3 and together.committed_rows == 21
    for w in (one, together):
        w.finish({})
    a, b = ExplorationDataset(tmp_path / "one.zarr"), ExplorationDataset(tmp_path / "all.zarr")
    for name in FIELDS:
        np.testing.assert_array_equal(a.array(name), b.array(name))
    assert b.array("episode").tolist() == [0] * 7 + [1] * 7 + [2] * 7


def test_uncommitted_tail_is_truncated_on_resume(tmp_path):
    w = EpisodeWriter(tmp_path / "d.zarr", {"a": 1}, chunk_rows=4)
    w.append(_episode(0))
    w.append(_episode(1))
    # Simulate a crash in the middle of writing episode 2: rows written, counter not moved.
    g = zarr.open_group(str(partial_path(tmp_path / "d.zarr")), mode="r+")
    for name in ("obs", "action"):
        arr = g[name]
        arr.resize((17,) + arr.shape[1:])
    del w
    w2 = EpisodeWriter(tmp_path / "d.zarr", {"a": 1}, chunk_rows=4)
    assert w2.committed_episodes == 2 and w2.committed_rows == 14
    assert w2.group["obs"].shape[0] == 14
    w2.append(_episode(2))
    w2.finish({})
    ds = ExplorationDataset(tmp_path / "d.zarr")
    assert ds.array("episode").tolist() == [0] * 7 + [1] * 7 + [2] * 7
    assert ds.array("obs")[14, 0, 0, 0] == 20
    # Other params: the partial store is discarded, not mixed in.
    w3 = EpisodeWriter(tmp_path / "e.zarr", {"a": 1})
    w3.append(_episode(0))
    w4 = EpisodeWriter(tmp_path / "e.zarr", {"a": 2})
    assert w4.committed_episodes == 0


def test_transition_buffer_matches_dataset_sampling():
    buf = TransitionBuffer(100, (3, 8, 8), STATE_DIM, ACTION_DIM)
    for k in range(3):
        buf.add(_episode(k))
    b = buf.sample(32, np.random.default_rng(0))
    assert np.all(b["next_obs"][:, -3, 0, 0].astype(int) == b["obs"][:, -3, 0, 0].astype(int) + 1)
    with pytest.raises(ValueError, match="buffer full"):
        for k in range(20):
            buf.add(_episode(k))


def test_coverage_metrics_on_known_states():
    state = np.zeros((20, STATE_DIM), np.float32)
    start = np.zeros(20, bool)
    start[[0, 10]] = True
    state[10:, 4] = np.linspace(0, 0.1, 10)  # episode 2's object moves 10 cm
    state[:, 0] = np.linspace(-0.3, 0.3, 20)
    success = np.zeros(20, bool)
    success[15] = True
    c = coverage(state, start, success)
    assert c["episodes"] == 2 and c["object_moved_fraction"] == 0.5
    assert c["object_max_displacement_mean_m"] == pytest.approx(0.05, abs=1e-6)
    assert c["success_events"] == 1 and c["episodes_with_success"] == 1 and c["ee_voxels_5cm"] >= 10


def test_rnd_rewards_novel_inputs_more():
    import torch

    from genreward.agents.rnd import RND

    torch.manual_seed(0)
    rnd = RND(16, hidden_dim=64, out_dim=32, lr=1e-3)
    seen = torch.randn(256, 16)
    for _ in range(300):
        rnd.update(seen[torch.randint(0, 256, (64,))])
    novel = torch.randn(256, 16) * 3 + 2
    assert rnd.error(novel).mean() > 3 * rnd.error(seen).mean()


def test_drqv2_critic_learns_a_constant_reward():
    import torch

    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config

    torch.manual_seed(0)
    agent = DrQV2Agent((9, 32, 32), 4, DrQV2Config(lr=1e-3, discount=0.0))
    obs = torch.randint(0, 255, (32, 9, 32, 32), dtype=torch.uint8)
    action = torch.rand(32, 4) * 2 - 1
    reward = torch.full((32,), 0.7)
    first = agent.update(obs, action, reward, obs, step=0)
    for _ in range(60):
        last = agent.update(obs, action, reward, obs, step=0)
    assert last["critic_loss"] < 0.1 * first["critic_loss"] and abs(last["q"] - 0.7) < 0.1
    acts = agent.act(obs[:5].numpy(), step=10**9, eval_mode=True)
    assert acts.shape == (5, 4) and np.all(np.abs(acts) <= 1)


def test_noisy_action_is_clamped_with_a_straight_through_gradient():
    import torch

    from genreward.agents.nets import noisy_action

    torch.manual_seed(0)
    mu = torch.full((4096, 4), 0.95, requires_grad=True)
    a = noisy_action(mu, 10.0, 0.3)
    values = a.detach()
    assert float(values.max()) == 1.0 and float(values.min()) > 0.6499
    assert 0.45 < float((values == 1.0).float().mean()) < 0.55  # about half the samples are clipped
    a.sum().backward()
    assert torch.equal(mu.grad, torch.ones_like(mu))  # a plain clamp gives 0 on the clipped half


def test_drqv2_actor_gets_the_full_gradient_when_its_noisy_action_is_clipped():
    import math

    import torch

    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config

    class PreferLowActions(torch.nn.Module):  # Q(h, a) = -sum(a): the actor should lower every action
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, h, a):
            q = -a.sum(-1, keepdim=True) + self.w + 0.0 * h.sum(-1, keepdim=True)
            return q, q

    torch.manual_seed(0)
    cfg = DrQV2Config(std_start=10.0, std_end=10.0, std_clip=0.3)
    agent = DrQV2Agent((9, 32, 32), 4, cfg)
    agent.critic = agent.critic_target = PreferLowActions()
    out = agent.actor.policy[-2]  # the last Linear, before the Tanh
    with torch.no_grad():  # mu = 0.95 for every observation
        out.weight.zero_()
        out.bias.fill_(math.atanh(0.95))
    obs = torch.randint(0, 255, (256, 9, 32, 32), dtype=torch.uint8)
    agent.update(obs, torch.zeros(256, 4), torch.zeros(256), obs, step=0)
    # actor loss = mean over the batch of sum(a); d/d bias = (1 - mu^2) whatever the clip did (about half
    # the noisy actions exceed 1 here, and a plain clamp would halve this gradient)
    assert np.allclose(out.bias.grad.numpy(), 1 - 0.95**2, rtol=1e-4)


def test_random_shift_moves_content_by_integer_pixels():
    import torch

    from genreward.agents.nets import RandomShift

    torch.manual_seed(1)
    x = torch.zeros(16, 1, 12, 12)
    x[:, :, 6, 6] = 1.0
    y = RandomShift(2)(x)
    pos = [divmod(int(torch.argmax(img)), 12) for img in y[:, 0]]
    assert all(4 <= r <= 8 and 4 <= c <= 8 for r, c in pos) and len(set(pos)) > 1
    assert torch.all(y.sum((1, 2, 3)) == 1)


_COLLECT = """
import sys, logging
logging.basicConfig(level=logging.INFO)
from genreward.config import load_config
from stages.collect_exploration import _collect_one
cfg = load_config({params!r}, overrides={overrides!r})
print(_collect_one(cfg, __import__('pathlib').Path({path!r}), {algo!r}, {eps}, 0.0, 0), flush=True)
"""


def _collect_cmd(tmp_path, algo="random", eps=6, workers=1):
    overrides = [
        "tasks=[reach-v3]",
        "prompts.reach-v3=reach",
        "env.image_size=32",
        "env.episode_length=64",
        f"runtime.num_workers={workers}",
        "runtime.progress=false",
        "exploration.seed_steps=32",
        "exploration.batch_size=16",
    ]
    code = _COLLECT.format(
        params=str(REPO / "params.yaml"), overrides=overrides, path=str(tmp_path / "d.zarr"), algo=algo, eps=eps
    )
    return [sys.executable, "-c", textwrap.dedent(code)]


@pytest.mark.parametrize("algo, workers", [("random", 1), ("random", 2), ("rnd", 1)])
def test_killed_collection_resumes_without_duplicates_or_partial_episodes(tmp_path, algo, workers):
    proc = subprocess.Popen(
        _collect_cmd(tmp_path, algo, workers=workers),
        cwd=REPO,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    part = partial_path(tmp_path / "d.zarr")
    deadline = time.time() + 240
    committed = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            committed = int(zarr.open_group(str(part), mode="r").attrs.get("committed_episodes", 0))
        except Exception:
            committed = 0
        if committed >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.stdout.read()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)  # the whole group: the env worker processes too
    proc.wait()
    assert not (tmp_path / "d.zarr").exists()
    killed_at = int(zarr.open_group(str(part), mode="r").attrs["committed_episodes"])
    assert 2 <= killed_at < 6

    res = subprocess.run(
        _collect_cmd(tmp_path, algo, workers=workers), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"resuming after {killed_at} committed episodes" in res.stderr
    ds = ExplorationDataset(tmp_path / "d.zarr")
    episode = ds.array("episode")
    assert ds.n == 6 * 65 and sorted(set(episode.tolist())) == list(range(6))
    assert all((episode == k).sum() == 65 for k in range(6))
    assert ds.array("episode_start").sum() == 6 and (~ds.array("valid")).sum() == 6
    assert not part.exists() and ds.group.attrs["resumed_from_episode"] == killed_at
    # Episode k always uses seed k: an uninterrupted run starts every episode from the same frame.
    fresh = subprocess.run(
        _collect_cmd(tmp_path / "fresh", algo), cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    ref = ExplorationDataset(tmp_path / "fresh" / "d.zarr")
    starts = np.flatnonzero(ds.array("episode_start"))
    np.testing.assert_array_equal(ds.array("obs")[starts], ref.array("obs")[starts])
    if algo == "random":  # episode k's actions depend on k alone: the resumed data is the fresh run's
        for name in ("obs", "action", "state"):
            np.testing.assert_array_equal(ds.array(name), ref.array(name))


def test_policy_free_collection_is_the_same_with_one_or_two_workers(tmp_path):
    from genreward.agents.collect import Plan, collect_policy_free
    from genreward.envs import EnvConfig

    env_cfg = EnvConfig(image_size=32, episode_length=40)
    plan = Plan(["reach-v3", "push-v3"], episodes_per_task=2, expert_fraction=0.5)  # expert, random per task
    data = {}
    for workers in (1, 2):
        w = EpisodeWriter(tmp_path / f"w{workers}.zarr", {"w": workers}, chunk_rows=41)
        stats = collect_policy_free(w, plan, env_cfg, workers, seed=7, expert_noise=0.1)
        assert stats.episodes == 4 and stats.env_steps == 4 * 40
        w.finish({})
        data[workers] = ExplorationDataset(tmp_path / f"w{workers}.zarr")
    for name in ("obs", "state", "action", "success", "task_id", "episode"):
        np.testing.assert_array_equal(data[1].array(name), data[2].array(name))
    ds = data[1]
    assert ds.array("task_id").tolist() == [0] * 82 + [1] * 82 and ds.array("episode_start").sum() == 4
    state, episode = ds.array("state"), ds.array("episode")
    moved = [float(np.linalg.norm(state[episode == k][-1, :3] - state[episode == k][0, :3])) for k in range(4)]
    # reach's expert drives the hand to the goal (10+ cm), uniform random actions barely move it
    assert moved[0] > 0.1 and moved[1] < moved[0]
    assert len({ds.array("obs")[episode == k][0].tobytes() for k in range(4)}) == 4  # seed + k per episode


def test_stage_writes_datasets_plots_and_metrics_without_task_reward(tmp_path):
    from genreward.config import load_config
    from stages import collect_exploration as stage

    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path}",
            "tasks=[reach-v3]",
            "prompts.reach-v3=reach",
            "env.image_size=32",
            "env.episode_length=48",
            "rl.steps=2016",  # whole 48-step episodes (a config-wide rule; no RL runs here)
            "runtime.num_workers=2",
            "runtime.progress=false",
            "exploration.episodes_per_task=4",
            "exploration.baseline_random_episodes=2",
            "exploration.seed_steps=16",
            "exploration.batch_size=16",
        ],
    )
    m = stage.STAGE.execute(cfg)
    assert m["collection"]["dataset"]["episodes_collected"] == 4 and m["collection"]["dataset"]["updates"] > 0
    assert set(m["coverage"]["reach-v3"]) == {"rnd", "random"}
    assert json.loads((tmp_path / "exploration_metrics.json").read_text())["algorithm"] == "rnd"
    assert (tmp_path / "exploration_coverage" / "reach-v3.png").exists()
    ds = ExplorationDataset(tmp_path / "exploration.zarr")
    assert ds.array("obs").shape == (4 * 49, 3, 32, 32) and ds.array("state").shape == (196, STATE_DIM)
    assert not any("reward" in name for name in ds.group.array_keys())
    assert (
        ds.group.attrs["uses_demonstrations"] is False
        and ds.group.attrs["genreward"]["params"]["exploration"]["algorithm"] == "rnd"
    )


@pytest.mark.parametrize("num_envs, episodes", [(2, 3), (3, 4)])
def test_lock_step_collector_acts_per_group_as_steps_come_back_with_data_independent_of_timing(
    tmp_path, num_envs, episodes
):
    from genreward.agents.collect import Plan, collect, collect_policy_free, env_groups
    from genreward.envs import EnvConfig

    class Recording:  # uniform actions; remembers the calls, and what it returned for each env
        def __init__(self, slow_env: int):
            self.calls, self.returned, self.seen, self.round, self.slow_env = [], {}, {}, 0, slow_env

        def reset(self, n, rng):
            self.calls.append(("reset", n))
            self.round += 1

        def act(self, obs, step, rng, envs=None):
            assert sys.getswitchinterval() <= 0.0005  # other threads give up the GIL soon
            if self.slow_env in envs:  # this group's agent is slow: the other group acts first
                time.sleep(0.003)
            a = rng.uniform(-1, 1, (len(obs), ACTION_DIM)).astype(np.float32)
            self.calls.append(tuple(int(e) for e in envs))
            for row, e in enumerate(envs):
                self.returned.setdefault((self.round, int(e)), []).append(a[row].copy())
                self.seen.setdefault((self.round, int(e)), []).append(obs[row].copy())
            return a

        def update(self, buffer, step, rng):
            self.calls.append(("update",))
            return {"loss": 0.0}

    class Buffer:  # never sampled by Recording: lets the collector schedule updates
        n = 1

        def add(self, ep):
            pass

    env_cfg = EnvConfig(image_size=32, episode_length=40)
    steps = env_cfg.agent_steps
    plan = Plan(["reach-v3"], episodes_per_task=episodes)
    groups = [tuple(int(e) for e in g) for g in env_groups(num_envs)]
    data, explorers, switch_interval = [], [], sys.getswitchinterval()
    for run, slow_env in enumerate((0, num_envs - 1)):  # first one group slow, then the other
        w = EpisodeWriter(tmp_path / f"l{run}.zarr", {"run": run}, chunk_rows=21)
        explorer = Recording(slow_env)
        stats = collect(w, lambda task_id: (explorer, Buffer()), plan, env_cfg, num_envs, seed=5, update_every=4)
        assert sys.getswitchinterval() == switch_interval  # restored
        w.finish({})
        data.append(ExplorationDataset(tmp_path / f"l{run}.zarr"))
        explorers.append(explorer)
        # two rounds: every env, then one episode, whose group alone steps (with its padding env)
        assert stats.episodes == episodes and stats.env_steps == (num_envs + len(groups[0])) * 40
        assert stats.updates == 2 * steps // 4
    assert explorers[0].calls != explorers[1].calls  # the groups acted in another order
    for explorer in explorers:
        rounds, current = [], None
        for call in explorer.calls:
            if call[0] == "reset":
                current = {"m": call[1], "acts": [], "counts": {}}
                rounds.append(current)
            elif call[0] == "update":  # every group has acted for the same steps, a multiple of 4
                assert len(set(current["counts"].values())) == 1 and next(iter(current["counts"].values())) % 4 == 0
            else:
                current["acts"].append(call)
                current["counts"][call] = current["counts"].get(call, 0) + 1
        assert [r["m"] for r in rounds] == [num_envs, len(groups[0])]
        assert sorted(rounds[0]["acts"]) == sorted([g for g in groups] * steps)
        assert rounds[1]["acts"] == [groups[0]] * steps
    for name in ("obs", "state", "action", "success"):  # whatever order the groups acted in
        np.testing.assert_array_equal(data[0].array(name), data[1].array(name))
    action, episode = data[0].array("action"), data[0].array("episode")
    valid = data[0].array("valid")
    pixels, stack = data[0].array("obs"), env_cfg.frame_stack
    for k in range(episodes):  # episode k was env k % num_envs of round k // num_envs + 1
        returned = np.stack(explorers[0].returned[(k // num_envs + 1, k % num_envs)])
        np.testing.assert_array_equal(action[(episode == k) & valid], returned)
        # what the explorer saw at step t: the episode's frames t-2, t-1, t (the first repeated)
        rows, seen = np.flatnonzero(episode == k), explorers[0].seen[(k // num_envs + 1, k % num_envs)]
        assert len(seen) == steps and seen[0].shape == (3 * stack, 32, 32)
        for t in range(steps):
            np.testing.assert_array_equal(
                seen[t], np.concatenate(pixels[[rows[max(t - j, 0)] for j in range(stack - 1, -1, -1)]])
            )
    # episode k starts from env seed seed + k, as in the policy-free collector
    w = EpisodeWriter(tmp_path / "free.zarr", {}, chunk_rows=21)
    collect_policy_free(w, plan, env_cfg, 1, seed=5)
    w.finish({})
    free = ExplorationDataset(tmp_path / "free.zarr")
    starts = np.flatnonzero(free.array("episode_start"))
    np.testing.assert_array_equal(data[0].array("obs")[starts], free.array("obs")[starts])
    np.testing.assert_array_equal(data[0].array("state")[starts], free.array("state")[starts])


def test_rnd_collection_with_two_env_groups_is_the_same_whatever_the_timing(tmp_path):
    from genreward.agents.collect import Plan, collect
    from genreward.agents.config import ExplorationConfig
    from genreward.agents.explore import RNDExplorer
    from genreward.envs import EnvConfig

    env_cfg = EnvConfig(image_size=32, episode_length=24)
    # random actions for the first 16 agent steps, then the actor; updates every 4 collector steps
    ex = ExplorationConfig(seed_steps=16, batch_size=8)
    plan = Plan(["reach-v3"], episodes_per_task=4)
    runs, orders = [], []
    for run in range(2):
        explorer = RNDExplorer((9, 32, 32), ex, 3, seed=0, horizon=env_cfg.agent_steps)
        buffer = TransitionBuffer(4 * 25, (3, 32, 32), STATE_DIM, ACTION_DIM)
        act, order = explorer.act, []

        def slow_act(obs, step, rng, envs=None, act=act, order=order, slow=run):
            if int(envs[0]) == slow:  # env `run`'s group is slow: the other group acts first
                time.sleep(0.003)
            order.append(int(envs[0]))
            return act(obs, step, rng, envs=envs)

        explorer.act = slow_act
        w = EpisodeWriter(tmp_path / f"r{run}.zarr", {"run": run}, chunk_rows=25)
        stats = collect(w, lambda task_id: (explorer, buffer), plan, env_cfg, 2, seed=1, update_every=4)
        w.finish({})
        assert stats.updates == 24 // 4 and explorer.t == 4 * 24  # the second round learns; the clock counts all
        runs.append(ExplorationDataset(tmp_path / f"r{run}.zarr"))
        orders.append(order)
    assert orders[0] != orders[1]
    for name in ("obs", "state", "action"):
        np.testing.assert_array_equal(runs[0].array(name), runs[1].array(name))
    late = runs[0].array("action")[runs[0].array("episode") >= 2]  # the actor's, after the seed steps
    assert np.abs(late).max() <= 1.0 and late.std() > 0.05


def test_coloured_noise_of_envs_that_act_in_turn_is_each_envs_own_sequence():
    from genreward.agents.noise import ColoredNoise

    whole = ColoredNoise(1.0, 3, 4, 8, np.random.default_rng(2))
    split = ColoredNoise(1.0, 3, 4, 8, np.random.default_rng(2))
    for _ in range(8):
        np.testing.assert_array_equal(
            whole.sample(), np.concatenate([split.sample(np.array([0])), split.sample(np.array([1, 2]))])
        )
    np.testing.assert_array_equal(split.steps_taken(), [8, 8, 8])
    # past the horizon: white noise from each env's own generator, whatever the call order
    late_split = [split.sample(np.array([2])), split.sample(np.array([0, 1]))]
    late_whole = whole.sample()
    np.testing.assert_array_equal(np.concatenate([late_split[1], late_split[0]]), late_whole)
    np.testing.assert_array_equal(split.steps_taken(), [9, 9, 9])


def test_coloured_noise_is_unit_power_and_drifts_further_than_white():
    from genreward.agents.noise import ColoredNoise, powerlaw_noise

    rng = np.random.default_rng(0)
    white, pink = powerlaw_noise(0.0, 200, 4, 256, rng), powerlaw_noise(1.0, 200, 4, 256, rng)
    for x in (white, pink):
        assert x.shape == (200, 256, 4)
        np.testing.assert_allclose((x**2).mean(), 1.0, atol=0.05)

    def lag1(x):
        return float(np.mean([np.corrcoef(s[:-1, 0], s[1:, 0])[0, 1] for s in x]))

    assert abs(lag1(white)) < 0.05 and lag1(pink) > 0.5
    # Integrated (what a position-controlled hand does with it): pink travels much further.
    travel = lambda x: np.abs(x.sum(axis=1)).mean()  # noqa: E731
    assert travel(pink) > 3 * travel(white)
    proc = ColoredNoise(1.0, 2, 4, 8, np.random.default_rng(1))
    seq = [proc.sample() for _ in range(8)]
    proc.reset()
    assert not np.allclose(proc.sample(), seq[0])  # a new episode draws a new sequence
    assert proc.sample().shape == (2, 4)


def _tiny_cfg(tmp_path, *extra):
    from genreward.config import load_config

    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path}",
            "tasks=[reach-v3,push-v3]",
            "prompts.reach-v3=reach",
            "prompts.push-v3=push",
            "env.image_size=32",
            "env.episode_length=6",
            "rl.steps=2046",  # whole 6-step episodes (a config-wide rule; no RL runs here)
            "runtime.progress=false",
            "exploration.episodes_per_task=3",
            "exploration.hidden_dim=16",
            *extra,
        ],
    )


@pytest.mark.parametrize("per_task", [True, False])
def test_rnd_agent_per_task_and_resume_refill(tmp_path, per_task):
    import torch

    from genreward.agents.collect import Plan
    from stages.collect_exploration import _explorers

    cfg = _tiny_cfg(tmp_path, f"exploration.agent_per_task={str(per_task).lower()}")
    plan = Plan(cfg.tasks, 3)
    w = EpisodeWriter(tmp_path / "d.zarr", {"a": 1}, chunk_rows=7)
    for k in range(4):  # task 0 complete (episodes 0-2), one episode of task 1
        w.append(_episode(k, length=6, size=32, task_id=k // 3))
    build = _explorers(cfg, "rnd", plan, w, seed=0)
    e0, b0 = build(0)
    assert build(0)[0] is e0
    e1, b1 = build(1)
    if per_task:
        assert e1 is not e0
        assert not torch.equal(e1.agent.actor.policy[0].weight, e0.agent.actor.policy[0].weight)
        # Resumed inside task 1: its buffer holds only task 1's committed episode, its clock too.
        assert b1.n == 7 and b1.obs[0, 0, 0, 0] == 30 and e1.t == 6
    else:
        assert e1 is e0 and b1 is b0 and b1.n == 4 * 7 and e1.t == 4 * 6


def test_lock_step_collector_stops_with_an_error_when_an_env_worker_dies(tmp_path):
    import multiprocessing as mp

    from genreward.agents.collect import Plan, collect
    from genreward.envs import EnvConfig

    class KillsAWorker:
        calls = 0

        def act(self, obs, step, rng, envs=None):
            self.calls += 1
            if self.calls == 5:  # an env worker dies mid-round (killed, e.g. out of memory)
                os.kill(mp.active_children()[0].pid, signal.SIGKILL)
            return rng.uniform(-1, 1, (len(obs), ACTION_DIM)).astype(np.float32)

        def update(self, buffer, step, rng):
            return {}

    def too_slow(signum, frame):
        raise TimeoutError("the collector hung after a worker died")

    explorer = KillsAWorker()
    w = EpisodeWriter(tmp_path / "d.zarr", {}, chunk_rows=21)
    before = signal.signal(signal.SIGALRM, too_slow)
    signal.alarm(120)
    try:
        with pytest.raises(Exception) as err:
            collect(w, lambda task_id: (explorer, None), Plan(["reach-v3"], 2), EnvConfig(image_size=32), 2, 0, 1)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)
    assert not isinstance(err.value, TimeoutError), err.value
    assert w.committed_episodes == 0 and not mp.active_children()

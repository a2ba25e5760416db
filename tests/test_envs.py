from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from genreward.envs import PAPER_TASKS, EnvConfig, make_env
from genreward.envs.config import STATE_DIM
from genreward.envs.metaworld_env import EpisodeOver
from genreward.envs.tasks import METAWORLD_V3_TASKS, UnknownTaskError, check_task

SMALL = EnvConfig(image_size=48, episode_length=40)


@pytest.fixture
def env():
    e = make_env("pick-place-v3", SMALL, seed=0)
    yield e
    e.close()


def _red_mask(frame: np.ndarray) -> np.ndarray:
    r, g, b = (frame[..., i].astype(int) for i in range(3))
    return (r > 90) & (r > 2 * g) & (r > 2 * b)


def test_task_list_matches_installed_metaworld():
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    assert set(METAWORLD_V3_TASKS) == set(ALL_V3_ENVIRONMENTS)
    assert set(PAPER_TASKS) <= set(METAWORLD_V3_TASKS)
    with pytest.raises(UnknownTaskError, match="did you mean 'pick-place-v3'"):
        check_task("pick-place")


def test_unknown_task_is_a_clear_error():
    with pytest.raises(UnknownTaskError, match="unknown task 'pick-palce-v3'"):
        make_env("pick-palce-v3")


def test_shapes_and_dtypes(env):
    obs, info = env.reset(seed=1)
    assert env.observation_space.contains(obs)
    assert obs["pixels"].shape == (9, 48, 48) and obs["pixels"].dtype == np.uint8
    assert obs["state"].shape == (STATE_DIM,) and obs["state"].dtype == np.float32
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
    assert env.observation_space.contains(obs)
    assert isinstance(reward, float) and terminated is False and truncated is False
    assert {"success", "episode_success", "env_steps"} <= set(info) and info["env_steps"] == 1
    # The goal position is part of the state (fully observable), and survives step()'s clipping.
    assert np.abs(obs["state"][-3:]).sum() > 0.1


def test_frame_stack_holds_distinct_consecutive_frames(env):
    obs, _ = env.reset(seed=2)
    f = obs["pixels"].reshape(3, 3, 48, 48)
    assert (f[0] == f[1]).all() and (f[1] == f[2]).all()  # reset: the first frame repeated
    history = [f[2]]
    for _ in range(3):
        obs, *_ = env.step(np.array([1.0, 0.0, 0.5, 1.0], np.float32))
        history.append(obs["pixels"][-3:])
    stack = obs["pixels"].reshape(3, 3, 48, 48)
    for k in range(3):  # oldest first: the last three rendered frames, in order
        np.testing.assert_array_equal(stack[k], history[-3 + k])
    assert not (stack[0] == stack[1]).all() and not (stack[1] == stack[2]).all()
    np.testing.assert_array_equal(stack[2], env.render().transpose(2, 0, 1))


@pytest.mark.parametrize("repeat", [1, 4])
def test_truncation_exactly_at_episode_length(repeat):
    cfg = EnvConfig(image_size=32, episode_length=40, action_repeat=repeat)
    env = make_env("reach-v3", cfg, seed=0)
    try:
        env.reset(seed=0)
        flags = []
        for _ in range(40 // repeat):
            _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
            flags.append(truncated)
            assert not terminated
        assert flags == [False] * (40 // repeat - 1) + [True]
        assert info["env_steps"] == 40
        with pytest.raises(EpisodeOver, match="call reset"):
            env.step(np.zeros(4, np.float32))
        env.reset()
        env.step(np.zeros(4, np.float32))  # usable again after reset
    finally:
        env.close()


def test_image_is_upright(env):
    """Raising the (red) arm must move its pixels up the image; a flipped image moves them down."""
    env.reset(seed=3)
    low = _red_mask(env.render())
    for _ in range(25):
        env.step(np.array([0.0, 0.0, 1.0, 0.0], np.float32))
    high = _red_mask(env.render())
    rows = np.arange(48)[:, None]

    def centroid(m):
        return float((rows * m).sum() / m.sum())

    assert low.sum() > 20 and high.sum() > 20
    assert centroid(high) < centroid(low) - 1.0, (centroid(low), centroid(high))
    # The raw Meta-World render is upside down: same check fails there.
    raw = env.unwrapped_metaworld.render()
    assert centroid(_red_mask(raw)) > centroid(high)


def test_same_seed_same_first_frame_and_randomised_resets():
    cfg = EnvConfig(image_size=48)
    a, b = make_env("pick-place-v3", cfg), make_env("pick-place-v3", cfg)
    try:
        oa, _ = a.reset(seed=7)
        ob, _ = b.reset(seed=7)
        np.testing.assert_array_equal(oa["pixels"], ob["pixels"])
        np.testing.assert_array_equal(oa["state"], ob["state"])
        oc, _ = b.reset(seed=8)
        assert not np.array_equal(oa["state"], oc["state"])
        od, _ = b.reset()  # randomize=True: new object/goal positions each reset
        assert not np.allclose(oc["state"][4:7], od["state"][4:7])
    finally:
        a.close()
        b.close()


def test_an_env_renders_the_same_after_another_env_in_the_process_is_opened_or_closed():
    """Each env renders in its own GL context: a training env keeps its frames while an evaluation
    env comes and goes in the same process (without it, they came back black)."""
    cfg = EnvConfig(image_size=48)
    a = make_env("pick-place-v3", cfg)
    try:
        a.reset(seed=3)
        before = a.render()
        assert before.std() > 10
        b = make_env("bin-picking-v3", cfg)
        b.reset(seed=4)
        np.testing.assert_array_equal(a.render(), before)
        b.close()
        np.testing.assert_array_equal(a.render(), before)
    finally:
        a.close()


def test_fixed_positions_when_not_randomised():
    env = make_env("pick-place-v3", EnvConfig(image_size=32, randomize=False), seed=5)
    try:
        s0 = env.reset(seed=5)[0]["state"]
        s1 = env.reset()[0]["state"]
        np.testing.assert_allclose(s0[4:7], s1[4:7])
        np.testing.assert_allclose(s0[-3:], s1[-3:])
    finally:
        env.close()


def test_non_finite_action_is_rejected(env):
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0, 0, 0], np.float32))


@pytest.mark.parametrize("task", PAPER_TASKS)
def test_scripted_expert_succeeds(task):
    """Oracle check: >= 7/10 episodes reach success within 256 steps (paper episode length)."""
    from genreward.envs.experts import expert_policy, rollout

    env = make_env(task, EnvConfig(image_size=32), seed=0)
    policy = expert_policy(task)
    try:
        results = [rollout(env, policy, seed=100 + i, stop_on_success=True) for i in range(10)]
    finally:
        env.close()
    wins = sum(r.success for r in results)
    assert wins >= 7, f"{task}: expert succeeded in {wins}/10"
    for r in results:
        assert len(r.actions) <= 256
        # episode_success is "success at any step" and stays set
        assert r.success == r.successes.any()


def test_episode_success_is_sticky():
    from genreward.envs.experts import expert_policy

    env = make_env("reach-v3", EnvConfig(image_size=32, episode_length=120), seed=0)
    policy = expert_policy("reach-v3")
    try:
        obs, _ = env.reset(seed=0)
        seen, flags = False, []
        for t in range(120):
            action = policy(obs["state"]) if not seen else np.array([0, 0, 1.0, 0], np.float32)
            obs, _, _, _, info = env.step(action)
            seen = seen or info["success"]
            flags.append((info["success"], info["episode_success"]))
        assert seen
        assert any(s is False and e is True for s, e in flags), (
            "moved away after success: episode_success must stay True"
        )
        assert all(e == any(s for s, _ in flags[: i + 1]) for i, (_, e) in enumerate(flags))
    finally:
        env.close()


def test_vector_env_collects_in_parallel():
    from genreward.envs.vector import make_vector_env

    venv = make_vector_env(["reach-v3", "push-v3"], EnvConfig(image_size=32, episode_length=20), num_envs=2, seed=0)
    try:
        obs, _ = venv.reset(seed=0)
        assert obs["pixels"].shape == (2, 9, 32, 32) and obs["state"].shape == (2, STATE_DIM)
        assert not np.array_equal(obs["state"][0], obs["state"][1])
        for _ in range(20):
            obs, rew, term, trunc, info = venv.step(np.zeros((2, 4), np.float32))
        assert trunc.all() and rew.shape == (2,)
    finally:
        venv.close()


def test_vector_env_sends_only_the_info_asked_for_and_its_workers_start_as_the_pool_workers():
    from genreward.envs import vector
    from genreward.envs.vector import make_vector_env

    cfg = EnvConfig(image_size=32, episode_length=20)
    lean = make_vector_env("reach-v3", cfg, num_envs=1, seed=3, info_keys=("success",), copy=False)
    try:
        lean.reset()
        _, _, _, _, info = lean.step(np.zeros((1, 4), np.float32))
        assert set(k for k in info if not k.startswith("_")) == {"success"}
        with vector.worker_processes() as (ctx, _):  # Linux: forked from the server; elsewhere spawned
            assert {type(p).__name__ for p in lean.processes} == {type(ctx.Process()).__name__}
    finally:
        lean.close()
    # what runs first in each worker (here in a fresh process, as a worker): it takes on the
    # environment of its start (a worker forked from the server would otherwise carry the server's)
    res = subprocess.run(
        [sys.executable, "-c", _VECTOR_ENV_FACTORY],
        capture_output=True,
        text=True,
        env={**os.environ, "GENREWARD_TEST_VALUE": "the server's"},
    )
    assert res.returncode == 0 and res.stdout.split() == ["start", "9"], res.stdout + res.stderr[-2000:]


_VECTOR_ENV_FACTORY = """
import os
from genreward.envs import vector
from genreward.envs.config import EnvConfig
environ = {**os.environ, "GENREWARD_TEST_VALUE": "start"}
(make,) = vector._env_fns(["reach-v3"], EnvConfig(image_size=32), 1, 0, -1, None, environ)
env = make()
print(os.environ["GENREWARD_TEST_VALUE"], env.observation_space["pixels"].shape[0])
env.close()
"""


def test_env_pool_steps_its_envs_in_workers_as_the_env_steps_in_process():
    """Three envs on two workers (env 0 and 2 share a process), commands out of env order: each
    env's newest frame, state and success equal an in-process env's with the same seeds."""
    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.envs.pool import EnvPool, EnvWorkerError
    from genreward.envs.probes import probe_env_config

    cfg = EnvConfig(image_size=32, episode_length=6)
    ref = [MetaWorldPixelEnv("reach-v3", probe_env_config(cfg), 3 + i) for i in range(3)]
    rng = np.random.default_rng(0)
    try:
        with EnvPool("reach-v3", cfg, num_envs=3, num_workers=2, seed=3) as pool:
            assert [pool.worker_of(i) for i in range(3)] == [0, 1, 0] and len(pool._procs) == 2

            def check(envs, results):
                back = []
                while len(back) < len(envs):
                    back += pool.wait()
                assert sorted(back) == sorted(envs)
                for i, (obs, success) in zip(envs, results):
                    np.testing.assert_array_equal(pool.frames[i], obs["pixels"])
                    np.testing.assert_array_equal(pool.states[i], obs["state"])
                    assert pool.successes[i] == success

            pool.reset([2, 0, 1], [12, 10, 11])
            check([2, 0, 1], [(ref[i].reset(seed=10 + i)[0], False) for i in (2, 0, 1)])
            if hasattr(os, "SCHED_BATCH"):  # Linux: workers do not preempt the main process on waking
                assert all(os.sched_getscheduler(p.pid) == os.SCHED_BATCH for p in pool._procs)
            assert pool.frames.shape == (3, 3, 32, 32) and pool.frames[0].std() > 0
            assert not np.array_equal(pool.states[0], pool.states[1])
            for _ in range(cfg.agent_steps):
                order = [int(i) for i in rng.permutation(3)]
                actions = rng.uniform(-1, 1, (3, 4)).astype(np.float32)
                pool.step(order, actions)
                expect = []
                for i, a in zip(order, actions):
                    obs, _, _, _, info = ref[i].step(a)
                    expect.append((obs, info["success"]))
                check(order, expect)
            pool.step([1], np.zeros((1, 4), np.float32))  # past the end of its episode: the worker's error
            with pytest.raises(EnvWorkerError) as err:
                while True:
                    pool.wait(timeout=60)
            assert str(err.value).startswith("env worker 1 (reach-v3) failed stepping env 1: EpisodeOver: reach-v3: ")
            assert "\n" not in str(err.value) and "in _worker" in err.value.__notes__[0]
        assert pool.closed and not any(p.is_alive() for p in pool._procs)
    finally:
        for env in ref:
            env.close()
    with pytest.raises(ValueError, match="num_workers <= num_envs"):
        EnvPool("reach-v3", cfg, num_envs=1, num_workers=2)


def test_env_pool_reports_a_worker_that_died_or_failed_to_start():
    import signal

    from genreward.envs.pool import EnvPool, EnvWorkerError

    with EnvPool("reach-v3", EnvConfig(image_size=32), num_envs=2, num_workers=2) as pool:
        pool.reset([0, 1], [0, 1])
        assert pool.wait(timeout=0) == []  # the workers are still loading
        back = []
        while len(back) < 2:
            back += pool.wait(timeout=60)
        os.kill(pool._procs[0].pid, signal.SIGKILL)  # an idle worker dies ...
        pool._procs[0].join(timeout=10)
        with pytest.raises(EnvWorkerError, match=r"env worker 0 \(reach-v3\) exited \(code -9\)"):
            pool.step([0], np.zeros((1, 4), np.float32))  # ... and is found out by the next command
    with EnvPool("reach-v3", EnvConfig(image_size=32), num_envs=2, num_workers=2) as pool:
        pool.reset([0, 1], [0, 1])
        os.kill(pool._procs[1].pid, signal.SIGKILL)  # a worker dies with a command in flight
        with pytest.raises(EnvWorkerError, match=r"env worker 1 \(reach-v3\) exited \(code -9\)"):
            for _ in range(4):
                pool.wait(timeout=60)
    assert not any(p.is_alive() for p in pool._procs)
    from types import SimpleNamespace

    not_a_config = SimpleNamespace(image_size=32)  # enough for the pool; the worker cannot make its env
    with EnvPool("reach-v3", not_a_config, num_envs=1, num_workers=1) as pool:
        pool.reset([0], [0])
        with pytest.raises(EnvWorkerError, match=r"env worker 0 \(reach-v3\) failed making its envs: AttributeError"):
            pool.wait(timeout=60)


def test_vector_env_parent_reads_spaces_without_a_simulator():
    from genreward.envs.vector import _make

    light = _make("pick-place-v3", SMALL, 0, parent_pid=os.getpid())
    full = make_env("pick-place-v3", SMALL, seed=0)
    try:
        assert not hasattr(light, "_env")
        assert light.observation_space == full.observation_space and light.action_space == full.action_space
        assert light.metadata == full.metadata and light.render_mode == full.render_mode
    finally:
        full.close()


def test_genreward_loads_torch_only_when_needed_and_env_workers_render_on_one_thread(monkeypatch):
    import sys

    from genreward.envs.vector import worker_environment

    # torch stays out until something imports torchvision, which is then prepared first
    code = (
        "import importlib.util, sys, genreward.config, genreward.envs.vector; print('torch' in sys.modules)\n"
        "if importlib.util.find_spec('torchvision'):\n"
        "    import torchvision.transforms; from genreward.compat import torchvision_ops as t\n"
        "    assert t._state['status'] in ('native', 'schemas-only'), t._state"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
    monkeypatch.setenv("LP_NUM_THREADS", "3")  # a user's own setting is kept
    with worker_environment():
        assert os.environ["LP_NUM_THREADS"] == "3"
    assert os.environ["LP_NUM_THREADS"] == "3"
    monkeypatch.delenv("LP_NUM_THREADS")
    with worker_environment():
        assert os.environ["LP_NUM_THREADS"] == "0"
    assert "LP_NUM_THREADS" not in os.environ


class _EnvironmentReader:
    """A run_jobs worker: answers a job (a variable's name) with the variable's value in the
    worker; its close leaves a file named after the worker's pid."""

    def __init__(self, marks: str):
        self.marks = marks

    def __call__(self, name: str):
        return name, os.environ.get(name), os.getpid()

    def close(self):
        with open(os.path.join(self.marks, f"closed-{os.getpid()}"), "w"):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is used on Linux")
def test_env_workers_run_with_the_environment_of_their_start_and_close_when_they_end(monkeypatch, tmp_path):
    from functools import partial

    from genreward.envs import gl
    from genreward.envs.vector import worker_environment, worker_processes
    from genreward.envs.workers import run_jobs

    with worker_processes() as (ctx, _):
        assert ctx.get_start_method() == "forkserver"  # Linux: forked from the (now running) server
    with worker_environment():
        blas = os.environ["OPENBLAS_NUM_THREADS"]
    # set after the server started: the workers still see it (they adopt the caller's environment)
    monkeypatch.setenv("GENREWARD_TEST_VALUE", "set-after-the-server-started")
    names = ["GENREWARD_TEST_VALUE", "OPENBLAS_NUM_THREADS"] * 3
    got = list(run_jobs(partial(_EnvironmentReader, str(tmp_path)), names, workers=2))
    assert sorted(v[:2] for v in got) == sorted(
        [("GENREWARD_TEST_VALUE", "set-after-the-server-started"), ("OPENBLAS_NUM_THREADS", blas)] * 3
    )
    pids = {pid for _, _, pid in got}
    assert os.getpid() not in pids
    # both workers' close ran as they ended (run_jobs returns after the workers ended; a worker
    # may have answered no job)
    closed = {int(p.name.removeprefix("closed-")) for p in tmp_path.iterdir()}
    assert len(closed) == 2 and pids <= closed and os.getpid() not in closed
    # a variable read when the server's modules loaded differs now: the workers are spawned
    other = "osmesa" if gl.configure().name != "osmesa" else "egl"
    monkeypatch.setenv("MUJOCO_GL", other)
    with worker_processes() as (ctx, environ):
        assert ctx.get_start_method() == "spawn" and environ["MUJOCO_GL"] == other


_FOREIGN_SERVER = """
import multiprocessing as mp, time
if __name__ == "__main__":
    p = mp.get_context("forkserver").Process(target=time.sleep, args=(0,))  # someone else's use first
    p.start()
    p.join()
    from genreward.envs.vector import worker_processes
    with worker_processes() as (ctx, _):
        print(ctx.get_start_method())
"""

_DEAD_SERVER = """
import os, signal, time
import numpy as np
if __name__ == "__main__":
    from multiprocessing import forkserver
    from genreward.envs.config import EnvConfig
    from genreward.envs.pool import EnvPool
    from genreward.envs.vector import worker_processes
    with EnvPool("reach-v3", EnvConfig(image_size=32), 2, 2) as pool:
        pool.reset([0, 1], [0, 1])
        got = []
        while len(got) < 2:
            got += pool.wait()
        os.kill(forkserver._forkserver._forkserver_pid, signal.SIGKILL)
        time.sleep(0.5)
        pool.step([1], np.zeros((1, 4), np.float32))
        print(pool.wait(timeout=20))  # env 1's step, though the server that forked its worker is gone
    with worker_processes() as (ctx, _):
        print(ctx.get_start_method())  # started again
    with EnvPool("reach-v3", EnvConfig(image_size=32), 1, 1) as pool:
        pool.reset([0], [0])
        print(pool.wait(timeout=60))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork server is used on Linux")
def test_env_workers_are_spawned_when_the_fork_server_is_not_ours_and_outlive_its_death():
    def run(code: str) -> list[str]:
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        return res.stdout.split()

    assert run(_FOREIGN_SERVER) == ["spawn"]  # its modules and environment are not the workers'
    assert run(_DEAD_SERVER) == ["[1]", "forkserver", "[0]"]  # answered, not hung; started again


def test_gl_respects_user_setting(monkeypatch):
    from genreward.envs import gl

    monkeypatch.setenv("MUJOCO_GL", "osmesa")
    assert gl.configure() == gl.GLBackend("osmesa", "user")
    assert os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(gl, "_available", lambda name: name == "osmesa")
    backend = gl.configure()
    assert backend == gl.GLBackend("osmesa", "auto") and os.environ["MUJOCO_GL"] == "osmesa"
    monkeypatch.delenv("MUJOCO_GL")
    monkeypatch.setattr(gl, "_available", lambda name: False)
    with pytest.raises(gl.GLBackendError, match="apt-get install libegl1"):
        gl.configure()


class _Scripted:
    """A stand-in env: reward t+1 at step t, success from step 5 on."""

    def __init__(self):
        import gymnasium as gym

        self.observation_space = gym.spaces.Box(0, 1, (1,))
        self.action_space = gym.spaces.Box(-1, 1, (1,))
        self.metadata, self.render_mode, self.spec, self.t = {}, None, None, 0

    def reset(self, **kw):
        self.t = 0
        return np.zeros(1), {}

    def step(self, action):
        self.t += 1
        return np.zeros(1), float(self.t), False, self.t == 8, {"success": self.t >= 6}


@pytest.mark.parametrize(
    "setting, expected",
    [
        ("dense", [1, 2, 3, 4, 5, 6, 7, 8]),
        ("sparse", [0, 0, 3, 0, 0, 6, 0, 0]),  # (t+1) % 3 == 0 with t counted from 0 after each reset
        ("success", [0, 0, 0, 0, 0, 1, 1, 1]),
    ],
)
def test_env_reward_settings_pay_what_the_paper_code_pays(setting, expected):
    import gymnasium as gym

    from genreward.envs.reward_setting import EnvRewardSetting

    class Env(_Scripted, gym.Env):
        pass

    env = EnvRewardSetting(Env(), setting, interval=3)
    for _ in range(2):  # the sparse schedule restarts with every episode
        env.reset()
        got, dense = [], []
        for _ in range(8):
            _, r, _, _, info = env.step(np.zeros(1))
            got.append(r)
            dense.append(info["dense_reward"])
        assert got == expected and dense == [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="env reward setting 'shaped': choose one of dense, sparse, success"):
        EnvRewardSetting(Env(), "shaped")

"""DreamerV3 from sheeprl: the ``dreamerv3`` runner of the agent registry (stage finetune_rl).

DreamerV3 itself, its replay and its training loop are sheeprl's (Apache-2.0, on Lightning
Fabric); this module connects them to the project:

- **Env.** sheeprl builds its env from ``env.wrapper`` (a hydra ``_target_``): here
  :func:`make_env`, which returns the run's Meta-World pixel env (``frame_stack`` 1: DreamerV3
  has its own memory) wrapped in :class:`~genreward.rewards.wrapper.GenRewardWrapper` (the run's
  reward model, paid at the steps ``RewardModel.episode`` pays it), :class:`EpisodeLog` (one row
  per training episode: env return, reward return, success, each term's sum) and
  :class:`NewestFrame` (the observation ``{"rgb": uint8 [3, H, W]}`` sheeprl's encoder reads).
  The factory is found through an in-process table, so the run's reward model is the one the
  stage built.
- **Checkpoints without pickle.** sheeprl saves with ``torch.save``; :class:`SafetensorsCheckpoint`
  replaces its checkpoint callback and writes its state dict with
  :func:`genreward.training.save_state` (``buffer.checkpoint`` is off: the replay is not saved).
  Runs are not resumed (as DrQ-v2's): the stage restarts a killed run from scratch.
- **Evaluation.** At every checkpoint (every ``rl.eval_every`` agent steps, and at the end) the
  saved weights are loaded into sheeprl's player and run for ``rl.eval_episodes`` episodes on
  the env's dense reward, acting with the mean of the actor's distribution (no exploration
  noise), seeds as DrQ-v2's evaluations; rows as DrQ-v2's, plus rollout frames at the end.
- **Divergence and errors.** :class:`MetricsLog` (the Fabric logger) writes sheeprl's metrics to
  ``metrics.csv`` and stops the run when a loss or gradient norm is not finite. sheeprl wraps
  the training env in its ``RestartOnException``, which catches every ``Exception`` the env
  raises and restarts the env; an error of ours (a non-finite reward, a bad frame) must stop the
  run instead, so :class:`RaiseThrough`, the outermost wrapper of our env, carries it through
  sheeprl as a ``BaseException`` and :func:`train` raises the original error.
- **Reward settings and determinism.** The env's term of the learning reward follows
  ``rl.env_reward`` (:class:`~genreward.envs.reward_setting.EnvRewardSetting`, below the reward
  wrapper); ``rl.deterministic`` sets sheeprl's own reproducibility switches too.

Multi-GPU and multi-node training use Fabric's strategies through ``rl.dreamerv3.overrides``
(docs/stages.md); they were not run here.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import shutil
import time
from itertools import count
from pathlib import Path
from typing import Callable

import gymnasium as gym
import numpy as np
from lightning.fabric.loggers.logger import Logger
from sheeprl.utils.callback import CheckpointCallback

from genreward.agents.online import eval_row, final_distance
from genreward.agents.registry import RLDiverged, RLRun, RunResult

log = logging.getLogger(__name__)

CNN_KEY = "rgb"
_ENVS: dict[str, Callable[[], gym.Env]] = {}  # run key -> env factory (this process)
_RUNS: dict[str, "_RunState"] = {}  # run key -> what the callbacks collect
_keys = count()


class NewestFrame(gym.ObservationWrapper):
    """``{"pixels": uint8 [3k, H, W], ...}`` as ``{"rgb": uint8 [3, H, W]}``, the newest frame."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        _, h, w = env.observation_space["pixels"].shape
        self.observation_space = gym.spaces.Dict({CNN_KEY: gym.spaces.Box(0, 255, (3, h, w), np.uint8)})

    def observation(self, obs):
        return {CNN_KEY: np.ascontiguousarray(obs["pixels"][-3:])}


class EnvFailed(BaseException):
    """An error of our env stack, carried through sheeprl's ``RestartOnException`` (which catches
    ``Exception`` only); :func:`train` raises ``error``."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error


class RaiseThrough(gym.Wrapper):
    """Outermost wrapper of the training env: any ``Exception`` of ``reset``/``step`` leaves as
    :class:`EnvFailed`, so that it stops the run instead of restarting the env."""

    def reset(self, **kwargs):
        try:
            return self.env.reset(**kwargs)
        except Exception as e:
            raise EnvFailed(e) from e

    def step(self, action):
        try:
            return self.env.step(action)
        except Exception as e:
            raise EnvFailed(e) from e


class EpisodeLog(gym.Wrapper):
    """One row per finished episode into ``rows``: agent steps so far, the dense env return, the
    env reward the agent got (``rl.env_reward``), the reward return, success at any step, and each
    reward term's sum (``info["genreward"]`` of GenRewardWrapper)."""

    def __init__(self, env: gym.Env, rows: list[dict]):
        super().__init__(env)
        self.rows, self.steps = rows, 0
        self._reset_sums()

    def _reset_sums(self) -> None:
        self.env_return, self.env_reward_return, self.reward_return = 0.0, 0.0, 0.0
        self.success, self.terms = False, {}

    def reset(self, **kwargs):
        self._reset_sums()
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.steps += 1
        g = info.get("genreward", {})
        self.env_return += float(info.get("dense_reward", g.get("env_reward", reward)))
        self.env_reward_return += float(g.get("env_reward", reward))
        self.reward_return += float(reward)
        self.success = self.success or bool(info.get("success", False))
        for k, v in g.get("terms", {}).items():
            self.terms[k] = self.terms.get(k, 0.0) + float(v)
        if terminated or truncated:
            self.rows.append(
                {
                    "step": self.steps,
                    "episode": len(self.rows),
                    "env_return": self.env_return,
                    "env_reward_return": self.env_reward_return,
                    "reward_return": self.reward_return,
                    "success": self.success,
                    **{f"{k}_sum": v for k, v in self.terms.items()},
                }
            )
        return obs, reward, terminated, truncated, info


def make_env(key: str, seed: int | None = None) -> gym.Env:
    """sheeprl's ``env.wrapper`` target: the env of the run ``key`` (sheeprl passes ``seed``)."""
    return _ENVS[key]()


class _RunState:
    def __init__(self, run: RLRun, eval_env: Callable[[], gym.Env]):
        self.run, self.eval_env = run, eval_env
        self.train_rows: list[dict] = []
        self.evals: list[dict] = []
        self.gif_frames: list[np.ndarray] = []
        self.eval_s = 0.0

    def kept(self, log_dir) -> str:
        """Where the last evaluated checkpoint is, for an error that stops the run ("" before one)."""
        return f"the last good checkpoint (step {self.evals[-1]['step']}) is kept in {log_dir}; " if self.evals else ""


class MetricsLog(Logger):
    """A Fabric logger whose ``log_dir`` is the run's folder (sheeprl writes ``config.yaml`` and
    ``checkpoint/`` there); ``step,key,value`` rows to ``metrics.csv``; a non-finite loss or
    gradient norm stops the run."""

    def __init__(self, log_dir: str, key: str, **_ignored):
        super().__init__()
        self._log_dir, self._key = str(log_dir), key
        os.makedirs(self._log_dir, exist_ok=True)
        self._f = open(os.path.join(self._log_dir, "metrics.csv"), "a", newline="")
        self._w = csv.writer(self._f)
        if self._f.tell() == 0:
            self._w.writerow(["step", "key", "value"])

    name = property(lambda self: "genreward")
    version = property(lambda self: 0)
    root_dir = property(lambda self: self._log_dir)
    log_dir = property(lambda self: self._log_dir)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        bad = []
        for k, v in metrics.items():
            v = float(v)
            self._w.writerow([step, k, v])
            if k.startswith(("Loss/", "Grads/")) and not math.isfinite(v):
                bad.append(k)
        self._f.flush()
        if bad:
            raise RLDiverged(
                f"DreamerV3: non-finite {', '.join(sorted(bad))} at step {step}; "
                + _RUNS[self._key].kept(self._log_dir)
                + "lower the world model's learning rate (rl.dreamerv3.overrides) or check the reward scale"
            )

    def log_hyperparams(self, params, *args, **kwargs) -> None:  # sheeprl writes config.yaml itself
        pass

    def finalize(self, status: str) -> None:
        if not self._f.closed:
            self._f.close()


def checkpoints(folder: str | Path) -> list[Path]:
    """The run's safetensors checkpoints, oldest first."""
    folder = Path(folder)
    files = folder.glob("ckpt_*.safetensors") if folder.is_dir() else []
    return sorted(files, key=lambda p: int(p.name.split("_")[1]))


class SafetensorsCheckpoint(CheckpointCallback):
    """sheeprl's checkpoint callback (``fabric.callbacks``), saving with safetensors, and the
    run's evaluation at every checkpoint. sheeprl calls ``on_checkpoint_coupled(fabric,
    ckpt_path=<log_dir>/checkpoint/ckpt_<step>_<rank>.ckpt, state, replay_buffer)`` every
    ``checkpoint.every`` agent steps and at the end."""

    def __init__(self, key: str, keep_last: int | None = 2, **_ignored):
        super().__init__(keep_last=keep_last)
        self.key = key

    def on_checkpoint_coupled(self, fabric, ckpt_path: str, state: dict, replay_buffer=None):
        from genreward.training import save_state

        if replay_buffer is not None:
            raise ValueError("buffer.checkpoint must stay false: sheeprl saves its replay only with torch.save")
        path = Path(ckpt_path).with_suffix(".safetensors")
        if fabric.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state(path, state)
            if self.keep_last:
                for old in checkpoints(path.parent)[: -self.keep_last]:
                    old.unlink()
            run_state = _RUNS[self.key]
            t0 = time.perf_counter()
            row, gifs = evaluate(path, run_state, fabric)
            run_state.eval_s += time.perf_counter() - t0
            run_state.evals.append({"episode": len(run_state.train_rows), **row})
            run_state.gif_frames = gifs or run_state.gif_frames
            r = run_state.run
            log.info(
                "%s %s seed %d, step %d: eval return %.1f ± %.1f, success %.0f%%",
                r.task,
                r.reward_model.method,
                r.seed,
                row["step"],
                row["return_mean"],
                row["return_std"],
                100 * row["success_rate"],
            )
        fabric.barrier()


def overrides(run: RLRun, key: str, log_dir: Path) -> list[str]:
    """sheeprl's settings for the run: the config ``exp=dreamer_v3`` with the run's size and
    budgets, our env, no pickle anywhere, and ``rl.dreamerv3.overrides`` last."""
    rl, knobs = run.rl, run.rl.dreamerv3
    device = "cuda" if str(run.device).startswith("cuda") else "cpu"
    return [
        "exp=dreamer_v3",
        f"algo=dreamer_v3_{knobs.size}",
        "env=gym",
        f"env.id=genreward-{run.task}",
        "env.num_envs=1",
        "env.sync_env=True",  # in this process: the env factory and the reward model are here
        "env.capture_video=False",
        "env.action_repeat=1",  # the project's env repeats actions itself (env.action_repeat)
        "env.max_episode_steps=null",  # and ends episodes itself (env.episode_length)
        "env.clip_rewards=False",
        "env.grayscale=False",
        f"env.screen_size={run.env.image_size}",
        f"fabric.accelerator={device}",
        "fabric.devices=1",
        f"seed={run.seed}",
        f"torch_use_deterministic_algorithms={rl.deterministic}",  # sheeprl sets these itself
        f"torch_backends_cudnn_deterministic={rl.deterministic}",
        f"torch_backends_cudnn_benchmark={not rl.deterministic}",
        f"algo.total_steps={rl.steps}",
        f"algo.learning_starts={rl.seed_steps}",
        f"algo.replay_ratio={knobs.replay_ratio}",
        f"algo.per_rank_batch_size={knobs.batch_size}",
        f"algo.per_rank_sequence_length={knobs.sequence_length}",
        f"algo.cnn_keys.encoder=[{CNN_KEY}]",
        "algo.mlp_keys.encoder=[]",
        "algo.run_test=False",  # evaluations are ours (noise-free, dense reward, several episodes)
        f"buffer.size={knobs.buffer_size or rl.steps}",
        "buffer.checkpoint=False",
        f"checkpoint.every={rl.eval_every}",
        "checkpoint.save_last=True",
        f"metric.log_every={knobs.log_every}",
        "model_manager.disabled=True",
        *knobs.overrides,
    ]


def compose(run: RLRun, key: str, log_dir: Path):
    """The run's sheeprl config (hydra compose API), with our env, logger and checkpoint callback."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from sheeprl.utils.utils import dotdict

    from genreward.config import ConfigError

    with initialize_config_module(config_module="sheeprl.configs", version_base="1.3"):
        try:
            cfg = hydra_compose(config_name="config", overrides=overrides(run, key, log_dir))
        except HydraException as e:  # e.g. a misspelt key in rl.dreamerv3.overrides
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(
                [f"rl.dreamerv3.overrides {list(run.rl.dreamerv3.overrides)}: sheeprl refuses them: {first}"]
            ) from None
    with open_dict(cfg):
        cfg.env.wrapper = {"_target_": f"{__name__}.make_env", "key": key, "seed": None}
        cfg.metric.logger = {"_target_": f"{__name__}.MetricsLog", "log_dir": str(log_dir), "key": key}
        cfg.fabric.callbacks = [{"_target_": f"{__name__}.SafetensorsCheckpoint", "key": key, "keep_last": 2}]
        cfg.run_name = "run"
        cfg.root_dir = str(log_dir)
    return dotdict(OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True))


def _player(ckpt: Path, cfg, fabric, obs_space, act_space):
    """sheeprl's player (encoder, RSSM, actor) with the weights of ``ckpt``."""
    from sheeprl.algos.dreamer_v3.agent import build_agent
    from sheeprl.utils.fabric import get_single_device_fabric

    from genreward.training import load_state

    fabric = get_single_device_fabric(fabric)
    state = load_state(ckpt, only=("world_model", "actor", "iter_num"))
    is_cont = isinstance(act_space, gym.spaces.Box)
    actions_dim = tuple(act_space.shape if is_cont else [act_space.n])
    *_, player = build_agent(fabric, actions_dim, is_cont, cfg, obs_space, state["world_model"], state["actor"])
    player.eval()
    return player, fabric, int(state["iter_num"]) * int(cfg.env.num_envs)


def _mean_action(player, obs):
    """The player's action with the actor distribution's mean (no exploration noise); the
    posterior latent is sampled, as in DreamerV3's own evaluation policy."""
    import torch
    from sheeprl.algos.dreamer_v3.agent import clip_actions

    p = player
    embedded = p.encoder(obs)
    p.recurrent_state = p.rssm.recurrent_model(torch.cat((p.stochastic_state, p.actions), -1), p.recurrent_state)
    if p.decoupled_rssm:
        _, s = p.rssm._representation(embedded)
    else:
        _, s = p.rssm._representation(p.recurrent_state, embedded)
    p.stochastic_state = s.view(*s.shape[:-2], p.stochastic_size * p.discrete_size)
    latent = torch.cat((p.stochastic_state, p.recurrent_state), -1)
    actions, dists = p.actor(latent, False, None)
    if p.actor.distribution in ("normal", "scaled_normal"):
        actions = [clip_actions(dists[0].mean, p.actor._action_clip)]
    else:  # tanh_normal has no closed-form mode: sheeprl's greedy choice
        actions, _ = p.actor(latent, True, None)
    p.actions = torch.cat(actions, -1)
    return p.actions


def evaluate(ckpt: Path, state: _RunState, fabric) -> tuple[dict, list[np.ndarray]]:
    """``rl.eval_episodes`` episodes of the checkpoint's policy on the env's dense reward (seeds as
    DrQ-v2's evaluations); frames of ``rl.gif_episodes`` of them."""
    import torch
    from omegaconf import OmegaConf
    from sheeprl.algos.dreamer_v3.utils import prepare_obs
    from sheeprl.utils import fs
    from sheeprl.utils.utils import dotdict

    run = state.run
    cfg = dotdict(OmegaConf.to_container(fs.load_yaml(fs.run_config(str(ckpt))), resolve=True))
    env = state.eval_env()
    try:
        player, fabric, step = _player(ckpt, cfg, fabric, env.observation_space, env.action_space)
        seed_base = 1_000_000 + 10_000 * run.seed  # as DrQ-v2's: never a training start
        returns, successes, distances, gifs = [], [], [], []
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            torch.manual_seed(seed_base)
            for i in range(run.rl.eval_episodes):
                obs, _ = env.reset(seed=seed_base + i)
                player.num_envs = 1
                player.init_states()
                frames = [obs[CNN_KEY]] if i < run.rl.gif_episodes else None
                ret, success, done = 0.0, False, False
                while not done:
                    a = _mean_action(player, prepare_obs(fabric, obs, cnn_keys=[CNN_KEY]))
                    obs, r, term, trunc, info = env.step(a.cpu().numpy().reshape(env.action_space.shape))
                    ret += float(r)
                    success = success or bool(info.get("success", False))
                    done = bool(term or trunc)
                    if frames is not None:
                        frames.append(obs[CNN_KEY])
                returns.append(ret)
                successes.append(success)
                distances.append(final_distance(info))
                if frames is not None:
                    gifs.append(np.stack(frames).transpose(0, 2, 3, 1))
    finally:
        env.close()
    return eval_row(step, returns, successes, distances), gifs


def train(run: RLRun) -> RunResult:
    """A DreamerV3 run (the registry's runner): sheeprl trains in this process on the run's env
    and reward; the weights, ``config.yaml`` and ``metrics.csv`` go to ``run.agent_dir``."""
    from sheeprl.cli import check_configs, run_algorithm

    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.envs.reward_setting import EnvRewardSetting
    from genreward.progress import progress_bar
    from genreward.rewards.wrapper import GenRewardWrapper

    env_cfg = run.env.model_copy(update={"frame_stack": 1})
    key = f"{os.getpid()}-{next(_keys)}"
    state = _RunState(run, lambda: NewestFrame(MetaWorldPixelEnv(run.task, env_cfg)))
    bar = progress_bar(
        run.rl.steps, f"{run.task} {run.reward_model.method} s{run.seed}", enabled=run.progress, unit="step"
    )

    class Progress(gym.Wrapper):
        def step(self, action):
            bar.update(1)
            return self.env.step(action)

    def train_env() -> gym.Env:
        env = EnvRewardSetting(MetaWorldPixelEnv(run.task, env_cfg), run.rl.env_reward, run.rl.sparse_interval)
        env = GenRewardWrapper(env, run.reward_model)
        return RaiseThrough(NewestFrame(Progress(EpisodeLog(env, state.train_rows))))

    log_dir = Path(run.agent_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    _ENVS[key], _RUNS[key] = train_env, state
    t0 = time.perf_counter()
    try:
        cfg = compose(run, key, log_dir)
        check_configs(cfg)
        run_algorithm(cfg)
    except EnvFailed as failed:
        e = failed.error
        if isinstance(e, FloatingPointError):  # a non-finite reward (GenRewardWrapper)
            raise RLDiverged(f"DreamerV3: {e}; {state.kept(log_dir)}check the reward terms' inputs and scale") from None
        raise e from None
    finally:
        bar.close()
        _ENVS.pop(key, None)
        _RUNS.pop(key, None)
        shutil.rmtree(log_dir / "memmap_buffer", ignore_errors=True)  # the replay: not an output
    if not state.evals:
        raise RuntimeError("DreamerV3 finished without a checkpoint to evaluate (sheeprl's checkpoint.save_last)")
    total = time.perf_counter() - t0
    return RunResult(
        evals=state.evals,
        train=state.train_rows,
        gif_frames=state.gif_frames,
        timing={"run_s": total, "eval_s": state.eval_s, "agent_steps": run.rl.steps},
    )

"""DrQ-v2 fine-tuning on a reward model: the ``drqv2`` runner of the agent registry (stage finetune_rl).

One run = one task × seed × method. The agent acts in a single Meta-World pixel env; after each
episode the reward model rewards it from its stored frames (so the replay can be relabelled),
and the episode goes into an :class:`EpisodeReplay`. The agent updates every ``rl.drqv2.update_every``
steps on n-step returns. Every ``eval_every`` steps (and at the end) it is evaluated without
exploration noise over ``eval_episodes`` episodes: dense env return and success at any step.
A non-finite loss or reward stops the run with a message; the last evaluated checkpoint is kept.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Protocol

import numpy as np

from genreward.agents.config import DrQV2Section
from genreward.agents.registry import RLDiverged, RLRun, RunResult
from genreward.agents.replay import EpisodeReplay
from genreward.envs.config import ACTION_DIM

log = logging.getLogger(__name__)


class OnlineAgent(Protocol):
    """What the DrQ-v2 trainer needs from an agent."""

    def act(
        self, obs: np.ndarray, step: int, eval_mode: bool = False, rng: np.random.Generator | None = None
    ) -> np.ndarray: ...

    def update(self, obs, action, reward, next_obs, step: int, discount=None) -> dict[str, float]:
        """One update; every value of the returned dict is checked: a non-finite one stops the run."""
        ...


def make_agent(knobs: DrQV2Section, obs_shape: tuple[int, int, int], device: str, fb_encoder=None):
    """A DrQ-v2 agent from its ``rl.drqv2`` knobs (conv encoder from ``fb_encoder`` if given)."""
    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config

    agent = DrQV2Agent(obs_shape, ACTION_DIM, DrQV2Config.from_section(knobs), device)
    if fb_encoder is not None:
        init_encoder_from(agent.encoder, fb_encoder)
    return agent


def check_finite(metrics: dict[str, float], what: str, step: int, kept: str) -> None:
    """Every number an agent reports (losses, Q values, norms) must be finite, else the run stops."""
    bad = sorted(k for k, v in metrics.items() if not np.isfinite(v))
    if bad:
        raise RLDiverged(
            f"{what}: non-finite {', '.join(bad)} at step {step} ({metrics}); {kept}; "
            "lower the agent's learning rate or check the reward scale"
        )


def init_encoder_from(dst, src) -> None:
    """Copy a single-frame encoder's weights into a frame-stacked one (first conv tiled over the
    stack and divided by its length, so a static stack gives the same features)."""
    import torch

    sd, dd = src.state_dict(), dst.state_dict()
    if sd.keys() != dd.keys():
        raise ValueError("FB encoder and agent encoder have different architectures")
    with torch.no_grad():
        for k, v in sd.items():
            if v.shape == dd[k].shape:
                dd[k].copy_(v)
            elif v.ndim == 4 and dd[k].shape[1] % v.shape[1] == 0 and v.shape[0] == dd[k].shape[0]:
                reps = dd[k].shape[1] // v.shape[1]
                dd[k].copy_(v.repeat(1, reps, 1, 1) / reps)
            else:
                raise ValueError(f"cannot map FB encoder weight {k} {list(v.shape)} to {list(dd[k].shape)}")
    dst.load_state_dict(dd)


def run_episode(env, policy: Callable[[np.ndarray], np.ndarray], seed: int, keep_rgb: bool = False):
    """One whole episode (evaluation). Returns frames uint8 [L+1,3,H,W], actions [L,A], env
    rewards [L], success-any, (optionally) upright RGB frames for a GIF, and the last step's info."""
    obs, _ = env.reset(seed=seed)
    frames, actions, rewards, rgb = [obs["pixels"][-3:]], [], [], []
    success, done, info = False, False, {}
    while not done:
        a = policy(obs["pixels"])
        obs, r, term, trunc, info = env.step(a)
        frames.append(obs["pixels"][-3:])
        actions.append(a)
        rewards.append(r)
        success = success or bool(info["success"])
        done = term or trunc
    frames = np.stack(frames)
    if keep_rgb:
        rgb = list(frames.transpose(0, 2, 3, 1))
    return frames, np.stack(actions).astype(np.float32), np.asarray(rewards, np.float32), success, rgb, info


def eval_row(step: int, returns: list[float], successes: list[bool], final_distances: list[float]) -> dict:
    """One evaluation's row (every agent's): dense return, success at any step, and the final
    object-to-goal distance (Meta-World's ``info["obj_to_target"]`` at the last step; NaN where
    the env does not report it), over the evaluation episodes."""
    return {
        "step": step,
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "success_rate": float(np.mean(successes)),
        "final_obj_to_target": float(np.mean(final_distances)),
        "episodes": len(returns),
        "returns": returns,
    }


def final_distance(info: dict) -> float:
    return float(info.get("obj_to_target", np.nan))


def evaluate(agent, env, step: int, episodes: int, seed_base: int, gif_episodes: int = 0) -> tuple[dict, list]:
    returns, successes, distances, gifs = [], [], [], []
    for i in range(episodes):
        keep = i < gif_episodes
        policy = lambda o: agent.act(o[None], step, eval_mode=True)[0]  # noqa: E731
        _, _, r, ok, rgb, info = run_episode(env, policy, seed_base + i, keep)
        returns.append(float(r.sum()))
        successes.append(bool(ok))
        distances.append(final_distance(info))
        if keep:
            gifs.append(np.stack(rgb))
    return eval_row(step, returns, successes, distances), gifs


def train(run: RLRun) -> RunResult:
    """DrQ-v2 on ``run.task`` with the run's reward model (the ``drqv2`` runner of the agent
    registry). The loop, explicitly: reset; per step act (uniform random for the first
    ``rl.seed_steps``), step the env, and every ``update_every`` steps once the replay holds an
    episode, one update on an n-step batch; at the episode's end, the reward model rewards the
    whole episode from its frames and it goes into the replay. The env's term of the learning
    reward follows ``rl.env_reward`` (:class:`~genreward.envs.reward_setting.EnvRewardSetting`);
    ``train.csv``'s ``env_return`` is the dense return, ``env_reward_return`` what the agent got.
    Evaluations at episode boundaries every ``rl.eval_every`` steps and at the end (dense reward),
    each saving the weights (safetensors)."""
    import torch

    from genreward.envs.metaworld_env import MetaWorldPixelEnv
    from genreward.envs.reward_setting import EnvRewardSetting
    from genreward.progress import progress_bar
    from genreward.training import save_checkpoint

    task, rl, env_cfg, seed, device, reward_model = run.task, run.rl, run.env, run.seed, run.device, run.reward_model
    knobs: DrQV2Section = rl.drqv2
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    L, stack, size = env_cfg.agent_steps, env_cfg.frame_stack, env_cfg.image_size
    env = EnvRewardSetting(MetaWorldPixelEnv(task, env_cfg), rl.env_reward, rl.sparse_interval)
    eval_env = MetaWorldPixelEnv(task, env_cfg)
    agent = make_agent(knobs, (3 * stack, size, size), device, run.fb_encoder)
    capacity = min(knobs.replay_episodes, -(-rl.steps // L))
    replay = EpisodeReplay(capacity, L, (3, size, size), ACTION_DIM)
    res = RunResult()
    t_env = t_update = t_reward = t_eval = 0.0
    step, episode, next_eval, n_updates = 0, 0, 0, 0
    eval_seed = 1_000_000 + 10_000 * seed  # evaluation starts never overlap training starts
    what = f"{task} {reward_model.method} seed {seed}"

    def kept() -> str:
        return f"the last good checkpoint (step {res.evals[-1]['step']}) is kept in {run.agent_dir}"

    def do_eval(final: bool) -> None:
        nonlocal t_eval
        t0 = time.perf_counter()
        row, gifs = evaluate(agent, eval_env, step, rl.eval_episodes, eval_seed, rl.gif_episodes if final else 0)
        res.evals.append({"episode": episode, **row})
        res.gif_frames = gifs or res.gif_frames
        save_checkpoint(run.agent_dir, {"agent": agent}, None, {"step": step, "evals": res.evals})
        t_eval += time.perf_counter() - t0
        log.info(
            "%s, step %d: eval return %.1f ± %.1f, success %.0f%%",
            what,
            step,
            row["return_mean"],
            row["return_std"],
            100 * row["success_rate"],
        )

    def update() -> None:
        nonlocal n_updates, t_update
        t1 = time.perf_counter()
        b = replay.sample(knobs.batch_size, rng, stack, knobs.n_step, knobs.discount)
        m = agent.update(
            *(torch.as_tensor(b[k], device=device) for k in ("obs", "action", "reward", "next_obs")),
            step,
            discount=torch.as_tensor(b["discount"], device=device),
        )
        n_updates += 1
        check_finite(m, what, step, kept())
        t_update += time.perf_counter() - t1

    bar = progress_bar(rl.steps, f"{task} {reward_model.method} s{seed}", enabled=run.progress, unit="step")
    try:
        while step < rl.steps:
            if step >= next_eval:
                do_eval(final=False)
                next_eval += rl.eval_every
            # one training episode
            t0, u0 = time.perf_counter(), t_update
            obs, _ = env.reset(seed=seed * 1_000_003 + episode)
            frames, actions, env_r, dense, success, done = [obs["pixels"][-3:]], [], [], [], False, False
            while not done:
                if step < rl.seed_steps:
                    a = rng.uniform(-1, 1, ACTION_DIM).astype(np.float32)
                else:
                    a = agent.act(obs["pixels"][None], step, rng=rng)[0]
                obs, r, term, trunc, info = env.step(a)
                frames.append(obs["pixels"][-3:])
                actions.append(a)
                env_r.append(r)
                dense.append(info["dense_reward"])
                success = success or bool(info["success"])
                done = term or trunc
                step += 1
                if step >= rl.seed_steps and replay.size > 0 and step % knobs.update_every == 0:
                    update()
            t_env += time.perf_counter() - t0 - (t_update - u0)
            bar.update(len(actions))
            frames_a, actions_a = np.stack(frames), np.stack(actions).astype(np.float32)
            env_a = np.asarray(env_r, np.float32)
            t1 = time.perf_counter()
            try:
                er = reward_model.episode(frames_a, actions_a, env_a)
            except FloatingPointError as e:
                raise RLDiverged(f"{e}; {kept()}") from None
            t_reward += time.perf_counter() - t1
            replay.add(frames_a, actions_a, env_a, er.total)
            res.train.append(
                {
                    "step": step,
                    "episode": episode,
                    "env_return": float(np.sum(dense)),
                    "env_reward_return": float(env_a.sum()),
                    "reward_return": float(er.total.sum()),
                    "success": bool(success),
                    **{f"{k}_sum": float(v.sum()) for k, v in er.terms.items()},
                }
            )
            episode += 1
        do_eval(final=True)
    finally:
        bar.close()
        env.close()
        eval_env.close()
    res.timing = {
        "env_s": t_env,
        "update_s": t_update,
        "reward_s": t_reward,
        "eval_s": t_eval,
        "updates": n_updates,
        "agent_steps": step,
        "reward_share_of_step_and_update": t_reward / max(t_env + t_update, 1e-9),
    }
    return res

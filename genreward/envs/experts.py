"""Meta-World scripted experts (``metaworld.policies``) and episode rollouts.

The experts are our oracle: they render "goal videos" for the scripted generator, domain
videos for adapting the video model and, with noise, demo data where a stage asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from genreward.envs.tasks import check_task
from genreward.video.io import resample_indices

Policy = Callable[[np.ndarray], np.ndarray]


def expert_policy(task: str) -> Policy:
    """The scripted expert for ``task``: a function of Meta-World's 39-d state."""
    from metaworld.policies import ENV_POLICY_MAP

    check_task(task)
    if task not in ENV_POLICY_MAP:
        raise KeyError(f"metaworld ships no scripted policy for {task!r}")
    policy = ENV_POLICY_MAP[task]()
    return lambda state: np.asarray(policy.get_action(np.asarray(state, dtype=np.float64)), np.float32)


@dataclass
class Episode:
    frames: np.ndarray  # uint8 [T+1, H, W, 3], upright; frames[0] is the reset frame
    actions: np.ndarray  # float32 [T, 4]
    states: np.ndarray  # float32 [T+1, 39]
    rewards: np.ndarray  # float32 [T]
    successes: np.ndarray  # bool [T]

    @property
    def success(self) -> bool:
        return bool(self.successes.any())

    @property
    def first_success(self) -> int | None:
        hits = np.flatnonzero(self.successes)
        return int(hits[0]) if hits.size else None


def rollout(
    env,
    policy: Policy,
    *,
    seed: int | None = None,
    noise_std: float = 0.0,
    rng: np.random.Generator | None = None,
    max_steps: int | None = None,
    stop_on_success: bool = False,
) -> Episode:
    """Run one episode of ``policy`` (optionally with Gaussian action noise) in a pixel env."""
    rng = rng if rng is not None else np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    frames, states, actions, rewards, successes = [env.render()], [obs["state"]], [], [], []
    limit = max_steps if max_steps is not None else env.cfg.agent_steps
    for _ in range(limit):
        action = policy(obs["state"])
        if noise_std > 0:
            action = action + rng.normal(0.0, noise_std, size=action.shape).astype(np.float32)
        action = np.clip(action, -1.0, 1.0).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(action)
        frames.append(obs["pixels"][-3:].transpose(1, 2, 0))
        states.append(obs["state"])
        actions.append(action)
        rewards.append(reward)
        successes.append(bool(info["success"]))
        if terminated or truncated or (stop_on_success and successes[-1]):
            break
    return Episode(
        frames=np.stack(frames),
        actions=np.stack(actions).astype(np.float32),
        states=np.stack(states).astype(np.float32),
        rewards=np.asarray(rewards, np.float32),
        successes=np.asarray(successes, bool),
    )


def expert_clip(
    env, policy, seed: int, noise_std: float, num_frames: int, tail_frames: int
) -> tuple[np.ndarray, bool, int]:
    """One expert episode in ``env`` (a MetaWorldPixelEnv, frame_stack 1, action_repeat 1) from
    the reset to ``tail_frames`` steps after the first success, uniformly resampled to
    ``num_frames`` frames.

    The episode is stepped without rendering (the physics state is recorded at every step);
    only the kept frames are rendered, by restoring those states. Rendering 17 frames instead
    of ~150 makes a clip several times cheaper, and the frames equal a live :func:`rollout`'s
    (tested). Returns (video uint8 [num_frames, H, W, 3], success, env steps covered by the clip)."""
    rng = np.random.default_rng(seed)
    obs, _ = env.reset(seed=seed)
    state = obs["state"]
    raw = env.unwrapped_metaworld

    def snapshot():  # everything rendering reads: joints and the mocap (hand target) bodies
        d = raw.data
        return d.qpos.copy(), d.qvel.copy(), d.mocap_pos.copy(), d.mocap_quat.copy()

    states = [snapshot()]
    first_success = None
    limit = env.cfg.episode_length
    for t in range(limit):
        action = policy(state)
        if noise_std > 0:
            action = action + rng.normal(0.0, noise_std, size=action.shape).astype(np.float32)
        state, _, _, _, info = raw.step(np.clip(action, -1.0, 1.0).astype(np.float32))
        states.append(snapshot())
        if info.get("success", 0.0) and first_success is None:
            first_success = t + 1  # index of the frame after the successful step
        if first_success is not None and t + 1 >= first_success + tail_frames:
            break
    end = len(states) if first_success is None else min(len(states), first_success + tail_frames + 1)
    frames = []
    reset_frame = obs["pixels"][-3:].transpose(1, 2, 0)  # rendered by reset, before any step
    for i in resample_indices(end, num_frames):
        if i == 0:
            frames.append(reset_frame)
            continue
        qpos, qvel, mocap_pos, mocap_quat = states[i]
        raw.data.mocap_pos[:], raw.data.mocap_quat[:] = mocap_pos, mocap_quat
        raw.set_state(qpos, qvel)
        frames.append(env.render())
    return np.stack(frames), first_success is not None, end - 1

"""Meta-World scripted experts (``metaworld.policies``) and episode rollouts.

The experts are our oracle: they render "goal videos" for the scripted generator, domain
videos for adapting the video model and, with noise, demo data where a stage asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from genreward.envs.tasks import check_task

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

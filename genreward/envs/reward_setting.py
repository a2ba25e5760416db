"""What the agent learns from the env's own reward: the reward settings of the paper's code.

``rl.env_reward`` picks one (stage finetune_rl; every agent):

- ``dense``: the env's reward at every step (Meta-World's shaped reward), unchanged.
- ``sparse``: the env's reward only at the steps where ``(t + 1) % rl.sparse_interval == 0``
  (t counts agent steps from the episode's reset), 0 elsewhere: the paper's ``sparse`` reward
  type, which pays the env reward every 128 steps, on the generated terms' schedule.
- ``success``: 1 at every step the env reports success (``info["success"]``), else 0.

The setting changes the env's term of the learning reward only (``r_env`` in
``r = env_weight·r_env + α·r_video + β·r_FB``); evaluations always report the dense return and
success of the noise-free policy, so runs under different settings are compared on one scale.
:class:`EnvRewardSetting` applies it as a gymnasium wrapper directly around the env (below
:class:`~genreward.rewards.wrapper.GenRewardWrapper`); the env's own reward is kept in
``info["dense_reward"]``.
"""

from __future__ import annotations

from typing import get_args

import gymnasium as gym

from genreward.envs.config import EnvReward

ENV_REWARDS: tuple[str, ...] = get_args(EnvReward)


class EnvRewardSetting(gym.Wrapper):
    """The env's reward under ``setting`` (module docstring); ``info["dense_reward"]`` keeps the
    env's own reward and ``info["env_reward_paid"]`` says whether this step paid it (sparse)."""

    def __init__(self, env: gym.Env, setting: EnvReward = "dense", interval: int = 128):
        super().__init__(env)
        if setting not in ENV_REWARDS:
            raise ValueError(f"env reward setting {setting!r}: choose one of {', '.join(ENV_REWARDS)}")
        if int(interval) < 1:
            raise ValueError(f"sparse interval must be >= 1, got {interval}")
        self.setting, self.interval, self.t = setting, int(interval), 0

    def reset(self, **kwargs):
        self.t = 0
        return self.env.reset(**kwargs)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        dense = float(reward)
        if self.setting == "dense":
            paid, reward = True, dense
        elif self.setting == "sparse":
            paid = self.t % self.interval == 0
            reward = dense if paid else 0.0
        else:
            paid, reward = True, float(bool(info.get("success", False)))
        return obs, reward, terminated, truncated, {**info, "dense_reward": dense, "env_reward_paid": paid}

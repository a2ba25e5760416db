"""Reward-free explorers: uniform random, and RND on a DrQ-v2 actor-critic (URLB/ExORL style).

Neither reads a task reward: the RND agent's only reward is its intrinsic novelty signal.
"""

from __future__ import annotations

import numpy as np

from genreward.agents.config import ExplorationConfig
from genreward.agents.noise import ColoredNoise
from genreward.agents.replay import TransitionBuffer
from genreward.envs.config import ACTION_DIM


class RandomExplorer:
    name = "random"

    def act(self, obs: np.ndarray, step: int, rng: np.random.Generator, envs=None) -> np.ndarray:
        return rng.uniform(-1.0, 1.0, size=(len(obs), ACTION_DIM)).astype(np.float32)

    def update(self, buffer: TransitionBuffer, step: int, rng: np.random.Generator) -> dict[str, float]:
        return {}


class RNDExplorer:
    name = "rnd"

    def __init__(
        self,
        obs_shape: tuple[int, int, int],
        cfg: ExplorationConfig,
        frame_stack: int,
        device: str = "cpu",
        seed: int = 0,
        horizon: int = 256,
    ):
        import torch

        from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config
        from genreward.agents.rnd import RND

        torch.manual_seed(seed)
        self.cfg, self.frame_stack, self.device = cfg, frame_stack, device
        self.agent = DrQV2Agent(obs_shape, ACTION_DIM, DrQV2Config.from_section(cfg), device)
        self.rnd = RND(self.agent.encoder.repr_dim, hidden_dim=cfg.hidden_dim, lr=cfg.lr).to(device)
        self._torch = torch
        self.horizon = horizon
        self.noise: ColoredNoise | None = None
        self._round_start = 0
        self.t = 0  # this agent's own step clock (seed steps, noise schedule), not the collector's

    def reset(self, n: int, rng: np.random.Generator) -> None:
        """New episodes start: fresh exploration-noise sequences (β = ``noise_beta``) per env."""
        self.noise = ColoredNoise(self.cfg.noise_beta, n, ACTION_DIM, self.horizon, rng)
        self._round_start = self.t

    def act(self, obs: np.ndarray, step: int, rng: np.random.Generator, envs=None) -> np.ndarray:
        """Actions for ``obs``. ``envs`` (index array) says which of the round's envs (see
        :meth:`reset`) the rows are, when a collector acts for a group of them at a time; the
        agent's clock is then read as if the round's envs acted one step at a time in env order,
        so the actions do not depend on which group acts first."""
        if envs is None:  # every env of the round at once
            if self.noise is None or self.noise.n != len(obs):
                self.reset(len(obs), rng)
            envs = np.arange(len(obs))
        elif self.noise is None:
            raise RuntimeError("RNDExplorer.act(envs=...) needs reset(n, rng) at the start of the round")
        envs = np.arange(self.noise.n)[envs]
        t = self._round_start + int(self.noise.steps_taken(envs[:1])[0]) * self.noise.n + int(envs[0])
        self.t = max(self.t, t + len(envs))
        noise = self.noise.sample(envs)
        if t < self.cfg.seed_steps:
            return rng.uniform(-1.0, 1.0, size=(len(obs), ACTION_DIM)).astype(np.float32)
        return self.agent.act(obs, t, rng=rng, noise=noise)

    def update(self, buffer: TransitionBuffer, step: int, rng: np.random.Generator) -> dict[str, float]:
        torch = self._torch
        b = buffer.sample(self.cfg.batch_size, rng, self.frame_stack)
        obs = torch.as_tensor(b["obs"], device=self.device)
        next_obs = torch.as_tensor(b["next_obs"], device=self.device)
        action = torch.as_tensor(b["action"], device=self.device)
        with torch.no_grad():
            next_feats = self.agent.features(next_obs, augment=True)
        rnd_loss = self.rnd.update(next_feats)
        reward = self.rnd.intrinsic_reward(next_feats)
        metrics = self.agent.update(obs, action, reward, next_obs, self.t)
        metrics.update(rnd_loss=rnd_loss, intrinsic_reward=float(reward.mean()))
        return metrics

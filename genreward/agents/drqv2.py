"""A DrQ-v2-style pixel actor-critic (Yarats et al. 2021), written from the paper.

Deterministic actor with scheduled Gaussian exploration noise (clipped in the target),
twin critics with a Polyak-averaged target, random-shift augmentation, the critic's gradient
trains the encoder. Rewards are supplied by the caller (intrinsic, generated or env rewards),
so the same agent serves exploration and fine-tuning.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genreward.agents.nets import PixelEncoder, RandomShift, mlp, noisy_action, orthogonal_init
from genreward.runtime import torch_threads


@dataclass(frozen=True)
class DrQV2Config:
    feature_dim: int = 50
    hidden_dim: int = 256
    lr: float = 1e-4
    critic_tau: float = 0.01
    discount: float = 0.99
    std_start: float = 1.0
    std_end: float = 0.1
    std_steps: int = 100_000
    std_clip: float = 0.3
    aug_pad: int = 4

    @classmethod
    def from_section(cls, section) -> "DrQV2Config":
        """From a params section with the agent knobs (``exploration:`` or ``rl:``)."""
        return cls(
            **{
                k: getattr(section, k)
                for k in ("feature_dim", "hidden_dim", "lr", "discount", "std_start", "std_end", "std_steps")
            }
        )


class Actor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.policy = mlp(feature_dim, hidden_dim, action_dim, out_act=nn.Tanh())
        self.apply(orthogonal_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.policy(self.trunk(h))


class Critic(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, feature_dim: int, hidden_dim: int):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, feature_dim), nn.LayerNorm(feature_dim), nn.Tanh())
        self.q1 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.q2 = mlp(feature_dim + action_dim, hidden_dim, 1)
        self.apply(orthogonal_init)

    def forward(self, h: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), action], dim=-1)
        return self.q1(x), self.q2(x)


class DrQV2Agent(nn.Module):
    def __init__(
        self, obs_shape: tuple[int, int, int], action_dim: int, cfg: DrQV2Config = DrQV2Config(), device: str = "cpu"
    ):
        super().__init__()
        self.cfg, self.action_dim, self.device = cfg, action_dim, device
        self.encoder = PixelEncoder(obs_shape[0], obs_shape[1])
        rd = self.encoder.repr_dim
        self.actor = Actor(rd, action_dim, cfg.feature_dim, cfg.hidden_dim)
        self.critic = Critic(rd, action_dim, cfg.feature_dim, cfg.hidden_dim)
        self.critic_target = Critic(rd, action_dim, cfg.feature_dim, cfg.hidden_dim)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.requires_grad_(False)
        self.aug = RandomShift(cfg.aug_pad)
        self.to(device)
        self.encoder_opt = torch.optim.Adam(self.encoder.parameters(), lr=cfg.lr)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr)

    def std(self, step: int) -> float:
        frac = min(1.0, step / max(1, self.cfg.std_steps))
        return self.cfg.std_start + frac * (self.cfg.std_end - self.cfg.std_start)

    @torch.no_grad()
    def act(
        self,
        obs: np.ndarray,
        step: int,
        eval_mode: bool = False,
        rng: np.random.Generator | None = None,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """obs uint8 [B, C, H, W] -> actions float32 [B, A] in [-1, 1].

        Exploration noise is ``std(step)`` times ``noise`` (unit-variance, e.g. coloured noise from
        :mod:`genreward.agents.noise`) or, when none is given, times white Gaussian noise from ``rng``.
        """
        # a few frames between env steps: one CPU thread is faster than two, and threads left
        # spinning after the call would take the cores the envs render on (docs/results.md)
        with torch_threads(1):
            mu = self.actor(self.encoder(torch.as_tensor(obs, device=self.device))).cpu().numpy()
        if eval_mode:
            return mu.astype(np.float32)
        if noise is None:
            noise = (rng or np.random.default_rng()).standard_normal(mu.shape)
        return np.clip(mu + self.std(step) * noise, -1.0, 1.0).astype(np.float32)

    def features(self, obs: torch.Tensor, augment: bool = True) -> torch.Tensor:
        # shifted as given (uint8 frames: a quarter of the bytes of floats); the encoder normalises
        return self.encoder(self.aug(obs) if augment else obs)

    def update(
        self, obs, action, reward, next_obs, step: int, discount: torch.Tensor | float | None = None
    ) -> dict[str, float]:
        """One critic + actor update on a batch (tensors on ``self.device``)."""
        cfg = self.cfg
        discount = cfg.discount if discount is None else discount
        h = self.features(obs)
        with torch.no_grad():
            next_h = self.features(next_obs)
            mu = self.actor(next_h)
            next_a = noisy_action(mu, self.std(step), cfg.std_clip)
            tq1, tq2 = self.critic_target(next_h, next_a)
            target = reward.view(-1, 1) + (discount.view(-1, 1) if torch.is_tensor(discount) else discount) * torch.min(
                tq1, tq2
            )
        q1, q2 = self.critic(h, action)
        critic_loss = nn.functional.mse_loss(q1, target) + nn.functional.mse_loss(q2, target)
        self.encoder_opt.zero_grad(set_to_none=True)
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        self.encoder_opt.step()

        h_detached = h.detach()
        mu = self.actor(h_detached)
        a = noisy_action(mu, self.std(step), cfg.std_clip)
        aq1, aq2 = self.critic(h_detached, a)
        actor_loss = -torch.min(aq1, aq2).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.critic_target.parameters()):
                tp.lerp_(p, cfg.critic_tau)
        return {
            "critic_loss": critic_loss.item(),
            "actor_loss": actor_loss.item(),
            "q": q1.mean().item(),
            "target_q": target.mean().item(),
        }

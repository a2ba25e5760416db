"""Random network distillation (Burda et al. 2019) on encoded pixels, as in URLB/ExORL.

A predictor MLP learns to match a frozen, randomly initialised target MLP on (normalised)
encoder features of the next observation; the prediction error is the intrinsic reward,
divided by a running standard deviation of that error.
"""

from __future__ import annotations

import torch
from torch import nn

from genreward.agents.nets import mlp, orthogonal_init


class RunningMeanStd(nn.Module):
    def __init__(self, shape: tuple[int, ...] = (), eps: float = 1e-4):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape))
        self.register_buffer("var", torch.ones(shape))
        self.register_buffer("count", torch.tensor(eps))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        b_mean, b_var, b_n = x.mean(0), x.var(0, unbiased=False), x.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_n
        self.mean += delta * b_n / total
        self.var = (self.var * self.count + b_var * b_n + delta.pow(2) * self.count * b_n / total) / total
        self.count = total

    @property
    def std(self) -> torch.Tensor:
        return self.var.clamp_min(1e-8).sqrt()


class RND(nn.Module):
    def __init__(self, in_dim: int, hidden_dim: int = 256, out_dim: int = 128, lr: float = 1e-4, clip: float = 5.0):
        super().__init__()
        self.feat_rms = RunningMeanStd((in_dim,))
        self.reward_rms = RunningMeanStd(())
        self.predictor = mlp(in_dim, hidden_dim, out_dim)
        self.target = mlp(in_dim, hidden_dim, out_dim)
        self.apply(orthogonal_init)
        self.target.requires_grad_(False)
        self.clip = clip
        self.opt = torch.optim.Adam(self.predictor.parameters(), lr=lr)

    def _normalise(self, feats: torch.Tensor) -> torch.Tensor:
        return ((feats - self.feat_rms.mean) / self.feat_rms.std).clamp(-self.clip, self.clip)

    def error(self, feats: torch.Tensor) -> torch.Tensor:
        x = self._normalise(feats)
        return (self.predictor(x) - self.target(x)).pow(2).mean(-1)

    def update(self, feats: torch.Tensor) -> float:
        feats = feats.detach()
        self.feat_rms.update(feats)
        loss = self.error(feats).mean()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return loss.item()

    @torch.no_grad()
    def intrinsic_reward(self, feats: torch.Tensor) -> torch.Tensor:
        err = self.error(feats.detach())
        self.reward_rms.update(err)
        return err / self.reward_rms.std

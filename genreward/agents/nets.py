"""Building blocks shared by the agents: DrQ-style pixel encoder, random-shift augmentation, MLPs."""

from __future__ import annotations

import torch
from torch import nn


def orthogonal_init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d):
        nn.init.orthogonal_(module.weight, gain=nn.init.calculate_gain("relu"))
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def mlp(inp: int, hidden: int, out: int, layers: int = 2, out_act: nn.Module | None = None) -> nn.Sequential:
    mods: list[nn.Module] = []
    dim = inp
    for _ in range(layers):
        mods += [nn.Linear(dim, hidden), nn.ReLU(inplace=True)]
        dim = hidden
    mods.append(nn.Linear(dim, out))
    if out_act is not None:
        mods.append(out_act)
    return nn.Sequential(*mods)


def noisy_action(mu: torch.Tensor, std: float | torch.Tensor, std_clip: float) -> torch.Tensor:
    """``mu`` plus clipped Gaussian noise (``std``, clipped to ±``std_clip``), clamped to the action
    box [-1, 1] with a straight-through gradient: the value is clamped, the gradient with respect
    to ``mu`` is the identity everywhere (as DrQ-v2's truncated normal), so an actor whose noisy
    action leaves the box still learns. A plain ``clamp`` would give zero gradient there and let a
    saturated actor stay saturated."""
    noise = (torch.randn_like(mu) * std).clamp(-std_clip, std_clip)
    a = mu + noise
    return a + (a.clamp(-1.0, 1.0) - a).detach()


class RandomShift(nn.Module):
    """Pad by ``pad`` pixels (edge replicate) and crop back at a random integer offset per sample."""

    def __init__(self, pad: int = 4):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        b, c, h, w = x.shape
        padded = nn.functional.pad(x, (self.pad,) * 4, mode="replicate")
        dy = torch.randint(0, 2 * self.pad + 1, (b,), device=x.device)
        dx = torch.randint(0, 2 * self.pad + 1, (b,), device=x.device)
        rows = dy[:, None] + torch.arange(h, device=x.device)[None, :]  # b,h
        cols = dx[:, None] + torch.arange(w, device=x.device)[None, :]  # b,w
        bi = torch.arange(b, device=x.device)[:, None, None]
        out = padded.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # b,h,w,c
        return out.permute(0, 3, 1, 2).contiguous()


class PixelEncoder(nn.Module):
    """Conv stack of DrQ-v2 (one stride-2 then three stride-1 3x3 convs, 32 filters) on uint8 pixels."""

    def __init__(self, in_channels: int, image_size: int, filters: int = 32):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, filters, 3, stride=2),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, stride=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(filters, filters, 3, stride=1),
            nn.ReLU(inplace=True),
        )
        with torch.no_grad():
            self.repr_dim = int(self.convs(torch.zeros(1, in_channels, image_size, image_size)).numel())
        self.apply(orthogonal_init)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 - 0.5
        return self.convs(x).flatten(1)

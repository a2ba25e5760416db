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
    """Pad by ``pad`` pixels (edge replicate) and crop back at a random integer offset per sample.

    The offsets are drawn as ``dy = randint(0, 2*pad+1, (B,))`` then ``dx`` likewise, from
    torch's generator on the input's device. Padding with edge replication and cropping at
    ``(dy, dx)`` reads pixel ``(clamp(i + dy - pad), clamp(j + dx - pad))`` of the input, so the
    output is one gather from the input: no padded copy, no channels-last intermediate. Works
    on any dtype (shifting uint8 frames before the float conversion moves 4x fewer bytes) and
    is differentiable with respect to a float input.
    """

    def __init__(self, pad: int = 4):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pad == 0:
            return x
        b, c, h, w = x.shape
        p, dev = self.pad, x.device
        dy = torch.randint(0, 2 * p + 1, (b,), device=dev)
        dx = torch.randint(0, 2 * p + 1, (b,), device=dev)
        rows = (dy[:, None] + torch.arange(-p, h - p, device=dev)).clamp_(0, h - 1)  # b,h
        cols = (dx[:, None] + torch.arange(-p, w - p, device=dev)).clamp_(0, w - 1)  # b,w
        index = (rows[:, :, None] * w + cols[:, None, :]).view(b, 1, h * w).expand(b, c, h * w)
        return x.reshape(b, c, h * w).gather(2, index).view(b, c, h, w)


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
        # obs / 255 - 0.5 in one float copy of obs (in place on the copy: same values)
        x = obs.to(torch.float32, copy=True).div_(255.0).sub_(0.5)
        return self.convs(x).flatten(1)

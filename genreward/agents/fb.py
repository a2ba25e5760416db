"""Forward-backward representations from pixels (Touati & Ollivier 2021; Touati et al. 2023).

M^π_z(s, a, s') ≈ F(s, a, z)ᵀ B(s'). One pixel encoder serves s, s' and goal frames, and is
trained by the FB loss. B is projected onto the sphere of radius √d, as are the task vectors
z. Training: the FB Bellman loss with target networks, twin F heads (min in the target and
for the actor), an orthonormality penalty on B, and a DDPG-style actor π(s, z) maximising
min(F1, F2)ᵀz. z is sampled uniformly on the sphere, mixed with B of dataset states.

The frame-level reward for a goal frame g is r(s, a) = min_k F_k(s, a, z)ᵀ z with z = B(g).

Two objects, as in Meta's FB code (metamotivo: ``FBModel`` for inference, ``FBAgent`` for
training): :class:`FBModel` holds what inference needs (encoder, F, B, actor: goal z, frame
reward); :class:`FBAgent` trains one (target networks, optimizers, the update step,
checkpoints). :func:`save_fb` writes the model alone and :func:`load_fb` builds the model alone.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn

from genreward.agents.config import FBConfig
from genreward.agents.nets import PixelEncoder, RandomShift, mlp, noisy_action, orthogonal_init
from genreward.training import checkpoint_info, load_checkpoint, save_checkpoint, train_loop


def project_sphere(x: torch.Tensor, radius: float) -> torch.Tensor:
    return radius * nn.functional.normalize(x, dim=-1)


class ForwardNet(nn.Module):
    """Twin F heads over (encoded s, a, z)."""

    def __init__(self, repr_dim: int, action_dim: int, cfg: FBConfig):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, cfg.feature_dim), nn.LayerNorm(cfg.feature_dim), nn.Tanh())
        inp = cfg.feature_dim + action_dim + cfg.z_dim
        self.heads = nn.ModuleList([mlp(inp, cfg.hidden_dim, cfg.z_dim) for _ in range(2)])
        self.apply(orthogonal_init)

    def forward(self, h: torch.Tensor, action: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.trunk(h), action, z], dim=-1)
        return self.heads[0](x), self.heads[1](x)


class BackwardNet(nn.Module):
    def __init__(self, repr_dim: int, cfg: FBConfig):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(repr_dim, cfg.feature_dim),
            nn.LayerNorm(cfg.feature_dim),
            nn.Tanh(),
            mlp(cfg.feature_dim, cfg.hidden_dim, cfg.z_dim),
        )
        self.radius = math.sqrt(cfg.z_dim)
        self.apply(orthogonal_init)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return project_sphere(self.net(h), self.radius)


class FBActor(nn.Module):
    def __init__(self, repr_dim: int, action_dim: int, cfg: FBConfig):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(repr_dim, cfg.feature_dim), nn.LayerNorm(cfg.feature_dim), nn.Tanh())
        self.policy = mlp(cfg.feature_dim + cfg.z_dim, cfg.hidden_dim, action_dim, out_act=nn.Tanh())
        self.apply(orthogonal_init)

    def forward(self, h: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.policy(torch.cat([self.trunk(h), z], dim=-1))


class FBModel(nn.Module):
    """The inference model: pixel encoder, F (twin heads), B and the actor π(s, z)."""

    def __init__(
        self, obs_shape: tuple[int, int, int], action_dim: int, cfg: FBConfig = FBConfig(), device: str = "cpu"
    ):
        super().__init__()
        self.cfg, self.action_dim, self.obs_shape, self.device = cfg, action_dim, tuple(obs_shape), device
        self.encoder = PixelEncoder(obs_shape[0], obs_shape[1])
        rd = self.encoder.repr_dim
        self.forward_net = ForwardNet(rd, action_dim, cfg)
        self.backward_net = BackwardNet(rd, cfg)
        self.actor = FBActor(rd, action_dim, cfg)
        self.radius = math.sqrt(cfg.z_dim)
        self.to(device)

    def sample_z(self, n: int, next_h: torch.Tensor | None = None) -> torch.Tensor:
        """``n`` task vectors uniform on the sphere; with encoded states ``next_h``, a share
        ``z_mix_ratio`` of them is B of those states instead (shuffled)."""
        z = project_sphere(torch.randn(n, self.cfg.z_dim, device=self.device), self.radius)
        if next_h is not None and self.cfg.z_mix_ratio > 0:
            with torch.no_grad():
                zb = self.backward_net(next_h[torch.randperm(len(next_h), device=self.device)])
            mask = torch.rand(n, 1, device=self.device) < self.cfg.z_mix_ratio
            z = torch.where(mask, zb, z)
        return z

    @torch.no_grad()
    def goal_z(self, frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """z = B(goal frame) on the sphere of radius √d; frames uint8 [N, C, H, W] (or one [C, H, W])."""
        x = torch.as_tensor(frames, device=self.device)
        if x.ndim == 3:
            x = x[None]
        return self.backward_net(self.encoder(x.float()))

    @torch.no_grad()
    def frame_reward(
        self,
        obs: np.ndarray | torch.Tensor,
        action: np.ndarray | torch.Tensor,
        goal_frame: np.ndarray | torch.Tensor | None = None,
        z: torch.Tensor | None = None,
    ) -> np.ndarray:
        """min_k F_k(s, a, z)ᵀ z for a batch of (obs uint8 [B,C,H,W], action [B,A]); z = B(goal)."""
        if z is None:
            if goal_frame is None:
                raise ValueError("frame_reward needs goal_frame or z")
            z = self.goal_z(goal_frame)
        o = torch.as_tensor(obs, device=self.device).float()
        a = torch.as_tensor(action, device=self.device, dtype=torch.float32)
        zz = z.expand(len(o), -1) if z.shape[0] == 1 else z
        f1, f2 = self.forward_net(self.encoder(o), a, zz)
        return torch.min((f1 * zz).sum(-1), (f2 * zz).sum(-1)).cpu().numpy()


# Layout of the training checkpoints of :class:`FBAgent` (``modules()``/``optimizers()``); part of
# a resumable run's fingerprint, so a partial run written in another layout starts over.
TRAIN_CHECKPOINT_FORMAT = 2


class FBAgent:
    """Trains an :class:`FBModel` (``self.model``): Polyak-averaged target copies of its encoder,
    F and B, random-shift augmentation, one optimizer for encoder + F + B and one for the actor."""

    def __init__(
        self, obs_shape: tuple[int, int, int], action_dim: int, cfg: FBConfig = FBConfig(), device: str = "cpu"
    ):
        self.cfg, self.device = cfg, device
        self.model = m = FBModel(obs_shape, action_dim, cfg, device)
        rd = m.encoder.repr_dim
        # Built like the model's networks (same initialisation sequence), then set equal to them.
        self.targets = nn.ModuleDict(
            {
                "encoder": PixelEncoder(obs_shape[0], obs_shape[1]),
                "forward_net": ForwardNet(rd, action_dim, cfg),
                "backward_net": BackwardNet(rd, cfg),
            }
        ).to(device)
        for name, tgt in self.targets.items():
            tgt.load_state_dict(getattr(m, name).state_dict())
        self.targets.requires_grad_(False)
        self.aug = RandomShift(cfg.aug_pad)
        self.fb_opt = torch.optim.Adam(
            [*m.encoder.parameters(), *m.forward_net.parameters(), *m.backward_net.parameters()], lr=cfg.lr
        )
        self.actor_opt = torch.optim.Adam(m.actor.parameters(), lr=cfg.lr)

    def modules(self) -> dict[str, nn.Module]:
        """What a training checkpoint holds besides the optimizers."""
        return {"model": self.model, "target": self.targets}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"fb": self.fb_opt, "actor": self.actor_opt}

    def update(self, obs: torch.Tensor, action: torch.Tensor, next_obs: torch.Tensor) -> dict[str, float]:
        cfg, m, tg = self.cfg, self.model, self.targets
        obs, next_obs = self.aug(obs), self.aug(next_obs)  # frames as given (uint8): the encoders normalise
        h = m.encoder(obs)
        next_h = m.encoder(next_obs)
        b = len(obs)
        z = m.sample_z(b, next_h.detach())
        with torch.no_grad():
            tnext_h = tg["encoder"](next_obs)
            mu = m.actor(next_h.detach(), z)
            next_a = noisy_action(mu, cfg.actor_std, cfg.std_clip)
            tf1, tf2 = tg["forward_net"](tnext_h, next_a, z)
            tb = tg["backward_net"](tnext_h)
            target_m = torch.min(tf1 @ tb.T, tf2 @ tb.T)
        f1, f2 = m.forward_net(h, action, z)
        bnext = m.backward_net(next_h)
        off = ~torch.eye(b, dtype=torch.bool, device=self.device)
        fb_loss = 0.0
        for f in (f1, f2):
            mm = f @ bnext.T
            fb_loss = fb_loss + 0.5 * (mm - cfg.discount * target_m)[off].pow(2).mean() - mm.diag().mean()
        cov = bnext @ bnext.T
        ortho_loss = 0.5 * cov[off].pow(2).mean() - cov.diag().mean()
        loss = fb_loss + cfg.ortho_coef * ortho_loss
        if not torch.isfinite(loss):
            raise FloatingPointError(f"FB loss is not finite ({float(loss.detach())})")
        self.fb_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.fb_opt.step()

        hd = h.detach()
        a = noisy_action(m.actor(hd, z), cfg.actor_std, cfg.std_clip)
        q1, q2 = m.forward_net(hd, a, z)
        actor_loss = -torch.min((q1 * z).sum(-1), (q2 * z).sum(-1)).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        with torch.no_grad():
            for name, tgt in tg.items():
                for tp, p in zip(tgt.parameters(), getattr(m, name).parameters()):
                    tp.lerp_(p, cfg.tau)
            # E[B Bᵀ] over the batch (d x d). With B on the √d sphere its mean diagonal is exactly 1,
            # so report the diagonal's spread (0 when isotropic) and the mean |off-diagonal|.
            cov_d = (bnext.T @ bnext) / b
            diag = cov_d.diag().std().item()
            offdiag = cov_d[~torch.eye(cfg.z_dim, dtype=torch.bool, device=self.device)].abs().mean().item()
            zc = z_correlations(m, hd, action, bnext.detach(), off)
        return {
            "fb_loss": float(fb_loss.item()),
            "ortho_loss": ortho_loss.item(),
            "actor_loss": actor_loss.item(),
            "b_cov_diag_std": diag,
            "b_cov_offdiag": offdiag,
            **zc,
        }


def _pearson(x: torch.Tensor, y: torch.Tensor) -> float:
    x, y = x - x.mean(), y - y.mean()
    den = (x.norm() * y.norm()).item()
    return float((x @ y).item() / den) if den > 0 else float("nan")


@torch.no_grad()
def z_correlations(
    model: FBModel, h: torch.Tensor, action: torch.Tensor, b: torch.Tensor, off: torch.Tensor
) -> dict[str, float]:
    """Two collapse detectors for the task vector z, both from one batch.

    ``z_goal_cos``: mean cosine between the goal embeddings z = B(s') of distinct batch states.
    Near 1 means B maps every goal to the same z (every goal gets the same reward); near 0 means
    goals are told apart. ``q_z_corr``: Pearson correlation, across the batch, between
    Q_z(s,a) = min_k F_k(s,a,z)ᵀz for two independent z drawn on the sphere. Near 1 means F
    ignores z (the frame reward would rank states the same for every goal); a useful F keeps it
    well below 1.
    """
    zn = b / b.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    goal_cos = (zn @ zn.T)[off].mean().item()
    qs = []
    for _ in range(2):
        z = model.sample_z(len(h))[:1].expand(len(h), -1)
        f1, f2 = model.forward_net(h, action, z)
        qs.append(torch.min((f1 * z).sum(-1), (f2 * z).sum(-1)))
    return {"z_goal_cos": float(goal_cos), "q_z_corr": _pearson(qs[0], qs[1])}


def split_heldout(episode_task: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Held-out and training episode indices (sorted), stratified by task: of each task's ``n``
    episodes, ``round(fraction * n)`` are held out, at least one and at most ``n - 1`` when
    ``fraction > 0`` (a task with one episode keeps it for training), so every task with two or
    more episodes is in the goal-reaching check and in training.
    ``episode_task[k]`` is the task of episode ``k``."""
    held = []
    for task in np.unique(episode_task):
        eps = rng.permutation(np.flatnonzero(episode_task == task))
        n = min(max(int(round(fraction * len(eps))), 1), len(eps) - 1) if fraction > 0 else 0
        held.extend(eps[:n].tolist())
    held = np.sort(np.asarray(held, dtype=np.int64))
    return held, np.setdiff1d(np.arange(len(episode_task)), held)


def goal_reaching(model: FBModel, ds, episodes: np.ndarray, stride: int) -> dict[str, float]:
    """Goal-reaching check on whole episodes of an exploration dataset (``ds``:
    :class:`~genreward.store.episodes.ExplorationDataset`): for each, the goal is its last frame;
    Spearman's ρ between r_FB(s_t, a_t) (every ``stride``-th step) and the steps left to the goal,
    averaged over the episodes (a useful model gives ρ < −0.5)."""
    from scipy.stats import ConstantInputWarning, spearmanr

    episode = ds.array("episode")
    obs, action = ds.array("obs"), ds.array("action")
    rhos = []
    for k in episodes:
        rows = np.flatnonzero(episode == k)
        goal_row, steps = rows[-1], rows[:-1][::stride]
        r = model.frame_reward(obs[steps], action[steps], goal_frame=obs[goal_row])
        with warnings.catch_warnings():  # a constant r has no rank correlation: NaN, skipped below
            warnings.simplefilter("ignore", ConstantInputWarning)
            rho = spearmanr(r, goal_row - steps).correlation
        if np.isfinite(rho):
            rhos.append(float(rho))
    return {
        "goal_reaching_spearman_mean": float(np.mean(rhos)) if rhos else float("nan"),
        "goal_reaching_spearman_median": float(np.median(rhos)) if rhos else float("nan"),
        "goal_reaching_episodes": len(rhos),
    }


def save_fb(folder, model: FBModel, extra: dict | None = None) -> None:
    """Inference artifact: ``weights.safetensors`` (the model's tensors under ``model/``) +
    ``meta.json`` with the model's config."""
    from genreward.store.provenance import code_version, runtime_info, utc_now

    save_checkpoint(
        folder,
        {"model": model},
        None,
        {
            "fb_config": model.cfg.model_dump(),
            "obs_shape": list(model.obs_shape),
            "action_dim": model.action_dim,
            "created": utc_now(),
            "code": code_version(),
            "runtime": runtime_info(),
            **(extra or {}),
        },
    )


def load_fb(folder, device: str = "cpu") -> FBModel:
    """The inference model saved in ``folder`` (no optimizers, no target networks, no pickle).

    Artifacts written before the model/agent split also hold the training target networks
    (``model/target_*``); they are not read."""
    meta = checkpoint_info(folder)["meta"]
    model = FBModel(tuple(meta["obs_shape"]), int(meta["action_dim"]), FBConfig(**meta["fb_config"]), device)
    load_checkpoint(folder, {"model": model}, None, device=device, skip=("model/target_",))
    return model.eval().requires_grad_(False)


def train_fb(
    agent: FBAgent, sample, steps: int, ckpt_dir, every: int = 500, log_every: int = 50, progress: bool = False
) -> list[dict[str, float]]:
    """Run ``steps`` FB updates of ``agent`` from ``sample() -> (obs, action, next_obs)`` tensors.

    Checkpoints go to ``ckpt_dir`` every ``every`` updates (and at the end); a run that finds a
    checkpoint there resumes from its step. A non-finite loss raises
    :class:`~genreward.training.TrainingDiverged` and leaves the last good checkpoint untouched.
    """

    def update(step: int) -> dict[str, float]:
        return agent.update(*sample())

    return train_loop(
        update,
        steps,
        ckpt_dir,
        agent.modules(),
        agent.optimizers(),
        every=every,
        log_every=log_every,
        progress=progress,
        desc="FB",
        hint="lower fb.lr or check the data",
        device=str(agent.device),
    )

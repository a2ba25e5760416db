"""FB on a toy problem whose successor measure is known: a point mass in the unit square,
observed as a 16x16 image. Under a goal-reaching policy, states nearer the goal reach it
sooner, so F(s, a, z_g)ᵀ z_g must decrease with the distance to g."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genreward.agents.config import FBConfig
from genreward.agents.fb import FBModel

SIZE = 16


def render(pos: np.ndarray) -> np.ndarray:
    """uint8 [N, 3, SIZE, SIZE]: a 3x3 white square at each position in [0, 1]^2."""
    pos = np.atleast_2d(pos)
    img = np.zeros((len(pos), 3, SIZE, SIZE), np.uint8)
    ij = np.clip(np.round(pos * (SIZE - 3)).astype(int), 0, SIZE - 3)
    for n, (i, j) in enumerate(ij):
        img[n, :, i : i + 3, j : j + 3] = 255
    return img


def random_walks(n_episodes=120, length=30, seed=0):
    rng = np.random.default_rng(seed)
    obs, act, nxt = [], [], []
    for _ in range(n_episodes):
        p = rng.uniform(0, 1, 2)
        for _ in range(length):
            a = rng.uniform(-1, 1, 2)
            q = np.clip(p + 0.1 * a, 0, 1)
            obs.append(p), act.append(a), nxt.append(q)
            p = q
    return np.array(obs), np.array(act, np.float32), np.array(nxt)


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    s, a, s2 = random_walks()
    O, O2 = render(s), render(s2)
    cfg = FBConfig(z_dim=16, hidden_dim=128, feature_dim=32, batch_size=256, lr=5e-4, discount=0.9, aug_pad=0, tau=0.02)
    model = FBModel((3, SIZE, SIZE), 2, cfg)
    rng = np.random.default_rng(0)
    logs = []
    for _ in range(600):
        idx = rng.integers(0, len(s), cfg.batch_size)
        logs.append(model.update(torch.as_tensor(O[idx]), torch.as_tensor(a[idx]), torch.as_tensor(O2[idx])))
    return model, logs


def test_fb_ranks_states_by_distance_to_the_goal(trained):
    from scipy.stats import spearmanr

    model, logs = trained
    assert all(np.isfinite(l["fb_loss"]) for l in logs)
    goal = np.array([0.85, 0.85])
    z = model.goal_z(render(goal))
    grid = np.array([[x, y] for x in np.linspace(0.05, 0.95, 10) for y in np.linspace(0.05, 0.95, 10)])
    toward = np.clip((goal - grid) * 5, -1, 1).astype(np.float32)
    r = model.frame_reward(render(grid), toward, z=z)
    dist = np.linalg.norm(grid - goal, axis=1)
    rho = spearmanr(r, dist).correlation
    assert rho < -0.5, rho
    # Actions toward the goal beat actions away from it, from the same states.
    away = model.frame_reward(render(grid), -toward, z=z)
    far = dist > 0.3
    assert (r[far] > away[far]).mean() > 0.7


def test_b_is_on_the_sphere_and_nearly_orthonormal(trained):
    model, logs = trained
    z = model.goal_z(render(np.random.default_rng(1).uniform(0, 1, (64, 2))))
    np.testing.assert_allclose(z.norm(dim=-1).numpy(), np.sqrt(16), rtol=1e-5)
    assert logs[-1]["ortho_loss"] < logs[0]["ortho_loss"]


def test_z_correlation_diagnostics_detect_collapse_then_recovery(trained):
    _, logs = trained
    # A fresh B maps every goal to nearly the same z; training spreads the goals apart.
    assert logs[0]["z_goal_cos"] > 0.5
    assert np.mean([l["z_goal_cos"] for l in logs[-50:]]) < 0.2
    # Once trained, Q under one z says little about Q under another: F uses z.
    assert np.mean([l["q_z_corr"] for l in logs[-100:]]) < 0.5


def test_non_finite_loss_stops_with_a_message():
    model = FBModel((3, SIZE, SIZE), 2, FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=8))
    obs = torch.as_tensor(render(np.random.default_rng(0).uniform(0, 1, (8, 2))))
    with pytest.raises(FloatingPointError, match="FB loss is not finite"):
        model.update(obs, torch.full((8, 2), float("nan")), obs)


def _small_model(seed=0):
    torch.manual_seed(seed)
    return FBModel((3, SIZE, SIZE), 2, FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=32, aug_pad=0))


def _sampler(seed=0):
    s, a, s2 = random_walks(20, 10, seed)
    O, O2 = render(s), render(s2)
    rng = np.random.default_rng(seed)

    def sample():
        idx = rng.integers(0, len(s), 32)
        return torch.as_tensor(O[idx]), torch.as_tensor(a[idx]), torch.as_tensor(O2[idx])

    return sample


def test_checkpoint_round_trip_and_resume(tmp_path):
    from genreward.agents.checkpoint import load_checkpoint
    from genreward.agents.fb import fb_modules, train_fb

    model = _small_model()
    hist = train_fb(model, _sampler(), steps=20, ckpt_dir=tmp_path / "ck", every=10, log_every=5)
    assert [h["step"] for h in hist] == [5, 10, 15, 20]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["meta.json", "weights.safetensors"]
    fresh = _small_model(seed=1)
    modules, opts = fb_modules(fresh)
    meta = load_checkpoint(tmp_path / "ck", modules, opts)
    assert meta["step"] == 20
    for (k, v), (_, w) in zip(model.state_dict().items(), fresh.state_dict().items()):
        assert torch.equal(v, w), k
    assert fresh.fb_opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0  # optimizer state restored
    more = train_fb(fresh, _sampler(1), steps=30, ckpt_dir=tmp_path / "ck", every=10, log_every=5)
    assert [h["step"] for h in more] == [5, 10, 15, 20, 25, 30]  # resumed at 20, not from scratch


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    from genreward.agents.checkpoint import TrainingDiverged
    from genreward.agents.fb import train_fb

    model = _small_model()
    train_fb(model, _sampler(), steps=10, ckpt_dir=tmp_path / "ck", every=10)
    before = (tmp_path / "ck" / "weights.safetensors").read_bytes()
    good = _sampler()
    calls = {"n": 0}

    def poisoned():
        calls["n"] += 1
        obs, act, nxt = good()
        return (obs, torch.full_like(act, float("nan")), nxt) if calls["n"] > 3 else (obs, act, nxt)

    with pytest.raises(TrainingDiverged, match=r"diverged at update 13.*last good checkpoint \(update 10\)"):
        train_fb(model, poisoned, steps=40, ckpt_dir=tmp_path / "ck", every=10)
    assert (tmp_path / "ck" / "weights.safetensors").read_bytes() == before


@pytest.fixture(scope="module")
def small_exploration(tmp_path_factory):
    from genreward.config import load_config
    from stages.collect_exploration import _collect_one

    from .conftest import REPO

    root = tmp_path_factory.mktemp("fbdata")
    cfg = load_config(REPO / "params.yaml", overrides=[
        "tasks=[reach-v3]", "prompts.reach-v3=reach", "env.image_size=32", "env.episode_length=32",
        "runtime.num_workers=2", "runtime.progress=false"])
    _collect_one(cfg, root / "exploration.zarr", "random", 8, 0.0, 0)
    return root


def test_pretrain_fb_stage_outputs_metrics_and_resumes_after_a_crash(small_exploration, tmp_path, monkeypatch):
    import json
    import shutil

    from genreward.agents import fb as fbmod
    from genreward.agents.fb import load_fb
    from genreward.agents.replay import ExplorationDataset
    from genreward.config import load_config
    from stages import pretrain_fb

    from .conftest import REPO

    shutil.copytree(small_exploration / "exploration.zarr", tmp_path / "exploration.zarr")
    cfg = load_config(REPO / "params.yaml", overrides=[
        f"store.data_dir={tmp_path}", "fb.z_dim=8", "fb.hidden_dim=32", "fb.batch_size=16", "fb.updates=20",
        "fb.checkpoint_every=5", "fb.log_every=5", "fb.holdout_fraction=0.25", "runtime.progress=false"])
    real_update, calls = fbmod.FBModel.update, {"n": 0}

    def crashing_update(self, *a):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt  # killed mid-training
        return real_update(self, *a)

    monkeypatch.setattr(fbmod.FBModel, "update", crashing_update)
    with pytest.raises(KeyboardInterrupt):
        pretrain_fb.run(cfg, {}, {})
    partial = tmp_path / ".fb.partial" / "ckpt"
    assert json.loads((partial / "meta.json").read_text())["meta"]["step"] == 10
    assert not (tmp_path / "fb").exists()
    monkeypatch.setattr(fbmod.FBModel, "update", real_update)
    m = pretrain_fb.run(cfg, {}, {})
    assert m["updates"] == 20 and m["heldout_episodes"] == 2 and m["train_episodes"] == 6
    assert -1.0 <= m["goal_reaching_spearman_mean"] <= 1.0 and m["goal_reaching_episodes"] == 2
    assert not (tmp_path / ".fb.partial").exists()
    curves = (tmp_path / "fb_curves.csv").read_text().splitlines()
    assert curves[0].startswith("step,") and [int(l.split(",")[0]) for l in curves[1:]] == [5, 10, 15, 20]
    assert (tmp_path / "fb_plots" / "curves.png").exists()
    assert json.loads((tmp_path / "fb_metrics.json").read_text())["updates"] == 20
    # Inference-only loader gives the trained model's rewards.
    model = load_fb(tmp_path / "fb")
    ds = ExplorationDataset(tmp_path / "exploration.zarr")
    obs, act = ds.array("obs")[:5], ds.array("action")[:5]
    r = model.frame_reward(obs, act, goal_frame=ds.array("obs")[32])
    assert r.shape == (5,) and np.all(np.isfinite(r))
    assert sorted(p.name for p in (tmp_path / "fb").iterdir()) == ["meta.json", "weights.safetensors"]
    meta = json.loads((tmp_path / "fb" / "meta.json").read_text())["meta"]
    assert meta["code"]["package"] and meta["dataset"] and meta["params"]["fb"]["updates"] == 20 and meta["created"]

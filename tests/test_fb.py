"""FB on a toy problem whose successor measure is known: a point mass in the unit square,
observed as a 16x16 image. Under a goal-reaching policy, states nearer the goal reach it
sooner, so F(s, a, z_g)ᵀ z_g must decrease with the distance to g."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genreward.agents.config import FBConfig
from genreward.agents.fb import FBAgent, FBModel

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
    obs, obs2 = render(s), render(s2)
    cfg = FBConfig(z_dim=16, hidden_dim=128, feature_dim=32, batch_size=256, lr=5e-4, discount=0.9, aug_pad=0, tau=0.02)
    agent = FBAgent((3, SIZE, SIZE), 2, cfg)
    rng = np.random.default_rng(0)
    logs = []
    for _ in range(600):
        idx = rng.integers(0, len(s), cfg.batch_size)
        logs.append(agent.update(torch.as_tensor(obs[idx]), torch.as_tensor(a[idx]), torch.as_tensor(obs2[idx])))
    return agent.model, logs


def test_fb_ranks_states_by_distance_to_the_goal(trained):
    from scipy.stats import spearmanr

    model, logs = trained
    assert all(np.isfinite(log["fb_loss"]) for log in logs)
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
    assert np.mean([log["z_goal_cos"] for log in logs[-50:]]) < 0.2
    # Once trained, Q under one z says little about Q under another: F uses z.
    assert np.mean([log["q_z_corr"] for log in logs[-100:]]) < 0.5


def test_non_finite_loss_stops_with_a_message():
    agent = FBAgent((3, SIZE, SIZE), 2, FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=8))
    obs = torch.as_tensor(render(np.random.default_rng(0).uniform(0, 1, (8, 2))))
    with pytest.raises(FloatingPointError, match="FB loss is not finite"):
        agent.update(obs, torch.full((8, 2), float("nan")), obs)


def _small_agent(seed=0):
    torch.manual_seed(seed)
    return FBAgent(
        (3, SIZE, SIZE),
        2,
        FBConfig(z_dim=8, hidden_dim=32, feature_dim=16, batch_size=32, aug_pad=0, lr=1e-4, discount=0.98),
    )


def _sampler(seed=0):
    s, a, s2 = random_walks(20, 10, seed)
    obs, obs2 = render(s), render(s2)
    rng = np.random.default_rng(seed)

    def sample():
        idx = rng.integers(0, len(s), 32)
        return torch.as_tensor(obs[idx]), torch.as_tensor(a[idx]), torch.as_tensor(obs2[idx])

    return sample


def test_checkpoint_round_trip_and_resume(tmp_path):
    from genreward.agents.fb import train_fb
    from genreward.training import load_checkpoint

    agent = _small_agent()
    hist = train_fb(agent, _sampler(), steps=20, ckpt_dir=tmp_path / "ck", every=10, log_every=5)
    assert [h["step"] for h in hist] == [5, 10, 15, 20]
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["meta.json", "weights.safetensors"]
    fresh = _small_agent(seed=1)
    modules, opts = fresh.modules(), fresh.optimizers()
    meta = load_checkpoint(tmp_path / "ck", modules, opts)
    assert meta["step"] == 20
    assert set(modules) == {"model", "target"}  # the model and its target networks
    for name, module in agent.modules().items():
        for (k, v), (_, w) in zip(module.state_dict().items(), modules[name].state_dict().items()):
            assert torch.equal(v, w), f"{name}/{k}"
    assert fresh.fb_opt.state_dict()["state"][0]["exp_avg"].abs().sum() > 0  # optimizer state restored
    more = train_fb(fresh, _sampler(1), steps=30, ckpt_dir=tmp_path / "ck", every=10, log_every=5)
    assert [h["step"] for h in more] == [5, 10, 15, 20, 25, 30]  # resumed at 20, not from scratch


def test_divergence_keeps_the_last_good_checkpoint(tmp_path):
    from genreward.agents.fb import train_fb
    from genreward.training import TrainingDiverged

    agent = _small_agent()
    train_fb(agent, _sampler(), steps=10, ckpt_dir=tmp_path / "ck", every=10)
    before = (tmp_path / "ck" / "weights.safetensors").read_bytes()
    good = _sampler()
    calls = {"n": 0}

    def poisoned():
        calls["n"] += 1
        obs, act, nxt = good()
        return (obs, torch.full_like(act, float("nan")), nxt) if calls["n"] > 3 else (obs, act, nxt)

    with pytest.raises(TrainingDiverged, match=r"diverged at update 13.*last good checkpoint \(update 10\)"):
        train_fb(agent, poisoned, steps=40, ckpt_dir=tmp_path / "ck", every=10)
    assert (tmp_path / "ck" / "weights.safetensors").read_bytes() == before


def test_unreadable_checkpoints_name_the_file_and_the_fix(tmp_path):
    from genreward.agents.fb import load_fb, save_fb, train_fb
    from genreward.store.artifacts import ArtifactError
    from genreward.training import save_checkpoint

    agent = _small_agent()
    save_fb(tmp_path / "fb", agent.model)
    weights = tmp_path / "fb" / "weights.safetensors"
    weights.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ArtifactError) as info:
        load_fb(tmp_path / "fb")
    assert str(info.value).startswith(f"{weights}: not a readable safetensors file (SafetensorError: ")
    assert str(info.value).endswith("; re-run the stage that writes it") and info.value.rerun
    (tmp_path / "fb" / "meta.json").write_text("{not json")
    with pytest.raises(ArtifactError, match=r"fb/meta.json: unreadable checkpoint metadata \(JSONDecodeError\)"):
        load_fb(tmp_path / "fb")
    # a resume checkpoint is not a stage output: its fix is to delete it
    save_checkpoint(tmp_path / "ck", agent.modules(), None, {"step": 10, "history": []})
    (tmp_path / "ck" / "weights.safetensors").write_bytes(b"\0" * 64)
    with pytest.raises(ArtifactError, match=rf"not a readable safetensors file .*; delete {tmp_path / 'ck'} to train"):
        train_fb(agent, _sampler(), steps=20, ckpt_dir=tmp_path / "ck", every=10)


def _trained_small_agent(tmp_path):
    from genreward.agents.fb import train_fb

    agent = _small_agent()
    train_fb(agent, _sampler(), steps=10, ckpt_dir=tmp_path / "ck", every=10)
    return agent


def test_load_fb_builds_the_inference_model_only(tmp_path):
    from safetensors.torch import load_file

    from genreward.agents.fb import load_fb, save_fb

    agent = _trained_small_agent(tmp_path)
    save_fb(tmp_path / "fb", agent.model)
    assert not any("target" in k for k in load_file(str(tmp_path / "fb" / "weights.safetensors")))
    model = load_fb(tmp_path / "fb")
    assert type(model) is FBModel and not model.training
    assert not any(hasattr(model, a) for a in ("fb_opt", "actor_opt", "targets", "update"))
    assert not any(isinstance(v, torch.optim.Optimizer) for v in vars(model).values())
    assert {n.split(".")[0] for n, _ in model.named_parameters()} == {"encoder", "forward_net", "backward_net", "actor"}
    assert not any(p.requires_grad for p in model.parameters())
    assert model.state_dict().keys() == agent.model.state_dict().keys()
    for k, v in agent.model.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
    obs = render(np.random.default_rng(2).uniform(0, 1, (6, 2)))
    act = np.random.default_rng(3).uniform(-1, 1, (6, 2)).astype(np.float32)
    goal = render(np.array([0.8, 0.2]))[0]
    np.testing.assert_array_equal(
        model.frame_reward(obs, act, goal_frame=goal), agent.model.frame_reward(obs, act, goal_frame=goal)
    )


def test_load_fb_reads_artifacts_that_also_hold_target_networks(tmp_path):
    """Artifacts saved before the model/agent split stored the target networks inside the model
    (``model/target_*``): they still load, into the inference model, with the same rewards."""
    from safetensors.torch import load_file
    from torch import nn

    from genreward.agents.fb import load_fb, save_fb

    agent = _trained_small_agent(tmp_path)

    class Combined(nn.Module):  # that layout: online and target networks in one module
        def __init__(self):
            super().__init__()
            m = agent.model
            self.cfg, self.obs_shape, self.action_dim = m.cfg, m.obs_shape, m.action_dim
            self.encoder, self.forward_net, self.backward_net, self.actor = (
                m.encoder,
                m.forward_net,
                m.backward_net,
                m.actor,
            )
            self.target_encoder = agent.targets["encoder"]
            self.target_forward = agent.targets["forward_net"]
            self.target_backward = agent.targets["backward_net"]

    save_fb(tmp_path / "fb", Combined())
    stored = load_file(str(tmp_path / "fb" / "weights.safetensors"))
    assert any(k.startswith("model/target_encoder.") for k in stored) and any(
        k.startswith("model/encoder.") for k in stored
    )
    model = load_fb(tmp_path / "fb")
    assert type(model) is FBModel and not hasattr(model, "target_encoder")
    obs = render(np.random.default_rng(2).uniform(0, 1, (6, 2)))
    act = np.random.default_rng(3).uniform(-1, 1, (6, 2)).astype(np.float32)
    goal = render(np.array([0.8, 0.2]))[0]
    np.testing.assert_array_equal(
        model.frame_reward(obs, act, goal_frame=goal), agent.model.frame_reward(obs, act, goal_frame=goal)
    )


@pytest.fixture(scope="module")
def small_exploration(tmp_path_factory):
    from genreward.config import load_config
    from stages.collect_exploration import _collect_one

    from .conftest import REPO

    root = tmp_path_factory.mktemp("fbdata")
    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            "tasks=[reach-v3]",
            "prompts.reach-v3=reach",
            "env.image_size=32",
            "env.episode_length=32",
            "runtime.num_workers=2",
            "runtime.progress=false",
        ],
    )
    _collect_one(cfg, root / "exploration.zarr", "random", 8, 0.0, 0)
    return root


def test_pretrain_fb_stage_outputs_metrics_and_resumes_after_a_crash(small_exploration, tmp_path, monkeypatch):
    import json
    import shutil

    from genreward.agents import fb as fbmod
    from genreward.agents.fb import load_fb
    from genreward.config import load_config
    from genreward.store.episodes import ExplorationDataset
    from stages import pretrain_fb

    from .conftest import REPO

    shutil.copytree(small_exploration / "exploration.zarr", tmp_path / "exploration.zarr")
    cfg = load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={tmp_path}",
            "fb.z_dim=8",
            "fb.hidden_dim=32",
            "fb.batch_size=16",
            "fb.updates=20",
            "fb.checkpoint_every=5",
            "fb.log_every=5",
            "fb.holdout_fraction=0.25",
            "runtime.progress=false",
        ],
    )
    real_update, calls = fbmod.FBAgent.update, {"n": 0}

    def crashing_update(self, *a):
        calls["n"] += 1
        if calls["n"] == 13:
            raise KeyboardInterrupt  # killed mid-training
        return real_update(self, *a)

    monkeypatch.setattr(fbmod.FBAgent, "update", crashing_update)
    with pytest.raises(KeyboardInterrupt):
        pretrain_fb.STAGE.execute(cfg)
    partial = tmp_path / ".fb.partial" / "ckpt"
    assert json.loads((partial / "meta.json").read_text())["meta"]["step"] == 10
    assert not (tmp_path / "fb").exists()
    monkeypatch.setattr(fbmod.FBAgent, "update", real_update)
    m = pretrain_fb.STAGE.execute(cfg)
    assert m["updates"] == 20 and m["heldout_episodes"] == 2 and m["train_episodes"] == 6
    assert -1.0 <= m["goal_reaching_spearman_mean"] <= 1.0 and m["goal_reaching_episodes"] == 2
    assert not (tmp_path / ".fb.partial").exists()
    curves = (tmp_path / "fb_curves.csv").read_text().splitlines()
    assert curves[0].startswith("step,") and [int(row.split(",")[0]) for row in curves[1:]] == [5, 10, 15, 20]
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


def _fb_stage_cfg(data, *extra):
    from genreward.config import load_config

    from .conftest import REPO

    return load_config(
        REPO / "params.yaml",
        overrides=[
            f"store.data_dir={data}",
            "fb.z_dim=8",
            "fb.hidden_dim=32",
            "fb.batch_size=16",
            "fb.updates=10",
            "fb.checkpoint_every=5",
            "fb.log_every=5",
            "fb.holdout_fraction=0.25",
            "runtime.progress=false",
            *extra,
        ],
    )


def _assert_nothing_written(data, old_metrics: str):
    assert (data / "fb_metrics.json").read_text() == old_metrics  # an earlier file stays as it was
    assert not (data / "fb").exists() and not (data / "fb_curves.csv").exists() and not (data / "fb_plots").exists()


def test_pretrain_fb_stage_fails_on_a_non_finite_loss_and_writes_nothing(small_exploration, tmp_path, monkeypatch):
    import json
    import shutil

    from genreward.agents import fb as fbmod
    from genreward.training import TrainingDiverged
    from stages import pretrain_fb

    shutil.copytree(small_exploration / "exploration.zarr", tmp_path / "exploration.zarr")
    old = json.dumps({"updates": 3})
    (tmp_path / "fb_metrics.json").write_text(old)
    real_update, calls = fbmod.FBAgent.update, {"n": 0}

    def poisoned_update(self, *a):
        calls["n"] += 1
        if calls["n"] == 8:  # update 7 (0-based): B's weights blow up
            with torch.no_grad():
                next(self.model.backward_net.parameters()).fill_(float("nan"))
        return real_update(self, *a)

    monkeypatch.setattr(fbmod.FBAgent, "update", poisoned_update)
    with pytest.raises(TrainingDiverged) as info:
        pretrain_fb.STAGE.execute(_fb_stage_cfg(tmp_path, "fb.lr=0.5"))
    msg = str(info.value)
    assert msg.startswith("stage pretrain_fb: FB training diverged at update 7: FB loss is not finite (nan)"), msg
    assert "last good checkpoint (update 5)" in msg and "lower fb.lr" in msg and "(fb.lr is 0.5)" in msg, msg
    assert calls["n"] == 8
    _assert_nothing_written(tmp_path, old)
    assert json.loads((tmp_path / ".fb.partial" / "ckpt" / "meta.json").read_text())["meta"]["step"] == 5


def test_pretrain_fb_stage_fails_on_a_degenerate_result_and_writes_nothing(small_exploration, tmp_path, monkeypatch):
    """A collapsed F (Q_z constant over the batch: its correlation is NaN) ends the stage with an
    error, not with NaN in fb_metrics.json."""
    import json
    import shutil

    from genreward.agents import fb as fbmod
    from genreward.training import TrainingDiverged
    from stages import pretrain_fb

    shutil.copytree(small_exploration / "exploration.zarr", tmp_path / "exploration.zarr")
    old = json.dumps({"updates": 3})
    (tmp_path / "fb_metrics.json").write_text(old)
    real = fbmod.z_correlations

    def collapsed(*a):
        return {**real(*a), "q_z_corr": float("nan")}

    monkeypatch.setattr(fbmod, "z_correlations", collapsed)
    with pytest.raises(TrainingDiverged) as info:
        pretrain_fb.STAGE.execute(_fb_stage_cfg(tmp_path, "fb.updates=5"))
    assert str(info.value) == (
        "stage pretrain_fb: the FB representation is degenerate after update 5: q_z_corr = nan "
        "(Q_z(s, a) is constant over the batch: F ignores the state and action); no output was written; "
        "lower fb.lr (now 0.0003) or check the exploration data"
    )
    _assert_nothing_written(tmp_path, old)


def test_check_result_names_every_non_finite_metric():
    from genreward.training import TrainingDiverged
    from stages.pretrain_fb import check_result

    check_result({"fb_loss": 1.5, "goal_reaching_episodes": 0, "q_z_corr": 0.2}, 10, 1e-4)  # finite: passes
    with pytest.raises(TrainingDiverged) as info:
        check_result({"fb_loss": float("inf"), "goal_reaching_spearman_mean": float("nan"), "q_z_corr": 0.1}, 400, 1.0)
    msg = str(info.value)
    assert "after update 400: fb_loss = inf, goal_reaching_spearman_mean = nan (r_FB is constant" in msg, msg
    assert msg.endswith("lower fb.lr (now 1.0) or check the exploration data") and "\n" not in msg


@pytest.mark.slow
def test_pretrain_fb_with_fb_lr_1_fails_instead_of_writing_nan(small_exploration, tmp_path):
    """The real case: fb.lr=1 (an allowed value) collapses F on the tiny data set."""
    import shutil

    from genreward.training import TrainingDiverged
    from stages import pretrain_fb

    shutil.copytree(small_exploration / "exploration.zarr", tmp_path / "exploration.zarr")
    with pytest.raises(TrainingDiverged, match=r"stage pretrain_fb: .*lower fb\.lr \(now 1\.0\)"):
        pretrain_fb.STAGE.execute(_fb_stage_cfg(tmp_path, "fb.lr=1", "fb.updates=60"))
    assert not (tmp_path / "fb_metrics.json").exists() and not (tmp_path / "fb").exists()


def test_heldout_split_takes_the_same_share_of_every_task():
    from genreward.agents.fb import split_heldout

    episode_task = np.array([0] * 8 + [1] * 8 + [2] * 3 + [3])
    held, train = split_heldout(episode_task, 0.25, np.random.default_rng(0))
    assert np.bincount(episode_task[held], minlength=4).tolist() == [2, 2, 1, 0]  # 3 * 0.25 rounds to 1
    assert sorted(np.concatenate([held, train]).tolist()) == list(range(len(episode_task)))
    held, _ = split_heldout(episode_task, 0.1, np.random.default_rng(0))
    assert np.bincount(episode_task[held], minlength=4).tolist() == [1, 1, 1, 0]  # at least one per task
    held, _ = split_heldout(episode_task, 0.9, np.random.default_rng(0))
    assert np.bincount(episode_task[held], minlength=4).tolist() == [7, 7, 2, 0]  # every task keeps training data
    held, train = split_heldout(episode_task, 0.0, np.random.default_rng(0))
    assert len(held) == 0 and len(train) == len(episode_task)

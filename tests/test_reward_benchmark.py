"""The reward-quality benchmark on constructed probe sets with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from genreward.envs.probes import Probes
from genreward.rewards.base import TermSpec
from genreward.rewards.benchmark import eval_steps, evaluate
from genreward.rewards.config import METHODS, TERMS, RewardConfig
from genreward.rewards.metrics import to_json
from genreward.rewards.terms import NextFrameScores

L, H = 32, 4
TASKS = ["reach-v3", "push-v3"]


def _probes(task: str, seed: int) -> Probes:
    """2 experts (brightening: progress), 1 failure that dims, 1 random; the frame's brightness
    is the task's progress, its red channel marks the task (255 on reach-v3, 0 on push-v3)."""
    rng = np.random.default_rng(seed)
    kinds = ["expert", "expert", "near_miss", "random"]
    frames = np.zeros((4, L + 1, 3, H, H), np.uint8)
    light = np.stack([np.linspace(0, 200, L + 1), np.linspace(0, 180, L + 1), np.linspace(60, 0, L + 1)])
    light = np.concatenate([light, rng.uniform(0, 40, (1, L + 1))])
    frames[:] = light[:, :, None, None, None].astype(np.uint8)
    frames[:, :, 0] = 255 if task == "reach-v3" else 0
    dense = (frames[:, 1:, 1, 0, 0] / 20).astype(np.float32)  # the dense reward: the stored brightness / 20
    success = np.zeros((4, L), bool)
    success[:2, -4:] = True
    return Probes(task, frames, np.zeros((4, L, 4), np.float32), dense, success, kinds)


class Light(NextFrameScores):
    """Brightness of s_{t+1} (green channel): tracks progress on every task."""

    name = "light"

    def steps(self, frames):
        return frames[:, 1].mean(axis=(1, 2)).astype(np.float32)

    def identity(self):
        return {}


class TaskLight(Light):
    """Brightness, plus a bonus when the frame shows the term's own task."""

    name = "task_light"

    def __init__(self, task: str):
        self.red = 255 if task == "reach-v3" else 0

    def steps(self, frames):
        return super().steps(frames) + 100.0 * (frames[:, 0, 0, 0] == self.red)


class Cfg(RewardConfig):
    light_weight: float = 1.0


@pytest.fixture
def light_terms(monkeypatch):
    monkeypatch.setitem(TERMS, "light", TermSpec(lambda *a: (Light(), {}), weight="light_weight", schedule="step"))
    monkeypatch.setitem(TERMS, "task_light", TermSpec(lambda *a: None, weight="light_weight", schedule="step"))
    monkeypatch.setitem(METHODS, "light", ("light",))
    monkeypatch.setitem(METHODS, "task_light", ("task_light",))


def _build(task, names):
    return {n: Light() if n == "light" else TaskLight(task) for n in names}


def test_known_answers_on_constructed_probes(light_terms):
    probes = {t: _probes(t, i) for i, t in enumerate(TASKS)}
    cfg = Cfg(window=4, normalize=True)
    report = to_json(evaluate(["light", "task_light", "random", "dense"], probes, _build, cfg, stride=4))
    json.dumps(report, allow_nan=False)
    assert report["eval_steps"] == eval_steps(L, 4).tolist() == [3, 7, 11, 15, 19, 23, 27, 31]
    light = report["methods"]["light"]["per_task"]["reach-v3"]
    assert light["voc"]["value"] == 1.0 and light["voc"]["used"] == 2  # brightening experts: reward rises with time
    assert light["auroc"] == 1.0  # the two successes are brighter than the dimming near miss and the random one
    assert light["spearman_dense"] == pytest.approx(1.0)  # a monotone function of the dense reward
    assert light["epic_dense"] == pytest.approx(0.0, abs=1e-6)  # an affine function of it, per reached state
    dense = report["methods"]["dense"]["per_task"]["push-v3"]
    assert dense["voc"]["value"] == 1.0 and dense["epic_dense"] == 0.0 and dense["ranking"] == 1.0
    # brightness cannot tell the tasks apart; the task bonus can
    assert report["methods"]["light"]["confusion"]["specificity"] == pytest.approx(0.0, abs=1e-5)
    tl = report["methods"]["task_light"]["confusion"]
    assert tl["top1_accuracy"] == 1.0 and tl["specificity"] > 1.0
    assert report["methods"]["dense"]["confusion"]["specificity"]["value"] is None  # with its reason
    assert "own episodes" in report["methods"]["dense"]["confusion"]["specificity"]["reason"]
    rnd = report["methods"]["random"]["mean"]
    assert abs(rnd["spearman_dense"]) < 0.5 and rnd["voc"] < 0.9
    assert report["methods"]["light"]["mean"]["ms_per_step"] >= 0.0
    assert len(report["curves"]["reach-v3"]["light"]) == 8
    assert "beta_sweep" not in report  # no combined reward among the methods


def test_the_beta_sweep_rescoring_the_combined_reward_per_frame_weight(monkeypatch):
    """genreward = video + β·frame: with a video term that tracks progress and a frame term that
    runs against it, β = 0 keeps the progress order and a large β reverses it."""
    monkeypatch.setitem(TERMS, "video", TermSpec(lambda *a: None, weight="alpha", schedule="step"))
    monkeypatch.setitem(TERMS, "frame", TermSpec(lambda *a: None, weight="beta", schedule="step"))

    class Dark(Light):
        def steps(self, frames):
            return -super().steps(frames)

    probes = {"reach-v3": _probes("reach-v3", 0)}
    build = lambda task, names: {"video": Light(), "frame": Dark()}  # noqa: E731
    cfg = RewardConfig(window=4, normalize=False, alpha=1.0, beta=1.0)
    report = to_json(evaluate(["genreward"], probes, build, cfg, stride=4, confusion=False, beta_sweep=[0.0, 0.5, 2.0]))
    sweep = {row["beta"]: row for row in report["beta_sweep"]}
    assert list(sweep) == [0.0, 0.5, 2.0]
    assert sweep[0.0]["mean"]["voc"] == 1.0 and sweep[0.0]["per_task"]["reach-v3"]["auroc"] == 1.0
    assert sweep[0.5]["mean"]["voc"] == 1.0  # (1 - 0.5)·light still rises with time
    assert sweep[2.0]["mean"]["voc"] == -1.0  # (1 - 2)·light falls with time
    # the method's own row uses the configured β = 1: the terms cancel, the reward is flat
    assert report["methods"]["genreward"]["per_task"]["reach-v3"]["voc"]["value"] is None


def test_a_metric_without_data_is_null_with_its_reason(light_terms):
    p = _probes("reach-v3", 0)
    p.success[:] = False  # no successful episode at all
    report = to_json(evaluate(["light"], {"reach-v3": p}, _build, Cfg(window=4), stride=4, confusion=False))
    row = report["methods"]["light"]["per_task"]["reach-v3"]
    assert row["voc"] == {"value": None, "used": 0, "total": 0, "reason": "no successful expert episode"}
    assert row["auroc"] == {"value": None, "reason": "no successful episode"}
    assert report["methods"]["light"]["mean"]["auroc"]["value"] is None
    assert "confusion" not in report["methods"]["light"]


def test_the_stage_names_the_stage_to_run_for_a_missing_input(tmp_path):
    import yaml

    from genreward.config import config_from_dict
    from stages.evaluate_rewards import run, term_builder
    from stages.table import MissingInputError, get_stage
    from tests.conftest import REPO, tiny_params

    raw = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    raw["store"] = {"data_dir": str(tmp_path / "data"), "reports_dir": str(tmp_path / "reports")}
    cfg = config_from_dict(raw)
    with pytest.raises(MissingInputError, match=r"data/fb is missing; run `dvc repro pretrain_fb` first"):
        term_builder(cfg)("reach-v3", ["frame"])
    with pytest.raises(
        MissingInputError, match=r"data/goal_videos/reach-v3.zarr is missing; run `dvc repro generate_goal_videos`"
    ):
        term_builder(cfg)("reach-v3", ["video"])
    raw["rewards"] = {**raw.get("rewards", {}), "video_score": "cosine", "video_baseline": "none"}
    with pytest.raises(
        MissingInputError, match=r"data/goal_latents/reach-v3.zarr is missing; run `dvc repro encode_goal"
    ):
        term_builder(config_from_dict(raw))("reach-v3", ["video"])
    with pytest.raises(
        MissingInputError, match=r"probes/reach-v3.zarr is missing; run `dvc repro collect_probes` first"
    ):
        run(cfg, *get_stage("evaluate_rewards").paths(cfg, get_stage("evaluate_rewards").items(cfg)[0]))


def test_benchmark_methods_are_checked_at_load():
    from genreward.rewards.config import BenchmarkConfig

    with pytest.raises(ValueError, match="'env_only' adds no generated reward"):
        BenchmarkConfig(methods=("genreward", "env_only"))
    with pytest.raises(ValueError, match="unknown method 'genreward_v2'; choose from genreward, "):
        BenchmarkConfig(methods=("genreward_v2",))
    assert BenchmarkConfig(methods=("dense", "random")).methods == ("dense", "random")
    with pytest.raises(ValueError, match=r"frame weights must be finite and >= 0, got \[0.5, -1.0\]"):
        BenchmarkConfig(beta_sweep=(0.5, -1.0))
    assert BenchmarkConfig(beta_sweep=(1.0, 0.0, 1.0)).beta_sweep == (0.0, 1.0)


def test_voc_progress_scores_only_the_steps_up_to_the_first_success():
    from genreward.rewards.benchmark import progress_steps, quality

    p = _probes("reach-v3", 0)
    p.success[:] = False
    p.success[0, 10:] = True  # expert 0 succeeds at step 10, expert 1 at step 20, then both hold
    p.success[1, 20:] = True
    steps = eval_steps(L, 4)  # [3, 7, 11, ..., 31]
    assert [progress_steps(steps, p, i) for i in range(4)] == [3, 6, 8, 8]  # through 11 and 23; no success: all
    # a reward that rises until the success and then jitters on a plateau (as a held goal state does)
    hold = np.array([5.0, 4.0, 5.5, 4.5, 5.2, 4.1, 5.3, 4.2])
    rewards = np.tile(hold, (4, 1)).astype(np.float32)
    rewards[0, :3] = [1.0, 2.0, 3.0]
    rewards[1, :6] = [1.0, 1.5, 2.0, 2.5, 3.0, 3.5]
    q = quality(rewards, p, steps)
    assert q["voc_progress"].value == 1.0 and q["voc_progress"].used == 2
    # over whole episodes the plateau's jitter counts (Spearman 1 - 6·Σd²/(n(n²-1)), Σd² = 22 and 2)
    assert q["voc"].value == pytest.approx(np.mean([1 - 6 * 22 / 504, 1 - 6 * 2 / 504]))

"""Known answers for the reward-quality metrics (genreward/rewards/metrics.py)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats

from genreward.rewards.metrics import (
    MeanScore,
    Score,
    auroc,
    canonical_reward,
    epic_distance,
    epic_state_rewards,
    mean_value_order_correlation,
    pairwise_ranking_accuracy,
    pearson,
    spearman,
    task_confusion,
    to_json,
    value_order_correlation,
)

# --------------------------------------------------------------------------------------- Score


def test_score_never_holds_nan_and_needs_a_reason():
    with pytest.raises(ValueError):
        Score(float("nan"))
    with pytest.raises(ValueError):
        Score(float("inf"))
    with pytest.raises(ValueError):
        Score(None)
    assert type(Score(np.float64(0.25)).value) is float


def test_score_json_form():
    assert Score(0.5).to_json() == 0.5
    assert Score.missing("no failed episode").to_json() == {"value": None, "reason": "no failed episode"}
    mean = MeanScore(Score(0.5), used=2, total=3)
    assert mean.to_json() == {"value": 0.5, "used": 2, "total": 3}
    assert to_json({"a": [Score(1.0), Score.missing("why")], "n": 3}) == {
        "a": [1.0, {"value": None, "reason": "why"}],
        "n": 3,
    }


# --------------------------------------------------------------------------------- correlations


def test_pearson_and_spearman_match_scipy():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=30), rng.normal(size=30)
    y = y + x
    assert pearson(x, y).value == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    y_ties = np.round(y)
    assert spearman(x, y_ties).value == pytest.approx(stats.spearmanr(x, y_ties)[0], abs=1e-12)


def test_correlations_say_why_they_are_missing():
    assert pearson([1, 2], [1, 2]).reason == "fewer than 3 points (got 2)"
    assert pearson([1, 2, 3], [1, 1, 1]).reason == "constant y"
    assert spearman([5, 5, 5], [1, 2, 3]).reason == "constant x"
    assert pearson([0.3, 0.1 + 0.2, 0.3], [1, 2, 3]).reason == "constant x"  # rounding noise only
    assert spearman([1, 2, np.nan], [1, 2, 3]).reason == "non-finite x (1 of 3)"
    assert pearson([1, 2, 3], [1, np.inf, 3]).reason == "non-finite y (1 of 3)"
    with pytest.raises(ValueError):
        pearson([1, 2, 3], [1, 2])


# ------------------------------------------------------------------------------------------ VOC


def test_voc_of_monotone_sequences_is_exactly_plus_minus_one():
    increasing = np.cumsum(np.random.default_rng(1).uniform(0.01, 1.0, size=50))
    assert value_order_correlation(increasing).value == 1.0
    assert value_order_correlation(increasing[::-1]).value == -1.0
    assert value_order_correlation([0.1, 0.2, 0.25, 7.0]).value == 1.0  # rank-based: any increasing shape


def test_voc_known_value_and_missing_cases():
    # ranks 1,3,2,4 against time 1,2,3,4: 1 - 6·Σd² / (n(n²-1)) = 1 - 12/60
    assert value_order_correlation([0.0, 2.0, 1.0, 3.0]).value == pytest.approx(0.8, abs=1e-12)
    constant = value_order_correlation([0.5] * 10)
    assert constant.value is None and constant.reason == "constant values"
    assert value_order_correlation([0.0, 1.0]).reason == "fewer than 3 points (got 2)"


def test_mean_voc_averages_computable_episodes_and_counts_them():
    up = np.arange(5.0)
    mean = mean_value_order_correlation([up, up[::-1], np.ones(5), up])
    assert mean.value == pytest.approx(1 / 3) and (mean.used, mean.total) == (3, 4)
    none = mean_value_order_correlation([np.ones(5), np.ones(4), [1.0]])
    assert none.value is None and (none.used, none.total) == (0, 3)
    assert "2× constant values" in none.reason and "1× fewer than 3 points" in none.reason


# ---------------------------------------------------------------------------------------- AUROC


def test_auroc_known_answers():
    success, failure = [5.0, 6.0, 7.0], [1.0, 2.0]
    assert auroc(success, failure).value == 1.0
    assert auroc(failure, success).value == 0.0
    assert auroc([3.0] * 4, [3.0] * 6).value == 0.5
    assert auroc([2.0, 3.0], [1.0, 2.5]).value == 0.75  # 3 of 4 pairs
    assert auroc([1.0, 2.0], [1.0]).value == 0.75  # a tie counts 1/2


def test_auroc_matches_brute_force_with_ties():
    rng = np.random.default_rng(2)
    pos, neg = rng.integers(0, 5, size=17).astype(float), rng.integers(0, 4, size=11).astype(float)
    diff = pos[:, None] - neg[None, :]
    brute = (np.sum(diff > 0) + 0.5 * np.sum(diff == 0)) / diff.size
    assert auroc(pos, neg).value == pytest.approx(brute, abs=1e-12)


def test_auroc_missing_groups():
    assert auroc([1.0, 2.0], []) == Score(None, "no failed episode")
    assert auroc([], [1.0]) == Score(None, "no successful episode")


# ------------------------------------------------------------------------------ pairwise ranking


def test_pairwise_ranking_accuracy_known_answers():
    assert pairwise_ranking_accuracy([10.0, 30.0, 20.0], [1.0, 2.0, 3.0]).value == pytest.approx(2 / 3)
    assert pairwise_ranking_accuracy([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).value == 1.0
    assert pairwise_ranking_accuracy([3.0, 2.0, 1.0], [1.0, 2.0, 3.0]).value == 0.0
    assert pairwise_ranking_accuracy([1.0, 1.0, 2.0], [1.0, 2.0, 3.0]).value == pytest.approx(2.5 / 3)  # pred tie
    # the pair with equal truth is left out, whatever its predicted order
    assert pairwise_ranking_accuracy([2.0, 1.0, 3.0], [1.0, 1.0, 2.0]).value == 1.0
    missing = pairwise_ranking_accuracy([1.0, 2.0, 3.0], [4.0, 4.0, 4.0])
    assert missing.value is None and "distinct true returns" in missing.reason


# ----------------------------------------------------------------------------------------- EPIC

N_STATES, N_ACTIONS, GAMMA = 20, 4, 0.9


def _tabular(table: np.ndarray):
    return lambda s, a, s2: table[s, a, s2]


@pytest.fixture
def mdp():
    """A random tabular reward R[s, a, s'], evaluation transitions and uniform coverage samples."""
    rng = np.random.default_rng(3)
    table = rng.normal(size=(N_STATES, N_ACTIONS, N_STATES))
    n = 2000
    transitions = (rng.integers(0, N_STATES, n), rng.integers(0, N_ACTIONS, n), rng.integers(0, N_STATES, n))
    return dict(rng=rng, table=table, transitions=transitions, states=np.arange(N_STATES), actions=np.arange(N_ACTIONS))


def _epic(mdp, table_a, table_b, **kw):
    kw = {"n_mean_samples": 256, "seed": 0, **kw}
    return epic_distance(
        _tabular(table_a), _tabular(table_b), mdp["transitions"], mdp["states"], mdp["actions"], GAMMA, **kw
    )


def _shaped(table: np.ndarray, scale: float, potential: np.ndarray) -> np.ndarray:
    """c·R(s,a,s') + γΦ(s') − Φ(s) as a table."""
    return scale * table + GAMMA * potential[None, None, :] - potential[:, None, None]


def test_epic_ignores_potential_shaping_and_positive_rescaling(mdp):
    potential = 5.0 * mdp["rng"].normal(size=N_STATES)
    shaped = _shaped(mdp["table"], 3.7, potential)
    assert _epic(mdp, mdp["table"], shaped).value < 1e-6
    # exact for the samples, not only in expectation: even 3 mean samples remove the shaping
    assert _epic(mdp, mdp["table"], shaped, n_mean_samples=3).value < 1e-6
    # ... while the raw rewards are far apart (the canonicalisation does the work)
    s, a, s2 = mdp["transitions"]
    raw = pearson(mdp["table"][s, a, s2], shaped[s, a, s2]).value
    assert math.sqrt((1 - raw) / 2) > 0.2


def test_epic_known_distances(mdp):
    table = mdp["table"]
    other = mdp["rng"].normal(size=table.shape)
    assert _epic(mdp, table, table).value == 0.0
    assert _epic(mdp, table, -table).value == pytest.approx(1.0, abs=1e-9)
    assert _epic(mdp, table, -2.0 * table + 1.0).value == pytest.approx(1.0, abs=1e-9)
    independent = _epic(mdp, table, other).value
    assert 0.5 < independent < 0.9
    assert _epic(mdp, other, table).value == pytest.approx(independent, abs=1e-12)


def test_epic_is_deterministic_given_the_seed(mdp):
    table, other = mdp["table"], mdp["rng"].normal(size=mdp["table"].shape)
    first = _epic(mdp, table, other, seed=7).value
    assert _epic(mdp, table, other, seed=7).value == first
    assert _epic(mdp, table, other, seed=np.random.default_rng(7)).value == first
    assert _epic(mdp, table, other, seed=8).value != first  # the mean samples do matter for general rewards


def test_canonical_reward_of_constant_and_shaping_rewards_is_zero(mdp):
    rng = mdp["rng"]
    mean_a, mean_s2 = rng.integers(0, N_ACTIONS, 64), rng.integers(0, N_STATES, 64)
    constant, _ = canonical_reward(lambda s, a, s2: np.full(s.shape, 2.5), mdp["transitions"], mean_a, mean_s2, GAMMA)
    assert np.all(constant == 0.0)  # c + γc − c − γc
    shaping = _tabular(_shaped(np.zeros_like(mdp["table"]), 1.0, rng.normal(size=N_STATES)))
    canon, scale = canonical_reward(shaping, mdp["transitions"], mean_a, mean_s2, GAMMA)
    assert np.max(np.abs(canon)) < 1e-12 * scale


def test_epic_of_a_pure_shaping_reward_is_missing(mdp):
    potential = mdp["rng"].normal(size=N_STATES)
    shaping = _shaped(np.zeros_like(mdp["table"]), 1.0, potential)
    missing = _epic(mdp, mdp["table"], shaping)
    assert (
        missing.value is None and missing.reason == "canonicalised reward B is constant over the evaluation transitions"
    )


def test_epic_state_rewards(mdp):
    v = mdp["rng"].normal(size=N_STATES)
    w = mdp["rng"].normal(size=N_STATES)
    tr = mdp["transitions"]
    assert epic_state_rewards(v, 2.0 * v + 5.0, tr, GAMMA).value < 1e-7
    assert epic_state_rewards(v, -v, tr, GAMMA).value == pytest.approx(1.0, abs=1e-9)
    state = epic_state_rewards(v, w, tr, GAMMA).value
    assert 0.3 < state < 0.95
    # the same as the general estimator on R(s, a, s') = v[s'], for any mean samples
    general = epic_distance(
        lambda s, a, s2: v[s2], lambda s, a, s2: w[s2], tr, mdp["states"], mdp["actions"], GAMMA, seed=11
    )
    assert general.value == pytest.approx(state, abs=1e-9)
    assert epic_state_rewards(v, np.ones(N_STATES), tr, GAMMA).reason.startswith("canonicalised reward B is constant")


# ------------------------------------------------------------------------------- task confusion


def test_task_confusion_known_matrix():
    m = np.array([[3.0, 1.0, 1.0], [0.0, 2.0, 1.0], [1.0, 1.0, 1.0]])
    out = task_confusion(m)
    # diagonal mean 2, off-diagonal mean 5/6
    assert out["specificity"].value == pytest.approx(2 - 5 / 6)
    # rows 0 and 1 peak on the diagonal, row 2 is a 3-way tie (1/3)
    assert out["top1_accuracy"].value == pytest.approx((1 + 1 + 1 / 3) / 3)
    # margins over the row's other entries in row standard deviations; the constant row counts 0
    z_rows = [2.0 / np.std([3.0, 1.0, 1.0]), 1.5 / np.std([0.0, 2.0, 1.0]), 0.0]
    assert out["specificity_z"].value == pytest.approx(np.mean(z_rows))


def test_task_confusion_z_variant_is_scale_free_per_reward_model():
    m = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, 1.0], [1.0, 0.0, 2.0]])
    rescaled = m * np.array([[10.0], [0.1], [3.0]]) + np.array([[5.0], [-2.0], [0.0]])
    a, b = task_confusion(m), task_confusion(rescaled)
    assert b["specificity_z"].value == pytest.approx(a["specificity_z"].value)
    assert b["top1_accuracy"].value == a["top1_accuracy"].value == 1.0
    assert b["specificity"].value != pytest.approx(a["specificity"].value)


def test_task_confusion_missing_cases():
    assert task_confusion([[1.0]])["specificity"].reason == "fewer than 2 tasks (got 1)"
    assert task_confusion(np.ones((2, 3)))["top1_accuracy"].reason == "matrix is not square (2×3)"
    assert task_confusion([[1.0, np.nan], [0.0, 1.0]])["specificity_z"].reason == "non-finite matrix entries (1 of 4)"


# -------------------------------------------------------------------------------------- JSON


def test_json_of_every_metric_has_no_nan():
    nan = float("nan")
    report = {
        "voc": [value_order_correlation(v) for v in ([1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [nan, 1.0, 2.0], [])],
        "voc_mean": mean_value_order_correlation([[1.0, 1.0, 1.0]]),
        "auroc": [auroc([1.0], []), auroc([], [1.0]), auroc([nan], [1.0]), auroc([2.0], [1.0])],
        "pairwise": [pairwise_ranking_accuracy([1.0, 2.0], [3.0, 3.0]), pairwise_ranking_accuracy([], [])],
        "correlations": [pearson([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]), spearman([], [])],
        "epic_state": epic_state_rewards([1.0, 1.0], [1.0, 2.0], ([0, 1, 0], [0, 0, 0], [1, 0, 1]), 0.9),
        "confusion": task_confusion([[nan]]),
    }
    text = json.dumps(to_json(report), allow_nan=False)
    back = json.loads(text)
    assert back["voc"][0] == 1.0
    assert back["voc"][1] == {"value": None, "reason": "constant values"}
    assert back["auroc"][0] == {"value": None, "reason": "no failed episode"}
    assert back["voc_mean"]["value"] is None and back["voc_mean"]["used"] == 0

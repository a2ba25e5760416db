"""Reward-quality metrics: how well a reward method scores labelled probe trajectories, offline.

Pure functions of numpy arrays (numpy + scipy, no torch). Every metric returns a :class:`Score`:
a finite float, or ``None`` with a reason (``"no failed episode"``, ``"constant values"`` ...).
No metric ever returns NaN, so a report can always be written with ``json.dumps(allow_nan=False)``.

JSON form (``Score.to_json``, used for ``reports/reward_quality.json``): a computed score is its
float; a score that could not be computed is the object ``{"value": null, "reason": "..."}``. So
a number in the report is always a computed value, and anything else says why it is missing.
:class:`MeanScore` (a mean over episodes) is always an object,
``{"value": float | null, "used": k, "total": n}`` plus ``"reason"`` when ``value`` is null.
:func:`to_json` converts nested dicts / lists of scores.

Metrics
-------
- :func:`pearson`, :func:`spearman`: correlations (None: fewer than 3 points, a constant side,
  non-finite values).
- :func:`value_order_correlation` (VOC, "Vision Language Models are In-Context Value Learners",
  2024): Spearman correlation of an episode's predicted per-step values with time;
  :func:`mean_value_order_correlation` averages it over episodes.
- :func:`auroc`: how well episode returns separate successful from failed episodes (Mann-Whitney).
- :func:`pairwise_ranking_accuracy`: how often the predicted returns order two episodes as the
  true returns do.
- :func:`epic_distance`, :func:`epic_state_rewards`: the EPIC pseudometric between two reward
  functions (Gleave et al., "Quantifying Differences in Reward Functions", ICLR 2021), invariant
  to potential shaping and positive rescaling.
- :func:`task_confusion`: whether each task's reward model rewards its own task's expert
  episodes more than the other tasks'.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

__all__ = [
    "MeanScore",
    "RewardFn",
    "Score",
    "auroc",
    "canonical_reward",
    "epic_distance",
    "epic_state_rewards",
    "mean_score",
    "mean_value_order_correlation",
    "pairwise_ranking_accuracy",
    "pearson",
    "spearman",
    "task_confusion",
    "to_json",
    "value_order_correlation",
]

# R(s_idx, a_idx, s2_idx) -> rewards: integer index arrays of one shape in, float array of that shape out.
RewardFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# A side whose spread is at most this fraction of its magnitude counts as constant (rounding noise).
_CONSTANT_RTOL = 1e-12
# The same for canonicalised rewards, relative to the magnitude of the terms they are summed from.
_CANONICAL_RTOL = 1e-9


@dataclass(frozen=True)
class Score:
    """A metric's value: a finite float, or ``None`` with ``reason`` saying why it was not computed.

    Constructing a Score with a NaN / infinite value, or ``None`` without a reason, raises
    ``ValueError``: a metric that cannot be computed says so instead of returning NaN.
    """

    value: float | None
    reason: str | None = None  # why value is None ("no failed episode", "constant values", ...)

    def __post_init__(self) -> None:
        if self.value is None:
            if not self.reason:
                raise ValueError("a Score without a value needs a reason")
            return
        value = float(self.value)
        if not math.isfinite(value):
            raise ValueError(f"a Score's value must be finite, got {value} (give None and a reason instead)")
        object.__setattr__(self, "value", value)  # a plain float (not np.float64) in reports

    @classmethod
    def missing(cls, reason: str) -> Score:
        """The score of a metric that cannot be computed, and why."""
        return cls(None, reason)

    @property
    def ok(self) -> bool:
        """Whether the value was computed."""
        return self.value is not None

    def to_json(self) -> float | dict[str, Any]:
        """The float when computed, else ``{"value": None, "reason": reason}``."""
        if self.value is not None:
            return self.value
        return {"value": None, "reason": self.reason}


@dataclass(frozen=True)
class MeanScore:
    """The mean of per-episode scores over the episodes where they could be computed.

    ``used`` of ``total`` episodes entered the mean; ``score`` is ``None`` (with the per-episode
    reasons, counted) when no episode's score could be computed.
    """

    score: Score
    used: int
    total: int

    @property
    def value(self) -> float | None:
        return self.score.value

    @property
    def reason(self) -> str | None:
        return self.score.reason

    def to_json(self) -> dict[str, Any]:
        """``{"value": float | None, "used": k, "total": n}``, plus ``"reason"`` when value is None."""
        out: dict[str, Any] = {"value": self.score.value, "used": self.used, "total": self.total}
        if self.score.value is None:
            out["reason"] = self.score.reason
        return out


def to_json(obj: Any) -> Any:
    """``obj`` with every :class:`Score` / :class:`MeanScore` in it (in dicts, lists, tuples)
    replaced by its JSON form; other values are returned as they are."""
    if isinstance(obj, (Score, MeanScore)):
        return obj.to_json()
    if isinstance(obj, dict):
        return {k: to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_json(v) for v in obj]
    return obj


# ---------------------------------------------------------------------------------------------
# correlations


def _vector(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _paired(x: Any, y: Any, x_name: str, y_name: str) -> tuple[np.ndarray, np.ndarray]:
    xa, ya = _vector(x, x_name), _vector(y, y_name)
    if xa.shape != ya.shape:
        raise ValueError(f"{x_name} and {y_name} differ in length: {xa.size} vs {ya.size}")
    return xa, ya


def _non_finite(arr: np.ndarray, name: str) -> str | None:
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    return f"non-finite {name} ({bad} of {arr.size})" if bad else None


def _is_constant(arr: np.ndarray, rtol: float, scale: float | None = None) -> bool:
    """Whether ``arr``'s spread is at most ``rtol`` times ``scale`` (default: its largest magnitude)."""
    if scale is None:
        scale = float(np.max(np.abs(arr)))
    return float(np.ptp(arr)) <= rtol * scale


def _corr(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two finite, non-constant vectors, in [-1, 1].

    Each side is centred and scaled by its largest magnitude (no overflow); identical (or exactly
    negated) sides give exactly 1.0 (-1.0), since sqrt(a·a) == a in IEEE arithmetic.
    """
    xc, yc = x - x.mean(), y - y.mean()
    xc, yc = xc / np.max(np.abs(xc)), yc / np.max(np.abs(yc))
    sxy, sxx, syy = float(np.sum(xc * yc)), float(np.sum(xc * xc)), float(np.sum(yc * yc))
    return min(1.0, max(-1.0, sxy / math.sqrt(sxx * syy)))


def _correlation(x: Any, y: Any, *, rank: bool, x_name: str = "x", y_name: str = "y", min_points: int = 3) -> Score:
    xa, ya = _paired(x, y, x_name, y_name)
    if xa.size < min_points:
        return Score.missing(f"fewer than {min_points} points (got {xa.size})")
    for arr, name in ((xa, x_name), (ya, y_name)):
        if reason := _non_finite(arr, name):
            return Score.missing(reason)
    for arr, name in ((xa, x_name), (ya, y_name)):
        # ranks: only exactly equal values tie; raw values: rounding noise counts as constant
        if np.ptp(arr) == 0 or (not rank and _is_constant(arr, _CONSTANT_RTOL)):
            return Score.missing(f"constant {name}")
    if rank:
        from scipy.stats import rankdata  # here: scipy.stats takes ~1 s to import, and every stage
        # run imports this module (the stage table loads every stage)

        xa, ya = rankdata(xa), rankdata(ya)
    return Score(_corr(xa, ya))


def pearson(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Score:
    """Pearson correlation of paired samples ``x``, ``y`` (1-D, same length).

    None when there are fewer than 3 points, when ``x`` or ``y`` has a non-finite value, or when
    either is constant (spread at most 1e-12 of its magnitude). Raises ``ValueError`` for
    arrays that are not 1-D or differ in length.
    """
    return _correlation(x, y, rank=False)


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> Score:
    """Spearman rank correlation of paired samples: Pearson correlation of their ranks (ties get
    their average rank). None when there are fewer than 3 points, a non-finite value, or a side
    whose values are all equal. Raises ``ValueError`` as :func:`pearson`."""
    return _correlation(x, y, rank=True)


# ---------------------------------------------------------------------------------------------
# value-order correlation


def value_order_correlation(values: Sequence[float] | np.ndarray) -> Score:
    """VOC of one episode: Spearman correlation between its predicted per-step values and time
    (step 0..n-1). 1.0 when the values strictly increase along the episode (an expert episode's
    progress), -1.0 when they strictly decrease. None for fewer than 3 steps, non-finite values
    or values that are all equal."""
    arr = _vector(values, "values")
    return _correlation(arr, np.arange(arr.size, dtype=np.float64), rank=True, x_name="values", y_name="time")


def mean_score(scores: Iterable[Score]) -> MeanScore:
    """Mean of the computed scores; ``used``/``total`` count them. None when none was computed
    (the reason lists the episodes' reasons with their counts, most frequent first)."""
    scores = list(scores)
    values = [s.value for s in scores if s.value is not None]
    if values:
        return MeanScore(Score(float(np.mean(values))), used=len(values), total=len(scores))
    if not scores:
        return MeanScore(Score.missing("no episode"), used=0, total=0)
    counts = Counter(s.reason for s in scores)
    detail = "; ".join(f"{n}× {reason}" for reason, n in counts.most_common())
    return MeanScore(Score.missing(f"no computable episode ({detail})"), used=0, total=len(scores))


def mean_value_order_correlation(episodes: Iterable[Sequence[float] | np.ndarray]) -> MeanScore:
    """Mean VOC over episodes (each a 1-D array of per-step values), over the episodes where VOC
    could be computed; ``used``/``total`` say how many of them that was."""
    return mean_score(value_order_correlation(values) for values in episodes)


# ---------------------------------------------------------------------------------------------
# episode-level discrimination


def auroc(pos_scores: Sequence[float] | np.ndarray, neg_scores: Sequence[float] | np.ndarray) -> Score:
    """Area under the ROC curve: the probability that a positive (a successful episode's return)
    scores above a negative (a failed episode's), a tie counting 1/2 (the Mann-Whitney U statistic
    over n_pos·n_neg). 1.0: every success above every failure; 0.5: no separation; 0.0: reversed.

    None with ``"no successful episode"`` / ``"no failed episode"`` when a group is empty, or when
    a group has non-finite values.
    """
    pos, neg = _vector(pos_scores, "pos_scores"), _vector(neg_scores, "neg_scores")
    if pos.size == 0:
        return Score.missing("no successful episode")
    if neg.size == 0:
        return Score.missing("no failed episode")
    for arr, name in ((pos, "scores of successful episodes"), (neg, "scores of failed episodes")):
        if reason := _non_finite(arr, name):
            return Score.missing(reason)
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: a tie counts 1/2
    u = float(ranks[: pos.size].sum()) - pos.size * (pos.size + 1) / 2
    return Score(u / (pos.size * neg.size))


def pairwise_ranking_accuracy(pred: Sequence[float] | np.ndarray, true: Sequence[float] | np.ndarray) -> Score:
    """Over the pairs of episodes whose true returns differ, the fraction that the predicted
    returns order the same way; a pair tied in ``pred`` counts 1/2 (0.5 is chance). None when no
    pair has distinct true returns or a value is non-finite. O(n²) memory in the episodes."""
    p, t = _paired(pred, true, "pred", "true")
    for arr, name in ((p, "pred"), (t, "true")):
        if reason := _non_finite(arr, name):
            return Score.missing(reason)
    i, j = np.triu_indices(p.size, k=1)
    true_sign = np.sign(t[i] - t[j])
    keep = true_sign != 0
    if not keep.any():
        return Score.missing("no pair of episodes with distinct true returns")
    agree = np.sign(p[i] - p[j])[keep] * true_sign[keep]  # 1 agree, 0 tie in pred, -1 disagree
    return Score(float(np.sum(agree + 1)) / (2 * int(keep.sum())))


# ---------------------------------------------------------------------------------------------
# EPIC


def _index_array(x: Any, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim == 1 and arr.size == 0:
        return np.zeros(0, dtype=np.int64)
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name} must be a 1-D integer index array, got {arr.dtype} {arr.shape}")
    return arr.astype(np.int64, copy=False)


def _transitions(transitions: Sequence[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(transitions) != 3:
        raise ValueError("transitions must be (states, actions, next_states) index arrays")
    s, a, s2 = (_index_array(x, n) for x, n in zip(transitions, ("states", "actions", "next_states")))
    if not s.size == a.size == s2.size:
        raise ValueError(f"transition arrays differ in length: {s.size}, {a.size}, {s2.size}")
    return s, a, s2


def _check_gamma(gamma: float) -> float:
    gamma = float(gamma)
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    return gamma


def _call(reward: RewardFn, s: np.ndarray, a: np.ndarray, s2: np.ndarray) -> np.ndarray:
    out = np.asarray(reward(s, a, s2), dtype=np.float64)
    if out.shape != s.shape:
        raise ValueError(f"a reward function returned shape {out.shape} for {s.shape} transitions")
    return out


def canonical_reward(
    reward: RewardFn,
    transitions: Sequence[np.ndarray],
    mean_actions: np.ndarray,
    mean_next_states: np.ndarray,
    gamma: float,
    *,
    chunk: int = 1 << 20,
) -> tuple[np.ndarray, float]:
    """EPIC's canonically shaped reward at the evaluation ``transitions`` (s, a, s') index arrays:

        C(R)(s,a,s') = R(s,a,s') + γ·E[R(s',A,S')] − E[R(s,A,S')] − γ·E[R(S,A,S')]

    with the expectations estimated on the given samples: E[R(x,A,S')] as the mean of R(x, a_j, s'_j)
    over the paired samples (``mean_actions[j]``, ``mean_next_states[j]``), and E[R(S,A,S')] as the
    mean of those estimates over x = ``mean_next_states`` (the samples of the state distribution).

    Because every state's estimate uses the same samples, a potential-shaped reward
    R + γΦ(s') − Φ(s) canonicalises to C(R) exactly (up to rounding), not only in expectation.
    R is called on flat index arrays, at most ``chunk`` transitions a call.

    Returns C(R) at the transitions and the magnitude of the terms it was summed from (for telling
    a constant C(R) from rounding noise).
    """
    s, a, s2 = _transitions(transitions)
    mean_a, mean_s2 = _index_array(mean_actions, "mean_actions"), _index_array(mean_next_states, "mean_next_states")
    if mean_a.size != mean_s2.size or mean_a.size == 0:
        raise ValueError(f"need as many mean actions as mean next states (>0): {mean_a.size} vs {mean_s2.size}")
    gamma = _check_gamma(gamma)
    n = mean_a.size
    states = np.unique(np.concatenate([s, s2, mean_s2]))
    per_call = max(1, chunk // n)
    expected = np.empty(states.size, dtype=np.float64)  # E[R(x, A, S')] for each x in `states`
    for lo in range(0, states.size, per_call):
        x = states[lo : lo + per_call]
        r = _call(reward, np.repeat(x, n), np.tile(mean_a, x.size), np.tile(mean_s2, x.size))
        expected[lo : lo + x.size] = r.reshape(x.size, n).mean(axis=1)
    e_next = expected[np.searchsorted(states, s2)]
    e_here = expected[np.searchsorted(states, s)]
    e_all = float(expected[np.searchsorted(states, mean_s2)].mean())
    raw = _call(reward, s, a, s2)
    canonical = raw + gamma * e_next - e_here - gamma * e_all
    scale = max(float(np.max(np.abs(raw), initial=0.0)), float(np.max(np.abs(expected))))
    return canonical, scale


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _epic_from_canonical(
    canon_a: np.ndarray, scale_a: float, canon_b: np.ndarray, scale_b: float, what: str = "canonicalised reward"
) -> Score:
    if canon_a.size < 3:
        return Score.missing(f"fewer than 3 evaluation transitions (got {canon_a.size})")
    for arr, scale, name in ((canon_a, scale_a, "A"), (canon_b, scale_b, "B")):
        if reason := _non_finite(arr, f"{what} {name}"):
            return Score.missing(reason)
        if _is_constant(arr, _CANONICAL_RTOL, scale):
            return Score.missing(f"{what} {name} is constant over the evaluation transitions")
    rho = _corr(canon_a, canon_b)
    return Score(math.sqrt(max(0.0, (1.0 - rho) / 2.0)))


def epic_distance(
    reward_a: RewardFn,
    reward_b: RewardFn,
    transitions: Sequence[np.ndarray],
    coverage_states: np.ndarray,
    coverage_actions: np.ndarray,
    gamma: float,
    *,
    n_mean_samples: int = 1024,
    seed: int | np.random.Generator = 0,
) -> Score:
    """EPIC distance between two reward functions on a finite set of states and actions.

    ``reward_a``, ``reward_b``: ``R(s_idx, a_idx, s2_idx) -> rewards`` over integer index arrays.
    ``transitions``: the evaluation transitions, (states, actions, next_states) index arrays.
    ``coverage_states`` / ``coverage_actions``: samples (index arrays) of the coverage distributions
    D_S and D_A. ``n_mean_samples`` pairs (A, S') are drawn from them independently, with
    replacement, by ``seed`` (an int or a ``np.random.Generator``); both rewards are canonicalised
    with the same pairs (:func:`canonical_reward`), so the result is deterministic given ``seed``.

    D = sqrt((1 − ρ) / 2), ρ the Pearson correlation of the two canonicalised rewards over the
    evaluation transitions: 0 for R and c·R + γΦ(s') − Φ(s) (any c > 0, any potential Φ; exact for
    the samples, not only in expectation), 1 for R and −R, about 0.71 for independent rewards.
    Symmetric. None when a canonicalised reward is constant (e.g. a pure shaping reward), has
    non-finite values, or there are fewer than 3 evaluation transitions.
    """
    states, actions = (
        _index_array(coverage_states, "coverage_states"),
        _index_array(coverage_actions, "coverage_actions"),
    )
    if states.size == 0 or actions.size == 0:
        raise ValueError("the coverage samples must not be empty")
    if n_mean_samples < 1:
        raise ValueError(f"n_mean_samples must be positive, got {n_mean_samples}")
    rng = _rng(seed)
    mean_a = rng.choice(actions, size=n_mean_samples, replace=True)
    mean_s2 = rng.choice(states, size=n_mean_samples, replace=True)
    canon_a, scale_a = canonical_reward(reward_a, transitions, mean_a, mean_s2, gamma)
    canon_b, scale_b = canonical_reward(reward_b, transitions, mean_a, mean_s2, gamma)
    return _epic_from_canonical(canon_a, scale_a, canon_b, scale_b)


def epic_state_rewards(
    values_a: Sequence[float] | np.ndarray,
    values_b: Sequence[float] | np.ndarray,
    transitions: Sequence[np.ndarray],
    gamma: float,
    *,
    coverage_states: np.ndarray | None = None,
) -> Score:
    """EPIC distance between two rewards given as per-state values: R(s, a, s') = v[s'], the reward
    of the reached state (how rewards scored on stored transitions are compared).

    ``values_a``, ``values_b``: 1-D arrays indexed by state; ``transitions``: the evaluation
    transitions, (states, actions, next_states) index arrays into them. ``coverage_states``: samples
    of D_S (default: every state in ``transitions``, current and next).

    For such a reward the expectations of the canonicalisation are all E_{S'~D_S}[v(S')] =: μ,
    computed exactly on the coverage samples (no sampling), so
    C(R)(s,a,s') = v[s'] + γμ − μ − γμ = v[s'] − μ, whatever ``gamma``: the canonicalisation
    removes the constant only, and the distance is the Pearson distance sqrt((1 − ρ)/2) of the two
    value arrays over the transitions' next states. It is 0 for v_b = c·v_a + b (c > 0) and 1 for
    v_b = −v_a. A potential-shaping term γΦ(s') − Φ(s) depends on s as well, so it cannot be
    written as a per-state reward; to compare shaped rewards, give them as functions to
    :func:`epic_distance`, which removes the shaping exactly. Equals :func:`epic_distance` on
    ``lambda s, a, s2: v[s2]`` (up to rounding) for every seed.
    """
    va, vb = _vector(values_a, "values_a"), _vector(values_b, "values_b")
    if va.shape != vb.shape:
        raise ValueError(f"values_a and values_b differ in length: {va.size} vs {vb.size}")
    s, a, s2 = _transitions(transitions)
    gamma = _check_gamma(gamma)
    cover = np.concatenate([s, s2]) if coverage_states is None else _index_array(coverage_states, "coverage_states")
    if cover.size == 0:
        return Score.missing("no transition")
    for idx in (s, s2, cover):
        if idx.size and (idx.min() < 0 or idx.max() >= va.size):
            raise ValueError(f"state indices out of range for {va.size} state values")
    canon, scales = [], []
    for v in (va, vb):
        mu = float(v[cover].mean())
        raw = v[s2]
        canon.append(raw + gamma * mu - mu - gamma * mu)
        scales.append(max(float(np.max(np.abs(raw), initial=0.0)), abs(mu)))
    return _epic_from_canonical(canon[0], scales[0], canon[1], scales[1])


# ---------------------------------------------------------------------------------------------
# task confusion


def task_confusion(matrix: Sequence[Sequence[float]] | np.ndarray) -> dict[str, Score]:
    """Task specificity of a set of per-task reward models, from ``matrix[i, j]`` = mean reward that
    task i's reward model gives task j's expert episodes (rows: reward task, columns: episode task).

    - ``"specificity"``: mean(diagonal) − mean(off-diagonal), in reward units. > 0: the reward
      models pay their own task's experts more than other tasks' experts. Not comparable across
      reward methods of different scale.
    - ``"specificity_z"``: the same after z-scoring each row (its mean and population standard
      deviation): per reward model, the margin of its own task over the mean of the other tasks,
      in units of the row's spread, averaged over the reward models. Scale-free per reward model;
      a constant row (the model cannot tell tasks apart) has margin 0.
    - ``"top1_accuracy"``: fraction of reward models that pay their own task's experts the most
      (a diagonal tied with k−1 other entries for the row maximum counts 1/k). Chance is 1/n_tasks.

    All three are None (with the reason) unless ``matrix`` is square with at least 2 tasks and
    finite entries.
    """
    m = np.asarray(matrix, dtype=np.float64)
    reason = None
    if m.ndim != 2:
        reason = f"expected a 2-D matrix, got shape {m.shape}"
    elif m.shape[0] != m.shape[1]:
        reason = f"matrix is not square ({m.shape[0]}×{m.shape[1]})"
    elif m.shape[0] < 2:
        reason = f"fewer than 2 tasks (got {m.shape[0]})"
    else:
        reason = _non_finite(m.ravel(), "matrix entries")
    if reason is not None:
        return {k: Score.missing(reason) for k in ("specificity", "specificity_z", "top1_accuracy")}
    k = m.shape[0]
    diag = np.diag(m)
    off = ~np.eye(k, dtype=bool)
    specificity = float(diag.mean() - m[off].mean())
    # per row: (M_ii − mean_{j≠i} M_ij) / std_i; the mean over rows equals mean(diag) − mean(off-diag) of the z-matrix
    margins = diag - m[off].reshape(k, k - 1).mean(axis=1)
    std = m.std(axis=1)
    constant = np.array([_is_constant(row, _CONSTANT_RTOL) for row in m])
    z_margins = np.where(constant, 0.0, margins / np.where(constant, 1.0, std))
    at_max = m == m.max(axis=1, keepdims=True)
    top1 = np.where(np.diag(at_max), 1.0 / at_max.sum(axis=1), 0.0)
    return {
        "specificity": Score(specificity),
        "specificity_z": Score(float(z_margins.mean())),
        "top1_accuracy": Score(float(top1.mean())),
    }

"""The reward-quality benchmark: reward methods scored offline on labelled probe episodes.

Every method (``METHODS``: named combinations of reward terms, the same ones ``finetune_rl``
trains with) is scored on each task's probe episodes (stage collect_probes: experts, noisy
experts, near misses, random) at the evaluation steps t with (t+1) % ``stride`` == 0. A window
term is scored on the window ending at each evaluation step (``stride`` is an evaluation knob:
RL pays window terms only every ``rewards.interval`` steps). Terms are z-scored over the task's
probe set when ``rewards.normalize`` (as RL normalises them) and weighted with their knobs; the
environment's reward is not added (the benchmark judges the generated reward alone). Two
references frame the table: ``dense`` (Meta-World's dense reward: the ceiling) and ``random``
(seeded Gaussian noise per step: the floor).

Metrics (:mod:`genreward.rewards.metrics`; each is a value or null with the reason):

- ``voc``: Spearman of the reward with time on successful expert episodes (mean over episodes);
- ``voc_progress``: the same on each such episode's progress phase only, reset to the first
  evaluation step at or after its first success (after it the expert holds the goal, and time
  order there says nothing about progress: even the dense reward is flat and noisy);
- ``auroc``: success vs failure from the episode's mean reward, over all probe episodes;
- ``ranking``: pairwise ranking accuracy of the episode's mean reward against its dense return;
- ``spearman_dense`` / ``pearson_dense``: per evaluation step, against the dense reward there;
- ``epic_dense``: EPIC distance to the dense reward, each reward taken as the reward of the
  reached state (R(s, a, s') = r(s')) on the evaluation steps' transitions;
- ``specificity`` / ``specificity_z`` / ``top1_accuracy``: task i's reward on task j's
  successful expert episodes (the task-confusion matrix), each reward z-scored with its own
  task's probe statistics;
- ``ms_per_step``: time to score an episode under the RL schedule, per agent step.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterable, Mapping

import numpy as np

from genreward.envs.probes import Probes
from genreward.rewards import metrics as M
from genreward.rewards.base import Term
from genreward.rewards.combine import RewardModel, RunningStats, paid_steps, weighted_terms
from genreward.rewards.config import REFERENCES, RewardConfig, method_terms


def eval_steps(length: int, stride: int) -> np.ndarray:
    """The evaluation steps: transitions t with (t+1) % stride == 0."""
    return paid_steps(length, stride)


def term_scores(term: Term, probes: Probes, episodes: Iterable[int], steps: np.ndarray, window: int) -> np.ndarray:
    """Raw scores float32 [n, K] of ``term`` on the given episodes at ``steps``."""
    rows = [term.scores(probes.frames[i], probes.actions[i], steps, window)[steps] for i in episodes]
    return np.asarray(rows, np.float32).reshape(-1, len(steps))


def combine(method: str, raw: Mapping[str, np.ndarray], stats: Mapping[str, RunningStats], cfg: RewardConfig):
    """The method's generated reward [n, K] from its raw terms, z-scored with ``stats`` when
    ``cfg.normalize`` and weighted with each term's knob (as RL combines them)."""
    return weighted_terms(method_terms(method), raw, cfg, stats).astype(np.float32)


def term_stats(raw: np.ndarray) -> RunningStats:
    s = RunningStats()
    s.update(raw)
    return s


def schedule_cost(rm: RewardModel, probes: Probes, episodes: Iterable[int]) -> float:
    """Milliseconds per agent step to score ``episodes`` with the RL schedule (``rm.raw_terms``)."""
    episodes = list(episodes)
    if not episodes or not rm.terms:
        return 0.0
    start = time.perf_counter()
    for i in episodes:
        rm.raw_terms(probes.frames[i], probes.actions[i])
    return 1000.0 * (time.perf_counter() - start) / (len(episodes) * probes.length)


def random_rewards(shape: tuple[int, ...], seed: int, task: str) -> np.ndarray:
    return np.random.default_rng([seed, *task.encode()]).standard_normal(shape).astype(np.float32)


def progress_steps(steps: np.ndarray, probes: Probes, episode: int) -> int:
    """How many evaluation steps of ``episode`` fall in its progress phase: those up to and including
    the first evaluation step at or after its first success (the expert holds still afterwards)."""
    success = np.flatnonzero(probes.success[episode])
    if not len(success):
        return len(steps)
    return int(np.searchsorted(steps, success[0], side="left")) + 1


def _expert_voc(episodes: Iterable[np.ndarray]) -> M.MeanScore:
    """Mean VOC over the successful expert episodes' rewards; null with the reason when there is none."""
    episodes = list(episodes)
    if not episodes:
        return M.MeanScore(M.Score.missing("no successful expert episode"), 0, 0)
    return M.mean_value_order_correlation(episodes)


def quality(rewards: np.ndarray, probes: Probes, steps: np.ndarray) -> dict[str, M.Score | M.MeanScore]:
    """The single-task metrics of per-step rewards [N, K] at ``steps`` on ``probes``."""
    experts = probes.expert_successes()
    episode = rewards.mean(axis=1)
    ok = probes.episode_success
    dense = probes.dense[:, steps]
    out: dict[str, M.Score | M.MeanScore] = {
        "voc": _expert_voc(rewards[i] for i in experts),
        "voc_progress": _expert_voc(rewards[i, : progress_steps(steps, probes, i)] for i in experts),
        "auroc": M.auroc(episode[ok], episode[~ok]),
        "ranking": M.pairwise_ranking_accuracy(episode, probes.dense.sum(axis=1)),
        "spearman_dense": M.spearman(rewards.ravel(), dense.ravel()),
        "pearson_dense": M.pearson(rewards.ravel(), dense.ravel()),
    }
    # EPIC, each reward the reward of the reached state: state n·K + k is the one reached at steps[k]
    # (for such rewards the canonicalisation removes a constant whatever the discount)
    states = np.arange(rewards.size)
    out["epic_dense"] = M.epic_state_rewards(rewards.ravel(), dense.ravel(), (states, states * 0, states), 1.0)
    return out


@dataclass
class TaskTerms:
    """One task's reward terms and the statistics of their raw scores on that task's probes."""

    raw: dict[str, np.ndarray]  # term -> [N, K] on the task's own probes
    stats: dict[str, RunningStats]


def evaluate(
    methods: list[str],
    probes: Mapping[str, Probes],
    build_terms: Callable[[str, list[str]], dict[str, Term]],
    cfg: RewardConfig,
    stride: int,
    seed: int = 0,
    confusion: bool = True,
    log: Callable[[str], None] = lambda msg: None,
    beta_sweep: Iterable[float] = (),
) -> dict:
    """Score ``methods`` (and the references) on every task's ``probes``.

    ``build_terms(task, names)`` builds the named terms of task ``task`` (its goal, prompt, model).
    Returns ``{"methods": {method: {"per_task": {task: metrics}, "confusion": matrix and
    metrics}}, "curves": {task: {method: [K] rewards on the first successful expert episode}}}``
    with :class:`~genreward.rewards.metrics.Score` values (:func:`metrics.to_json` turns it into JSON).
    With ``beta_sweep`` and ``genreward`` among ``methods``, ``"beta_sweep"`` lists the combined
    reward's metrics with each frame weight β (:data:`SWEEP_METRICS`, per task and mean), from the
    same raw terms.
    """
    tasks = list(probes)
    length = {p.length for p in probes.values()}
    if len(length) != 1:
        raise ValueError(f"probe episodes of all tasks must have one length, got {sorted(length)}")
    steps = eval_steps(length.pop(), stride)
    needed = sorted({t for m in methods if m not in REFERENCES for t in method_terms(m)})
    per_task: dict[str, TaskTerms] = {}
    cross: dict[tuple[str, str], dict[str, np.ndarray]] = {}  # (reward task, episode task) -> term -> [n, K]
    costs: dict[tuple[str, str], float] = {}
    for task in tasks:
        terms = build_terms(task, needed) if needed else {}
        p = probes[task]
        raw = {}
        for name, term in terms.items():
            t0 = time.perf_counter()
            raw[name] = term_scores(term, p, range(len(p.kinds)), steps, cfg.window)
            log(f"{task}: {name} scored {len(p.kinds)} probe episodes in {time.perf_counter() - t0:.1f} s")
        per_task[task] = TaskTerms(raw, {n: term_stats(r) for n, r in raw.items()})
        timed = p.expert_successes()[:2] if len(p.expert_successes()) else [0]  # the episodes the cost is timed on
        for method in methods:
            if method in REFERENCES:
                continue
            rm = RewardModel(method, cfg, {n: terms[n] for n in method_terms(method)})
            costs[method, task] = schedule_cost(rm, p, timed)
        if confusion:
            for other in tasks:
                if other != task:
                    q = probes[other]
                    experts = q.expert_successes()
                    cross[task, other] = {n: term_scores(t, q, experts, steps, cfg.window) for n, t in terms.items()}
        del terms  # release this task's models before the next task's are built

    report: dict = {"methods": {}, "curves": {t: {} for t in tasks}, "eval_steps": steps.tolist()}
    for method in methods:
        rows, matrix = {}, np.full((len(tasks), len(tasks)), np.nan)
        for i, task in enumerate(tasks):
            p = probes[task]
            own = _method_rewards(method, per_task[task], p, steps, cfg, seed)
            cost = M.Score(costs[method, task]) if (method, task) in costs else M.Score.missing("a reference")
            rows[task] = {**quality(own, p, steps), "ms_per_step": cost}
            experts = p.expert_successes()
            if len(experts):
                report["curves"][task][method] = own[experts[0]].tolist()
            for j, other in enumerate(tasks):
                matrix[i, j] = _cross_mean(method, task, other, per_task, cross, probes, steps, cfg, seed, own)
        entry = {"per_task": rows, "mean": _task_means(rows)}
        if confusion:
            why = _confusion_gap(method, matrix)
            entry["confusion"] = {
                "matrix": [[None if np.isnan(v) else float(v) for v in row] for row in matrix],
                **(
                    {k: M.Score.missing(why) for k in ("specificity", "specificity_z", "top1_accuracy")}
                    if why
                    else M.task_confusion(matrix)
                ),
            }
        report["methods"][method] = entry
    if "genreward" in methods:
        report["beta_sweep"] = [_with_beta(beta, per_task, probes, steps, cfg) for beta in beta_sweep]
    return report


SWEEP_METRICS = ("voc", "voc_progress", "auroc", "ranking")


def _with_beta(beta: float, per_task: Mapping[str, TaskTerms], probes, steps, cfg: RewardConfig) -> dict:
    """The combined reward's :data:`SWEEP_METRICS` with frame weight ``beta``, per task and mean."""
    swept = cfg.model_copy(update={"beta": float(beta)})
    rows = {}
    for task, tt in per_task.items():
        q = quality(combine("genreward", tt.raw, tt.stats, swept), probes[task], steps)
        rows[task] = {k: q[k] for k in SWEEP_METRICS}
    return {"beta": float(beta), "per_task": rows, "mean": _task_means(rows)}


def _method_rewards(method: str, tt: TaskTerms, p: Probes, steps, cfg: RewardConfig, seed: int) -> np.ndarray:
    if method == "dense":
        return p.dense[:, steps].astype(np.float32)
    if method == "random":
        return random_rewards((len(p.kinds), len(steps)), seed, p.task)
    return combine(method, tt.raw, tt.stats, cfg)


def _cross_mean(method, task, other, per_task, cross, probes, steps, cfg, seed, own) -> float:
    """Mean reward of ``task``'s reward on ``other``'s successful expert episodes (NaN: not computable)."""
    q = probes[other]
    experts = q.expert_successes()
    if not len(experts):
        return np.nan
    if task == other:
        return float(own[experts].mean())
    if method == "dense":
        return np.nan
    if method == "random":
        return float(random_rewards((len(q.kinds), len(steps)), seed + 1, f"{task}|{other}")[experts].mean())
    if (task, other) not in cross:
        return np.nan
    return float(combine(method, cross[task, other], per_task[task].stats, cfg).mean())


def _confusion_gap(method: str, matrix: np.ndarray) -> str | None:
    if method == "dense":
        return "a task's dense reward is only recorded on its own episodes"
    if np.isnan(matrix).any():
        return "a task without a successful expert episode"
    return None


def _task_means(rows: Mapping[str, Mapping[str, M.Score | M.MeanScore]]) -> dict[str, M.Score]:
    """Per metric, the mean over the tasks where it was computed (null with the reason if none)."""
    out = {}
    for metric in next(iter(rows.values())):
        values = [rows[t][metric] for t in rows]
        ok = [v.value for v in values if v.value is not None]
        if ok:
            out[metric] = M.Score(float(np.mean(ok)))
        else:
            reasons = "; ".join(dict.fromkeys(str(v.reason) for v in values))
            out[metric] = M.Score.missing(f"not computed on any task ({reasons})")
    return out

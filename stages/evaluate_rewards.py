"""Stage evaluate_rewards: every reward method scored offline on the probe episodes.

inputs:  ``<data>/probes/<task>.zarr`` (stage collect_probes) for every task, and what the
         methods' terms read: goal latents, key frames, the FB model, the video model (the same
         paths ``finetune_rl`` reads, from its declaration)
outputs: ``reports/reward_quality.json`` (DVC metrics: per method, per task and the mean over
         tasks, each metric a number or null with the reason), ``reports/reward_quality.md``
         (methods × metrics tables), ``reports/reward_quality/expert_rewards.csv`` and
         ``reports/reward_quality/plots/`` (each method's reward along an expert episode per task;
         the task-confusion heat-maps)
What the metrics mean: ``genreward/rewards/benchmark.py`` and docs/rewards.md.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from genreward.config import Config
from genreward.rewards.benchmark import REFERENCES, evaluate
from genreward.rewards.config import build_terms
from genreward.rewards.metrics import to_json
from genreward.store.atomic import atomic_dir, write_json_atomic, write_text_atomic
from genreward.viz import pyplot, save_figure
from stages.table import Item, MissingInputError, Stage, get_stage, producer_of

log = logging.getLogger(__name__)

TABLE_METRICS = (
    "voc",
    "voc_progress",
    "auroc",
    "ranking",
    "spearman_dense",
    "epic_dense",
    "specificity_z",
    "ms_per_step",
)


def term_builder(cfg: Config):
    """``(task, names) -> terms``: each term built through the registry from the inputs
    finetune_rl declares for ``task``; a missing input fails naming the stage that makes it."""
    rl = get_stage("finetune_rl")
    device = cfg.resolve_device()

    def build(task: str, names: list[str]) -> dict:
        ins = rl.paths(cfg, Item(task, "genreward", 0))[0]
        try:
            return build_terms(names, cfg, task, ins, device)[0]
        except Exception as e:
            missing = [p for p in ins.values() if not Path(p).exists()]
            missing = [p for p in missing if str(p) in str(e)]  # the input a term failed on, if it says
            if not missing:
                raise
            raise MissingInputError(
                f"terms of {task}: {missing[0]} is missing; run `dvc repro "
                f"{producer_of(cfg, missing[0]) or 'the stage that writes it'}` first ({type(e).__name__})"
            ) from None

    return build


def curves_csv(report: dict) -> str:
    lines = ["task,method,step,reward"]
    steps = report["eval_steps"]
    for task, methods in report["curves"].items():
        for method, values in methods.items():
            lines += [f"{task},{method},{s},{v:.6g}" for s, v in zip(steps, values)]
    return "\n".join(lines) + "\n"


def plot_curves(report: dict, task: str, path: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = report["eval_steps"]
    for method, values in report["curves"][task].items():
        v = np.asarray(values)
        z = (v - v.mean()) / (v.std() or 1.0)  # each method on its own scale
        ax.plot(steps, z, label=method, lw=2.5 if method in ("genreward", "dense") else 1.2)
    ax.set_title(f"{task}: reward along a successful expert episode (z-scored per method)", fontsize=9)
    ax.set_xlabel("agent step")
    if report["curves"][task]:
        ax.legend(fontsize=7, ncol=2)
    else:
        ax.text(0.5, 0.5, "no successful expert episode", ha="center", transform=ax.transAxes)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_confusion(report: dict, tasks: list[str], path: Path) -> Path | None:
    plt = pyplot()
    methods = [m for m, e in report["methods"].items() if "confusion" in e and m != "dense"]
    if not methods:
        return None
    cols = min(4, len(methods))
    rows = -(-len(methods) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 3.0 * rows), squeeze=False)
    short = [t.removesuffix("-v3") for t in tasks]
    for ax in axes.ravel()[len(methods) :]:
        ax.axis("off")
    for ax, method in zip(axes.ravel(), methods):
        m = np.array(report["methods"][method]["confusion"]["matrix"], dtype=float)  # None -> nan
        std = m.std(axis=1, keepdims=True)
        ax.imshow((m - m.mean(axis=1, keepdims=True)) / np.where(std > 0, std, 1.0), cmap="viridis")
        ax.set_title(method, fontsize=8)
        ax.set_xticks(range(len(tasks)), short, rotation=90, fontsize=6)
        ax.set_yticks(range(len(tasks)), short, fontsize=6)
    fig.suptitle("reward of task i (row, z-scored per row) on task j's expert episodes (column)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def _cell(score) -> str:
    if isinstance(score, dict):
        score = score.get("value")
    return "—" if score is None else f"{score:.3f}"


def markdown(report: dict, tasks: list[str]) -> str:
    methods = list(report["methods"])
    head = "| method | " + " | ".join(TABLE_METRICS) + " |\n|---|" + "---|" * len(TABLE_METRICS) + "\n"

    def rows(pick) -> str:
        return "".join(f"| {m} | " + " | ".join(_cell(pick(m).get(k)) for k in TABLE_METRICS) + " |\n" for m in methods)

    out = [
        "# Reward quality on the probe episodes\n\n",
        "Mean over tasks (— : not computable; reasons in reward_quality.json). voc: Spearman with time on "
        "successful expert episodes; voc_progress: the same up to each one's first success; auroc: success "
        "vs failure from the episode reward; ranking: pairwise "
        "accuracy against the dense return; spearman_dense / epic_dense: per step against the dense reward; "
        "specificity_z: own task vs other tasks' experts, in row std units; ms_per_step: scoring cost under "
        f"the RL schedule. References: {', '.join(f'{k} = {v}' for k, v in REFERENCES.items())}.\n\n",
        head + rows(lambda m: {**report["methods"][m]["mean"], **_confusion(report, m)}),
    ]
    if report.get("beta_sweep"):
        out.append(sweep_table(report["beta_sweep"], tasks))
    for task in tasks:
        out += [f"\n## {task}\n\n", head + rows(lambda m: {**report["methods"][m]["per_task"][task]})]
    return "".join(out)


def sweep_table(sweep: list[dict], tasks: list[str]) -> str:
    """The combined reward per frame weight β: mean metrics and each task's voc."""
    short = [t.removesuffix("-v3") for t in tasks]
    metrics = list(sweep[0]["mean"])
    head = "| β | " + " | ".join(metrics) + " | " + " | ".join(f"voc {t}" for t in short) + " |\n"
    lines = [
        "\n## The combined reward (genreward) per frame weight β\n\n",
        "Same raw terms, only β varied (`benchmark.beta_sweep`); choose β on a held-out probe set.\n\n",
        head + "|---|" + "---|" * (len(metrics) + len(tasks)) + "\n",
    ]
    for row in sweep:
        cells = [_cell(row["mean"][k]) for k in metrics] + [_cell(row["per_task"][t]["voc"]) for t in tasks]
        lines.append(f"| {row['beta']:g} | " + " | ".join(cells) + " |\n")
    return "".join(lines)


def _confusion(report: dict, method: str) -> dict:
    c = report["methods"][method].get("confusion") or {}
    return {k: v for k, v in c.items() if k != "matrix"}


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    from genreward.envs.probes import read_probes

    bm = cfg.benchmark
    tasks = list(cfg.tasks)
    probes = {}
    collect = get_stage("collect_probes")
    for task in tasks:
        path = collect.paths(cfg, Item(task))[1]["probes"]  # inside inputs["probes"]
        if not path.exists():
            raise MissingInputError(f"{path} is missing; run `dvc repro {producer_of(cfg, path)}` first")
        probes[task] = read_probes(path, task)
    report = evaluate(
        list(bm.methods),
        probes,
        term_builder(cfg),
        cfg.rewards,
        stride=bm.stride,
        seed=bm.seed,
        confusion=bm.confusion and len(tasks) > 1,
        log=log.info,
        beta_sweep=bm.beta_sweep,
    )
    report = to_json(report)
    summary = {
        "tasks": tasks,
        "eval_steps": report["eval_steps"],
        "probe_episodes": {t: len(p.kinds) for t, p in probes.items()},
        "methods": report["methods"],
        **({"beta_sweep": report["beta_sweep"]} if "beta_sweep" in report else {}),
    }
    write_json_atomic(outputs["metrics"], summary, allow_nan=False)  # a number or null with its reason
    table = markdown(report, tasks)
    write_text_atomic(outputs["table"], table)
    with atomic_dir(outputs["plots"]) as tmp:
        (tmp / "expert_rewards.csv").write_text(curves_csv(report))
        (tmp / "plots").mkdir()
        for task in tasks:
            plot_curves(report, task, tmp / "plots" / f"expert_{task}.png")
        plot_confusion(report, tasks, tmp / "plots" / "confusion.png")  # none without a confusion matrix
    log.info("reward quality:\n%s", table.split("\n## ")[0])
    return {m: e["mean"] for m, e in report["methods"].items()}


def report(cfg: Config, item, inputs: dict[str, Path], outputs: dict[str, Path], summary: dict) -> list:
    """Each reward method's mean over tasks of every benchmark metric, one row per method."""
    from stages.reports import Table, rows_of

    rows = [{"method": m, **means} for m, means in summary.items()]
    columns = ["method"] + sorted({k for means in summary.values() for k in means})
    return [Table("evaluate-rewards-methods", rows_of(rows, columns), "reward methods, mean over tasks")]


STAGE = Stage(
    "evaluate_rewards",
    "Every reward method scored offline on the probe episodes (VOC, AUROC, EPIC, task confusion, cost)",
    run,
    inputs={
        "probes": "{data}/probes",
        "goal_videos": "{data}/goal_videos",
        "goal_latents": "{data}/goal_latents",
        "keyframes": "{data}/keyframes",
        "fb": "{data}/fb",
        "video_model": "{video_model}",
    },
    outputs={
        "metrics": "{reports}/reward_quality.json",
        "table": "{reports}/reward_quality.md",
        "plots": "{reports}/reward_quality",
    },
    params=("tasks", "prompts", "env", "goal_video", "video_model", "latents", "keyframes", "rewards", "benchmark"),
    report=report,
)

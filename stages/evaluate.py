"""Stage evaluate: aggregate the finetune_rl runs into curves, metrics and a comparison table.

inputs:  ``<data>/rl/<task>/<method>/seed<k>/eval.parquet`` for every configured run
outputs: ``reports/metrics.json`` (DVC metrics), ``reports/summary.md`` (methods × tasks table,
         like the paper's), ``reports/curves/<task>/<method>.csv`` (mean ± std over seeds per
         evaluation step; DVC plots) and ``reports/plots/<task>.png``
"""

from __future__ import annotations

import logging
from pathlib import Path

from genreward.config import Config
from genreward.store.atomic import atomic_dir, write_json_atomic, write_text_atomic
from genreward.viz import pyplot, save_figure
from stages.table import Stage

log = logging.getLogger(__name__)


def load_evals(cfg: Config, runs: Path):
    import pandas as pd

    frames, missing = [], []
    for task in cfg.rl.tasks:
        for method in cfg.rl.methods:
            for seed in cfg.rl.seeds:
                d = runs / task / method / f"seed{seed}"
                if not (d / "run.json").is_file() or not (d / "eval.parquet").is_file():
                    missing.append(str(d))
                    continue
                df = pd.read_parquet(d / "eval.parquet")
                if "agent" not in df.columns:  # runs written before agents were a column were DrQ-v2's
                    df.insert(3, "agent", "drqv2")
                if "env_reward" not in df.columns:  # and before the reward settings, on the dense reward
                    df.insert(4, "env_reward", "dense")
                frames.append(df)
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} finetune_rl run(s) missing or incomplete, e.g. {missing[0]}; "
            "run `dvc repro finetune_rl` (or `genreward stage finetune_rl`) first"
        )
    return pd.concat(frames, ignore_index=True)


def curves(evals):
    """Mean ± std over seeds at every evaluation step, per task, agent and method."""
    g = evals.groupby(["task", "agent", "method", "step"])
    extra = {"obj_to_target_mean": ("final_obj_to_target", "mean")} if "final_obj_to_target" in evals else {}
    out = g.agg(
        return_mean=("return_mean", "mean"),
        return_std=("return_mean", "std"),
        success_mean=("success_rate", "mean"),
        **extra,
        seeds=("seed", "nunique"),
    ).reset_index()
    return out.fillna({"return_std": 0.0})


def _mean_std(x) -> tuple[float, float]:
    return float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0


def final_metrics(evals) -> dict:
    """``{task: {method: {...}}}`` with the agent as a field; with several agents in the runs the
    key is ``<method>@<agent>``. Each entry: the final evaluation's dense return and success rate
    and (where the runs report it) final object-to-goal distance, mean and std over seeds, the
    per-seed final returns, and the env reward setting the runs learned from."""
    last = evals.loc[evals.groupby(["task", "agent", "method", "seed"])["step"].idxmax()]
    several = last["agent"].nunique() > 1
    out: dict = {}
    for (task, agent, method), df in last.groupby(["task", "agent", "method"]):
        df = df.sort_values("seed")
        r_mean, r_std = _mean_std(df["return_mean"].to_numpy())
        entry = {
            "agent": agent,
            "env_reward": "/".join(sorted(set(df["env_reward"]))),
            "return_mean": r_mean,
            "return_std": r_std,
            "success_rate": float(df["success_rate"].mean()),
            "seeds": int(len(df)),
            "steps": int(df["step"].max()),
            "per_seed_return": {f"seed{int(s)}": float(r) for s, r in zip(df["seed"], df["return_mean"])},
        }
        if "final_obj_to_target" in df.columns and df["final_obj_to_target"].notna().any():
            d_mean, d_std = _mean_std(df["final_obj_to_target"].dropna().to_numpy())
            entry.update(obj_to_target_mean=d_mean, obj_to_target_std=d_std)
        out.setdefault(task, {})[f"{method}@{agent}" if several else method] = entry
    return out


def _method_table(metrics: dict, methods: tuple[str, ...], cell) -> list[str]:
    """Markdown rows: methods as columns, one row per task and agent; ``cell(entry)`` formats an
    entry of :func:`final_metrics` (None: "–"), and a method without an entry is "–" too."""
    lines = ["| task | agent | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for task, per in metrics.items():
        for agent in sorted({v["agent"] for v in per.values()}):
            cells = []
            for m in methods:
                v = next((v for k, v in per.items() if k.split("@")[0] == m and v["agent"] == agent), None)
                text = None if v is None else cell(v)
                cells.append("–" if text is None else text)
            lines.append(f"| {task} | {agent} | " + " | ".join(cells) + " |")
    return lines


def summary_table(metrics: dict, methods: tuple[str, ...]) -> str:
    """Methods as columns, one row per task and agent."""
    lines = _method_table(
        metrics, methods, lambda v: f"{v['return_mean']:.1f} ± {v['return_std']:.1f} ({100 * v['success_rate']:.0f}%)"
    )
    steps = {v["steps"] for per in metrics.values() for v in per.values()}
    seeds = {v["seeds"] for per in metrics.values() for v in per.values()}
    settings = {s for per in metrics.values() for v in per.values() for s in v.get("env_reward", "dense").split("/")}
    lines += [
        "",
        f"Final evaluation: dense-reward episode return, mean ± std over {'/'.join(map(str, sorted(seeds)))} "
        f"seed(s), success rate (any step) in brackets; {'/'.join(map(str, sorted(steps)))} agent steps. "
        f"The agents learned from the {'/'.join(sorted(settings))} env reward (rl.env_reward).",
    ]
    if any("obj_to_target_mean" in v for per in metrics.values() for v in per.values()):
        lines += ["", "Final object-to-goal distance (mean ± std over seeds; lower is better):", ""]
        lines += _method_table(
            metrics,
            methods,
            lambda v: (
                f"{v['obj_to_target_mean']:.4f} ± {v['obj_to_target_std']:.4f}" if "obj_to_target_mean" in v else None
            ),
        )
    return "\n".join(lines) + "\n"


def plot_task(df, task: str, path: Path, per_seed=None) -> Path:
    """Mean ± std over seeds of the return, and the success rate; each seed's return curve as a
    thin line of its method's colour (``per_seed``: the runs' evaluation rows)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4), dpi=100)
    several = df["agent"].nunique() > 1
    for (agent, method), d in df.groupby(["agent", "method"]):
        label = f"{method} ({agent})" if several else method
        (line,) = axes[0].plot(d["step"], d["return_mean"], label=label)
        axes[0].fill_between(
            d["step"], d["return_mean"] - d["return_std"], d["return_mean"] + d["return_std"], alpha=0.2
        )
        if per_seed is not None:
            mine = per_seed[(per_seed["agent"] == agent) & (per_seed["method"] == method)]
            for _, s in mine.groupby("seed"):
                axes[0].plot(s["step"], s["return_mean"], color=line.get_color(), lw=0.6, alpha=0.5)
        axes[1].plot(d["step"], d["success_mean"], label=label)
    axes[0].set_title(f"{task}: episode return (dense; thin: each seed)", fontsize=9)
    axes[1].set_title(f"{task}: success rate", fontsize=9)
    for ax in axes:
        ax.set_xlabel("agent steps")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def run(cfg: Config, inputs: dict[str, Path], outputs: dict[str, Path]) -> dict:
    cfg.check_rl_tasks()
    evals = load_evals(cfg, inputs["runs"])
    cur = curves(evals)
    with atomic_dir(outputs["curves"]) as tmp:
        several = cur["agent"].nunique() > 1
        for (task, agent, method), d in cur.groupby(["task", "agent", "method"]):
            (tmp / task).mkdir(exist_ok=True)
            name = f"{method}@{agent}" if several else method
            cols = ["step", "return_mean", "return_std", "success_mean", "obj_to_target_mean", "seeds"]
            d[[c for c in cols if c in d.columns]].to_csv(tmp / task / f"{name}.csv", index=False)
    with atomic_dir(outputs["plots"]) as tmp:
        for task, d in cur.groupby("task"):
            plot_task(d, task, tmp / f"{task}.png", evals[evals["task"] == task])
    metrics = final_metrics(evals)
    write_json_atomic(outputs["metrics"], metrics)
    table = summary_table(metrics, cfg.rl.methods)
    write_text_atomic(outputs["summary"], table)
    log.info("evaluation summary:\n%s", table)
    return metrics


def report(cfg: Config, item, inputs: dict[str, Path], outputs: dict[str, Path], summary: dict) -> list:
    """Final return and success per task and method, one row each."""
    from stages.reports import Table, rows_of

    rows = [{"task": t, "method": m.split("@")[0], **v} for t, per in summary.items() for m, v in per.items()]
    columns = ["task", "agent", "method", "return_mean", "return_std", "success_rate", "seeds", "steps"]
    return [Table("evaluate-final", rows_of(rows, columns), "final evaluation per task and method (mean over seeds)")]


STAGE = Stage(
    "evaluate",
    "Curves, metrics and the methods × tasks table of the finetune_rl runs",
    run,
    inputs={"runs": "{data}/rl"},
    outputs={
        "metrics": "{reports}/metrics.json",
        "summary": "{reports}/summary.md",
        "curves": "{reports}/curves",
        "plots": "{reports}/plots",
    },
    params=("rl_runs",),
    report=report,
)

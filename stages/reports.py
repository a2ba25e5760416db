"""What a stage item shows where it ran: a summary, tables of its numbers, previews of its files.

Stages stay free of any orchestrator: :func:`item_report` describes one finished item as plain
records (:class:`Markdown`, :class:`Table`, :class:`Image`), and whoever ran the stage publishes
them — the Prefect flows turn them into artifacts of the run (``flows/artifacts.py``). Every
item gets, without stage code:

- a markdown summary: the stage and item, the profile, each input and output with its path
  (and whether and how large it is), and the scalar numbers of the stage's return value;
- a table of those numbers (``key``, ``value``);
- the content of every markdown file among its outputs (e.g. the evaluation table);
- previews of the images among its outputs: PNG and GIF files, or those inside an output folder
  (goal-video GIFs, key-frame plots, learning curves, coverage maps, rollout GIFs).

A stage adds tables of its own with the ``report`` field of its declaration: a function
``(cfg, item, inputs, outputs, summary) -> list[Markdown | Table | Image]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Union

if TYPE_CHECKING:
    from genreward.config import Config
    from stages.table import Item, Stage

IMAGE_SUFFIXES = (".png", ".gif")
MAX_IMAGES = 8  # previews per item (the first ones in path order)
MAX_KEY_NUMBERS = 60
SCALARS = (int, float, str)


@dataclass(frozen=True)
class Markdown:
    key: str
    text: str
    description: str = ""


@dataclass(frozen=True)
class Table:
    key: str
    rows: list[dict[str, Any]]
    description: str = ""


@dataclass(frozen=True)
class Image:
    key: str
    path: Path
    description: str = ""


Record = Union[Markdown, Table, Image]


def artifact_key(*parts: str) -> str:
    """A key artifacts can carry (lowercase letters, digits, dashes): ``finetune-rl-pick-place-v3-genreward-seed0``."""
    text = "-".join(p for p in parts if p)
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9]+", "-", text.lower())).strip("-")


def key_numbers(summary: Any, prefix: str = "", limit: int = MAX_KEY_NUMBERS) -> list[dict[str, Any]]:
    """The scalar leaves of a stage's return value as rows ``{"key": "a.b", "value": v}`` (numbers,
    booleans and short strings; nested dicts flattened with dots; lists of scalars joined)."""
    rows: list[dict[str, Any]] = []

    def walk(value: Any, key: str) -> None:
        if len(rows) >= limit:
            return
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, bool) or value is None:
            rows.append({"key": key, "value": value})
        elif isinstance(value, (int, float)):
            rows.append({"key": key, "value": None if isinstance(value, float) and not math.isfinite(value) else value})
        elif isinstance(value, str) and len(value) <= 200:
            rows.append({"key": key, "value": value})
        elif isinstance(value, (list, tuple)) and len(value) <= 16 and all(isinstance(v, SCALARS) for v in value):
            rows.append({"key": key, "value": ", ".join(map(str, value))})

    walk(summary, prefix)
    return rows


def _size(path: Path) -> str:
    if not path.exists():
        return "missing"
    if path.is_file():
        n = path.stat().st_size
    else:
        n = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def images_in(outputs: dict[str, Path]) -> list[Path]:
    """PNG/GIF files among ``outputs`` or inside an output folder, in path order."""
    found: list[Path] = []
    for path in outputs.values():
        if path.is_file() and path.suffix in IMAGE_SUFFIXES:
            found.append(path)
        elif path.is_dir() and path.suffix != ".zarr":
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in IMAGE_SUFFIXES and p.is_file()))
    return found


def summary_markdown(
    stage: "Stage",
    cfg: "Config",
    item: "Item",
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    numbers: list[dict[str, Any]],
) -> str:
    """The item's summary; ``numbers``: :func:`key_numbers` of its return value."""
    title = item.named(stage.name)
    lines = [f"# {title}", "", stage.summary, "", f"profile `{cfg.profile}`", ""]
    headline = [r for r in numbers if r["key"].rsplit(".", 1)[-1] in HEADLINE]
    if headline:
        lines += [" · ".join(f"**{r['key']}** {_format(r['value'])}" for r in headline), ""]
    if inputs:
        lines += ["| input | path | size |", "|---|---|---|"]
        lines += [f"| {k} | `{p}` | {_size(p)} |" for k, p in inputs.items()]
        lines.append("")
    if outputs:
        lines += ["| output | path | size |", "|---|---|---|"]
        lines += [f"| {k} | `{p}` | {_size(p)} |" for k, p in outputs.items()]
        lines.append("")
    if numbers:
        lines += ["| key | value |", "|---|---|"]
        lines += [f"| {r['key']} | {_format(r['value'])} |" for r in numbers]
    return "\n".join(lines) + "\n"


# numbers shown on the summary's first line when a stage returns them
HEADLINE = (
    "final_return_mean",  # finetune_rl
    "final_success_rate",
    "goal_reaching_spearman_mean",  # pretrain_fb
    "task_accuracy",  # adapt_video_model: task conditioning of the samples
    "cache_hit",  # generate_goal_videos
    "index",  # select_keyframes
)


def item_report(
    stage: "Stage",
    cfg: "Config",
    item: "Item",
    inputs: dict[str, Path],
    outputs: dict[str, Path],
    summary: Any,
) -> list[Record]:
    """Everything to publish for one finished item (see the module docstring)."""
    key = artifact_key(stage.name, item.label)
    title = item.named(stage.name)
    numbers = key_numbers(summary)
    records: list[Record] = [
        Markdown(key, summary_markdown(stage, cfg, item, inputs, outputs, numbers), f"{title}: what it read and wrote")
    ]
    if numbers:
        records.append(
            Table(
                artifact_key(key, "numbers"),
                [{**r, "value": _format(r["value"])} for r in numbers],
                f"{title}: key numbers",
            )
        )
    if stage.report is not None:
        records.extend(stage.report(cfg, item, inputs, outputs, summary))
    for name, path in outputs.items():
        if path.is_file() and path.suffix == ".md":
            records.append(Markdown(artifact_key(key, name), path.read_text(), f"{title}: {path.name}"))
    for i, image in enumerate(images_in(outputs)[:MAX_IMAGES]):
        records.append(Image(artifact_key(key, "image", str(i)), image, f"{title}: {image.name}"))
    return records


def rows_of(records: Iterable[dict[str, Any]], columns: Iterable[str]) -> list[dict[str, Any]]:
    """Rows restricted to ``columns`` (in that order), floats formatted for reading."""
    cols = list(columns)
    return [{c: _format(r.get(c)) for c in cols} for r in records]

"""The stage contract and the stage table: every stage is declared once, in its own module.

A stage module ends with ``STAGE = Stage(...)``: its name (as in ``dvc.yaml``), a one-line
summary, ``run``, what it runs over (once, per task, or per RL run), its inputs and outputs as
path templates, and the resolved-parameter views it reads. Templates are the paths DVC tracks,
written the way ``dvc.yaml`` writes them: ``{data}`` (``store.data_dir``), ``{reports}``
(``store.reports_dir``), ``{video_model}`` (the adapted video model's folder), and the item's
``{task}``, ``{method}``, ``{seed}``.

``run(cfg, inputs, outputs)`` does one item's work: ``cfg`` is narrowed to the item (one task;
for RL runs also one method and one seed) and the paths are resolved by the caller, from the
same declaration that ``dvc.yaml`` is checked against (``tests/test_stage_table.py``). Flows,
Prefect deployments and the pipeline DAG are generated from this table (``flows/``).

Adding a stage: one module in ``stages/`` with a ``STAGE`` + its ``dvc.yaml`` entry
(``docs/architecture.md``).
"""

from __future__ import annotations

import difflib
import importlib
import itertools
import os
import pkgutil
from dataclasses import KW_ONLY, dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Literal, Mapping

from genreward.config import Config
from genreward.runtime import configure_process
from genreward.store.artifacts import ArtifactError
from genreward.store.provenance import producer

Paths = dict[str, Path]
Over = Literal["once", "task", "run"]


@dataclass(frozen=True)
class Item:
    """One unit of a stage's work: nothing (``once``), a task, or an RL run (task, method, seed)."""

    task: str | None = None
    method: str | None = None
    seed: int | None = None

    @property
    def label(self) -> str:
        """``""``, ``"<task>"`` or ``"<task>/<method>/seed<k>"`` (keys of a stage's summary)."""
        if self.method is None:
            return self.task or ""
        return f"{self.task}/{self.method}/seed{self.seed}"

    def named(self, stage: str) -> str:
        """``stage`` or ``stage[label]``: how logs, the DAG and Prefect task runs name this item."""
        return f"{stage}[{self.label}]" if self.label else stage

    @property
    def dvc_suffix(self) -> str:
        """What DVC appends to a ``foreach``/``matrix`` stage's name after ``@``."""
        return "-".join(str(v) for v in (self.task, self.method, self.seed) if v is not None)

    def narrow(self, cfg: Config) -> Config:
        """``cfg`` narrowed to this item: ``tasks``/``rl.tasks`` (and ``rl.methods``/``rl.seeds``)."""
        if self.task is not None:
            cfg = cfg.for_task(self.task)
        if self.method is not None:
            rl = cfg.rl.model_copy(update={"methods": (self.method,), "seeds": (self.seed,)})
            cfg = cfg.model_copy(update={"rl": rl})
        return cfg


def _resolve(templates: Mapping[str, str], cfg: Config, item: Item) -> Paths:
    values = {
        "data": cfg.store.data_dir.as_posix(),
        "reports": cfg.store.reports_dir.as_posix(),
        "video_model": cfg.video_model_dir().as_posix(),
        "task": item.task,
        "method": item.method,
        "seed": item.seed,
    }
    return {key: Path(t.format(**values)) for key, t in templates.items()}


@dataclass(frozen=True)
class Stage:
    """A stage's declaration (see the module docstring)."""

    name: str
    summary: str
    run: Callable[..., dict]
    _: KW_ONLY
    over: Over = "once"
    inputs: Mapping[str, str] = field(default_factory=dict)  # name -> path template
    outputs: Mapping[str, str] = field(default_factory=dict)  # name -> path template
    params: tuple[str, ...] = ()  # resolved views (data/params/<view>.json); "{task}" is filled per item
    # extra tables/markdown/images to show for a finished item (stages/reports.py); optional
    report: Callable[..., list] | None = None
    module: str = field(default="", compare=False)  # filled by :func:`table`

    @property
    def flow_name(self) -> str:
        return self.name.replace("_", "-")

    def items(self, cfg: Config, task: str | None = None) -> list[Item]:
        """The items of this stage under ``cfg`` (only ``task``'s when given)."""
        if self.over == "once":
            return [Item()]
        if task is not None and task not in (cfg.tasks if self.over == "task" else cfg.rl.tasks):
            raise ValueError(f"--task {task}: not in {'tasks' if self.over == 'task' else 'rl.tasks'} of this config")
        if self.over == "task":
            return [Item(t) for t in cfg.tasks if task in (None, t)]
        cfg.check_rl_tasks()
        return [
            Item(t, m, s)
            for t, m, s in itertools.product(cfg.rl.tasks, cfg.rl.methods, cfg.rl.seeds)
            if task in (None, t)
        ]

    def paths(self, cfg: Config, item: Item) -> tuple[Paths, Paths]:
        """``item``'s input and output paths under ``cfg``."""
        return _resolve(self.inputs, cfg, item), _resolve(self.outputs, cfg, item)

    def param_views(self, item: Item) -> list[str]:
        return [p.format(task=item.task) for p in self.params]

    def run_item(self, cfg: Config, item: Item, **extra: Any) -> dict:
        """Resolve ``item``'s paths and run it with the config narrowed to it.

        The artifacts it writes record this stage as their producer. A declared input that does
        not exist (an :class:`ArtifactError` or ``FileNotFoundError`` about it or a file in it)
        becomes a :class:`MissingInputError` naming it, every other declared input that is
        missing too (what ``dvc repro`` of this stage will need), and the stages that write them.
        Inputs are checked when read, not up front: a declared input that a configuration does
        not use (the video model, for scripted goal videos) may be absent. An
        :class:`ArtifactError` about an input that does not record its producer (written by an
        older version, or outside a stage) gets the command that rebuilds it, from the stage table."""
        configure_process(cfg.runtime.threads, malloc_tuning=cfg.runtime.malloc_tuning)
        inputs, outputs = self.paths(cfg, item)
        try:
            with producer(stage=self.name):
                return self.run(item.narrow(cfg), inputs, outputs, **extra)
        except MissingInputError:
            raise
        except (ArtifactError, FileNotFoundError) as e:
            missing = _missing_input(cfg, inputs, e)
            if missing is not None:  # name every missing declared input, not only the first one read
                everything = missing_inputs(cfg, inputs) or missing
                raise everything.with_traceback(e.__traceback__) from None
            if not isinstance(e, ArtifactError):
                raise
            writer = _writer(cfg, e.path) if e.rerun and e.path is not None else None
            if writer is None:  # no stage writes it, or the table cannot expand: the original message
                raise
            # -f: DVC may consider the damaged or old output up to date; -s: only that stage
            fixed = ArtifactError(f"{e} (`dvc repro -f -s {writer}`)", path=e.path)
            raise fixed.with_traceback(e.__traceback__) from None

    def execute(self, cfg: Config, task: str | None = None, **extra: Any) -> dict:
        """Run every item in order (only ``task``'s when given). A ``once`` stage returns its
        summary; others return ``{item.label: summary}``."""
        if self.over == "once":
            return self.run_item(cfg, Item(), **extra)
        return {item.label: self.run_item(cfg, item, **extra) for item in self.items(cfg, task)}


def table() -> dict[str, Stage]:
    """Every ``STAGE`` declared in a module of the ``stages`` package, by name (in DAG order of
    the default layout, then by name)."""
    import stages

    found: dict[str, Stage] = {}
    for info in sorted(pkgutil.iter_modules(stages.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"stages.{info.name}")
        stage = getattr(module, "STAGE", None)
        if not isinstance(stage, Stage):
            continue
        if stage.name in found:
            raise ValueError(f"stage {stage.name!r} declared twice: {found[stage.name].module} and {module.__name__}")
        object.__setattr__(stage, "module", module.__name__)
        found[stage.name] = stage
    return found


def unknown_stage(name: str, stages: Mapping[str, Stage]) -> KeyError:
    """The error for a stage name the table does not hold: the closest name, and every valid one."""
    close = difflib.get_close_matches(name, list(stages), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return KeyError(f"unknown stage {name!r}{hint}; valid: {', '.join(sorted(stages))}")


def get_stage(name: str) -> Stage:
    stages = table()
    if name not in stages:
        raise unknown_stage(name, stages)
    return stages[name]


# -- the DAG ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Node:
    stage: Stage
    item: Item
    after: tuple[int, ...]  # indices (into the node list) of the nodes this one reads from

    @property
    def label(self) -> str:
        return self.item.named(self.stage.name)


def path_under(a: str | Path, b: str | Path) -> bool:
    """``a`` equals ``b`` or lies inside it (as written: no file-system lookup)."""
    pa, pb = PurePosixPath(Path(a).as_posix()), PurePosixPath(Path(b).as_posix())
    return pa == pb or pb in pa.parents


class MissingInputError(FileNotFoundError):
    """A stage's input does not exist; the message names the stage that writes it."""


def _writer(cfg: Config, path: Path) -> str | None:
    """The stage that writes ``path``; ``None`` when none does or the table cannot be expanded
    under ``cfg`` (the caller then names the path only)."""
    try:
        return producer_of(cfg, path)
    except Exception:
        return None


def missing_inputs(cfg: Config, inputs: Paths) -> MissingInputError | None:
    """One error naming every declared input of ``inputs`` that does not exist, with the stages
    (DVC stages, Prefect deployments) that write them; ``None`` when all exist."""
    absent = {k: p for k, p in inputs.items() if not p.exists()}
    if not absent:
        return None
    writers = dict.fromkeys(w for w in map(partial(_writer, cfg), absent.values()) if w is not None)
    paths = ", ".join(str(p) for p in absent.values())
    what = f"{paths} {'is' if len(absent) == 1 else 'are'} missing"
    if not writers:
        return MissingInputError(f"{what}; no stage writes {'it' if len(absent) == 1 else 'them'}")
    names = " ".join(writers)
    deployments = ", ".join(f"'{n.replace('_', '-')}/{n}'" for n in writers)
    return MissingInputError(
        f"{what}; run `dvc repro {names}` first (Prefect deployment{'s' if len(writers) > 1 else ''} {deployments})"
    )


def _missing_input(cfg: Config, inputs: Paths, err: Exception) -> MissingInputError | None:
    """``err`` (an :class:`ArtifactError` or ``FileNotFoundError``) as a :class:`MissingInputError`
    when the path it is about lies in a declared input (``inputs``) that does not exist and a stage
    writes that input; else ``None``."""
    path = err.path if isinstance(err, ArtifactError) else getattr(err, "filename", None)
    if path is None or Path(path).exists():
        return None
    target = os.path.abspath(path)
    for declared in inputs.values():
        if not declared.exists() and path_under(target, os.path.abspath(declared)):
            writer = _writer(cfg, declared)
            if writer is not None:
                return MissingInputError(f"{declared} is missing; run `dvc repro {writer}` first")
    return None


def producer_of(cfg: Config, path: str | Path, stages: dict[str, Stage] | None = None) -> str | None:
    """The stage whose outputs under ``cfg`` contain ``path`` (``None``: no stage writes it)."""
    for s in (table() if stages is None else stages).values():
        for item in s.items(cfg):
            if any(path_under(path, out) for out in s.paths(cfg, item)[1].values()):
                return s.name
    return None


def dag(cfg: Config, stages: dict[str, Stage] | None = None, start: tuple[str, ...] = ()) -> list[Node]:
    """Every stage item under ``cfg`` in an order that runs producers first; an item reads from
    the items whose outputs contain, or lie inside, one of its inputs. ``start``: only those
    stages and what depends on them (e.g. ``("finetune_rl",)`` for an RL sweep on existing inputs)."""
    stages = table() if stages is None else stages
    pending = [(s, item, s.paths(cfg, item)) for s in stages.values() for item in s.items(cfg)]
    deps: list[set[int]] = []
    for s, item, (ins, _) in pending:
        deps.append(
            {
                j
                for j, (t, _, (_, outs)) in enumerate(pending)
                if t is not s and any(path_under(i, o) or path_under(o, i) for i in ins.values() for o in outs.values())
            }
        )
    keep = set(range(len(pending)))
    if start:
        unknown = [n for n in start if n not in stages]
        if unknown:
            raise unknown_stage(unknown[0], stages)
        keep = {i for i, (s, _, _) in enumerate(pending) if s.name in start}
        grown = True
        while grown:
            more = {i for i, d in enumerate(deps) if i not in keep and d & keep}
            grown, keep = bool(more), keep | more
    order: list[int] = []
    done: set[int] = set()
    while len(order) < len(keep):
        ready = [i for i in sorted(keep - done) if (deps[i] & keep) <= done]
        if not ready:
            cycle = sorted(pending[i][0].name for i in keep - done)
            raise ValueError(f"stage inputs and outputs form a cycle among: {', '.join(dict.fromkeys(cycle))}")
        order.extend(ready)
        done.update(ready)
    index = {old: new for new, old in enumerate(order)}
    return [Node(pending[i][0], pending[i][1], tuple(sorted(index[j] for j in deps[i] & keep))) for i in order]


def expected_dvc(
    cfg: Config, stages: dict[str, Stage] | None = None, params_dir: str = "data/params"
) -> dict[str, dict]:
    """What ``dvc.yaml`` must say for each stage item: ``{dvc name: {"data": input paths,
    "params": param-view files, "outs": output paths, "module": code file}}`` (POSIX strings)."""
    stages = table() if stages is None else stages
    out = {}
    for s in stages.values():
        for item in s.items(cfg):
            ins, outs = s.paths(cfg, item)
            name = s.name + (f"@{item.dvc_suffix}" if item.dvc_suffix else "")
            out[name] = {
                "data": {p.as_posix() for p in ins.values()},
                "params": {f"{params_dir}/{v}.json" for v in s.param_views(item)},
                "outs": {p.as_posix() for p in outs.values()},
                "module": s.module.replace(".", "/") + ".py",
            }
    return out

"""What a flow run shows in Prefect: the library's log lines, artifacts, progress, names and tags.

- :func:`library_logs`: the ``genreward``, ``stages`` and ``flows`` loggers send their records to
  the run (Prefect's API log handler), in whatever process runs the stage: the CLI, a
  deployment's worker subprocess, a Dask worker. ``PREFECT_LOGGING_EXTRA_LOGGERS`` does the same
  only when it is set before Prefect is imported, which a worker's subprocess does not guarantee.
- :func:`publish`: the records of :func:`stages.reports.item_report` as Prefect artifacts —
  markdown (the summary, markdown outputs, image previews inline), tables (key numbers, the
  stage's own tables).
- :func:`progress_artifacts`: a progress sink (:mod:`genreward.progress`) that keeps one progress
  artifact per loop of the stage up to date.
- :func:`label_flow_run`: a readable flow-run name and tags (stage, task, method, seed, profile,
  goal-video backend), so runs can be found and filtered in the UI.

Publishing is best effort: the stage's results are its files; a failure to show them is logged
as a warning and never fails the stage.
"""

from __future__ import annotations

import base64
import logging
import mimetypes
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from genreward.config import Config
from stages.reports import Image, Markdown, Record, Table, artifact_key

LIBRARY_LOGGERS = ("genreward", "stages", "flows")
MAX_INLINE_IMAGE_BYTES = 400_000  # larger previews are listed by path, not embedded

log = logging.getLogger(__name__)


@contextmanager
def library_logs() -> Iterator[None]:
    """While inside: the library's loggers also have the handlers of Prefect's ``prefect.extra``
    logger (the API log handler), INFO level unless set otherwise. Handlers added here are
    removed on exit, so library code logging outside a run (a notebook, a test) does not reach
    for a run that is not there."""
    extra = logging.getLogger("prefect.extra")
    added = []
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.INFO)
        for handler in extra.handlers:
            if handler not in logger.handlers:
                logger.addHandler(handler)
                added.append((logger, handler))
    try:
        yield
    finally:
        for logger, handler in added:
            logger.removeHandler(handler)


def _image_markdown(image: Image) -> str:
    path = Path(image.path)
    if not path.is_file():
        return f"`{path}` (missing)"
    data = path.read_bytes()
    if len(data) > MAX_INLINE_IMAGE_BYTES:
        return f"`{path}` ({len(data) / 1e6:.1f} MB, not embedded)"
    mime = mimetypes.guess_type(path.name)[0] or "image/png"
    return f"![{path.name}](data:{mime};base64,{base64.b64encode(data).decode()})\n\n`{path}`"


def publish(records: Iterable[Record]) -> int:
    """Create the Prefect artifacts of ``records`` in the current run; the number created.
    Images are gathered into one markdown artifact (inline previews, each with its path)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    created, images = 0, []
    for r in records:
        try:
            if isinstance(r, Markdown):
                create_markdown_artifact(r.text, key=r.key, description=r.description)
            elif isinstance(r, Table):
                if not r.rows:
                    continue
                create_table_artifact(r.rows, key=r.key, description=r.description)
            elif isinstance(r, Image):
                images.append(r)
                continue
            created += 1
        except Exception as e:  # showing a result must never fail the stage that made it
            log.warning("could not publish artifact %s: %s", r.key, e)
    if images:
        key = images[0].key.rsplit("-image-", 1)[0] + "-previews"
        text = "\n\n".join(f"**{im.description}**\n\n{_image_markdown(im)}" for im in images)
        try:
            create_markdown_artifact(text, key=key, description=f"{len(images)} preview(s)")
            created += 1
        except Exception as e:
            log.warning("could not publish artifact %s: %s", key, e)
    return created


def progress_artifacts(prefix: str) -> Callable[[str, int, int], None]:
    """A progress sink: one Prefect progress artifact per loop (by its description), created on
    its first report and updated after."""
    from prefect.artifacts import create_progress_artifact, update_progress_artifact

    ids: dict[str, Any] = {}

    def sink(desc: str, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        text = f"{prefix}: {desc} ({done}/{total})"
        if desc not in ids:  # keys stable across runs: <item>-progress, then -progress-2, ...
            key = artifact_key(prefix, "progress", str(len(ids) + 1) if ids else "")
            ids[desc] = create_progress_artifact(pct, key=key, description=text)
        else:
            update_progress_artifact(ids[desc], pct, description=text)

    return sink


def run_tags(cfg: Config, stage: str | None = None, task: str | None = None) -> list[str]:
    """Tags of a run: ``stage:``, ``task:`` (the task given, or each of up to five), ``method:``
    and ``seed:`` (RL stages), ``profile:``, ``backend:`` (goal videos)."""
    tags = ["genreward", f"profile:{cfg.profile}", f"backend:{cfg.goal_video.backend}"]
    if stage:
        tags.append(f"stage:{stage}")
    tasks = [task] if task else list(cfg.tasks)
    if len(tasks) <= 5:
        tags += [f"task:{t}" for t in tasks]
    if stage == "finetune_rl" or stage is None:
        tags += [f"method:{m}" for m in cfg.rl.methods] + [f"seed:{s}" for s in cfg.rl.seeds]
    return tags


def run_name(cfg: Config, stage: str, task: str | None = None) -> str:
    """``<stage>[<task>] <profile>``, e.g. ``finetune_rl[pick-place-v3] laptop``."""
    return f"{stage}{f'[{task}]' if task else ''} {cfg.profile}"


def label_flow_run(name: str, tags: list[str]) -> None:
    """Rename the current flow run and add ``tags`` (best effort; no-op outside a flow run)."""
    try:
        from prefect.client.orchestration import get_client
        from prefect.runtime import flow_run

        run_id = flow_run.id
        if run_id is None:
            return
        with get_client(sync_client=True) as client:
            current = client.read_flow_run(run_id)
            merged = list(dict.fromkeys([*current.tags, *tags]))
            client.update_flow_run(run_id, name=name, tags=merged)
    except Exception as e:
        log.warning("could not name the flow run %r: %s", name, e)

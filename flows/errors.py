"""How the command line reports a failure: one line and an exit code, not a traceback wall.

A stage's flow raises as before, so Prefect records the run as failed with the exception's
message (in its API and UI, with the traceback). Only the console of ``genreward`` changes:

- :class:`QuietConsole` filters Prefect's console copies of a failure (the task's and the
  flow's tracebacks, their ``Finished in state Failed`` lines) and the temporary API server's
  start/stop notices from Prefect's console handler; every other log line stays;
- :func:`report` prints the exception once, as ``error: <message>`` (the project's messages
  say what is wrong and how to fix it), and gives the exit code: :data:`BAD_INPUT` for
  configuration and missing or damaged inputs, :data:`RUNTIME_FAULT` for everything else.

``genreward --debug ...`` or ``GENREWARD_DEBUG=1`` keeps Prefect's full console log and prints
the traceback before the error line.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from pathlib import Path
from typing import TextIO

BAD_INPUT = 2
RUNTIME_FAULT = 1
DEBUG_ENV = "GENREWARD_DEBUG"
MAX_LINES = 3  # a multi-problem error (a ConfigError lists every problem) prints at most this many

# The project's error types (module.class, as raised) and their exit codes. Matched by name along
# the exception's class hierarchy, so reporting imports nothing (tests/test_cli_errors.py checks
# that every entry names a class that exists). An error of another type is unexpected: exit 1,
# with the place it was raised.
ERRORS: dict[str, int] = {
    "genreward.config.ConfigError": BAD_INPUT,
    "stages.table.MissingInputError": BAD_INPUT,
    "genreward.store.artifacts.ArtifactError": BAD_INPUT,
    "genreward.store.cache.CacheError": BAD_INPUT,
    "genreward.envs.tasks.UnknownTaskError": BAD_INPUT,
    "genreward.video.io.VideoError": BAD_INPUT,
    "genreward.video.base.GenerationError": BAD_INPUT,
    "genreward.video.latents.LatentEncoderError": BAD_INPUT,
    "genreward.vision.clip.CLIPWeightsError": BAD_INPUT,
    "genreward.rewards.base.RewardInputError": BAD_INPUT,
    "builtins.FileNotFoundError": BAD_INPUT,  # the project's messages name the file and its stage
    "genreward.training.TrainingDiverged": RUNTIME_FAULT,
    "genreward.agents.registry.RLDiverged": RUNTIME_FAULT,
    "genreward.agents.registry.AgentUnavailable": BAD_INPUT,
    "genreward.envs.gl.GLBackendError": RUNTIME_FAULT,
    "builtins.FloatingPointError": RUNTIME_FAULT,
}
_PROJECT = ("genreward", "stages", "flows")
_REPO = Path(__file__).resolve().parents[1]


def debug_enabled() -> bool:
    """``GENREWARD_DEBUG`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def known(exc: BaseException) -> int | None:
    """The exit code of ``exc``'s type if it is one of the project's errors (:data:`ERRORS`), else None."""
    for cls in type(exc).__mro__:
        code = ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if code is not None:
            return code
    return None


def _where(exc: BaseException) -> str | None:
    """``path:line`` of the innermost frame of ``exc``'s traceback in the project's code."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        try:
            rel = path.resolve().relative_to(_REPO)
        except ValueError:
            continue
        if rel.parts and rel.parts[0] in _PROJECT:
            return f"{rel.as_posix()}:{frame.lineno}"
    return None


def error_lines(exc: BaseException) -> tuple[list[str], int]:
    """The lines :func:`report` prints for ``exc`` (each ``error: ...``, at most :data:`MAX_LINES`)
    and the exit code."""
    code = known(exc)
    text = str(exc).strip() or type(exc).__name__
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if code is None:  # not one of ours: name the type and where it was raised
        where = _where(exc)
        lines = [
            f"unexpected {type(exc).__name__}{f' at {where}' if where else ''}: {lines[0][:300]}"
            f"{' (...)' if len(lines) > 1 or len(lines[0]) > 300 else ''}; "
            f"run with --debug (or {DEBUG_ENV}=1) for the traceback"
        ]
        code = RUNTIME_FAULT
    elif len(lines) > 1 and not isinstance(getattr(exc, "problems", None), list):
        lines = [" ".join(lines)]  # one line per error; only a ConfigError lists several problems
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + [f"... and {len(lines) - MAX_LINES + 1} more"]
    return [f"error: {line}" for line in lines], code


def report(exc: BaseException, debug: bool = False, stream: TextIO | None = None) -> int:
    """Print ``exc`` as ``error: ...`` line(s) (after the traceback with ``debug``); returns the exit code."""
    import click

    stream = sys.stderr if stream is None else stream
    lines, code = error_lines(exc)
    if debug:
        traceback.print_exception(exc, file=stream)
    for line in lines:
        click.secho(line, fg="red", file=stream)  # colour on a terminal only
    return code


# -- the console ------------------------------------------------------------------------------
_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_SUCCESS = ("Finished in state Completed", "Finished in state Cached")


class QuietConsole(logging.Filter):
    """Console filter: drops Prefect's console reports of a failed run (the CLI prints the error
    once), the notices of the temporary API server (logger ``prefect`` below WARNING) and the
    "Still processing items" notices of Prefect's background services flushing at exit. The API
    handler does not see this filter: the run's logs and failure are recorded in full."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(_RUN_LOGGERS):
            if record.exc_info:
                return False
            msg = record.getMessage()
            return not (msg.startswith("Finished in state ") and not msg.startswith(_SUCCESS))
        if record.name == "prefect":
            return record.levelno >= logging.WARNING
        return not (record.levelno == logging.WARNING and str(record.msg).startswith("Still processing items"))


def quiet_console() -> None:
    """Add :class:`QuietConsole` to Prefect's console handler (setting up Prefect's logging first)."""
    from prefect.logging.configuration import ensure_logging_setup
    from prefect.logging.handlers import PrefectConsoleHandler

    ensure_logging_setup()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not any(isinstance(f, QuietConsole) for f in handler.filters):
            handler.addFilter(QuietConsole())

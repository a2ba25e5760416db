"""The command line reports a failure in one line with its exit code; --debug adds the traceback.

The table of bad-input cases (docs/bad-inputs.md) is checked in tests/test_bad_inputs.py.
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from flows.errors import BAD_INPUT, ERRORS, RUNTIME_FAULT, QuietConsole, error_lines, report

from .conftest import REPO, tiny_params


def _lines(res: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (res.stdout + res.stderr).split("\n") if line.strip()]


def _environment(**extra: str) -> dict[str, str]:
    """This environment without a Prefect server or debug settings (a default run), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENREWARD_", "PREFECT_API_URL", "PREFECT_UI"))}
    return {**env, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def _genreward(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    exe = shutil.which("genreward") or str(Path(sys.executable).parent / "genreward")
    return subprocess.run(
        [exe, *args], cwd=cwd, env=_environment(**(env or {})), capture_output=True, text=True, timeout=600
    )


def test_every_listed_error_type_exists():
    for name, code in ERRORS.items():
        module, cls = name.rsplit(".", 1)
        assert issubclass(getattr(importlib.import_module(module), cls), Exception), name
        assert code in (BAD_INPUT, RUNTIME_FAULT)


def test_error_lines_and_exit_codes():
    from genreward.config import ConfigError
    from genreward.store.artifacts import ArtifactError
    from genreward.training import TrainingDiverged
    from stages.table import MissingInputError, get_stage

    cases = [
        (ArtifactError("data/x.zarr: damaged artifact; re-run `dvc repro x`"), BAD_INPUT),
        (MissingInputError("data/x.zarr is missing; run `dvc repro x` first"), BAD_INPUT),
        (FileNotFoundError("data/fb: no FB model; run `dvc repro pretrain_fb` first"), BAD_INPUT),
        (TrainingDiverged("FB training diverged at update 3: loss nan; lower fb.lr"), RUNTIME_FAULT),
    ]
    for exc, code in cases:
        assert error_lines(exc) == ([f"error: {exc}"], code)
    # a multi-line message is joined; a ConfigError keeps one line per problem, at most three lines
    assert error_lines(ArtifactError("first\nsecond"))[0] == ["error: first second"]
    many = ConfigError([f"k{i}: bad" for i in range(5)])
    assert error_lines(many) == (
        ["error: params.yaml: k0: bad", "error: params.yaml: k1: bad", "error: ... and 3 more"],
        BAD_INPUT,
    )
    # anything else is unexpected: a runtime fault, named with the place it was raised
    try:
        get_stage("nope")
    except KeyError as e:
        (line,), code = error_lines(e)
    assert code == RUNTIME_FAULT
    assert line.startswith("error: unexpected KeyError at stages/table.py:") and "unknown stage 'nope'" in line
    assert line.endswith("run with --debug (or GENREWARD_DEBUG=1) for the traceback")


def test_report_prints_the_traceback_only_with_debug():
    try:
        raise FileNotFoundError("data/fb is missing; run `dvc repro pretrain_fb` first")
    except FileNotFoundError as e:
        exc = e
    quiet, loud = io.StringIO(), io.StringIO()
    assert report(exc, stream=quiet) == BAD_INPUT
    assert quiet.getvalue() == "error: data/fb is missing; run `dvc repro pretrain_fb` first\n"
    assert report(exc, debug=True, stream=loud) == BAD_INPUT
    assert loud.getvalue().startswith("Traceback (most recent call last)")
    assert loud.getvalue().endswith(quiet.getvalue())


def test_quiet_console_drops_prefect_failure_reports_only():
    def record(name, level, msg, exc=False):
        r = logging.LogRecord(name, level, __file__, 1, msg, None, None)
        if exc:
            try:
                raise ValueError("x")
            except ValueError:
                r.exc_info = sys.exc_info()
        return r

    keep = [
        record("prefect.flow_runs", logging.INFO, "Beginning flow run 'a' for flow 'pretrain-fb'"),
        record("prefect.task_runs", logging.INFO, "stage pretrain_fb: profile=laptop outputs={}"),
        record("prefect.task_runs", logging.INFO, "Finished in state Completed()"),
        record("prefect.task_runs", logging.INFO, "Finished in state Cached(type=COMPLETED)"),
        record("prefect", logging.WARNING, "a warning of Prefect's"),
        record("genreward.agents.fb", logging.ERROR, "the library's own error log"),
    ]
    drop = [
        record("prefect.task_runs", logging.ERROR, "Task run failed with exception: ValueError('x')", exc=True),
        record("prefect.flow_runs", logging.ERROR, "Encountered exception during execution: ValueError('x')", True),
        record("prefect.task_runs", logging.ERROR, "Finished in state Failed('Task run encountered an exception')"),
        record("prefect.flow_runs", logging.INFO, "Finished in state Failed('Flow run encountered an exception')"),
        record("prefect", logging.INFO, "Starting temporary server on http://127.0.0.1:8000"),
        record("prefect", logging.INFO, "Stopping temporary server on http://127.0.0.1:8000"),
        record("EventsWorker", logging.WARNING, "Still processing items: 1 items remaining..."),
    ]
    f = QuietConsole()
    assert [f.filter(r) for r in keep] == [True] * len(keep)
    assert [f.filter(r) for r in drop] == [False] * len(drop)


def test_config_error_is_one_line_and_debug_adds_the_traceback():
    args = ("stage", "pretrain_fb", "--set", "fb.lr=-1")
    res = _genreward(*args)
    assert res.returncode == 2 and _lines(res) == ["error: params.yaml: fb.lr: Input should be greater than 0 (got -1)"]
    for debug in (_genreward("--debug", *args), _genreward(*args, env={"GENREWARD_DEBUG": "1"})):
        assert debug.returncode == 2
        assert "Traceback (most recent call last)" in debug.stderr and "genreward.config.ConfigError" in debug.stderr
        assert _lines(debug)[-1] == _lines(res)[0]


_READ_RUNS = """
import asyncio, json
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        runs = await client.read_flow_runs()
        print(json.dumps([[r.state.type.value, r.state.message] for r in runs]))

asyncio.run(main())
"""


@pytest.mark.long(seconds=50)
@pytest.mark.timeout(600)
def test_runtime_error_is_short_recorded_by_prefect_and_debug_shows_everything(tmp_path):
    """A stage that fails inside its Prefect flow: at most 3 lines on the console, the temporary
    API server's notices and Prefect's tracebacks off it; the run is still recorded as failed
    with the message. GENREWARD_DEBUG=1 shows the traceback and Prefect's own failure log."""
    params = tiny_params(yaml.safe_load((REPO / "params.yaml").read_text()))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {"PREFECT_HOME": str(tmp_path / "prefect")}
    message = (
        "error: data/exploration.zarr is missing; run `dvc repro collect_exploration` first "
        "(Prefect deployment 'collect-exploration/collect_exploration')"
    )

    res = _genreward("stage", "pretrain_fb", cwd=tmp_path, env=env)
    lines = _lines(res)
    assert res.returncode == 2 and len(lines) <= 3 and lines[-1] == message, res.stderr
    assert "for flow 'pretrain-fb'" in lines[0]  # it went through Prefect
    assert "Traceback" not in res.stderr and "temporary server" not in res.stderr

    debug = _genreward("stage", "pretrain_fb", cwd=tmp_path, env={**env, "GENREWARD_DEBUG": "1"})
    assert debug.returncode == 2 and message in _lines(debug)
    assert "Traceback (most recent call last)" in debug.stderr and "stages.table.MissingInputError" in debug.stderr
    assert "Task run failed with exception" in debug.stderr and "Starting temporary server" in debug.stderr

    read = subprocess.run(
        [sys.executable, "-c", _READ_RUNS], env=_environment(**env), capture_output=True, text=True, timeout=300
    )
    assert read.returncode == 0, read.stderr[-3000:]
    runs = json.loads(read.stdout.strip().splitlines()[-1])
    assert len(runs) == 2 and all(state == "FAILED" for state, _ in runs), runs
    assert all(msg.endswith(message.removeprefix("error: ")) for _, msg in runs), runs

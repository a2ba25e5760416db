"""What ``genreward`` says about bad input: runs each case through the real CLI and writes the table.

Every case runs ``genreward ...`` (the console script DVC calls) in a temporary project folder of
its own: a tiny ``params.yaml`` (``tests/conftest.py:tiny_params``, on the CPU, progress bars
off) and whatever broken input the case needs, built with the library in seconds (a synthetic
exploration dataset, an untrained FB model, a tiny CogVideoX pipeline folder). For each case it
records the exit code, how many lines the command printed (stdout and stderr together) and the
``error:`` line, and writes them to ``docs/bad-inputs.md``.

    python docs/bad_inputs.py            # run the cases, rewrite docs/bad-inputs.md
    python docs/bad_inputs.py --check    # exit 1 if a case breaks its promise (exit code, at
                                         # most 3 lines) or docs/bad-inputs.md is not current

``tests/test_bad_inputs.py`` runs the check. The cases run two at a time (``--jobs``) against
one local Prefect server (:class:`PrefectServer`), in about a minute on 2 cores.
"""

from __future__ import annotations

import argparse
import difflib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad-inputs.md"
MAX_LINES = 3
PROJECT = "/path/to/project"  # how the table writes the temporary project folder
TASK = "reach-v3"


@dataclass(frozen=True)
class Case:
    name: str  # what is wrong, as the table says it
    args: tuple[str, ...]  # the genreward command line
    code: int  # the exit code it must give: 2 bad input, 1 runtime fault
    prepare: Callable[[Path], None] | None = None  # breaks the project folder (made from the tiny params)
    setup: str = ""  # what `prepare` did, for the table


@dataclass
class Result:
    case: Case
    code: int
    lines: int
    message: str  # the error line(s), the project folder written as PROJECT
    output: str = field(repr=False)  # all of it, for failures of the check
    seconds: float = 0.0

    def problems(self) -> list[str]:
        found = []
        if self.code != self.case.code:
            found.append(f"exit code {self.code}, expected {self.case.code}")
        if self.lines > MAX_LINES:
            found.append(f"{self.lines} lines of output, at most {MAX_LINES} allowed")
        if not self.message.startswith("error: "):
            found.append("no `error: ...` line")
        return found


# -- the broken inputs ---------------------------------------------------------------------------
def tiny_params() -> dict:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from tests.conftest import tiny_params as tiny

    params = tiny(yaml.safe_load((REPO / "params.yaml").read_text()))
    params["runtime"].update(device="cpu", progress=False)
    return params


def _edit_params(work: Path, section: str, key: str, value) -> None:
    params = yaml.safe_load((work / "params.yaml").read_text())
    params[section][key] = value
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def unknown_key(work: Path) -> None:
    _edit_params(work, "fb", "lrate", 0.001)


def exploration_data(work: Path) -> None:
    """A complete exploration dataset of random frames and actions (4 episodes of 16 steps), as
    stage collect_exploration would write it."""
    from genreward.envs.config import ACTION_DIM, STATE_DIM
    from genreward.store.episodes import Episode, EpisodeWriter
    from genreward.store.provenance import producer

    rng = np.random.default_rng(0)
    size, steps = 32, 16
    with producer(stage="collect_exploration"):
        writer = EpisodeWriter(work / "data" / "exploration.zarr", {"synthetic": True}, chunk_rows=16)
        for _ in range(4):
            writer.append(
                Episode(
                    obs=rng.integers(0, 256, (steps + 1, 3, size, size), dtype=np.uint8),
                    state=rng.normal(size=(steps + 1, STATE_DIM)).astype(np.float32),
                    action=rng.uniform(-1, 1, (steps, ACTION_DIM)).astype(np.float32),
                    success=np.zeros(steps + 1, bool),
                    task_id=0,
                )
            )
        writer.finish({"synthetic": True})


def exploration_data_without_a_chunk(work: Path) -> None:
    exploration_data(work)
    (work / "data" / "exploration.zarr" / "action" / "c" / "1" / "0").unlink()


def fb_model_of_random_bytes(work: Path) -> None:
    """An FB model folder (untrained, the tiny profile's sizes) whose weights file is then
    overwritten with random bytes."""
    from genreward.agents.config import FBConfig
    from genreward.agents.fb import FBModel, save_fb

    model = FBModel((3, 32, 32), 4, FBConfig(**tiny_params()["fb"]), "cpu")
    save_fb(work / "data" / "fb", model)
    (work / "data" / "fb" / "weights.safetensors").write_bytes(np.random.default_rng(0).bytes(4096))


def text_as_mp4(work: Path) -> None:
    (work / "goal.mp4").write_text("this is a text file, not a video\n")


_PIPELINE: list[Path] = []  # built once per process


def pipeline_without_vae(work: Path) -> None:
    """A tiny CogVideoX pipeline folder (``save_pretrained``), with its ``vae/`` deleted."""
    if not _PIPELINE:
        from genreward.video.cogvideox_build import build_cogvideox_pipeline

        folder = Path(tempfile.mkdtemp(prefix="genreward-pipeline-"))
        build_cogvideox_pipeline(["a robot arm reaches the target"], "t2v").save_pretrained(folder / "pipe")
        _PIPELINE.append(folder / "pipe")
    shutil.copytree(_PIPELINE[0], work / "models" / "cogvideox")
    shutil.rmtree(work / "models" / "cogvideox" / "vae")


def stage(name: str, *args: str) -> tuple[str, ...]:
    return ("stage", name, *args)


CASES: tuple[Case, ...] = (
    Case("unknown key in params.yaml", stage("pretrain_fb"), 2, unknown_key, "params.yaml has `fb: {lrate: 0.001}`"),
    Case("value out of bounds", stage("pretrain_fb", "--set", "fb.lr=-1"), 2),
    Case("rl.steps < rl.seed_steps", stage("finetune_rl", "--task", TASK, "--set", "rl.steps=16"), 2),
    Case("unknown stage name", stage("pretrain_bf"), 2),
    Case("--task on a stage that runs once", stage("pretrain_fb", "--task", TASK), 2),
    Case("unknown task", stage("select_keyframes", "--task", "reach-v9"), 2),
    Case("missing input of a stage", stage("pretrain_fb"), 2, None, "no exploration dataset"),
    Case(
        "deleted chunk of an artifact",
        stage("pretrain_fb"),
        2,
        exploration_data_without_a_chunk,
        "one chunk file of `data/exploration.zarr` deleted",
    ),
    Case(
        "FB weights replaced by random bytes",
        stage(
            "finetune_rl",
            "--task",
            TASK,
            "--set",
            "rl.methods=[env_only]",
            "--set",
            "rl.drqv2.init_encoder_from_fb=true",
        ),
        2,
        fb_model_of_random_bytes,
        "`data/fb/weights.safetensors` is 4 KiB of random bytes",
    ),
    Case(
        "text file given as the goal video",
        stage(
            "generate_goal_videos",
            "--set",
            "goal_video.backend=file",
            "--set",
            f"goal_video.file.paths.{TASK}=goal.mp4",
        ),
        2,
        text_as_mp4,
        "`goal.mp4` is a text file",
    ),
    Case(
        "diffusers pipeline folder without vae/",
        stage(
            "generate_goal_videos",
            "--set",
            "goal_video.diffusers.use_adapted=false",
            "--set",
            "goal_video.diffusers.model=models/cogvideox",
        ),
        2,
        pipeline_without_vae,
        "`models/cogvideox` is a CogVideoX pipeline folder without `vae/`",
    ),
    Case(
        "relative local model path that does not exist",
        stage("generate_goal_videos"),
        2,
        None,
        "the adapted model `data/video_model/pipeline` (the default) was never built",
    ),
    Case("FB training diverges", stage("pretrain_fb", "--set", "fb.lr=1"), 1, exploration_data, "exploration dataset"),
)


# -- running them --------------------------------------------------------------------------------
def _genreward() -> str:
    return shutil.which("genreward") or str(Path(sys.executable).parent / "genreward")


def _environment() -> dict[str, str]:
    """The user's environment, less what would change what a default run prints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENREWARD_", "PREFECT_"))}
    env.update(HF_HUB_OFFLINE="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", NO_COLOR="1")
    return env


class PrefectServer:
    """One local Prefect API server (``prefect server start`` on a free loopback port, its own
    home) for every case: a command without ``PREFECT_API_URL`` starts a temporary server of its
    own, which costs about as much CPU as the rest of a failing command. With the run link off
    (``PREFECT_UI_URL=""``) a command prints the same lines either way, and the temporary server's
    notices are not printed (``flows/errors.py``)."""

    def __init__(self, home: Path):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.home = home
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.log = home / "server.log"
        home.mkdir(parents=True, exist_ok=True)
        env = {**_environment(), "PREFECT_HOME": str(home), "PREFECT_UI_ENABLED": "false"}
        prefect = shutil.which("prefect") or str(Path(sys.executable).parent / "prefect")
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(self.port)],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the Prefect server did not start: {self.log.read_text()[-2000:]}")

    def env(self) -> dict[str, str]:
        return {"PREFECT_API_URL": self.url, "PREFECT_UI_URL": "", "PREFECT_HOME": str(self.home)}

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def run_case(case: Case, root: Path, env: dict[str, str]) -> Result:
    work = root / case.name.replace(" ", "-").replace("/", "-")
    work.mkdir(parents=True)
    (work / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    if case.prepare is not None:
        case.prepare(work)
    t0 = time.perf_counter()
    res = subprocess.run(
        [_genreward(), *case.args],
        cwd=work,
        env={**_environment(), **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    seconds = time.perf_counter() - t0
    output = res.stdout + res.stderr
    lines = [line for line in output.split("\n") if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")] or lines[-1:]
    message = "\n".join(errors)
    for path in {str(work.resolve()), str(work)}:
        message = message.replace(path, PROJECT)
    return Result(case, res.returncode, len(lines), message, output, seconds)


def run_cases(cases: tuple[Case, ...] = CASES, jobs: int = 2) -> list[Result]:
    """Every case, ``jobs`` at a time, against one local Prefect server; results in the order of ``cases``."""
    with tempfile.TemporaryDirectory(prefix="genreward-bad-inputs-") as tmp:
        root = Path(tmp)
        server = PrefectServer(root / "prefect")
        try:
            if any(c.prepare is pipeline_without_vae for c in cases):
                pipeline_without_vae(root / "warm-up")  # built once, while the server starts
            server.wait()
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # the slow cases (last in the table) first
                done = list(pool.map(lambda case: run_case(case, root / "cases", server.env()), cases[::-1]))
            return done[::-1]
        finally:
            server.stop()
            for folder in _PIPELINE:
                shutil.rmtree(folder.parent, ignore_errors=True)
            _PIPELINE.clear()


# -- the table -----------------------------------------------------------------------------------
HEADER = """# Bad input, case by case

What `genreward` prints when the input is wrong. Generated by `python docs/bad_inputs.py`, which
runs each case through the real command line in a temporary project with a tiny configuration
(`tests/conftest.py:tiny_params`, on the CPU, progress bars off), and checked by
`tests/test_bad_inputs.py` (`python docs/bad_inputs.py --check`): edit the cases there, not this
file.

A failure prints one line, `error: <what is wrong and how to fix it>`, after the log lines the
run printed before it failed (here: the Prefect flow run's first line and the stage item's; with
`PREFECT_API_URL` set, Prefect also prints the run's link). The exit code is 2 for bad input
(configuration, missing or damaged inputs) and 1 for a runtime fault. The Prefect run is still
recorded as failed, with the same message and the traceback; `genreward --debug ...` or
`GENREWARD_DEBUG=1` prints the traceback and Prefect's full console log too. `lines` counts the
non-empty lines of stdout and stderr together; `{project}` stands for the project folder.

| case | input | command | exit | lines | message |
|---|---|---|---|---|---|
"""


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", "<br>")


def render(results: list[Result]) -> str:
    rows = []
    for r in results:
        command = "`genreward " + " ".join(r.case.args) + "`"
        rows.append(
            f"| {_cell(r.case.name)} | {_cell(r.case.setup) or '—'} | {_cell(command)} | {r.code} | {r.lines} | "
            f"{_cell(r.message)} |"
        )
    return HEADER.replace("{project}", PROJECT) + "\n".join(rows) + "\n"


def check(results: list[Result]) -> list[str]:
    """What is wrong: each case that breaks its promise, and ``docs/bad-inputs.md`` if it is not
    what ``results`` render to (with the diff)."""
    problems = [f"{r.case.name}: {'; '.join(r.problems())}\n{r.output}" for r in results if r.problems()]
    text, current = render(results), TABLE.read_text() if TABLE.exists() else ""
    if current != text:
        diff = difflib.unified_diff(current.splitlines(), text.splitlines(), str(TABLE), "generated", lineterm="")
        problems.append("\n".join(diff) + f"\n{TABLE} is not current; run `python docs/bad_inputs.py`")
    return problems


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="check docs/bad-inputs.md instead of writing it")
    ap.add_argument("--jobs", type=int, default=2, help="cases run at a time (default 2)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    results = run_cases(jobs=args.jobs)
    for r in results:
        status = "; ".join(r.problems()) or "ok"
        print(f"{r.seconds:5.1f} s  {r.case.name}: exit {r.code}, {r.lines} line(s): {status}", file=sys.stderr)
    if args.check:
        problems = check(results)
        for problem in problems:
            print(problem, file=sys.stderr)
    else:
        problems = [p for r in results for p in r.problems()]
        TABLE.write_text(render(results))
        print(f"wrote {TABLE}", file=sys.stderr)
    print(f"{len(results)} cases in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())

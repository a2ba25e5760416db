"""The stage runner (flows/runner.py): a warm process that forks `genreward stage` runs.

The runner here preloads two small modules and the stub command, and serves a copy of the project's ``flows`` package
whose ``flows/cli.py`` is replaced by a stub command, so each run is quick and reports what it
saw (working directory, environment, arguments, process ids, the stub's version).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flows import runner
from flows.cli import _stage_command

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(not runner.supported(), reason="the stage runner needs fork and Unix sockets")

STUB = """
import json, os, signal, sys, time
VERSION = {version}
def run_command():
    args = sys.argv[1:]
    if args[0] == "echo":
        print(json.dumps({{"cwd": os.getcwd(), "mark": os.environ.get("RUNNER_TEST_MARK"), "argv": sys.argv,
                          "pid": os.getpid(), "pgid": os.getpgid(0), "version": VERSION,
                          "hup_ignored": signal.getsignal(signal.SIGHUP) == signal.SIG_IGN,
                          "cpus": sorted(os.sched_getaffinity(0))}}), flush=True)
        print("a line on stderr", file=sys.stderr)
        sys.exit(int(args[1]))
    if args[0] == "sleep":  # with a child process, as a stage has its env workers
        import subprocess
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
        with open(args[1], "w") as f:
            f.write(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
"""

CLIENT = """
import os, signal, sys
if os.environ.get("RUNNER_TEST_IGNORE_HUP"):
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as nohup does
if os.environ.get("RUNNER_TEST_CPU"):
    os.sched_setaffinity(0, {int(os.environ["RUNNER_TEST_CPU"])})  # as taskset does
from flows.runner import hand_over
code = hand_over(["genreward", *sys.argv[1:]])
if code is None:
    print("not handed over", flush=True)
    sys.exit(99)
sys.exit(code)
"""


def _write_stub(proj: Path, version: int) -> None:
    (proj / "flows" / "cli.py").write_text(STUB.format(version=version))


@pytest.fixture
def served(tmp_path):
    """A runner over a stub project; yields (env, work dir, project dir). Stopped afterwards."""
    proj, work, lib = tmp_path / "proj", tmp_path / "work", tmp_path / "lib"
    (proj / "flows").mkdir(parents=True)
    for name in ("__init__.py", "server.py", "runner.py", "errors.py"):
        shutil.copy(REPO / "flows" / name, proj / "flows" / name)
    _write_stub(proj, 1)
    work.mkdir()
    lib.mkdir()
    (lib / "preloaded_lib.py").write_text("VALUE = 1\n")
    (proj / "client.py").write_text(CLIENT)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", runner.RUNNER_ENV)}
    env.update(PYTHONPATH=f"{proj}{os.pathsep}{lib}", PREFECT_HOME=str(tmp_path / "home"))
    preload = ["json", "preloaded_lib", "flows.cli"]
    start = f"import sys; from flows.runner import start; sys.exit(0 if start(None, {preload!r}, 120) else 1)"
    try:
        started = subprocess.run([sys.executable, "-c", start], env=env, cwd=work, capture_output=True, text=True)
        log = tmp_path / "home" / "genreward-runner.log"
        assert started.returncode == 0, started.stderr + (log.read_text() if log.exists() else "")
        yield env, work, proj
    finally:
        subprocess.run([sys.executable, "-c", "from flows.runner import stop; stop()"], env=env, timeout=60)


def _client(env, work, proj, *args, extra=None, **kw):
    return subprocess.Popen(
        [sys.executable, str(proj / "client.py"), *args],
        env={**env, **(extra or {})},
        cwd=work,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def _gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def _pid_file(path: Path, timeout: float = 30.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text():
            return [int(pid) for pid in path.read_text().split()]
        time.sleep(0.05)
    raise AssertionError(f"the run did not start: {path}")


def test_a_run_gets_the_clients_directory_environment_arguments_streams_and_exit_code(served):
    env, work, proj = served
    p = _client(env, work, proj, "echo", "7", extra={"RUNNER_TEST_MARK": "abc"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 7, out + err
    seen = json.loads(out)
    assert seen["cwd"] == str(work) and seen["mark"] == "abc"
    assert seen["argv"] == ["genreward", "echo", "7"]
    assert seen["pid"] != p.pid and seen["pgid"] == seen["pid"]  # a fork, in a process group of its own
    assert err == "a line on stderr\n"


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity here")
def test_a_run_keeps_the_clients_ignored_signals_and_cpu_affinity(served):
    env, work, proj = served
    cpu = max(os.sched_getaffinity(0))
    p = _client(env, work, proj, "echo", "0", extra={"RUNNER_TEST_IGNORE_HUP": "1", "RUNNER_TEST_CPU": str(cpu)})
    seen = json.loads(p.communicate(timeout=60)[0])
    assert seen["hup_ignored"] is True and seen["cpus"] == [cpu]
    plain = json.loads(_client(env, work, proj, "echo", "0").communicate(timeout=60)[0])
    assert plain["hup_ignored"] is False and plain["cpus"] == sorted(os.sched_getaffinity(0))


def _as_runner_sees(request: dict, change) -> str | None:
    runner_state = {
        "interpreter": runner._interpreter(),
        "import_env": runner._import_env(request["env"], None),
        "library_files": {},
        "process": runner._process(),
    }
    change(request)
    return runner.mismatch(request, runner_state)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: None, None),
        (lambda r: r["interpreter"].update(prefix="/another/venv"), "interpreter prefix differs"),
        (lambda r: r["process"].update(cgroup="0::/another.slice\n"), "another control group"),
        (lambda r: r["process"]["limits"].update(RLIMIT_NOFILE=[10, -1]), "RLIMIT_NOFILE hard limit"),
        (lambda r: r["env"].update(HF_HUB_OFFLINE="1"), "HF_HUB_OFFLINE differs"),
        (lambda r: r["env"].update(SOME_SHELL_VARIABLE="1"), None),
    ],
    ids=["same", "other-venv", "other-cgroup", "higher-limit", "hf-setting", "other-variable"],
)
def test_what_keeps_a_run_in_the_clients_own_process(monkeypatch, change, reason):
    monkeypatch.setattr("flows.server.running", lambda: None)
    request, _ = runner._request(["genreward", "stage", "x"])
    request["env"] = {k: v for k, v in request["env"].items() if k not in ("HF_HUB_OFFLINE", "PREFECT_API_URL")}
    why = _as_runner_sees(request, change)
    assert (why is None) if reason is None else (reason in why), why


def test_edited_project_code_runs_without_restarting_the_runner(served):
    env, work, proj = served
    first = _client(env, work, proj, "echo", "0")
    assert json.loads(first.communicate(timeout=60)[0])["version"] == 1
    _write_stub(proj, 2)
    second = _client(env, work, proj, "echo", "0")
    assert json.loads(second.communicate(timeout=60)[0])["version"] == 2


@pytest.mark.parametrize(
    "extra",
    [{"PREFECT_LOGGING_LEVEL": "DEBUG"}, {"OMP_NUM_THREADS": "3"}, {runner.RUNNER_ENV: "0"}],
    ids=["prefect-setting", "thread-variable", "opted-out"],
)
def test_a_different_import_time_environment_runs_in_the_clients_own_process(served, extra):
    env, work, proj = served
    p = _client(env, work, proj, "echo", "0", extra={"GENREWARD_DEBUG": "1", **extra})
    out, err = p.communicate(timeout=60)
    assert (p.returncode, out) == (99, "not handed over\n")
    if runner.RUNNER_ENV not in extra:
        assert f"{next(iter(extra))} differs from the runner's" in err


def test_a_library_file_changed_since_the_runner_started_is_not_used(served, tmp_path):
    env, work, proj = served
    assert _client(env, work, proj, "echo", "0").wait(timeout=60) == 0
    lib = tmp_path / "lib" / "preloaded_lib.py"
    os.utime(lib, ns=(time.time_ns(), time.time_ns() + 10**9))
    p = _client(env, work, proj, "echo", "0", extra={"GENREWARD_DEBUG": "1"})
    out, err = p.communicate(timeout=60)
    assert p.returncode == 99 and f"{lib} changed since the runner started" in err


def test_a_signal_to_the_client_reaches_the_run_and_the_client_dies_of_it(served, tmp_path):
    env, work, proj = served
    p = _client(env, work, proj, "sleep", str(tmp_path / "pid"))
    pids = _pid_file(tmp_path / "pid")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=30) == -signal.SIGTERM
    assert all(_gone(pid, 10) for pid in pids)  # the run and its child: the signal went to its process group


def test_a_killed_client_takes_its_run_with_it(served, tmp_path):
    env, work, proj = served
    p = _client(env, work, proj, "sleep", str(tmp_path / "pid"))
    pids = _pid_file(tmp_path / "pid")
    p.kill()
    p.wait(timeout=30)
    assert all(_gone(pid, 15) for pid in pids)  # the run and its child


def test_without_a_runner_nothing_is_handed_over(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    code = "import sys; from flows.runner import hand_over; print(hand_over(['genreward', 'stage', 'x']))"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.stdout == "None\n", res.stderr
    path = runner.socket_path()
    assert runner._private_dir(path.parent, create=True)
    try:
        path.write_text("")  # what a runner killed without cleaning up leaves (the socket's file)
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        assert res.stdout == "None\n", res.stderr
    finally:
        path.unlink()


def test_the_socket_is_short_and_in_a_directory_of_this_users_alone(tmp_path, monkeypatch):
    deep = tmp_path / ("a-long-directory-name-" * 8) / "prefect-home"
    monkeypatch.setenv("PREFECT_HOME", str(deep))
    path = runner.socket_path()
    assert len(str(deep)) > 200 and len(str(path).encode()) < 108  # what a Unix socket's path may hold
    monkeypatch.setenv("PREFECT_HOME", str(deep / "another"))
    assert runner.socket_path() != path and runner.socket_path().parent == path.parent
    private = tmp_path / "private"
    assert runner._private_dir(private, create=True) and (private.stat().st_mode & 0o777) == 0o700
    private.chmod(0o755)
    assert not runner._private_dir(private, create=False)  # others could put a socket there: not used


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["genreward", "stage", "env_check"], True),
        (["genreward", "--debug", "stage", "env_check"], True),
        (["genreward", "stage", "--help"], False),
        (["genreward", "config"], False),
        (["genreward", "stages"], False),
        (["genreward"], False),
    ],
)
def test_only_stage_commands_go_to_the_runner(argv, expected):
    assert _stage_command(argv) is expected

"""A local Prefect server that ``genreward`` starts once and every later stage run reuses.

Without ``PREFECT_API_URL``, each Prefect process starts a temporary ("ephemeral") server of its
own and stops it at exit: ~10 s per ``genreward stage`` (26 stage runs under ``dvc repro``), and
the runs vanish with it. ``genreward server start`` starts one server on the loopback interface
(port 4200 by default), waits until it answers, and records its address and process in
``$PREFECT_HOME/genreward-server.json``. ``genreward stage`` (and so ``dvc repro``) then reuses
it whenever ``PREFECT_API_URL`` is unset and the recorded server answers; its runs, logs and
artifacts stay in its database and UI. ``genreward server stop`` ends it. An explicit
``PREFECT_API_URL`` (any Prefect API, e.g. Prefect Cloud or a shared server) always wins.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 4200


def prefect_home() -> Path:
    return Path(os.environ.get("PREFECT_HOME") or "~/.prefect").expanduser()


def state_file() -> Path:
    return prefect_home() / "genreward-server.json"


def healthy(api_url: str, timeout: float = 1.0) -> bool:
    """The Prefect API at ``api_url`` (``http://HOST:PORT/api``) answers its health check."""
    try:
        with urllib.request.urlopen(api_url.rstrip("/") + "/health", timeout=timeout) as r:
            return r.status == 200
    except (OSError, ValueError):
        return False


def recorded() -> dict | None:
    """The server ``genreward server start`` recorded (``{"api_url", "pid", "log"}``), if any."""
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


def running() -> str | None:
    """The API URL of the recorded server when it answers; ``None`` otherwise."""
    state = recorded()
    if state and healthy(state.get("api_url", ""), timeout=0.5):
        return state["api_url"]
    return None


def api_url(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT) -> str:
    return f"http://{host}:{port}/api"


def start(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, timeout: float = 120.0) -> str:
    """Start a Prefect server in the background (or find the recorded one running); its API URL.
    Raises ``RuntimeError`` naming the log file when it does not answer within ``timeout``."""
    url = running()
    if url is not None:
        return url
    url = api_url(host, port)
    if healthy(url):
        raise RuntimeError(
            f"something already answers at {url} that genreward did not start; "
            f"use it with `export PREFECT_API_URL={url}`, or pick another port with --port"
        )
    home = prefect_home()
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "genreward-server.log"
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "prefect", "server", "start", "--host", host, "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; stopped by `genreward server stop`
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if healthy(url):
            state_file().write_text(json.dumps({"api_url": url, "pid": proc.pid, "log": str(log_path)}))
            return url
        if proc.poll() is not None:
            break
        time.sleep(0.5)
    _kill(proc.pid)
    raise RuntimeError(f"the Prefect server did not start within {timeout:.0f} s; see {log_path}")


def _is_prefect_server(pid: int) -> bool:
    """``pid`` still runs a Prefect server (not an unrelated process that reused the number)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return sys.platform != "linux"  # no /proc: trust the record
    return b"prefect" in b" ".join(cmd) and b"server" in cmd


def _kill(pid: int) -> None:
    if _is_prefect_server(pid):
        end_process_group(pid, grace_s=15.0, poll_s=0.25)


def end_process_group(pgid: int, grace_s: float, poll_s: float = 0.1, reap: bool = False) -> None:
    """Send SIGTERM to process group ``pgid``, wait up to ``grace_s`` until none of it is left,
    then SIGKILL what is. ``reap``: its leader is this process's child, waited for (a zombie
    still counts as a member)."""

    def reaped() -> None:
        if reap:
            try:
                os.waitpid(pgid, os.WNOHANG)
            except ChildProcessError:
                pass

    try:
        os.killpg(pgid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        reaped()
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        reaped()
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(poll_s)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if reap:
        try:
            os.waitpid(pgid, 0)
        except ChildProcessError:
            pass


def stop() -> bool:
    """Stop the recorded server; whether there was one."""
    state = recorded()
    if state is None:
        return False
    _kill(int(state["pid"]))
    state_file().unlink(missing_ok=True)
    return True


def use_running_server() -> str | None:
    """Point this process at the recorded server when ``PREFECT_API_URL`` is unset and it answers
    (call before Prefect is imported); the URL used, or ``None`` (an ephemeral server then)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    url = running()
    if url is not None:
        os.environ["PREFECT_API_URL"] = url
    return url

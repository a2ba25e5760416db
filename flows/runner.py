"""The stage runner: a warm process that starts ``genreward stage`` runs by forking.

Every ``genreward stage`` process imports torch, Prefect, diffusers (and through it
transformers), matplotlib and zarr before its work starts: 2 to 6 s of a short stage run on a laptop's
2 cores, and the default ``dvc repro`` has 30 stage runs (docs/results.md).
``genreward server start`` therefore also starts a *stage runner*: a background process that
imports those libraries once, then waits on a Unix socket (in ``$TMPDIR/genreward-<uid>/``, a
directory only its user can enter; one socket per ``PREFECT_HOME``).

A ``genreward stage`` command (the *client*) connects and hands over its command line, working
directory, umask, environment, ``sys.path``, CPU affinity, niceness, resource limits, the
signals it ignores, and its standard input, output and error (the file descriptors
themselves). The runner forks and the fork runs the command as the client would have, writing
to the client's terminal, pipes or files. The client forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT,
SIGUSR1 and SIGUSR2 to the run's process group, waits, and exits with the run's exit code (or
dies of the run's signal), so DVC and shells see an ordinary process. The run starts only once
the client has confirmed that it waits for it, so a command either runs in the runner or in
the client, never in both.

What each run gets fresh:

- the project's own modules (``genreward``, ``stages``, ``flows``) are dropped from the fork and
  imported again, so edited project code is always the code that runs;
- the client's environment, working directory, umask, arguments and ``sys.path``;
- new seeds for Python's ``random`` and numpy's global generator; torch's default generator is
  put back to the state a freshly started process has; a new multiprocessing authentication key;
- Prefect's settings, read again with the client's environment and working directory.

The runs share the runner's string-hash seed (``PYTHONHASHSEED``), which a fresh process draws
anew. Warnings that the libraries print while they are imported appear once, in the runner's log.

A run is **not** handed over, and the client runs the command itself as before, when:

- no runner answers (``genreward server start --no-stage-runner``, no server started, or the
  runner is still importing);
- the client's environment has ``GENREWARD_STAGE_RUNNER=0``;
- the client's interpreter, virtual environment, Python version or interpreter flags differ
  from the runner's, or it runs in another control group (a cluster job), with a resource
  limit above the runner's, or at a higher priority;
- an environment variable that the preloaded libraries read while they are imported differs
  (:data:`IMPORT_ENV_PREFIXES`: ``PREFECT_*``, ``HF_*``, ``TORCH*``, ``OMP_*``, ``PYTHON*``,
  locale, ...); other variables are simply passed to the run;
- a file of a preloaded library, or a site-packages directory, changed since the runner
  started (a ``pip install`` or uninstall): restart the runner with ``genreward server stop``
  and ``genreward server start``.

With ``GENREWARD_DEBUG=1`` the client prints why a run was not handed over. The runner's own
messages (one line per run) go to ``$PREFECT_HOME/genreward-runner.log``.

Processes: the runner only accepts connections and forks (it has one thread: forking a
process with other threads can copy a held lock). For each connection a *monitor* (a fork of the
runner) reads the request, checks it, forks the run, tells the client the run's pid and, at the
end, its exit status; when the client goes away (killed), it ends the run's process group. The run
has a process group of its own (its env workers are in it) and, on Linux, is sent SIGTERM if its
monitor dies; the client then ends the run's process group. A runner whose socket was removed or
replaced (another ``genreward server start``) stops within 30 s. POSIX only (fork and
``SCM_RIGHTS``); elsewhere stages always run in their own process.
"""

from __future__ import annotations

import array
import gc
import json
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

RUNNER_ENV = "GENREWARD_STAGE_RUNNER"
PROJECT_PACKAGES = ("genreward", "stages", "flows")
# What a stage process imports before its work: imported once, by the runner. The order matters:
# genreward first (it prepares torchvision, which transformers imports).
PRELOAD = (
    "genreward",
    "torch",
    "numpy",
    "pydantic",
    "yaml",
    "typer",
    "zarr",
    "safetensors.torch",
    "PIL.Image",
    "matplotlib.pyplot",
    "prefect",
    "prefect.flows",
    "prefect.tasks",
    "prefect.artifacts",
    "prefect.cache_policies",
    "diffusers",
    "diffusers.models.autoencoders.autoencoder_kl_cogvideox",
    "diffusers.pipelines.cogvideo.pipeline_cogvideox",
)
# Environment variables that the preloaded libraries (or the interpreter) read when they are
# imported: a run is handed over only when the client's equal the runner's.
IMPORT_ENV_PREFIXES = (
    "PREFECT_",
    "HF_",
    "HUGGINGFACE_",
    "TRANSFORMERS_",
    "DIFFUSERS_",
    "TOKENIZERS_",
    "SAFETENSORS_",
    "TORCH",
    "PYTORCH_",
    "CUDA_",
    "NVIDIA_",
    "CUBLAS",
    "CUDNN",
    "NCCL_",
    "OMP_",
    "MKL_",
    "KMP_",
    "GOMP_",
    "OPENBLAS_",
    "MPL",
    "MATPLOTLIB",
    "NUMPY_",
    "NPY_",
    "ZARR_",
    "NUMCODECS_",
    "BLOSC_",
    "PYTHON",
    "LD_",
    "MALLOC_",
    "GLIBC_TUNABLES",
    "ATEN_",
    "USE_",  # USE_TORCH, USE_TF, USE_SAFETENSORS (diffusers), USE_TORCH_XLA (transformers)
    "_CHECK_PEFT",
    "DO_NOT_TRACK",
    "DISABLE_TELEMETRY",
    "TYPER_",
    "TERMINAL_WIDTH",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "HOME",
    "TMPDIR",
    "TEMP",
    "TMP",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "LC_NUMERIC",
    "LC_MESSAGES",
    "TZ",
)
# What the client's own path sets before Prefect is imported (flows/__init__.py, flows/cli.py).
_IMPORT_ENV_DEFAULTS = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2")
_HEADER = struct.Struct("!I")
_MAX_REQUEST = 16 * 2**20
_STOP_GRACE_S = 10.0


def supported() -> bool:
    return os.name == "posix" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX") and hasattr(socket, "SCM_RIGHTS")


def _home() -> Path:
    from flows.server import prefect_home

    return prefect_home()


def socket_path() -> Path:
    """The runner's socket for this ``PREFECT_HOME``: in a directory of this user's under the
    temporary directory (a Unix socket's path may have at most 107 bytes, which a
    ``PREFECT_HOME`` deep in a project or a test's temporary directory can exceed)."""
    import hashlib
    import tempfile

    key = hashlib.sha256(str(_home().resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"genreward-{os.getuid()}" / f"runner-{key}.sock"


def _private_dir(path: Path, create: bool) -> bool:
    """``path`` is (made, when ``create``) a directory that only this user can enter: nobody
    else can put a socket of theirs where this user's commands connect."""
    if create:
        try:
            path.mkdir(mode=0o700, exist_ok=True)
        except OSError:
            return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    import stat

    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _peer_is_us(conn: socket.socket) -> bool:
    """On Linux, the process at the other end runs as this user."""
    if not hasattr(socket, "SO_PEERCRED"):
        return True
    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1] == os.getuid()


def state_file() -> Path:
    return _home() / "genreward-runner.json"


def log_file() -> Path:
    return _home() / "genreward-runner.log"


def _disabled(env) -> bool:
    return env.get(RUNNER_ENV, "").strip().lower() in {"0", "false", "no", "off"}


# -- what must match -------------------------------------------------------------------------
def _client_env(env, api_url: str | None) -> dict:
    """``env`` as the client's own path has it when Prefect reads its settings: the defaults of
    ``flows/__init__.py`` where unset, and ``PREFECT_API_URL`` filled in with the running
    server's (``api_url``) where unset (``flows.server.use_running_server``)."""
    env = {**_IMPORT_ENV_DEFAULTS, **env}
    if not env.get("PREFECT_API_URL") and api_url:
        env["PREFECT_API_URL"] = api_url
    return env


def _import_env(env: dict, api_url: str | None) -> dict:
    """The import-time part of :func:`_client_env`."""
    return {k: v for k, v in _client_env(env, api_url).items() if k.startswith(IMPORT_ENV_PREFIXES)}


def _interpreter() -> dict:
    return {
        "executable": sys.executable,
        "prefix": sys.prefix,  # the virtual environment: its editable installs decide which checkout runs
        "exec_prefix": sys.exec_prefix,
        "version": sys.version,
        "flags": list(sys.flags),
        "xoptions": {k: str(v) for k, v in sys._xoptions.items()},
        "warnoptions": list(sys.warnoptions),
    }


def _process() -> dict:
    """What a child inherits besides the environment: cgroup, CPU affinity, niceness, limits."""
    import resource

    try:
        cgroup = Path("/proc/self/cgroup").read_text()
    except OSError:
        cgroup = None
    limits = {}
    for name in (
        "RLIMIT_NOFILE",
        "RLIMIT_AS",
        "RLIMIT_DATA",
        "RLIMIT_RSS",
        "RLIMIT_CORE",
        "RLIMIT_CPU",
        "RLIMIT_FSIZE",
    ):
        if hasattr(resource, name):
            limits[name] = list(resource.getrlimit(getattr(resource, name)))
    return {
        "cgroup": cgroup,
        "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
        "limits": limits,
    }


def _library_files() -> dict[str, tuple[int, int]]:
    """``path -> (mtime_ns, size)`` of every loaded module's file outside the project, and of
    the site-packages directories (a package installed or removed changes its directory)."""
    import site

    files = {}
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    for entry in [*site.getsitepackages(), *user]:
        try:
            st = os.stat(entry)
        except OSError:
            continue
        files[entry] = (st.st_mtime_ns, st.st_size)
    for name, mod in list(sys.modules.items()):
        if name.partition(".")[0] in PROJECT_PACKAGES:
            continue
        path = getattr(mod, "__file__", None)
        if not path:
            continue
        try:
            st = os.stat(path)
        except OSError:
            continue
        files[path] = (st.st_mtime_ns, st.st_size)
    return files


def _changed_file(files: dict[str, tuple[int, int]]) -> str | None:
    for path, sig in files.items():
        try:
            st = os.stat(path)
        except OSError:
            return path
        if (st.st_mtime_ns, st.st_size) != sig:
            return path
    return None


def mismatch(request: dict, runner: dict) -> str | None:
    """Why the client's ``request`` cannot run in this runner (``None``: it can)."""
    client = request["interpreter"]
    for key, value in runner["interpreter"].items():
        if client.get(key) != value:
            return f"the client's interpreter {key} differs from the runner's"
    from flows.server import running

    api_url = request["env"].get("PREFECT_API_URL") or running()
    theirs = _import_env(request["env"], api_url)
    ours = runner["import_env"]
    for key in sorted(set(theirs) | set(ours)):
        if theirs.get(key) != ours.get(key):
            return f"{key} differs from the runner's (it is read when the preloaded libraries are imported)"
    theirs, ours = request["process"], runner["process"]
    if theirs["cgroup"] != ours["cgroup"]:
        return "the client runs in another control group (cgroup) than the runner"
    for name, (_, hard) in theirs["limits"].items():
        mine = ours["limits"].get(name, [None, None])[1]
        if hard != mine and (hard == -1 or (mine != -1 and hard > mine)):  # -1: unlimited
            return f"the client's {name} hard limit is above the runner's"
    if theirs["nice"] < ours["nice"] and os.geteuid() != 0:
        return "the client runs at a higher priority (lower nice value) than the runner"
    changed = _changed_file(runner["library_files"])
    if changed is not None:
        return (
            f"{changed} changed since the runner started; restart it (genreward server stop && genreward server start)"
        )
    return None


# -- the wire ------------------------------------------------------------------------------
def _send_json(conn: socket.socket, obj: dict) -> None:
    conn.sendall(json.dumps(obj).encode() + b"\n")


def _read_line(conn: socket.socket, buf: bytearray) -> bytes | None:
    """The next line (``buf`` keeps what came after it); ``None`` at end of stream or on an
    error or timeout of the connection."""
    try:
        while b"\n" not in buf:
            chunk = conn.recv(65536)
            if not chunk:
                return None
            buf += chunk
    except OSError:
        return None
    line, _, rest = bytes(buf).partition(b"\n")
    buf[:] = rest
    return line


def _read_json(conn: socket.socket, buf: bytearray) -> dict | None:
    """The next newline-terminated JSON message; ``None`` as for :func:`_read_line`."""
    line = _read_line(conn, buf)
    return None if line is None else json.loads(line)


def _send_request(conn: socket.socket, request: dict, fds: list[int]) -> None:
    body = json.dumps(request).encode()
    data = _HEADER.pack(len(body)) + body
    sent = conn.sendmsg([data[:65536]], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    if sent < len(data):  # (an empty send to a monitor that already answered would fail)
        conn.sendall(data[sent:])


def _recv_request(conn: socket.socket) -> tuple[dict | None, list[int]]:
    fds = array.array("i")
    data, ancdata, _, _ = conn.recvmsg(65536, socket.CMSG_SPACE(3 * fds.itemsize))
    if not data and not ancdata:
        return None, []
    for level, kind, payload in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if len(data) < _HEADER.size:
        raise ConnectionError("incomplete request")
    (size,) = _HEADER.unpack_from(data)
    if size > _MAX_REQUEST:
        raise ConnectionError("request too large")
    body = bytearray(data[_HEADER.size :])
    while len(body) < size:
        chunk = conn.recv(min(65536, size - len(body)))
        if not chunk:
            raise ConnectionError("incomplete request")
        body += chunk
    return json.loads(bytes(body)), list(fds)


# -- the client ----------------------------------------------------------------------------
def _stdio() -> tuple[list[int], dict]:
    fds, streams = [], {}
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
        stream = getattr(sys, name, None)
        streams[str(fd)] = [getattr(stream, "encoding", None), getattr(stream, "errors", None)]
    return fds, streams


def _request(argv: list[str]) -> tuple[dict, list[int]]:
    fds, streams = _stdio()
    umask = os.umask(0o022)
    os.umask(umask)
    return {
        "argv": list(argv),
        "cwd": os.getcwd(),
        "env": dict(os.environ),
        "sys_path": list(sys.path),
        "umask": umask,
        "fds": fds,
        "streams": streams,
        "interpreter": _interpreter(),
        "process": _process(),
        "ignored_signals": [
            n for n in FORWARDED_SIGNALS if _signal(n) and signal.getsignal(_signal(n)) == signal.SIG_IGN
        ],
        "main_file": getattr(sys.modules.get("__main__"), "__file__", None),
    }, fds


def _signal(name: str):
    return getattr(signal, name, None)


def hand_over(argv: list[str]) -> int | None:
    """Run ``argv`` (a ``genreward`` command line) in the stage runner; its exit code, or
    ``None`` when it was not handed over (then nothing ran: run it in this process)."""
    from flows.errors import debug_enabled

    if not supported() or _disabled(os.environ):
        return None
    path = socket_path()
    if not path.exists() or not _private_dir(path.parent, create=False):
        return None
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.settimeout(60.0)  # the monitor answers at once; a runner that hangs must not hang us
        conn.connect(str(path))
        if not _peer_is_us(conn):
            raise OSError("the socket's process runs as another user")
        request, fds = _request(argv)
        _send_request(conn, request, fds)
        buf = bytearray()
        reply = _read_json(conn, buf)
    except (OSError, ValueError) as e:
        conn.close()
        if debug_enabled():
            print(f"genreward: not using the stage runner ({path}): {e}", file=sys.stderr)
        return None
    if reply is None or "pid" not in reply:
        conn.close()
        if debug_enabled():
            why = (reply or {}).get("declined", "it closed the connection or did not answer")
            print(f"genreward: not using the stage runner: {why}", file=sys.stderr)
        return None
    pid = int(reply["pid"])

    def forward(signum, frame):
        try:
            os.killpg(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    for name in FORWARDED_SIGNALS:  # what this process ignores, the run ignores too
        if _signal(name) and name not in request["ignored_signals"]:
            signal.signal(_signal(name), forward)
    try:
        conn.sendall(b"go\n")  # from here on the run is ours: this function never returns None
    except OSError:
        pass
    conn.settimeout(None)
    try:
        reply = _read_json(conn, buf)  # None when the connection fails
    except ValueError:
        reply = None
    conn.close()
    if reply is None or "status" not in reply:  # the monitor is gone: end the run (not our child)
        from flows.server import end_process_group

        end_process_group(pid, _STOP_GRACE_S)
        print(
            f"error: the stage runner's monitor ended before the stage did (see {log_file()}); "
            f"rerun with {RUNNER_ENV}=0 to run it without the runner",
            file=sys.stderr,
        )
        return 1
    status = int(reply["status"])
    if status < 0:  # the run died of a signal: so do we (DVC and shells see what they would have)
        for name in FORWARDED_SIGNALS:
            if _signal(name):
                signal.signal(_signal(name), signal.SIG_DFL)
        sys.stdout.flush()
        sys.stderr.flush()
        os.kill(os.getpid(), -status)
        return 128 - status
    return status


# -- the runner ------------------------------------------------------------------------------
def _log(msg: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [{os.getpid()}] {msg}", flush=True)


def _preload(modules) -> dict:
    import importlib

    torch_rng = None
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as e:  # noqa: BLE001 - an optional library: the run imports it itself, or fails as it would
            _log(f"preload: {name} not imported ({type(e).__name__}: {e})")
        if name == "torch" and "torch" in sys.modules:
            torch_rng = sys.modules["torch"].random.get_rng_state()  # a fresh process's state
    return {"torch_rng": torch_rng}


def serve(sock: str, modules=PRELOAD) -> None:
    """The runner's main loop: preload ``modules``, then accept and fork until SIGTERM.
    Returns only in a forked run, which the caller then runs (``flows.cli.run_command``)."""
    t0 = time.perf_counter()
    pristine = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD, signal.SIGPIPE)}
    from flows.server import running

    started_env = dict(os.environ)
    import_env = _import_env(started_env, started_env.get("PREFECT_API_URL") or running())
    fresh = _preload(modules)
    fresh["api_url"] = import_env.get("PREFECT_API_URL")
    # what importing the libraries set in the environment (a run gets it on top of the client's)
    fresh["env_set"] = {k: v for k, v in os.environ.items() if started_env.get(k) != v}
    fresh["env_unset"] = [k for k in started_env if k not in os.environ]
    import threading

    # Python threads only: importing torch starts idle native threads of its own, which forking
    # past is as safe as it is for torch's DataLoader workers (fork is their default on Linux)
    if threading.active_count() != 1:
        _log(f"not serving: preloading started threads ({threading.enumerate()}); forking would copy their locks")
        sys.exit(1)
    runner = {
        "interpreter": _interpreter(),
        "import_env": import_env,
        "library_files": _library_files(),
        "process": _process(),
    }
    gc.collect()
    gc.freeze()  # what the forks share stays shared: their collections skip it
    me = os.getpid()
    path = Path(sock)
    tmp = path.with_name(f".{path.name}.{me}")
    tmp.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp))
    os.chmod(tmp, 0o600)
    listener.listen(64)
    os.replace(tmp, path)  # appears only once it accepts
    ident = os.stat(path).st_ino

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors are reaped by the kernel
    _log(f"ready in {time.perf_counter() - t0:.1f} s: {len(sys.modules)} modules, socket {path}")
    block = {signal.SIGTERM}
    listener.settimeout(30.0)
    try:
        while True:
            try:
                conn, _ = listener.accept()
            except socket.timeout:
                try:
                    if os.stat(path).st_ino == ident:
                        continue
                except OSError:
                    pass
                _log("the socket was removed or replaced: stopping")
                sys.exit(0)
            conn.settimeout(None)
            signal.pthread_sigmask(signal.SIG_BLOCK, block)
            pid = os.fork()
            if pid == 0:
                listener.close()
                for s, handler in pristine.items():
                    signal.signal(s, handler)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, block)
                _monitor(conn, runner, fresh)
                return  # only the run gets here
            signal.pthread_sigmask(signal.SIG_UNBLOCK, block)
            conn.close()
    finally:
        if os.getpid() == me:
            listener.close()
            try:
                if os.stat(path).st_ino == ident:
                    path.unlink()
            except OSError:
                pass
            _log("stopped")


def _monitor(conn: socket.socket, runner: dict, fresh: dict) -> None:
    """In the monitor: start the run and report on it; exits. Returns only in the run."""
    me = os.getpid()
    try:
        request, fds = _recv_request(conn)
        if request is None:  # a connection that sent nothing: a readiness probe
            os._exit(0)
        why = mismatch(request, runner)
        if why is not None:
            _log(f"declined {request['argv'][1:]}: {why}")
            _send_json(conn, {"declined": why})
            os._exit(0)
        gate_r, gate_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            conn.close()
            os.close(gate_w)
            go = os.read(gate_r, 1)  # wait until the client has taken the run on
            os.close(gate_r)
            if not go:
                os._exit(1)
            _become_run(request, fds, me, fresh)
            return
        os.close(gate_r)
        try:
            os.setpgid(pid, pid)  # as the run does: signals sent right away reach its group
        except OSError:
            pass
        for fd in fds:
            os.close(fd)
        _send_json(conn, {"pid": pid})
        conn.settimeout(60.0)
        buf = bytearray()
        if _read_line(conn, buf) != b"go":  # the client gave up: the run never starts
            os.close(gate_w)
            os.waitpid(pid, 0)
            os._exit(0)
        conn.settimeout(None)
        os.write(gate_w, b"g")
        os.close(gate_w)
        _log(f"run {pid}: {' '.join(request['argv'][1:])} (in {request['cwd']})")
        status = _supervise(conn, pid)
        _log(f"run {pid}: exit status {status}")
        if status is not None:
            _send_json(conn, {"status": status})
    except BaseException as e:  # noqa: BLE001 - the monitor never returns into the runner's loop
        if os.getpid() != me:
            raise
        _log(f"monitor failed: {type(e).__name__}: {e}")
    os._exit(0)


def _supervise(conn: socket.socket, pid: int) -> int | None:
    """Wait for the run; its exit code (negative: killed by that signal), or ``None`` when the
    client went away first (the run's process group is then ended)."""
    try:
        waitfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        waitfd = None
    watch = [conn] + ([waitfd] if waitfd is not None else [])
    while True:
        ready, _, _ = select.select(watch, [], [], None if waitfd is not None else 0.2)
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if conn in ready and not conn.recv(1):
            from flows.server import end_process_group

            _log(f"run {pid}: the client went away; ending the run")
            end_process_group(pid, _STOP_GRACE_S, reap=True)
            return None


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:
        os._exit(1)


def _become_run(request: dict, fds: list[int], monitor: int, fresh: dict) -> None:
    """In the run: take on the client's process state; the caller then runs the command."""
    try:
        os.setpgid(0, 0)
    except OSError:
        pass
    _die_with_parent(monitor)
    for name in request["ignored_signals"]:
        signal.signal(_signal(name), signal.SIG_IGN)
    process = request["process"]
    if process["affinity"] is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, process["affinity"])  # the cores the client may use (taskset, a job's CPUs)
    try:
        os.setpriority(os.PRIO_PROCESS, 0, process["nice"])
    except OSError:
        pass
    import resource

    for name, (soft, hard) in process["limits"].items():
        try:
            resource.setrlimit(getattr(resource, name), (soft, hard))
        except (ValueError, OSError):
            pass
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    received = dict(zip(request["fds"], fds))
    for target in (0, 1, 2):
        source = received.get(target)
        if source is None:
            source = os.open(os.devnull, os.O_RDWR)
            received[target] = source
        os.dup2(source, target)
    for fd in set(received.values()):
        if fd > 2:
            os.close(fd)
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        stream = getattr(sys, name)
        encoding, errors = request["streams"].get(str(fd), [None, None])
        try:
            stream.reconfigure(
                encoding=encoding or stream.encoding,
                errors=errors or stream.errors,
                **({} if fd == 0 else {"line_buffering": fd == 2 or os.isatty(fd)}),
            )
        except (AttributeError, ValueError, OSError):
            pass
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    env = _client_env(request["env"], fresh["api_url"])
    for key, value in fresh["env_set"].items():  # what importing the libraries would have set
        env.setdefault(key, value)
    for key in fresh["env_unset"]:
        env.pop(key, None)
    os.environ.clear()
    os.environ.update(env)
    sys.argv[:] = request["argv"]
    sys.path[:] = request["sys_path"]
    for name in [m for m in sys.modules if m.partition(".")[0] in PROJECT_PACKAGES]:
        del sys.modules[name]
    sys.meta_path[:] = [f for f in sys.meta_path if type(f).__module__.partition(".")[0] not in PROJECT_PACKAGES]
    import importlib
    import random

    importlib.invalidate_caches()
    main = sys.modules.get("__main__")
    if main is not None and request.get("main_file"):
        main.__file__ = request["main_file"]  # spawned children (env workers) prepare as the client's would
    if "multiprocessing" in sys.modules:
        sys.modules["multiprocessing"].current_process().authkey = os.urandom(32)
    context = sys.modules.get("prefect.context")
    if context is not None and hasattr(context, "refresh_global_settings_context"):
        context.refresh_global_settings_context()  # profiles and settings files as seen from the client's directory
    random.seed()
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed()
    if fresh.get("torch_rng") is not None:
        sys.modules["torch"].random.set_rng_state(fresh["torch_rng"])


# -- starting and stopping -------------------------------------------------------------------
_MAIN = (
    "import sys\n"
    "from flows.runner import PRELOAD, serve\n"
    "serve(sys.argv[1], sys.argv[2:] or PRELOAD)\n"
    # only a forked run gets here; the project's modules are imported afresh
    "from flows.cli import run_command\n"
    "from flows.runner import finish\n"
    "finish(run_command)\n"
)


def finish(command) -> None:
    """In a run: call ``command``, then exit as the interpreter would, less its final teardown.

    The exit code, uncaught-exception report, non-daemon thread joins, ``atexit`` handlers
    (Prefect's, ``logging.shutdown``) and stream flushes are those of a normal exit. What is
    skipped is tearing down the thousands of modules and objects the run shares with the
    runner: freeing them would copy every shared page (measured: about 0.4 to 0.6 s per run).
    multiprocessing ends its forked children the same way.
    """
    import atexit
    import threading
    import traceback

    code = 0
    interrupted = False
    try:
        command()
    except SystemExit as e:
        if e.code is None or isinstance(e.code, int):
            code = e.code or 0
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        interrupted = True
    except BaseException:  # noqa: BLE001 - reported as the interpreter would
        traceback.print_exc()
        code = 1
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()  # join non-daemon threads, as the interpreter does first at exit
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    if interrupted:  # as CPython does for an uncaught KeyboardInterrupt: die of SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF if code >= 0 else 1)


def recorded() -> dict | None:
    try:
        return json.loads(state_file().read_text())
    except (OSError, ValueError):
        return None


def _is_runner(pid: int) -> bool:
    """``pid`` runs a stage runner (not an unrelated process that reused the number)."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        if sys.platform == "linux":
            return False
        ps = subprocess.run(["ps", "-o", "command=", "-p", str(pid)], capture_output=True)
        cmd = ps.stdout
    return b"flows.runner" in cmd


def ready(timeout: float = 1.0) -> bool:
    """A runner accepts connections on :func:`socket_path`."""
    path = socket_path()
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        try:
            s.connect(str(path))
        except OSError:
            return False
    return True


def alive() -> int | None:
    """The pid of the recorded runner when it still runs."""
    state = recorded()
    if not state:
        return None
    pid = int(state["pid"])
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return None
    return pid if _is_runner(pid) else None


def launch(api_url: str | None, modules=None) -> subprocess.Popen | None:
    """Start the stage runner in the background unless one runs; it preloads for a while (see
    :func:`wait_ready`). Its runs use the Prefect API at ``api_url``. The process started, if any."""
    if not supported() or alive() is not None:
        return None
    _home().mkdir(parents=True, exist_ok=True)
    sock = socket_path()
    if not _private_dir(sock.parent, create=True):
        print(f"genreward: {sock.parent} is not a directory of this user's alone; no stage runner", file=sys.stderr)
        return None
    sock.unlink(missing_ok=True)
    env = _client_env(os.environ, None)
    if api_url:
        env["PREFECT_API_URL"] = api_url
    args = [sys.executable, "-c", _MAIN, str(sock), *(modules or [])]
    with open(log_file(), "ab") as log:
        proc = subprocess.Popen(
            args,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # outlives this command; stopped by `genreward server stop`
        )
    state_file().write_text(json.dumps({"pid": proc.pid, "socket": str(sock), "log": str(log_file())}))
    return proc


def wait_ready(timeout: float = 180.0, proc: subprocess.Popen | None = None) -> bool:
    """Wait up to ``timeout`` seconds until the runner (``proc``, as :func:`launch` returned it,
    else the recorded one) accepts; whether it does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return True
        if (proc.poll() is not None) if proc is not None else alive() is None:
            return False
        time.sleep(0.2)
    return ready()


def start(api_url: str | None, modules=None, timeout: float = 180.0) -> bool:
    """:func:`launch` and :func:`wait_ready`: whether a runner accepts."""
    return wait_ready(timeout, launch(api_url, modules))


def stop(proc: subprocess.Popen | None = None) -> bool:
    """Stop the recorded runner, or ``proc`` as :func:`launch` returned it (runs in progress
    finish); whether one ran."""
    pid = proc.pid if proc is not None and proc.poll() is None else alive()
    state_file().unlink(missing_ok=True)
    if pid is None:
        socket_path().unlink(missing_ok=True)  # a runner that was killed leaves its socket
        return False
    os.kill(pid, signal.SIGTERM)
    if proc is not None and proc.pid == pid:
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        return True
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    return True

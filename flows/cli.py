"""The ``genreward`` command line. DVC stages call ``genreward stage NAME``.

Heavy imports (torch, Prefect, MuJoCo) happen inside the commands that need them. A failure is
one line, ``error: <what is wrong and how to fix it>``, exit code 2 for bad input (config,
missing or damaged inputs) and 1 for a runtime fault (``flows/errors.py``); ``--debug`` or
``GENREWARD_DEBUG=1`` adds the traceback and Prefect's full console log.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="GenReward pipeline: goal videos -> rewards -> RL.",
    pretty_exceptions_enable=False,  # errors are reported by main(): one line, or the plain traceback with --debug
)
cache_app = typer.Typer(no_args_is_help=True, help="Inspect the content-addressed caches (goal videos, ...).")
app.add_typer(cache_app, name="cache")
server_app = typer.Typer(
    no_args_is_help=True, help="A local Prefect server that stage runs (and dvc repro) reuse: start, stop, status."
)
app.add_typer(server_app, name="server")

ParamsOpt = typer.Option("params.yaml", "--params", "-p", help="params file")
ProfileOpt = typer.Option(None, "--profile", help="profile overlay from params.yaml (laptop, paper, ...)")
SetOpt = typer.Option(None, "--set", "-s", help="override KEY=VALUE (dotted keys), repeatable")
KeyArg = typer.Argument(..., help="cache entry NAMESPACE/KEYPREFIX, e.g. goal_videos/3fa2")
RootOpt = typer.Option(None, help="cache root (default: store.cache_dir)")


_state = {"debug": False}


@app.callback()
def _options(
    debug: bool = typer.Option(
        False, "--debug", help="on a failure, show the traceback and Prefect's full console log (or GENREWARD_DEBUG=1)"
    ),
) -> None:
    _state["debug"] = debug


def _debug() -> bool:
    from flows.errors import debug_enabled

    return _state["debug"] or debug_enabled()


def _fail(msg: str, code: int = 2) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _flows() -> None:
    """Import the flows package (Prefect's settings and logging) and, unless --debug, keep
    Prefect's copies of a failure off the console (the run still records them; see flows/errors.py)."""
    from flows.server import use_running_server

    use_running_server()  # before Prefect is imported: no server start per stage
    import flows  # noqa: F401

    if not _debug():
        from flows.errors import quiet_console

        quiet_console()


def _config(params: str, profile: Optional[str], overrides: Optional[List[str]]):
    from genreward.config import load_config

    return load_config(params, overrides=overrides or None, profile=profile)  # a ConfigError: see main()


@app.command()
def stage(
    name: str = typer.Argument(..., help="stage name as in dvc.yaml"),
    params: str = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    overrides: Optional[List[str]] = SetOpt,
    task: Optional[str] = typer.Option(None, "--task", "-t", help="per-task stages: run for this task only"),
) -> None:
    """Run one stage's Prefect flow with params.yaml (+ profile, + overrides)."""
    cfg = _config(params, profile, overrides)  # fail fast, before Prefect starts
    if task is not None:
        cfg.for_task(task)
    from stages.table import get_stage

    try:
        declared = get_stage(name)
    except KeyError as e:
        _fail(str(e.args[0]))
    kwargs = dict(params=params, profile=profile, overrides=overrides or None)
    if task is not None:
        if declared.over == "once":
            _fail(f"stage {name!r} is not per-task; drop --task")
        try:
            declared.items(cfg, task)
        except ValueError as e:
            _fail(str(e))
        kwargs["task"] = task
    _flows()
    from flows.stage_flows import get_flow

    result = get_flow(name)(**kwargs)
    typer.echo(json.dumps(result, indent=2, sort_keys=True, default=str))


@app.command("stages")
def stages_cmd(
    params: str = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    overrides: Optional[List[str]] = SetOpt,
    check: bool = typer.Option(
        False, "--check", help="also check dvc.yaml against the declarations (exit 1 if they disagree)"
    ),
) -> None:
    """List the stage table: each stage, what it runs over, its inputs and outputs under this config."""
    cfg = _config(params, profile, overrides)
    from stages.table import dag

    for node in dag(cfg):
        ins, outs = node.stage.paths(cfg, node.item)
        typer.echo(f"{node.label}  ({node.stage.module.replace('.', '/')}.py)")
        for key, path in ins.items():
            typer.echo(f"    in  {key:<12} {path}")
        for key, path in outs.items():
            typer.echo(f"    out {key:<12} {path}")
    if check:
        from flows.dvc_check import dvc_mismatches

        try:
            problems = dvc_mismatches(Path(params).resolve().parent)
        except FileNotFoundError as e:
            _fail(str(e))
        for p in problems:
            typer.secho(p, fg=typer.colors.RED, err=True)
        if problems:
            raise typer.Exit(1)
        typer.echo("dvc.yaml agrees with the stage declarations")


@app.command()
def deployments(
    write: bool = typer.Option(False, "--write", help="write prefect.yaml (default: print it)"),
    check: bool = typer.Option(False, "--check", help="exit 1 if prefect.yaml is not what the stage table generates"),
    path: Path = typer.Option(Path("prefect.yaml"), help="the file to write or check"),
    git_repo: Optional[str] = typer.Option(
        None, "--git-repo", help="flow runs start in a clone of this git repository (default: this checkout)"
    ),
    branch: str = typer.Option("main", help="with --git-repo: the branch to clone"),
) -> None:
    """Generate prefect.yaml (one deployment per stage, one for the pipeline) from the stage table."""
    from flows.deployments import render

    if check and git_repo:
        _fail("--check compares with the committed file, which has no --git-repo; drop one of them")
    text = render(git_repo=git_repo, branch=branch)
    if check:
        if not path.is_file() or path.read_text() != text:
            _fail(f"{path} is not what the stage table generates; run `genreward deployments --write`", 1)
        typer.echo(f"{path} is current")
    elif write:
        from genreward.store.atomic import write_text_atomic

        write_text_atomic(path, text)
        typer.echo(f"wrote {path}")
    else:
        typer.echo(text, nl=False)


@app.command("env-check")
def env_check(
    params: str = ParamsOpt, profile: Optional[str] = ProfileOpt, overrides: Optional[List[str]] = SetOpt
) -> None:
    """Render a frame per task to PNG, print the GL backend and steps/s (the env_check stage)."""
    cfg = _config(params, profile, overrides)
    _flows()
    from flows.stage_flows import get_flow
    from stages.table import Item, get_stage

    m = get_flow("env_check")(params=params, profile=profile, overrides=overrides or None)
    _, out = get_stage("env_check").paths(cfg, Item())
    typer.echo(f"MuJoCo GL backend: {m['gl_backend']}   image size: {m['image_size']} px")
    typer.echo(f"{'task':<22}{'steps/s (render)':>18}{'steps/s (physics)':>20}")
    for task, v in m["tasks"].items():
        typer.echo(f"{task:<22}{v['pixel_steps_per_s']:>18.1f}{v['physics_steps_per_s']:>20.1f}")
    typer.echo(f"PNGs: {out['thumbnails']}/   metrics: {out['metrics']}")


@app.command()
def config(
    params: str = ParamsOpt,
    profile: Optional[str] = ProfileOpt,
    overrides: Optional[List[str]] = SetOpt,
    section: Optional[str] = typer.Option(None, help="print one section only"),
    resolve: Optional[Path] = typer.Option(None, help="write per-section resolved JSON files here (DVC deps)"),
    explain: Optional[str] = typer.Option(
        None,
        "--explain",
        metavar="KEY",
        help="describe a knob (dotted, e.g. fb.lr) or every knob of a section: meaning, type, bounds, default, "
        "value in the selected profile, profile overrides",
    ),
) -> None:
    """Validate params.yaml and print the resolved configuration as JSON (or write its views, or explain a key)."""
    if explain is not None:
        from genreward.config import explain as explain_text

        typer.echo(explain_text(params, explain, profile=profile, overrides=overrides or None))
        return
    cfg = _config(params, profile, overrides)
    if resolve is not None:
        from genreward.config import write_resolved

        files = write_resolved(cfg, resolve)
        typer.echo(f"profile {cfg.profile}: {len(files)} resolved files in {resolve}/")
        return
    data = cfg.model_dump(mode="json")
    if section:
        if section not in data:
            _fail(f"unknown section {section!r}; valid: {', '.join(sorted(data))}")
        data = data[section]
    typer.echo(json.dumps(data, indent=2))


@app.command()
def doctor() -> None:
    """Print what this install will use: GL backend, torch build and device, torchvision status."""
    import platform

    import genreward
    from genreward.compat.torchvision_ops import ensure_importable
    from genreward.envs import gl

    typer.echo(f"genreward {genreward.__version__} on Python {platform.python_version()}")
    try:
        typer.echo(gl.configure().describe())
    except gl.GLBackendError as e:
        typer.echo(f"MuJoCo GL backend: none ({e})")
    import torch

    cuda = torch.cuda.is_available()
    typer.echo(f"torch {torch.__version__} (CUDA build: {torch.version.cuda or 'no'}; GPU available: {cuda})")
    status = ensure_importable()
    notes = {
        "native": "compiled ops loaded",
        "schemas-only": "compiled ops unavailable on this torch build; pure-Python "
        "parts in use (see genreward/compat/torchvision_ops.py)",
        "absent": "not installed",
        "already-imported": "imported before genreward",
    }
    import torchvision

    typer.echo(f"torchvision {torchvision.__version__}: {notes.get(status, status)}")


# -- server ------------------------------------------------------------------------------
@server_app.command("start")
def server_start(
    host: str = typer.Option("127.0.0.1", help="interface to listen on (127.0.0.1: this machine only)"),
    port: int = typer.Option(4200, help="port of the API and UI"),
    stage_runner: bool = typer.Option(
        True,
        "--stage-runner/--no-stage-runner",
        help="also start the stage runner: a warm process that forks each `genreward stage` run, "
        "so runs skip importing torch, Prefect and diffusers (flows/runner.py)",
    ),
) -> None:
    """Start a Prefect server (and the stage runner) in the background and wait until they
    answer; print the server's URL."""
    from flows import runner
    from flows.server import api_url, running, start

    expected = running() or api_url(host, port)
    proc = runner.launch(expected) if stage_runner else None  # it imports its libraries while the server starts
    try:
        url = start(host, port)
    except RuntimeError as e:
        runner.stop(proc)
        _fail(str(e), 1)
    typer.echo(f"Prefect server at {url} (UI: {url[: -len('/api')]}); `genreward stage` and dvc repro use it")
    typer.echo(f"for prefect commands in this shell: export PREFECT_API_URL={url}")
    if stage_runner and runner.supported():
        if url != expected:
            runner.stop(proc)
            proc = runner.launch(url)
        if runner.wait_ready(proc=proc):
            typer.echo(f"stage runner ready: {runner.socket_path()} (log: {runner.log_file()})")
        else:
            typer.secho(
                f"warning: the stage runner did not start (see {runner.log_file()}); stage runs import "
                "their libraries themselves",
                fg=typer.colors.YELLOW,
                err=True,
            )


@server_app.command("stop")
def server_stop() -> None:
    """Stop the server (and the stage runner) `genreward server start` started."""
    from flows import runner
    from flows.server import stop

    if runner.stop():
        typer.echo("stopped the stage runner (runs in progress finish)")
    typer.echo("stopped the Prefect server" if stop() else "no server was started by genreward server start")


@server_app.command("status")
def server_status() -> None:
    """Print the URL of the running server and whether the stage runner accepts (exit 1 when
    no server answers)."""
    from flows import runner
    from flows.server import running

    url = running()
    if url is None:
        _fail("no Prefect server started by `genreward server start` answers; stage runs start their own", 1)
    typer.echo(url)
    typer.echo(f"stage runner: {'ready at ' + str(runner.socket_path()) if runner.ready() else 'not running'}")


# -- cache -------------------------------------------------------------------------------
def _cache_root(params: str, root: Optional[Path]) -> Path:
    if root is not None:
        return root
    return _config(params, None, None).store.cache_dir


@cache_app.command("ls")
def cache_ls(
    namespace: Optional[str] = typer.Argument(None, help="e.g. goal_videos; all when omitted"),
    params: str = ParamsOpt,
    root: Optional[Path] = RootOpt,
) -> None:
    """List cache entries: key, creation time, size, and a summary of their inputs."""
    from genreward.store.cache import ContentCache, namespaces

    base = _cache_root(params, root)
    names = [namespace] if namespace else namespaces(base)
    count = 0
    for ns in names:
        for e in ContentCache(base, ns).entries():
            count += 1
            summary = {k: v for k, v in e.meta.get("inputs", {}).items() if isinstance(v, (str, int, float))}
            text = ", ".join(f"{k}={v}" for k, v in list(summary.items())[:4])
            typer.echo(f"{ns}/{e.key[:12]}  {e.meta.get('created', '?')}  {e.size_bytes / 1e6:8.2f} MB  {text}")
    if count == 0:
        typer.echo(f"(no cache entries under {base})")


def _cache_entry(key: str, params: str, root: Optional[Path], remove: bool = False):
    """The cache entry ``key`` (NAMESPACE/KEYPREFIX) names, deleted when ``remove``; exits with the error if none."""
    from genreward.store.cache import CacheError, ContentCache

    ns, _, prefix = key.partition("/")
    try:
        cache = ContentCache(_cache_root(params, root), ns)
        return cache.remove(prefix) if remove else cache.resolve(prefix)
    except (CacheError, ValueError) as err:
        _fail(str(err))


@cache_app.command("show")
def cache_show(key: str = KeyArg, params: str = ParamsOpt, root: Optional[Path] = RootOpt) -> None:
    """Print one entry's recorded inputs and provenance."""
    e = _cache_entry(key, params, root)
    typer.echo(json.dumps({"path": str(e.path), "size_bytes": e.size_bytes, **e.meta}, indent=2, sort_keys=True))


@cache_app.command("rm")
def cache_rm(key: str = KeyArg, params: str = ParamsOpt, root: Optional[Path] = RootOpt) -> None:
    """Delete one entry (it is rebuilt on next use)."""
    e = _cache_entry(key, params, root, remove=True)
    typer.echo(f"removed {e.namespace}/{e.key}")


def _stage_command(argv: List[str]) -> bool:
    """``argv`` runs ``genreward [--debug] stage ...`` (what DVC runs)."""
    args = [a for a in argv[1:3] if a != "--debug"]
    return bool(args) and args[0] == "stage" and "--help" not in argv


def main() -> None:
    """The console script: a ``stage`` command goes to the stage runner when one accepts it
    (flows/runner.py); otherwise, and for every other command, :func:`run_command`."""
    if _stage_command(sys.argv):
        from flows.runner import hand_over

        code = hand_over(sys.argv)  # a warm fork runs it, without the imports
        if code is not None:
            sys.exit(code)
    run_command()


def run_command() -> None:
    """Run the command in this process; report an exception as ``error: ...`` with its exit code."""
    from genreward.runtime import skip_exit_collection

    skip_exit_collection()  # a stage process exits ~1 s sooner
    try:
        app()
    except Exception as e:  # the flow run (if any) has recorded it already
        from flows.errors import report

        sys.exit(report(e, debug=_debug()))


if __name__ == "__main__":
    sys.exit(main())

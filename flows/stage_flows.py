"""One Prefect flow per stage, generated from the stage table (``stages/table.py``).

A generated flow loads params.yaml (+ profile, + overrides), then runs the stage's items as
Prefect tasks. A stage gets a hand-written flow only where Prefect does real work in it
(:data:`CUSTOM`); its flow must take the same parameters. Deployment entrypoints:
``flows/stage_flows.py:<stage>_flow`` (see :func:`entrypoint`, ``genreward deployments``).
"""

from __future__ import annotations

import importlib
from pathlib import Path

from prefect import Flow, flow

from flows.common import load_run_config, run_stage
from stages.table import Stage, table, unknown_stage

# stage -> "module:attribute" of a hand-written flow
CUSTOM: dict[str, str] = {
    "generate_goal_videos": "flows.generate_goal_videos:generate_goal_videos_flow",
}


def _choices() -> tuple[str, str]:
    """Profiles and tasks of this repository's params.yaml, for the parameter descriptions."""
    try:
        import yaml

        raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
        return ", ".join(raw.get("profiles", {})), ", ".join(raw.get("tasks", []))
    except Exception:  # descriptions only: never fail an import over them
        return "see params.yaml", "see params.yaml"


_PROFILES, _TASKS = _choices()
_PARAM_DOCS = f"""
    Args:
        params: the params file, relative to the run's working directory (default params.yaml)
        profile: a profile of the params file ({_PROFILES}); null: the file's own `profile` key
        overrides: KEY=VALUE strings applied after the profile, dotted keys, values in YAML (e.g.
            ["rl.steps=4096", "rl.methods=[genreward]"]); validated, recorded with every artifact
"""
_TASK_DOC = f"        task: run only this task's items (one of the config's tasks, e.g. {_TASKS}); null: every task\n"


def make_flow(stage: Stage) -> Flow:
    """The generated flow of ``stage`` (parameters: params, profile, overrides; task unless ``once``)."""
    if stage.over == "once":

        def run(params: str = "params.yaml", profile: str | None = None, overrides: list[str] | None = None) -> dict:
            return run_stage(stage.name, load_run_config(params, profile, overrides))
    else:

        def run(
            params: str = "params.yaml",
            profile: str | None = None,
            overrides: list[str] | None = None,
            task: str | None = None,
        ) -> dict:
            return run_stage(stage.name, load_run_config(params, profile, overrides), task)

    run.__doc__ = stage.summary + "\n" + _PARAM_DOCS + ("" if stage.over == "once" else _TASK_DOC)
    run.__name__ = run.__qualname__ = f"{stage.name}_flow"
    # No Prefect result records; a failed run's exception is recorded as JSON, never pickled
    # (see flows/generate_goal_videos.py).
    return flow(
        name=stage.flow_name,
        description=stage.summary,
        log_prints=True,
        persist_result=False,
        result_serializer="json",
    )(run)


def entrypoint(stage: Stage) -> str:
    """Prefect deployment entrypoint of ``stage``'s flow (a path relative to the repository root)."""
    if stage.name in CUSTOM:
        module, attr = CUSTOM[stage.name].split(":")
        return f"{module.replace('.', '/')}.py:{attr}"
    return f"flows/stage_flows.py:{stage.name}_flow"


def get_flow(name: str) -> Flow:
    """The flow of stage ``name`` (KeyError naming the valid stages when unknown)."""
    stages = table()
    if name not in stages:
        raise unknown_stage(name, stages)
    if name in CUSTOM:
        module, attr = CUSTOM[name].split(":")
        return getattr(importlib.import_module(module), attr)
    return globals().get(f"{name}_flow") or make_flow(stages[name])


# Module attributes `<stage>_flow`, so that deployment entrypoints can name them.
for _stage in table().values():
    if _stage.name not in CUSTOM:
        globals()[f"{_stage.name}_flow"] = make_flow(_stage)

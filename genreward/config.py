"""The typed view of ``params.yaml`` — the single source of every knob.

Layout of params.yaml::

    profile: laptop          # which overlay of `profiles:` to apply (laptop = the base values)
    seed: 0
    tasks: [...]
    env: {...}               # one section per concern, each a pydantic model below
    ...
    profiles:
      paper: {...}           # partial overlays, deep-merged over the base values

Every section forbids unknown keys; every error is reported as one line naming the dotted
key (``env.image_size: ...``) and, for unknown keys and names, the valid choices. Overrides
(``--set env.image_size=96``, Prefect parameters) are applied after the profile overlay.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from genreward.adapt.config import DomainVideoConfig, VideoModelConfig
from genreward.agents.config import ExplorationConfig, FBConfig, RLConfig
from genreward.envs.config import EnvConfig
from genreward.envs.probes import ProbeConfig
from genreward.envs.tasks import PAPER_TASKS, UnknownTaskError, check_task, check_task_texts
from genreward.rewards.config import BenchmarkConfig, RewardConfig
from genreward.video.config import DEFAULT_PROMPTS, DiffusersConfig, GoalVideoConfig, LatentConfig
from genreward.vision.config import KeyframeConfig

DEFAULT_PARAMS = Path("params.yaml")


class ConfigError(ValueError):
    """Invalid configuration. ``str(err)`` is one line per problem, each naming its key."""

    def __init__(self, problems: list[str], source: str = "params.yaml"):
        self.problems = problems
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in problems))


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoreConfig(_Section):
    data_dir: Path = Field(Path("data"), description="root folder of the DVC-tracked artifacts")
    cache_dir: Path = Field(
        Path("data/cache"),
        description="content-addressed caches shared across experiments (the goal-video cache lives under it)",
    )
    reports_dir: Path = Field(
        Path("reports"), description="stage evaluate's report: metrics.json, summary.md, curves, plots"
    )


class RuntimeConfig(_Section):
    device: str = Field(
        "auto", description="torch device: auto (cuda when available, else cpu) | cpu | cuda | cuda:N | mps"
    )
    num_workers: int = Field(
        2, ge=1, le=512, description="env worker processes of the collection stages; Dask workers of the pipeline flow"
    )
    threads: int = Field(
        0,
        ge=0,
        le=1024,
        description="torch intra-op threads per process; 0: the cores this process may use (CPU affinity, "
        "cgroup quota) divided among the processes running at once (GENREWARD_THREAD_SHARE, e.g. the Dask worker "
        "processes per machine); env worker processes take 1 each. The environment variable GENREWARD_THREADS "
        "overrides it for a whole job (genreward/runtime.py)",
    )
    malloc_tuning: bool = Field(
        True,
        description="glibc only: large blocks come from the heap and freed memory is kept for reuse "
        "(mallopt M_MMAP_MAX=0, M_TRIM_THRESHOLD=2^31-1), so training updates stop mapping and page-faulting "
        "tens of MB each step (about 1.5-2x faster agent updates on CPU); the trade: a process's resident memory "
        "stays near its peak instead of returning to the OS",
    )
    progress: bool = Field(True, description="progress bars on the terminal")
    dask_address: Optional[str] = Field(
        None, description="pipeline flow: an existing Dask scheduler (tcp://host:8786); null: a local cluster"
    )
    dask_dashboard_address: str = Field(
        "127.0.0.1:0",
        description="pipeline flow's local Dask cluster: HOST:PORT its dashboard listens on (port 0: a free port; "
        "127.0.0.1: this machine only, 0.0.0.0: every network interface). Its scheduler and workers listen "
        "on 127.0.0.1",
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", v):
            raise ValueError(f"device {v!r} is not one of auto, cpu, cuda, cuda:N, mps")
        return v

    @field_validator("dask_dashboard_address")
    @classmethod
    def _dashboard(cls, v: str) -> str:
        """HOST:PORT with the host spelled out: Dask would listen on every interface for ``:8787``."""
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9.-]*):(\d{1,5})", v)
        if m is None or int(m.group(2)) > 65535:
            raise ValueError(
                f"{v!r} is not HOST:PORT with a host and a port in 0-65535 "
                "(e.g. 127.0.0.1:8787; 0.0.0.0:8787 to listen on every interface)"
            )
        return v


class EnvCheckConfig(_Section):
    steps: int = Field(200, ge=10, le=100_000, description="steps per task for the throughput measurement")
    thumbnail_size: int = Field(256, ge=32, le=1024, description="size of the saved PNG per task")


class Config(_Section):
    profile: str = Field("laptop", description="the overlay of `profiles:` applied over the base values (laptop: none)")
    seed: int = Field(0, ge=0, description="seed of stages env_check, collect_exploration and pretrain_fb")
    tasks: tuple[str, ...] = Field(
        PAPER_TASKS,
        min_length=1,
        description="Meta-World v3 tasks (each needs a prompt); the per-task DVC stages are expanded from it",
    )
    env: EnvConfig = EnvConfig()
    store: StoreConfig = StoreConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    env_check: EnvCheckConfig = EnvCheckConfig()
    prompts: dict[str, str] = Field(
        default_factory=lambda: dict(DEFAULT_PROMPTS),
        description="task -> goal prompt of its generated video (any Meta-World v3 task may be added)",
    )
    domain_videos: DomainVideoConfig = DomainVideoConfig()
    video_model: VideoModelConfig = VideoModelConfig()
    goal_video: GoalVideoConfig = GoalVideoConfig()
    keyframes: KeyframeConfig = KeyframeConfig()
    latents: LatentConfig = LatentConfig()
    exploration: ExplorationConfig = ExplorationConfig()
    fb: FBConfig = FBConfig()
    rewards: RewardConfig = RewardConfig()
    probes: ProbeConfig = ProbeConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    rl: RLConfig = RLConfig()

    @field_validator("prompts")
    @classmethod
    def _prompts(cls, v: dict[str, str]) -> dict[str, str]:
        return check_task_texts(v, "prompt")

    @model_validator(mode="after")
    def _every_task_has_a_prompt(self) -> "Config":
        missing = [t for t in self.tasks if t not in self.prompts]
        if missing:
            raise ValueError(f'prompts: no prompt for {", ".join(missing)} (add `prompts: {{{missing[0]}: "..."}}`)')
        return self

    @model_validator(mode="after")
    def _every_task_has_a_caption(self) -> "Config":
        """A task without a ``domain_videos.captions`` entry trains the video model on its goal prompt
        (filled in here, so the resolved ``domain_videos`` values say what the model was trained on)."""
        missing = {t: self.prompts[t] for t in self.tasks if t not in self.domain_videos.captions}
        if missing:
            dv = self.domain_videos.model_copy(update={"captions": {**self.domain_videos.captions, **missing}})
            object.__setattr__(self, "domain_videos", dv)
        return self

    @model_validator(mode="after")
    def _rl_runs_whole_episodes(self) -> "Config":
        """A run steps whole episodes (genreward/agents/online.py), so a budget that is not a whole
        number of episodes would silently run up to the next episode boundary."""
        steps, length = self.rl.steps, self.env.agent_steps
        if steps % length:
            lower, upper = steps // length * length, (steps // length + 1) * length
            fix = f"rl.steps={lower} or {upper}" if lower >= max(self.rl.seed_steps, 1) else f"rl.steps={upper}"
            raise ValueError(
                f"rl.steps: {steps} agent steps is not a whole number of episodes of {length} agent steps "
                f"(env.episode_length {self.env.episode_length} / env.action_repeat {self.env.action_repeat}); "
                f"set {fix}"
            )
        return self

    @model_validator(mode="after")
    def _adapted_video_model(self) -> "Config":
        d = self.goal_video.diffusers
        if not d.use_adapted or self.goal_video.backend != "diffusers":
            return self
        mode = self.video_model.mode
        if mode == "none":
            raise ValueError(
                "goal_video.diffusers.use_adapted: video_model.mode is none (nothing is adapted); "
                "set video_model.mode=from_scratch|lora or use_adapted=false"
            )
        if mode == "from_scratch":
            gv, dv = self.goal_video, self.domain_videos
            if (gv.num_frames, gv.height, gv.width) != (dv.num_frames, dv.height, dv.width):
                raise ValueError(
                    f"goal_video: the from-scratch video model is trained on {dv.num_frames}x{dv.height}x{dv.width} "
                    f"clips (domain_videos.num_frames/height/width) but goal_video asks for "
                    f"{gv.num_frames}x{gv.height}x{gv.width}; make them equal"
                )
            if d.mode != "t2v":
                raise ValueError(
                    "goal_video.diffusers.mode: the from-scratch video model is text-to-video; set mode=t2v"
                )
        if mode == "lora" and d.lora is not None:
            raise ValueError(
                "goal_video.diffusers.lora: set either lora (your own weights) or use_adapted=true, not both"
            )
        return self

    def video_model_dir(self) -> Path:
        """Output folder of stage adapt_video_model."""
        return self.store.data_dir / "video_model"

    def diffusers_config(self) -> DiffusersConfig:
        """``goal_video.diffusers`` with the adapted model filled in (``use_adapted``): the
        from-scratch pipeline folder (and its text length) replaces ``model``; a LoRA is applied
        on top of ``model``. What the goal-video generator and the latent VAE load."""
        d = self.goal_video.diffusers
        if not d.use_adapted:
            return d
        root = self.video_model_dir()
        if self.video_model.mode == "from_scratch":
            model = str(root / "pipeline")
            if not Path(model).is_absolute() and model.count("/") < 2:  # "video_model/pipeline": not a hub id
                model = f"./{model}"
            return d.model_copy(
                update={
                    "model": model,
                    "revision": None,
                    "max_sequence_length": self.video_model.from_scratch.max_text_len,
                }
            )
        return d.model_copy(update={"lora": root / "lora"})

    def check_rl_tasks(self) -> None:
        """RL stages only: every ``rl.tasks`` entry needs the goal video, key frame and latent of a
        configured task (checked there, so narrowing ``tasks`` for other stages stays easy)."""
        extra = [t for t in self.rl.tasks if t not in self.tasks]
        if extra:
            raise ConfigError(
                [
                    f"rl.tasks: {', '.join(extra)} not in `tasks` (goal videos and FB exist only for "
                    f"{', '.join(self.tasks)}); set rl.tasks=[...] too"
                ],
                "config",
            )

    def for_task(self, task: str) -> "Config":
        """This config narrowed to one task (per-task DVC stages), validated."""
        data = self.model_dump(mode="json")
        data["tasks"] = [task]
        data["rl"]["tasks"] = [task]
        try:
            return Config.model_validate(data)
        except ValidationError as e:
            problems = [_format_error(err) for err in e.errors()]
            # an unknown task fails `tasks` and `rl.tasks` alike: say it once
            raise ConfigError([p for p in problems if p.startswith("tasks")] or problems, "--task") from None

    def prompt(self, task: str) -> str:
        return self.prompts[task]

    @field_validator("tasks")
    @classmethod
    def _tasks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for i, t in enumerate(v):
            try:
                check_task(t)
            except UnknownTaskError as e:
                raise ValueError(f"[{i}] {e}") from None
        if len(set(v)) != len(v):
            raise ValueError(f"duplicate task names in {list(v)}")
        return v

    def section(self, *names: str) -> dict[str, Any]:
        """A JSON-able subset of the config (what a stage records with its artifacts)."""
        data = self.model_dump(mode="json")
        return {"profile": self.profile, **{n: data[n] for n in names}}

    def resolve_device(self) -> str:
        if self.runtime.device != "auto":
            return self.runtime.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


_TOP_KEYS = set(Config.model_fields) | {"profiles"}
MATRIX_KEYS = ("tasks", "seeds", "methods")  # rl.* axes of the finetune_rl DVC matrix
# runtime.* knobs that change no result: left out of the runtime.json view (no stage re-runs for them).
# threads changes at most the rounding of parallel float sums, and its automatic value depends on the machine.
RUNTIME_NOT_VIEWED = ("threads", "malloc_tuning", "progress", "dask_address", "dask_dashboard_address")


# -- resolved views (exact DVC deps) ----------------------------------------------------------
def resolved_views(cfg: Config) -> dict[str, Any]:
    """The selected profile's resolved values, split into the files DVC stages depend on.

    ``<section>.json`` per config section, ``prompts/<task>.json`` per task, ``rl.json`` without
    the matrix axes (those are in ``rl_runs.json``) and ``runtime.json`` without the knobs that
    change no result (:data:`RUNTIME_NOT_VIEWED`). A stage that depends on a view re-runs only
    when those values change — not when another profile's overlay or an unrelated section is
    edited. ``store`` paths are not views.
    """
    data = cfg.model_dump(mode="json")
    views: dict[str, Any] = {}
    for name, value in data.items():
        if name in ("profile", "store", "prompts", "runtime", "rl"):
            continue
        views[f"{name}.json"] = value
    for task in cfg.tasks:
        views[f"prompts/{task}.json"] = cfg.prompt(task)
    views["prompts.json"] = {task: cfg.prompt(task) for task in cfg.tasks}  # stages over all tasks
    views["rl.json"] = {k: v for k, v in data["rl"].items() if k not in MATRIX_KEYS}
    views["rl_runs.json"] = {k: data["rl"][k] for k in MATRIX_KEYS}
    views["runtime.json"] = {k: v for k, v in data["runtime"].items() if k not in RUNTIME_NOT_VIEWED}
    return views


def write_resolved(cfg: Config, folder: str | Path) -> list[Path]:
    """Write :func:`resolved_views` under ``folder`` (replaced atomically; canonical JSON, so an
    unchanged value keeps its bytes and DVC skips the stages that depend on it)."""
    from genreward.store.atomic import atomic_dir
    from genreward.store.hashing import canonical_json

    folder = Path(folder)
    written = []
    with atomic_dir(folder) as tmp:
        for rel, value in resolved_views(cfg).items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(canonical_json(value) + "\n")
            written.append(folder / rel)
    return written


# -- loading -------------------------------------------------------------------------------
def load_config(
    path: str | Path = DEFAULT_PARAMS,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    profile: str | None = None,
) -> Config:
    """Read, overlay the selected profile, apply overrides, validate. Raises :class:`ConfigError`."""
    path = Path(path)
    return config_from_dict(read_params(path), overrides=overrides, profile=profile, source=str(path))


def read_params(path: str | Path = DEFAULT_PARAMS) -> Any:
    """The parsed params file, unvalidated (profiles included). Raises :class:`ConfigError`."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([f"file not found ({path.resolve()}); run from the project root or pass --params"], str(path))
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError([f"not valid YAML: {str(e).splitlines()[0]}"], str(path)) from None


def config_from_dict(
    raw: Mapping[str, Any],
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    profile: str | None = None,
    source: str = "params.yaml",
) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError(["top level must be a mapping of sections"], source)
    raw = copy.deepcopy(dict(raw))
    profiles = raw.pop("profiles", None) or {}
    if not isinstance(profiles, Mapping):
        raise ConfigError(["profiles: must be a mapping of profile name -> overlay"], source)
    unknown = [k for k in raw if k not in _TOP_KEYS]
    if unknown:
        raise ConfigError([_unknown_key(k, _TOP_KEYS) for k in unknown], source)
    # Every profile must be valid, not only the selected one: a typo in `paper` fails on a laptop too.
    for name, overlay in profiles.items():
        if not isinstance(overlay, Mapping):
            raise ConfigError([f"profiles.{name}: must be a mapping (got {type(overlay).__name__})"], source)
        if "profile" in overlay or "profiles" in overlay:
            raise ConfigError([f"profiles.{name}: an overlay cannot set 'profile' or 'profiles'"], source)
        if "tasks" in overlay:
            raise ConfigError(
                [f"profiles.{name}.tasks: set tasks at the top level (DVC expands per-task stages from it)"], source
            )
        axes = [k for k in MATRIX_KEYS if k in (overlay.get("rl") or {})]
        if axes:
            raise ConfigError(
                [
                    f"profiles.{name}.rl.{k}: set rl.{k} at the top level or with `dvc exp run -S rl.{k}=[...]` "
                    "(DVC expands the finetune_rl matrix from it before profiles apply)"
                    for k in axes
                ],
                source,
            )
        prefix = f"profiles.{name}: "
        try:
            _validate(_deep_merge(raw, overlay), source, prefix=prefix)
        except ConfigError as err:
            try:  # a problem of the top-level values (the laptop profile) is reported as theirs
                _validate(raw, source)
            except ConfigError as top:
                if set(top.problems) >= {p.removeprefix(prefix) for p in err.problems}:
                    raise top from None
            raise
    if profile is not None:
        raw["profile"] = profile
    selected = raw.get("profile", "laptop")
    if selected != "laptop" and selected not in profiles:
        valid = sorted({"laptop", *profiles})
        raise ConfigError([f"profile: unknown profile {selected!r} (valid: {', '.join(valid)})"], source)
    merged = _deep_merge(raw, profiles.get(selected, {}))
    if overrides:
        items = overrides.items() if isinstance(overrides, Mapping) else (_parse_override(o, source) for o in overrides)
        for key, value in items:
            if key.split(".")[0] in ("profile", "profiles"):
                raise ConfigError([f"{key}: select a profile with --profile / profile:, not an override"], source)
            _set_dotted(merged, key, value)
    return _validate(merged, source)


def _validate(data: Mapping[str, Any], source: str, prefix: str = "") -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([prefix + _format_error(err) for err in e.errors()], source) from None


def _format_error(err: Mapping[str, Any]) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    if err["type"] == "extra_forbidden":
        return _unknown_key(key, _valid_keys(loc[:-1]))
    msg = str(err["msg"]).removeprefix("Value error, ")
    got = err.get("input")
    got_s = "" if isinstance(got, (dict, list, tuple)) else f" (got {got!r})"
    return f"{key}: {msg}{got_s}" if key else msg


def _valid_keys(parent: list[str]) -> set[str]:
    model: Any = Config
    for part in parent:
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return set()
        model = field.annotation
    keys = set(model.model_fields)
    return keys | ({"profiles"} if model is Config else set())


def _unknown_key(key: str, valid: set[str], part: str | None = None) -> str:
    """One line: ``key`` is unknown, the closest of ``valid`` to ``part`` (default: its last part)."""
    leaf = key.rsplit(".", 1)[-1] if part is None else part
    close = difflib.get_close_matches(leaf, sorted(valid), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"{key}: unknown key ({hint}valid: {', '.join(sorted(valid))})"


def _deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in overlay.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_override(item: str, source: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"override {item!r}: expected KEY=VALUE, e.g. env.image_size=96"], source)
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip(), parsed


def _set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    parts = key.split(".")
    for part in parts[:-1]:
        nxt = node.get(part)
        if nxt is None:
            nxt = node[part] = {}
        if not isinstance(nxt, dict):
            raise ConfigError([f"{key}: {part!r} is not a section"])
        node = nxt
    node[parts[-1]] = value


# -- knobs and their documentation ------------------------------------------------------------
def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    ann = field.annotation
    return ann if isinstance(ann, type) and issubclass(ann, BaseModel) else None


def knobs(model: type[BaseModel] = Config, prefix: str = "") -> Iterator[tuple[str, FieldInfo]]:
    """Every leaf field (a knob) under ``model`` as ``(dotted key, field)``, in declaration order.
    Dict-valued knobs (``prompts``, ``domain_videos.captions``) are leaves."""
    for name, field in model.model_fields.items():
        sub = _section_model(field)
        if sub is not None:
            yield from knobs(sub, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", field


def _resolve_key(key: str) -> list[tuple[str, FieldInfo]]:
    """The knobs named by ``key``: one leaf, or every knob of a section. Unknown: ConfigError."""
    parts = key.split(".")
    model: type[BaseModel] = Config
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        here = ".".join(parts[: i + 1])
        if field is None:
            raise ConfigError([_unknown_key(key or "''", set(model.model_fields), part)], "--explain")
        sub = _section_model(field)
        if sub is None:
            if i < len(parts) - 1:
                raise ConfigError(
                    [f"{key}: unknown key ({here} is a knob, not a section; explain {here!r})"], "--explain"
                )
            return [(here, field)]
        model = sub
    return list(knobs(model, key + "."))


def _type_text(ann: Any) -> str:
    origin, args = typing.get_origin(ann), typing.get_args(ann)
    if origin is typing.Literal:
        return f"{type(args[0]).__name__}, one of " + " | ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        text = " or ".join(_type_text(a) for a in rest)
        return text + " or null" if len(rest) < len(args) else text
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            item = _type_text(args[0])
            return f"list of {item}" if "," not in item else "list of " + item.replace(", one of", ", each one of")
        return "list"
    if origin is dict:
        return f"mapping {_type_text(args[0])} -> {_type_text(args[1])}"
    if ann is Path:
        return "path"
    return getattr(ann, "__name__", str(ann))


def _constraints(field: FieldInfo) -> list[str]:
    out = []
    for m in field.metadata:
        for attr, sym in (("gt", ">"), ("ge", ">="), ("lt", "<"), ("le", "<=")):
            if getattr(m, attr, None) is not None:
                out.append(f"{sym} {getattr(m, attr)}")
        if getattr(m, "min_length", None) is not None:
            out.append(f"at least {m.min_length} item" + ("s" if m.min_length != 1 else ""))
        if getattr(m, "max_length", None) is not None:
            out.append(f"at most {m.max_length} items")
    extra = field.json_schema_extra
    if isinstance(extra, Mapping) and extra.get("choices"):
        out.append("one of " + " | ".join(str(c) for c in extra["choices"]))
    return out


def _get_dotted(data: Any, key: str) -> tuple[bool, Any]:
    node = data
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _show(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def explain(
    params: Mapping[str, Any] | str | Path,
    key: str,
    profile: str | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> str:
    """What ``key`` means and where its value comes from, as text.

    ``params`` is a params file or its parsed mapping. For a knob: its dotted name, description,
    type and constraints, code default, the value in the selected profile (``profile``/params'
    ``profile:`` and ``overrides`` applied) and every profile of ``params`` that overrides it (and
    to what). For a section: one such block per knob. Unknown keys raise :class:`ConfigError`
    (one line naming the key and the closest valid keys).
    """
    leaves = _resolve_key(key)
    source = str(params) if isinstance(params, (str, Path)) else "params.yaml"
    raw = read_params(params) if isinstance(params, (str, Path)) else params
    cfg = config_from_dict(raw, overrides=overrides, profile=profile, source=source)
    profiles = dict((raw.get("profiles") if isinstance(raw, Mapping) else None) or {})
    if isinstance(overrides, Mapping):
        set_keys = list(overrides)
    else:
        set_keys = [o.partition("=")[0].strip() for o in overrides or ()]
    defaults = Config().model_dump(mode="json")
    current = cfg.model_dump(mode="json")
    resolved: dict[str, Any] = {}  # profile name -> its resolved values, built on first use

    def profile_values(name: str) -> Any:
        if name not in resolved:
            resolved[name] = config_from_dict(raw, profile=name, source=source).model_dump(mode="json")
        return resolved[name]

    blocks = []
    for dotted, field in leaves:
        kind = ", ".join([_type_text(field.annotation), *_constraints(field)])
        touched = any(k == dotted or k.startswith(dotted + ".") or dotted.startswith(k + ".") for k in set_keys)
        origin = f"profile {cfg.profile}" + (", --set" if touched else "")
        lines = [
            dotted,
            f"  {field.description or '(no description)'}",
            f"  type:      {kind}",
            f"  default:   {_show(_get_dotted(defaults, dotted)[1])}",
            f"  value:     {_show(_get_dotted(current, dotted)[1])}  ({origin})",
        ]
        overridden = []
        for name, overlay in profiles.items():
            if _get_dotted(overlay, dotted)[0]:
                value = _get_dotted(profile_values(name), dotted)[1]
                same = " (= base)" if value == _get_dotted(profile_values("laptop"), dotted)[1] else ""
                overridden.append(f"{name}: {_show(value)}{same}")
        lines.append(f"  profiles:  {'; '.join(overridden) if overridden else 'none override it'}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)

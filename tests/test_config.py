from __future__ import annotations

import pytest
import yaml

from genreward.config import ConfigError, config_from_dict, load_config
from genreward.envs.tasks import PAPER_TASKS

from .conftest import run_cli


def _base(repo_root):
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def test_default_params_load(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    assert cfg.profile == "laptop"
    assert cfg.tasks == PAPER_TASKS
    assert cfg.env.camera == "corner" and cfg.env.image_size == 64 and cfg.env.episode_length == 256
    assert cfg.env.agent_steps == 256


def test_paper_profile_overlays_only_what_it_sets(repo_root):
    laptop = load_config(repo_root / "params.yaml")
    paper = load_config(repo_root / "params.yaml", profile="paper")
    assert paper.profile == "paper"
    assert paper.runtime.device == "cuda" and paper.runtime.num_workers == 8
    assert paper.env == laptop.env  # untouched sections keep base values
    assert paper.env_check.steps == 1000 and paper.env_check.thumbnail_size == laptop.env_check.thumbnail_size


def test_overrides_are_typed_and_applied_after_profile(repo_root):
    cfg = load_config(
        repo_root / "params.yaml",
        overrides=["env.image_size=96", "tasks=[reach-v3]", "prompts.reach-v3=a robot arm reaches the target"],
        profile="paper",
    )
    assert cfg.env.image_size == 96 and cfg.tasks == ("reach-v3",) and cfg.runtime.device == "cuda"
    cfg = load_config(repo_root / "params.yaml", overrides={"env.frame_stack": 1})
    assert cfg.env.frame_stack == 1


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("env.image_size=-3", "env.image_size", ["greater than or equal to 8", "-3"]),
        ("env.image_size=abc", "env.image_size", ["valid integer", "abc"]),
        ("env.camra=corner", "env.camra", ["unknown key", "did you mean 'camera'"]),
        ("env.camera=front", "env", ["not a Meta-World camera", "corner2"]),
        ("env.action_repeat=3", "env", ["multiple of action_repeat"]),
        ("tasks=[pick-plase-v3]", "tasks", ["unknown task 'pick-plase-v3'", "did you mean 'pick-place-v3'"]),
        ("tasks=[]", "tasks", ["at least 1"]),
        ("runtime.device=gpu", "runtime.device", ["auto, cpu, cuda"]),
        ("runtime.num_workers=0", "runtime.num_workers", ["greater than or equal to 1"]),
        ("runtime.dask_dashboard_address=:8787", "runtime.dask_dashboard_address", ["not HOST:PORT", "0.0.0.0:8787"]),
        ("runtime.dask_dashboard_address=127.0.0.1:70000", "runtime.dask_dashboard_address", ["port in 0-65535"]),
        ("sead=1", "sead", ["unknown key", "did you mean 'seed'"]),
    ],
)
def test_bad_values_give_one_line_naming_the_key(repo_root, override, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(repo_root / "params.yaml", overrides=[override])
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert msg.startswith(f"{repo_root / 'params.yaml'}: {key}"), msg
    for w in words:
        assert w in msg, msg


def test_unknown_profile_lists_valid_ones(repo_root):
    with pytest.raises(
        ConfigError, match=r"profile: unknown profile 'papr' \(valid: laptop, paper, rl_experiment, rl_sparse\)"
    ):
        load_config(repo_root / "params.yaml", profile="papr")


def test_typo_in_unselected_profile_still_fails(repo_root):
    raw = _base(repo_root)
    raw["profiles"]["paper"]["env"] = {"imag_size": 128}
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert "profiles.paper: env.imag_size: unknown key (did you mean 'image_size'?" in str(info.value)


def test_bad_override_syntax_and_missing_file(tmp_path, repo_root):
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(repo_root / "params.yaml", overrides=["env.image_size"])
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("env: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")


def test_section_records_profile_and_values(repo_root):
    cfg = load_config(repo_root / "params.yaml")
    sec = cfg.section("env")
    assert sec == {"profile": "laptop", "env": cfg.env.model_dump(mode="json")}


def test_cli_reports_config_errors_in_one_line(repo_root):
    res = run_cli("config", "--set", "env.image_size=-3")
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "env.image_size" in lines[0], res.stderr
    ok = run_cli("config", "--section", "env", "--set", "env.frame_stack=2")
    assert ok.returncode == 0, ok.stderr
    assert '"frame_stack": 2' in ok.stdout


# -- one source of defaults; every knob documented once ------------------------------------------
def _differences(a, b, prefix=""):
    """Dotted keys whose values differ between two JSON-like trees (dict-valued knobs included)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(f"{key} (only in {'code defaults' if k in a else 'params.yaml'})")
            else:
                out += _differences(a[k], b[k], key)
        return out
    return [] if a == b else [f"{prefix}: code {a!r} != params.yaml {b!r}"]


def test_code_defaults_equal_the_params_yaml_base_values(repo_root):
    """A config built in code is the experiment the pipeline runs: Config() == the laptop profile."""
    from genreward.config import Config

    code = Config().model_dump(mode="json")
    params = load_config(repo_root / "params.yaml", profile="laptop").model_dump(mode="json")
    diff = _differences(code, params)
    assert not diff, "code defaults differ from params.yaml: " + "; ".join(diff)
    assert Config() == load_config(repo_root / "params.yaml", profile="laptop")


def test_keys_left_out_of_params_yaml_take_the_same_defaults(repo_root):
    from genreward.config import Config

    raw = _base(repo_root)
    for section, key in [("goal_video", "diffusers"), ("latents", "path"), ("runtime", "dask_address"), ("fb", "lr")]:
        raw[section].pop(key)
    raw.pop("prompts"), raw["domain_videos"].pop("captions")
    assert not _differences(Config().model_dump(mode="json"), config_from_dict(raw).model_dump(mode="json"))


def test_every_knob_has_a_description():
    from pydantic import BaseModel

    from genreward.config import Config, knobs

    leaves = dict(knobs(Config))
    assert len(leaves) > 150 and "prompts" in leaves and "domain_videos.captions" in leaves
    assert "goal_video.diffusers.model" in leaves and "video_model.from_scratch.lr" in leaves
    assert not any(isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel) for f in leaves.values())
    missing = [k for k, f in leaves.items() if not (f.description or "").strip()]
    assert not missing, f"knobs without a Field(description=...): {', '.join(missing)}"


def test_explain_a_knob_with_profile_and_override(repo_root):
    from genreward.config import explain

    text = explain(repo_root / "params.yaml", "fb.lr", profile="paper", overrides=["fb.lr=0.002"])
    lines = text.splitlines()
    assert lines[0] == "fb.lr" and "learning rate" in lines[1]
    assert "type:      float, > 0, <= 1.0" in text
    assert "default:   0.0003" in text
    assert "value:     0.002  (profile paper, --set)" in text
    assert "profiles:  paper: 0.0001" in text and "rl_experiment" not in text
    sel = explain(repo_root / "params.yaml", "keyframes.selector")
    assert (
        "str, one of clip | last" in sel and 'default:   "last"' in sel and 'value:     "last"  (profile laptop)' in sel
    )
    assert 'profiles:  paper: "clip"' in sel
    cam = explain(_base(repo_root), "env.camera")  # a parsed mapping works too; choices from the field
    assert "one of corner | corner2" in cam and "profiles:  none override it" in cam
    steps = explain(repo_root / "params.yaml", "rl.steps")
    assert "int, >= 1" in steps and "profiles:  paper: 1000192; rl_experiment: 10240" in steps
    backend = explain(repo_root / "params.yaml", "goal_video.backend")
    assert 'paper: "diffusers" (= base)' in backend
    prompts = explain(repo_root / "params.yaml", "prompts", overrides=["prompts.pick-place-v3=reach it"])
    assert "mapping str -> str" in prompts and '"pick-place-v3": "reach it"' in prompts and "--set" in prompts


def test_explain_a_section_prints_one_block_per_knob(repo_root):
    from genreward.agents.config import FBConfig
    from genreward.config import explain

    blocks = explain(repo_root / "params.yaml", "fb").split("\n\n")
    assert [b.splitlines()[0] for b in blocks] == [f"fb.{k}" for k in FBConfig.model_fields]
    assert all("  type:" in b and "  default:" in b and "  value:" in b and "  profiles:" in b for b in blocks)
    nested = explain(repo_root / "params.yaml", "goal_video").split("\n\n")
    assert "goal_video.diffusers.model" in [b.splitlines()[0] for b in nested]


@pytest.mark.parametrize(
    "key, words",
    [
        ("fb.z_dimm", ["fb.z_dimm: unknown key", "did you mean 'z_dim'", "valid: actor_std"]),
        ("fbb", ["fbb: unknown key", "did you mean 'fb'"]),
        ("rewrds.alpha", ["rewrds.alpha: unknown key", "did you mean 'rewards'"]),
        ("fb.lr.x", ["fb.lr.x: unknown key", "fb.lr is a knob, not a section"]),
    ],
)
def test_explain_unknown_keys_give_one_line_with_suggestions(repo_root, key, words):
    from genreward.config import explain

    with pytest.raises(ConfigError) as info:
        explain(repo_root / "params.yaml", key)
    msg = str(info.value)
    assert "\n" not in msg, msg
    for w in words:
        assert w in msg, msg


def test_cli_config_explain(repo_root):
    ok = run_cli("config", "--explain", "rewards.alpha", "--profile", "paper")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("rewards.alpha\n") and "value:     0.01  (profile paper)" in ok.stdout
    bad = run_cli("config", "--explain", "rewards.alpah")
    assert bad.returncode == 2 and not bad.stdout
    lines = [ln for ln in bad.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "rewards.alpah: unknown key (did you mean 'alpha'?" in lines[0], bad.stderr


# -- rules that span knobs: one line each, naming the keys and the fix ---------------------------
def _one_line_error(repo_root, overrides, profile=None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(repo_root / "params.yaml", overrides=overrides, profile=profile)
    msg = str(info.value)
    assert "\n" not in msg, msg
    return msg.removeprefix(f"{repo_root / 'params.yaml'}: ")


def test_rl_steps_must_cover_the_seed_steps(repo_root):
    msg = _one_line_error(repo_root, ["rl.steps=256", "rl.seed_steps=512"])
    assert msg == (
        "rl: steps (256) is less than seed_steps (512): the agent would only ever act at random and never "
        "learn; set rl.steps >= 512 or lower rl.seed_steps"
    )
    cfg = load_config(repo_root / "params.yaml", overrides=["rl.steps=512", "rl.seed_steps=512"])  # equal: allowed
    assert cfg.rl.steps == cfg.rl.seed_steps == 512


@pytest.mark.parametrize(
    "overrides, fix",
    [
        (["rl.steps=1000"], "set rl.steps=768 or 1024"),
        (["rl.steps=600", "rl.seed_steps=600"], "set rl.steps=768"),  # 512 would be below the seed steps
        (["env.episode_length=100"], "set rl.steps=1000 or 1100"),  # the default 1024 no longer fits
    ],
)
def test_rl_steps_must_be_whole_episodes(repo_root, overrides, fix):
    msg = _one_line_error(repo_root, overrides)
    cfg = load_config(repo_root / "params.yaml")
    steps = dict(o.split("=") for o in overrides).get("rl.steps", str(cfg.rl.steps))
    length = dict(o.split("=") for o in overrides).get("env.episode_length", "256")
    assert msg == (
        f"rl.steps: {steps} agent steps is not a whole number of episodes of {length} agent steps "
        f"(env.episode_length {length} / env.action_repeat 1); {fix}"
    )


def test_rl_steps_count_agent_steps_under_action_repeat(repo_root):
    # 256 env steps at action_repeat 2: episodes of 128 agent steps
    ok = load_config(repo_root / "params.yaml", overrides=["env.action_repeat=2", "rl.steps=1152"])
    assert ok.env.agent_steps == 128 and ok.rl.steps == 9 * 128
    msg = _one_line_error(repo_root, ["env.action_repeat=2", "rl.steps=1000"])
    assert msg.endswith(
        "episodes of 128 agent steps (env.episode_length 256 / env.action_repeat 2); set rl.steps=896 or 1024"
    )


def test_cross_field_rules_check_every_profile(repo_root):
    raw = _base(repo_root)
    assert load_config(repo_root / "params.yaml", profile="paper").rl.steps == 3907 * 256
    raw["profiles"]["paper"]["rl"]["steps"] = 1_000_000
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)  # the laptop profile is selected: paper is checked all the same
    assert str(info.value) == (
        "params.yaml: profiles.paper: rl.steps: 1000000 agent steps is not a whole number of episodes of 256 "
        "agent steps (env.episode_length 256 / env.action_repeat 1); set rl.steps=999936 or 1000192"
    )


def test_dashboard_address_is_loopback_by_default_and_no_dvc_dependency(repo_root):
    from genreward.config import resolved_views

    cfg = load_config(repo_root / "params.yaml")
    assert cfg.runtime.dask_dashboard_address == "127.0.0.1:0"
    assert load_config(repo_root / "params.yaml", profile="paper").runtime.dask_dashboard_address == "127.0.0.1:0"
    opened = load_config(repo_root / "params.yaml", overrides=["runtime.dask_dashboard_address=0.0.0.0:8787"])
    assert opened.runtime.dask_dashboard_address == "0.0.0.0:8787"
    runtime_view = {"device": "auto", "num_workers": 2}  # a DVC dep: the address changes no result
    assert resolved_views(opened)["runtime.json"] == resolved_views(cfg)["runtime.json"] == runtime_view

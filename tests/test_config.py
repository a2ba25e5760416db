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
    with pytest.raises(ConfigError, match=r"profile: unknown profile 'papr' \(valid: laptop, paper, rl_experiment\)"):
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
    lines = [l for l in res.stderr.strip().splitlines() if l.strip()]
    assert len(lines) == 1 and "env.image_size" in lines[0], res.stderr
    ok = run_cli("config", "--section", "env", "--set", "env.frame_stack=2")
    assert ok.returncode == 0, ok.stderr
    assert '"frame_stack": 2' in ok.stdout

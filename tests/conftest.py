from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Under pytest-xdist (`pytest -n N`), the N test processes share the cores: each torch process,
# and every stage subprocess a test starts, takes its share of them (genreward.runtime).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    os.environ.setdefault("GENREWARD_THREAD_SHARE", os.environ["PYTEST_XDIST_WORKER_COUNT"])
    from genreward.runtime import configure_process

    configure_process(malloc_tuning=False)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one test process per core this run may use (CPU affinity and cgroup quota), at
    most 4."""
    from genreward.runtime import usable_cores

    return max(1, min(4, usable_cores()))


def pytest_collection_modifyitems(config, items) -> None:
    """Test files in order of their longest test (``@pytest.mark.long(seconds=...)``), longest
    first, the rest as collected. Under pytest-xdist (``--dist loadfile --no-loadscope-reorder``)
    files are handed to the test processes in this order, so a file that takes minutes does not
    start last and run on alone while the other processes are idle."""
    longest: dict[Path, float] = {}
    for item in items:
        marker = item.get_closest_marker("long")
        seconds = float(marker.kwargs["seconds"]) if marker is not None else 0.0
        longest[item.path] = max(longest.get(item.path, 0.0), seconds)
    items.sort(key=lambda item: -longest[item.path])  # stable: a file's tests keep their order


@pytest.fixture
def repo_root() -> Path:
    return REPO


def tiny_params(params: dict) -> dict:
    """A tiny profile of ``params`` (a loaded params.yaml, changed in place and returned): one task
    (reach-v3), every stage of the DAG runs, in about a minute of work."""
    params["tasks"] = ["reach-v3"]
    params["prompts"]["reach-v3"] = "a robot arm reaches the target"
    params["env_check"] = {"steps": 20, "thumbnail_size": 64}
    params["env"].update(image_size=32, episode_length=32)
    params["goal_video"].update(num_frames=9, height=32, width=32, steps=2)
    params["domain_videos"]["captions"]["reach-v3"] = "a robot arm reaches the target"
    params["domain_videos"].update(episodes_per_task=2, val_episodes_per_task=1, num_frames=9, height=32, width=32)
    params["video_model"]["from_scratch"].update(
        vae_steps=2, steps=2, vae_channels=[8, 8, 8, 8], layers=1, batch_size=2
    )
    params["video_model"].update(checkpoint_every=2, sample_every=2, eval_seeds=1)
    params["latents"].update(size=32, num_frames=8)
    params["exploration"].update(episodes_per_task=2, baseline_random_episodes=2, seed_steps=16, batch_size=16)
    params["fb"].update(
        z_dim=8, hidden_dim=32, batch_size=16, updates=10, checkpoint_every=5, log_every=5, holdout_fraction=0.5
    )
    params["rewards"].update(interval=16, window=8)
    params["probes"].update(
        expert_episodes=1, noise_stds=[0.3], noisy_episodes_per_level=1, near_miss_episodes=1, random_episodes=1
    )
    params["benchmark"]["stride"] = 8
    params["rl"].update(
        tasks=["reach-v3"],
        methods=["genreward", "env_only"],
        seeds=[0],
        steps=64,
        seed_steps=32,
        eval_every=32,
        eval_episodes=1,
    )
    params["rl"]["drqv2"].update(batch_size=8, hidden_dim=32)
    return params


def copy_project(work: Path) -> Path:
    """A copy of the project's pipeline files (dvc.yaml, params.yaml and the code) in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    for name in ("dvc.yaml", "params.yaml", "genreward", "stages", "flows"):
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    return work


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run the installed ``genreward`` console script (the path DVC uses)."""
    exe = shutil.which("genreward") or str(Path(sys.executable).parent / "genreward")
    return subprocess.run(
        [exe, *args],
        cwd=cwd or REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def reused_prefect_server(tmp_path):
    """Environment variables under which stage runs reuse one local Prefect server (`genreward
    server start`, as the README's quickstart does) instead of each starting an API of its own;
    the server is stopped afterwards. Ephemeral-API stage runs are tested elsewhere."""
    env = {"PREFECT_HOME": str(tmp_path / "prefect-home")}
    started = run_cli("server", "start", "--port", str(free_port()), env=env, timeout=300)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield env
    finally:
        run_cli("server", "stop", env=env, timeout=120)

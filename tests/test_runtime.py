"""Per-process runtime settings (genreward/runtime.py) and the random-shift augmentation."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest
import torch

from genreward import runtime
from genreward.config import ConfigError, load_config

_ENV = (runtime.THREADS_ENV, runtime.SHARE_ENV, *runtime.CHILD_THREAD_VARS)


@pytest.fixture
def clean_runtime(monkeypatch):
    """No thread variables set; torch's thread count and the module's record restored afterwards.
    The allocator is never tuned in this process (see test_malloc_tuning_*)."""
    threads = torch.get_num_threads()
    for var in _ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(runtime, "_settings", {})
    monkeypatch.setattr(runtime, "_interop_set", True)  # the session's inter-op pool stays as it is
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda *a: None)
    yield monkeypatch
    torch.set_num_threads(threads)


def _cores(monkeypatch, n: int) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(n)))


def test_configure_process_sets_the_asked_thread_count(clean_runtime):
    got = runtime.configure_process(3, malloc_tuning=False)
    assert torch.get_num_threads() == 3
    assert got["threads"] == 3 and got["source"] == "runtime.threads"
    assert os.environ["OMP_NUM_THREADS"] == os.environ["MKL_NUM_THREADS"] == "3"  # for child processes
    again = runtime.configure_process(3, malloc_tuning=False)  # idempotent: interop threads are set once
    assert again == got and runtime.process_settings() == got
    runtime.configure_process(1, malloc_tuning=False)
    assert torch.get_num_threads() == 1


def test_agents_act_on_one_thread_and_leave_the_count_as_it_was(clean_runtime):
    import numpy as np

    from genreward.agents.drqv2 import DrQV2Agent, DrQV2Config

    torch.set_num_threads(3)
    with runtime.torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == 3
    with pytest.raises(ValueError), runtime.torch_threads(2):
        raise ValueError("the count is restored on an error too")
    assert torch.get_num_threads() == 3
    agent = DrQV2Agent((9, 64, 64), 4, DrQV2Config(hidden_dim=32, feature_dim=16), "cpu")
    seen = []
    agent.encoder.register_forward_hook(lambda *a: seen.append(torch.get_num_threads()))
    action = agent.act(np.zeros((2, 9, 64, 64), np.uint8), 0, rng=np.random.default_rng(0))
    assert action.shape == (2, 4) and seen == [1] and torch.get_num_threads() == 3


def test_automatic_count_divides_the_usable_cores_among_the_processes(clean_runtime):
    _cores(clean_runtime, 6)
    assert runtime.configure_process(0, share=3, malloc_tuning=False)["threads"] == 2
    assert torch.get_num_threads() == 2
    assert runtime.configure_process(0, malloc_tuning=False)["threads"] == 6  # alone: every core
    clean_runtime.setenv(runtime.SHARE_ENV, "2")  # e.g. the Dask workers of one machine
    got = runtime.configure_process(0, malloc_tuning=False)
    assert (got["threads"], got["share"], got["cores"], got["source"]) == (3, 2, 6, "auto")
    assert torch.get_num_threads() == 3
    assert runtime.configure_process(0, share=4, malloc_tuning=False)["threads"] == 1  # 6 // 4
    assert runtime.configure_process(0, share=12, malloc_tuning=False)["threads"] == 1  # never 0


def test_cgroup_quota_lowers_the_usable_cores(tmp_path, monkeypatch):
    quota = tmp_path / "cpu.max"
    quota.write_text("150000 100000\n")
    assert runtime.cgroup_cpu_limit(quota) == 2  # 1.5 CPUs: 2 threads
    quota.write_text("max 100000\n")
    assert runtime.cgroup_cpu_limit(quota) is None
    assert runtime.cgroup_cpu_limit(tmp_path / "absent") is None
    _cores(monkeypatch, 16)
    monkeypatch.setattr(runtime, "cgroup_cpu_limit", lambda *a: 4)
    assert runtime.usable_cores() == 4


def test_environment_override_beats_the_config(clean_runtime):
    _cores(clean_runtime, 4)
    clean_runtime.setenv(runtime.THREADS_ENV, "1")
    got = runtime.configure_process(3, share=2, malloc_tuning=False)
    assert (got["threads"], got["source"]) == (1, "GENREWARD_THREADS") and torch.get_num_threads() == 1
    clean_runtime.setenv(runtime.THREADS_ENV, "0")  # asks for the automatic count
    got = runtime.configure_process(3, share=2, malloc_tuning=False)
    assert (got["threads"], got["source"]) == (2, "auto") and torch.get_num_threads() == 2
    clean_runtime.setenv(runtime.THREADS_ENV, "")  # empty: not set
    assert runtime.configure_process(3, malloc_tuning=False)["source"] == "runtime.threads"
    # env workers keep one thread whatever the job asks
    clean_runtime.setenv(runtime.THREADS_ENV, "4")
    assert runtime.configure_worker()["threads"] == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize(
    "var, value", [("GENREWARD_THREADS", "two"), ("GENREWARD_THREADS", "-1"), ("GENREWARD_THREAD_SHARE", "0")]
)
def test_bad_environment_values_name_the_variable(clean_runtime, var, value):
    clean_runtime.setenv(var, value)
    with pytest.raises(ValueError, match=f"^{var}='{value}': expected a whole number >= "):
        runtime.configure_process(0, malloc_tuning=False)


@pytest.mark.parametrize(
    "override, key, words",
    [
        ("runtime.threads=-1", "runtime.threads", ["greater than or equal to 0"]),
        ("runtime.threads=2000", "runtime.threads", ["less than or equal to 1024"]),
        ("runtime.threads=many", "runtime.threads", ["valid integer", "many"]),
        ("runtime.malloc_tuning=maybe", "runtime.malloc_tuning", ["valid boolean", "maybe"]),
    ],
)
def test_bad_runtime_knobs_name_the_key(repo_root, override, key, words):
    with pytest.raises(ConfigError) as info:
        load_config(repo_root / "params.yaml", overrides=[override])
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(f"{repo_root / 'params.yaml'}: {key}"), msg
    for w in words:
        assert w in msg, msg


def test_runtime_knobs_defaults_and_no_dvc_dependency(repo_root):
    from genreward.config import resolved_views

    cfg = load_config(repo_root / "params.yaml")
    assert cfg.runtime.threads == 0 and cfg.runtime.malloc_tuning is True
    other = load_config(repo_root / "params.yaml", overrides=["runtime.threads=3", "runtime.malloc_tuning=false"])
    assert other.runtime.threads == 3 and other.runtime.malloc_tuning is False
    assert resolved_views(other)["runtime.json"] == resolved_views(cfg)["runtime.json"]


def test_every_stage_item_configures_its_process(clean_runtime, repo_root):
    from stages.table import Item, Stage

    stage = Stage("probe", "reports the thread count", lambda cfg, i, o: {"threads": torch.get_num_threads()})
    cfg = load_config(repo_root / "params.yaml", overrides=["runtime.threads=1", "runtime.malloc_tuning=false"])
    assert stage.run_item(cfg, Item()) == {"threads": 1}
    assert runtime.process_settings()["source"] == "runtime.threads"
    from genreward.store.provenance import runtime_info

    info = runtime_info()  # what artifacts record
    assert info["torch_threads"] == 1 and info["malloc_tuning"] is runtime.process_settings()["malloc_tuning"]


_FAULTS = """
import resource, sys
import numpy as np
from genreward.runtime import configure_process
print(configure_process(1, malloc_tuning=sys.argv[1] == "on")["malloc_tuning"])
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up: the heap grows to its size once
    a = np.ones((48 << 20) // 4, np.float32); del a
f0 = faults()
for _ in range(10):  # a 48 MB float buffer per "update", like a DrQ-v2 batch at 256
    a = np.ones((48 << 20) // 4, np.float32); del a
print((faults() - f0) / 10)
"""


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_malloc_tuning_stops_page_faults_of_large_buffers():
    """In a subprocess each (mallopt is process-wide): a 48 MB buffer allocated and freed per
    iteration is mapped and page-faulted in again every time with glibc's defaults (12k faults
    with 4 KiB pages, at least 24 with 2 MiB pages), and not at all with the tuning."""
    out = {}
    for mode in ("off", "on"):
        run = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(_FAULTS), mode], capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        applied, faults = run.stdout.split()
        out[mode] = (applied, float(faults))
    assert out["on"][0] == "True" and out["off"][0] == "False"
    assert out["on"][1] < 5, out
    assert out["off"][1] >= 16, out


_EXIT = """
import atexit, gc, sys
atexit.register(lambda: print("last handler: frozen", gc.get_freeze_count() > 0, flush=True))  # runs last
if sys.argv[1] == "skip":
    from genreward.runtime import skip_exit_collection
    skip_exit_collection()
    skip_exit_collection()
atexit.register(lambda: print("first handler: frozen", gc.get_freeze_count() > 0, flush=True))
sys.exit(3)
"""


def test_skip_exit_collection_freezes_the_heap_after_the_other_exit_handlers():
    """The exit handlers registered before and after it still run, in order, and the exit code
    stays; only between them is what is alive moved out of the collector's reach."""
    out = {}
    for mode in ("skip", "plain"):
        run = subprocess.run([sys.executable, "-c", _EXIT, mode], capture_output=True, text=True, timeout=120)
        assert run.returncode == 3, run.stderr
        out[mode] = run.stdout.splitlines()
    assert out["skip"] == ["first handler: frozen False", "last handler: frozen True"]
    assert out["plain"] == ["first handler: frozen False", "last handler: frozen False"]


def test_the_command_line_skips_the_exit_collection():
    script = (
        "import atexit, gc, sys\n"
        "atexit.register(lambda: print('frozen at exit', gc.get_freeze_count() > 0))\n"
        "sys.argv = ['genreward', 'config', '--help']\n"
        "from flows.cli import main\n"
        "main()\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "frozen at exit True"


_NO_TORCH = """
import sys
import numpy as np
from genreward.config import load_config
from genreward.store import add_array, write_artifact
from genreward.store.provenance import runtime_info
from stages import select_keyframes
repo, data = sys.argv[1:]
cfg = load_config(repo + "/params.yaml", overrides=[f"store.data_dir={data}", "tasks=[pick-place-v3]"])
assert cfg.runtime.device == "auto" and cfg.keyframes.selector == "last"
with write_artifact(data + "/goal_videos/pick-place-v3.zarr", "goal_video") as g:
    add_array(g, "video", np.zeros((5, 8, 8, 3), np.uint8))
print(select_keyframes.STAGE.execute(cfg)["pick-place-v3"]["index"])
info = runtime_info()
print("torch" in sys.modules, info["torch"] != "", "torch_threads" in info)
"""


def test_a_stage_without_torch_work_never_imports_torch(tmp_path, repo_root):
    """select_keyframes with the 'last' selector, and the provenance its artifacts record: the
    installed torch version, no thread count, and no ~1.5 s torch import."""
    run = subprocess.run(
        [sys.executable, "-c", _NO_TORCH, str(repo_root), str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["4", "False", "True", "False"]
    from genreward.store import open_artifact

    recorded = open_artifact(tmp_path / "keyframes" / "pick-place-v3.zarr", "keyframes").attrs["genreward"]["runtime"]
    assert recorded["torch"] == torch.__version__ and "torch_threads" not in recorded


# -- random-shift augmentation -----------------------------------------------------------------
def _reference_shift(x: torch.Tensor, pad: int, seed: int) -> torch.Tensor:
    """Pad each sample by edge replication, then slice it at its own offset (same draws)."""
    torch.manual_seed(seed)
    b, c, h, w = x.shape
    dy = torch.randint(0, 2 * pad + 1, (b,))
    dx = torch.randint(0, 2 * pad + 1, (b,))
    out = []
    for i in range(b):
        sample = x[i : i + 1] if x.is_floating_point() else x[i : i + 1].float()
        padded = torch.nn.functional.pad(sample, (pad,) * 4, mode="replicate")
        out.append(padded[:, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w])
    return torch.cat(out).to(x.dtype)


def _shift(x: torch.Tensor, pad: int, seed: int) -> torch.Tensor:
    from genreward.agents.nets import RandomShift

    torch.manual_seed(seed)
    return RandomShift(pad)(x)


@pytest.mark.parametrize("pad", [1, 4])
def test_random_shift_equals_pad_and_crop_per_sample(pad):
    from genreward.agents.nets import RandomShift

    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 6, 10, 13), dtype=torch.uint8, generator=gen)  # h != w
    for inp in (x, x.float()):
        ref = _reference_shift(inp, pad, seed=7)
        got = _shift(inp, pad, seed=7)
        assert got.dtype == inp.dtype and got.shape == inp.shape and got.is_contiguous()
        assert torch.equal(got, ref)
    assert not torch.equal(ref, x)  # the shifts moved something
    assert RandomShift(0)(x) is x


def test_random_shift_gradient_matches_pad_and_crop():
    x = torch.rand(8, 3, 9, 9, dtype=torch.float64)
    weight = torch.rand(8, 3, 9, 9, dtype=torch.float64)
    grads = []
    for shift in (_reference_shift, _shift):
        xi = x.clone().requires_grad_(True)
        (shift(xi, 2, seed=3) * weight).sum().backward()
        grads.append(xi.grad)
    assert torch.equal(grads[0], grads[1])
    assert grads[1][:, :, 0, 0].abs().sum() > 0  # edge pixels collect the replicated reads


def test_pixel_encoder_normalises_without_touching_its_input():
    from genreward.agents.nets import PixelEncoder

    torch.manual_seed(0)
    enc = PixelEncoder(3, 16)
    obs = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    expected = enc.convs(obs.float() / 255.0 - 0.5).flatten(1)
    assert torch.equal(enc(obs), expected)
    as_float = obs.float()
    assert torch.equal(enc(as_float), expected) and torch.equal(as_float, obs.float())

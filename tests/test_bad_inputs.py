"""docs/bad-inputs.md is what the bad-input cases of docs/bad_inputs.py give, and every case keeps
its promise: the expected exit code, at most 3 lines of output, an ``error:`` line."""

from __future__ import annotations

import importlib.util
import sys

import pytest

from .conftest import REPO


def _battery():
    spec = importlib.util.spec_from_file_location("bad_inputs", REPO / "docs" / "bad_inputs.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.mark.long(seconds=50)
@pytest.mark.timeout(900)
def test_bad_input_table_is_current_and_every_message_is_short():
    battery = _battery()
    results = battery.run_cases()  # what `python docs/bad_inputs.py --check` runs and checks
    assert [r.case for r in results] == list(battery.CASES)
    for r in results:
        assert r.code == r.case.code, f"{r.case.name}: exit {r.code}\n{r.output}"
        assert r.lines <= 3, f"{r.case.name}: {r.lines} lines\n{r.output}"
        assert r.message.startswith("error: ") and "Traceback" not in r.output, f"{r.case.name}\n{r.output}"
    problems = battery.check(results)
    assert not problems, "\n".join(problems)
    by_name = {r.case.name: r.message for r in results}
    assert "run `dvc repro collect_exploration` first" in by_name["missing input of a stage"]
    fb = by_name["FB weights replaced by random bytes"]
    assert "data/fb/weights.safetensors" in fb and "dvc repro -f -s pretrain_fb" in fb
    assert "ffmpeg version" not in by_name["text file given as the goal video"]
    assert "vae/" in by_name["diffusers pipeline folder without vae/"]
    missing_model = by_name["relative local model path that does not exist"]
    assert "adapt_video_model" in missing_model and "hub" not in missing_model

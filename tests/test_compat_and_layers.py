from __future__ import annotations

import subprocess
import sys
import textwrap


def _py(code: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=timeout
    )


def test_torchvision_open_clip_and_transformers_import_after_genreward():
    res = _py(
        """
        import genreward, torch
        from genreward.compat.torchvision_ops import ensure_importable
        status = ensure_importable()
        import torchvision, open_clip
        from transformers import T5EncoderModel  # imports torchvision when installed
        model, _, preprocess = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
        model.eval()
        with torch.no_grad():
            emb = model.encode_image(torch.zeros(2, 3, 224, 224))
        print(status, tuple(emb.shape))
        if status == "schemas-only":
            try:
                torchvision.ops.nms(torch.zeros(1, 4), torch.zeros(1), 0.5)
            except RuntimeError as e:
                print("nms:", "Couldn't load custom C++ ops" in str(e))
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout.split()
    assert out[0] in ("native", "schemas-only") and "(2, 512)" in res.stdout
    if out[0] == "schemas-only":
        assert "nms: True" in res.stdout


def test_library_and_stages_never_import_prefect_or_dvc():
    res = _py(
        """
        import importlib, pkgutil, sys
        import genreward, stages
        for pkg in (genreward, stages):
            for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
                importlib.import_module(m.name)
        bad = sorted(m for m in sys.modules if m.split(".")[0] in ("prefect", "dvc"))
        print("BAD", bad)
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "BAD []" in res.stdout, res.stdout


def test_config_loading_does_not_import_mujoco():
    res = _py(
        """
        import sys
        from genreward.config import load_config
        load_config("params.yaml")
        print(sorted(m for m in ("mujoco", "metaworld", "gymnasium") if m in sys.modules))
        """
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip() == "[]"

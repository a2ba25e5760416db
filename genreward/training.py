"""Resumable training without pickle: checkpoints, resume folders and the training loop.

Serves every trained model of the project (the FB representation, the RL agents, the video
model). A checkpoint folder holds ``weights.safetensors`` (module parameters and buffers, and
optimizer state tensors under ``opt/<name>/...``) and ``meta.json`` (step, optimizer
hyper-parameters, caller metadata), written atomically. Loading never unpickles:
``torch.load`` is not used.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from genreward.store.artifacts import RERUN, ArtifactError
from genreward.store.atomic import atomic_dir

if TYPE_CHECKING:  # torch is imported where it is used: a stage module can import this for free
    import torch


# -- checkpoints ----------------------------------------------------------------------------
def _flatten_optimizer(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    import torch

    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"opt/{name}/{pid}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}/{key}"] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    folder: str | Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> Path:
    tensors: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for mname, module in modules.items():
        for key, value in module.state_dict().items():
            t = value.detach().cpu().contiguous()
            if t.untyped_storage().data_ptr() in seen:  # tied weights: safetensors stores no shared tensors
                t = t.clone()
            seen.add(t.untyped_storage().data_ptr())
            tensors[f"{mname}/{key}"] = t
    opt_meta = {}
    for oname, opt in (optimizers or {}).items():
        t, m = _flatten_optimizer(oname, opt)
        tensors.update(t)
        opt_meta[oname] = m
    with atomic_dir(folder) as tmp:
        from safetensors.torch import save_file

        save_file(tensors, str(tmp / "weights.safetensors"))
        (tmp / "meta.json").write_text(
            json.dumps({"meta": dict(meta or {}), "optimizers": opt_meta}, indent=1, default=str)
        )
    return Path(folder)


def _unusable(folder: Path, what: str, fix: str | None) -> ArtifactError:
    """The error for a checkpoint in ``folder`` that cannot be used: ``what`` is wrong; ``fix``
    (default: re-run the stage that writes it, which the stage layer names)."""
    return ArtifactError(f"{what}; {fix or RERUN}", path=folder, rerun=fix is None)


def checkpoint_info(folder: str | Path, fix: str | None = None) -> dict[str, Any]:
    """The parsed ``meta.json`` of the checkpoint in ``folder`` (``{"meta": ..., "optimizers": ...}``);
    an :class:`~genreward.store.artifacts.ArtifactError` naming the file when it is missing or
    unreadable (``fix``: as for :func:`load_checkpoint`)."""
    folder = Path(folder)
    for name in ("weights.safetensors", "meta.json"):
        if not (folder / name).is_file():
            raise _unusable(folder, f"{folder}: not a checkpoint ({name} is missing)", fix)
    try:
        info = json.loads((folder / "meta.json").read_text())
        if not isinstance(info, dict) or not isinstance(info.get("meta"), dict):
            raise ValueError("no 'meta' object")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        what = f"{folder / 'meta.json'}: unreadable checkpoint metadata ({type(e).__name__})"
        raise _unusable(folder, what, fix) from None
    return info


def load_checkpoint(
    folder: str | Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    device: str = "cpu",
    skip: tuple[str, ...] = (),
    fix: str | None = None,
) -> dict[str, Any]:
    """Load ``modules`` (and ``optimizers``) from ``folder``; returns the caller metadata.

    Every stored tensor of a module must match it, except those whose key (``<module>/<name>``)
    starts with one of ``skip``: parts a reader does not need (e.g. training-only networks).
    A missing, unreadable or mismatched checkpoint raises
    :class:`~genreward.store.artifacts.ArtifactError` naming the file; its fix is ``fix``, or by
    default re-running the stage that writes ``folder`` (the stage layer adds the command)."""
    folder = Path(folder)
    info = checkpoint_info(folder, fix)
    weights = folder / "weights.safetensors"
    try:
        from safetensors.torch import load_file

        tensors = load_file(str(weights), device=device)
    except Exception as e:  # SafetensorError (random bytes, a truncated copy), OSError
        reason = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise _unusable(
            folder, f"{weights}: not a readable safetensors file ({type(e).__name__}: {reason})", fix
        ) from None
    if skip:
        tensors = {k: v for k, v in tensors.items() if not k.startswith(skip)}
    for mname, module in modules.items():
        prefix = f"{mname}/"
        sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        try:
            missing, unexpected = module.load_state_dict(sd, strict=False)
            problem = f"missing {missing[:3]}, unexpected {unexpected[:3]}" if missing or unexpected else None
        except RuntimeError as e:  # a tensor of another shape (a checkpoint of another config)
            problem = str(e).strip().splitlines()[-1].strip()[:200]
        if problem:
            raise _unusable(folder, f"{weights}: checkpoint does not match module {mname!r} ({problem})", fix)
    for oname, opt in (optimizers or {}).items():
        om = info.get("optimizers", {}).get(oname)
        if om is None:
            raise _unusable(folder, f"{folder / 'meta.json'}: no optimizer state {oname!r}", fix)
        state: dict[int, dict[str, Any]] = {}
        prefix = f"opt/{oname}/"
        for k, v in tensors.items():
            if k.startswith(prefix):
                pid, key = k[len(prefix) :].split("/", 1)
                state.setdefault(int(pid), {})[key] = v
        for k, v in om["scalars"].items():
            pid, key = k.split("/", 1)
            state.setdefault(int(pid), {})[key] = v
        opt.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    return info["meta"]


# -- resumable training -----------------------------------------------------------------------
# -- nested training state (a library's checkpoint dict) as one safetensors file -------------
STATE_FORMAT = "genreward-state/1"


def _encode(obj: Any, name: str, tensors: dict[str, torch.Tensor]) -> Any:
    import torch

    if torch.is_tensor(obj):
        tensors[name] = obj.detach().to("cpu", copy=True).contiguous()  # a copy: safetensors stores no shared storage
        return {"t": name}
    if isinstance(obj, Mapping):
        return {"d": [[_encode(k, f"{name}.k{i}", tensors), _encode(v, f"{name}.{i}", tensors)]
                      for i, (k, v) in enumerate(obj.items())]}  # fmt: skip
    if isinstance(obj, (list, tuple)):
        return {"l": [_encode(v, f"{name}.{i}", tensors) for i, v in enumerate(obj)], "tuple": isinstance(obj, tuple)}
    if isinstance(obj, float) and not math.isfinite(obj):
        return {"f": repr(obj)}
    if hasattr(obj, "item") and getattr(obj, "shape", None) == ():  # numpy scalars
        return obj.item()
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"training state {name}: {type(obj).__name__} cannot be stored without pickle")


def _decode(obj: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(obj, dict):
        if "t" in obj:
            return tensors[obj["t"]]
        if "d" in obj:
            return {_decode(k, tensors): _decode(v, tensors) for k, v in obj["d"]}
        if "l" in obj:
            seq = [_decode(v, tensors) for v in obj["l"]]
            return tuple(seq) if obj["tuple"] else seq
        if "f" in obj:
            return float(obj["f"])
    return obj


def save_state(path: str | Path, state: Mapping[str, Any]) -> Path:
    """``state`` (nested dicts, lists and tuples of tensors, numbers, strings: e.g. a training
    library's checkpoint dict with module and optimizer state dicts) as one safetensors file, the
    tensors as tensors and the nesting as JSON in the header. Written atomically (a temporary file
    renamed): a process killed while saving leaves no partial file. Anything else (an arbitrary
    object) is refused rather than pickled."""
    from safetensors.torch import save_file as save

    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tree = _encode(dict(state), "s", tensors)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save(tensors, str(tmp), metadata={"format": STATE_FORMAT, "tree": json.dumps(tree)})
    os.replace(tmp, path)
    return path


def load_state(path: str | Path, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """The state :func:`save_state` wrote (``only``: just these top-level keys)."""
    from safetensors import safe_open

    try:
        f = safe_open(str(path), framework="pt")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise ArtifactError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})") from None
    with f:
        meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ArtifactError(f"{path}: not a {STATE_FORMAT} file (header keys {sorted(meta)})")
        tree = json.loads(meta["tree"])
        if only is not None:
            tree = {"d": [[k, v] for k, v in tree["d"] if k in only]}
        names: list[str] = []

        def walk(o: Any) -> None:
            if isinstance(o, dict):
                if "t" in o:
                    names.append(o["t"])
                for v in o.values():
                    walk(v)
            elif isinstance(o, list):
                for v in o:
                    walk(v)

        walk(tree)
        tensors = {n: f.get_tensor(n) for n in names}
    return _decode(tree, tensors)


def resume_dir(partial: str | Path, fingerprint: str) -> Path:
    """A resumable work folder for ``fingerprint`` (a hash of config + inputs): kept when its
    marker matches, emptied otherwise, so a run never resumes from another config's checkpoints."""
    partial = Path(partial)
    marker = partial / "fingerprint.txt"
    if partial.exists() and (not marker.exists() or marker.read_text() != fingerprint):
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    marker.write_text(fingerprint)
    return partial


class TrainingDiverged(RuntimeError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""


def train_loop(
    update: Callable[[int], dict],
    steps: int,
    ckpt_dir: str | Path,
    modules: Mapping[str, torch.nn.Module],
    optimizers: Mapping[str, torch.optim.Optimizer] | None = None,
    *,
    every: int = 500,
    log_every: int = 50,
    progress: bool = False,
    desc: str = "train",
    hint: str = "",
    on_step: Callable[[int], None] | None = None,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Run ``update(step) -> metrics`` for steps ``[start, steps)``, resumable.

    Checkpoints (``modules``, ``optimizers``, step, logged history) go to ``ckpt_dir`` every
    ``every`` updates and at the end; a call that finds a checkpoint there resumes from its
    step (a finished one returns its history at once). ``update`` raises ``FloatingPointError``
    on a non-finite loss: that becomes :class:`TrainingDiverged`, naming the step and the last
    good checkpoint, which stays untouched. ``on_step(step_done)`` runs after every update
    (sample GIFs, say).
    """
    from genreward.progress import progress_bar

    ckpt_dir = Path(ckpt_dir)
    start, history = 0, []
    if (ckpt_dir / "meta.json").exists():
        fix = f"delete {ckpt_dir} to train from the start"  # a resume checkpoint, not a stage output
        meta = load_checkpoint(ckpt_dir, modules, optimizers, device=device, fix=fix)
        start, history = int(meta["step"]), list(meta.get("history", []))
    last_good = start
    with progress_bar(steps, desc, enabled=progress, unit="update", initial=start) as bar:
        for step in range(start, steps):
            try:
                metrics = update(step)
            except FloatingPointError as e:
                raise TrainingDiverged(
                    f"{desc} training diverged at update {step}: {e}. The last good checkpoint "
                    f"(update {last_good}) is kept in {ckpt_dir}" + (f"; {hint}" if hint else "")
                ) from None
            if (step + 1) % log_every == 0 or step + 1 == steps:
                history.append({"step": step + 1, **metrics})
            if (step + 1) % every == 0 or step + 1 == steps:
                save_checkpoint(ckpt_dir, modules, optimizers, {"step": step + 1, "history": history})
                last_good = step + 1
            if on_step is not None:
                on_step(step + 1)
            bar.update()
    return history

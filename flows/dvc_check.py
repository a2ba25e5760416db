"""Does ``dvc.yaml`` say what the stage declarations say? (``genreward stages --check``)

For every stage item DVC resolves (``foreach``/``matrix`` expanded), the data deps (paths under
``store.data_dir``/``store.reports_dir``), the resolved-parameter deps (``data/params/*.json``)
and the outs (incl. metrics and plots) must equal the declaration's inputs, params and outputs,
and the stage's own module must be a dep. ``resolve_params`` (the params step) is not a stage.
"""

from __future__ import annotations

from pathlib import Path

from genreward.config import Config, load_config
from stages.table import Stage, expected_dvc, path_under

PARAMS_STEP = "resolve_params"
PARAMS_DIR = "data/params"


def _under(path: str, roots: list[str]) -> bool:
    return any(path_under(path, r) for r in roots)


def dvc_mismatches(
    root: str | Path = ".", cfg: Config | None = None, stages: dict[str, Stage] | None = None
) -> list[str]:
    """One line per disagreement between ``<root>/dvc.yaml`` and the stage table (empty: they agree)."""
    from dvc.repo import Repo

    root = Path(root)
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        raise FileNotFoundError(f"{root.resolve()}: no DVC project with a dvc.yaml here; run from the project root")
    cfg = load_config(root / "params.yaml") if cfg is None else cfg
    expected = expected_dvc(cfg, stages, PARAMS_DIR)
    data_roots = [cfg.store.data_dir.as_posix(), cfg.store.reports_dir.as_posix()]
    problems: list[str] = []
    seen = set()
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            name = st.name
            if name == PARAMS_STEP:
                continue
            seen.add(name)
            want = expected.get(name)
            if want is None:
                problems.append(f"dvc.yaml stage {name}: no stage declares it (add a module with STAGE to stages/)")
                continue
            deps = [d.def_path for d in st.deps]
            got = {
                "params": {d for d in deps if _under(d, [PARAMS_DIR])},
                "data": {d for d in deps if _under(d, data_roots) and not _under(d, [PARAMS_DIR])},
                "outs": {o.def_path for o in st.outs},
            }
            for key, label in (("data", "data deps"), ("params", "param deps"), ("outs", "outs")):
                missing, extra = sorted(want[key] - got[key]), sorted(got[key] - want[key])
                if missing:
                    problems.append(
                        f"dvc.yaml stage {name}: {label} lack {', '.join(missing)} (declared in {want['module']})"
                    )
                if extra:
                    problems.append(
                        f"dvc.yaml stage {name}: {label} {', '.join(extra)} not declared in {want['module']}"
                    )
            if want["module"] not in deps:
                problems.append(f"dvc.yaml stage {name}: deps lack its module {want['module']}")
    for name in sorted(set(expected) - seen):
        problems.append(f"stage {name}: no dvc.yaml entry (declared in {expected[name]['module']})")
    return problems

#!/usr/bin/env bash
# One-command set-up: system packages for headless MuJoCo rendering + a Python env with
# genreward and its dependencies (with DreamerV3 from sheeprl: the dreamer extra). Idempotent.
#
#   ./setup.sh                      # CPU torch (laptop / CI), venv in ./.venv
#   GENREWARD_TORCH=cuda ./setup.sh # CUDA torch + torchvision pair from PyPI
#   GENREWARD_VENV=/path/env ./setup.sh   # put the env elsewhere (an existing venv is reused)
#   GENREWARD_SKIP_APT=1 ./setup.sh       # you installed the system packages yourself
set -euo pipefail
cd "$(dirname "$0")"

variant="${GENREWARD_TORCH:-cpu}"
venv="${GENREWARD_VENV:-.venv}"
python="${PYTHON:-python3}"
constraints="constraints/${variant}.txt"
[ -f "$constraints" ] || { echo "setup.sh: GENREWARD_TORCH=$variant: no $constraints (choose cpu or cuda)" >&2; exit 2; }

# --- system packages: EGL (default) and OSMesa (fallback) for offscreen MuJoCo rendering ---
apt_pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6 libglfw3 git)
if [ -z "${GENREWARD_SKIP_APT:-}" ] && command -v dpkg >/dev/null 2>&1; then
  missing=()
  for p in "${apt_pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup.sh: installing system packages: ${missing[*]}"
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
elif [ -z "${GENREWARD_SKIP_APT:-}" ]; then
  echo "setup.sh: no dpkg here; install EGL or OSMesa yourself (see README), then GENREWARD_SKIP_APT=1" >&2
fi

# --- Python environment ---
if [ ! -x "$venv/bin/python" ]; then
  echo "setup.sh: creating virtual environment $venv"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install -q --upgrade pip
# One pip command with the constraints file: torch must never be resolved on its own, or a
# dependency (open_clip_torch, timm, diffusers) pulls the newest CUDA build instead.
"$venv/bin/python" -m pip install -q -c "$constraints" -e ".[dev,dreamer]"

# --- tool defaults that must hold offline ---
"$venv/bin/dvc" config --local core.analytics false >/dev/null 2>&1 || true
"$venv/bin/genreward" doctor
echo "setup.sh: done. Activate with: source $venv/bin/activate"

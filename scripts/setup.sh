#!/usr/bin/env bash
# Create the virtual environment and install medauc with its pinned dependencies.
# On Debian with a usable apt-get (root), also install the data and tools later stages use:
#   mricron-data  - the Colin27 head template (real anatomy for the built-in phantom)
#   chromium      - headless rendering check of the HTML report in the tests
# Both are optional: without them medauc falls back (MNI152 anatomy) or skips that one test.
set -euo pipefail
PYTHON=${1:-python3}
VENV=${2:-.venv}

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
  missing=()
  for pkg in mricron-data chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    echo "setup: installing Debian packages: ${missing[*]}"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null) \
      || echo "setup: could not install ${missing[*]} (optional; continuing)"
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
echo "setup: installing medauc and its pinned dependencies into $VENV (first time: a few minutes)"
"$VENV/bin/python" -m pip install -q -e ".[dev]"
"$VENV/bin/python" -c "import torch, torchvision, timm, pytorch_grad_cam, monai; print('setup: torch', torch.__version__, '| timm', timm.__version__, '| cuda', torch.cuda.is_available())"

#!/usr/bin/env bash
# Set up a fresh machine for slowai: Python packages, and Fashion-MNIST from Debian's package where apt is available.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null
  else
    echo "note: Fashion-MNIST not in /usr/share/datasets/fashion-mnist and apt-get is unavailable;" \
      "slowai will look in SLOWAI_DATA and ~/.cache/slowai, then try torchvision's download." >&2
  fi
fi

# The torch this project is tested with; installed first so that the editable install below keeps it.
python -c "import torch, torchvision" 2>/dev/null || pip install -q "torch==2.14.1" "torchvision==0.29.1"
pip install -q -e ".[dev]"

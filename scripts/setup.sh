#!/usr/bin/env bash
# Set up a fresh machine for slowai: Python packages, and (as root, where apt is available) Fashion-MNIST and the
# PostgreSQL server from Debian's packages.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, where apt is available and this runs as root: Fashion-MNIST, and PostgreSQL's server binaries (the
# PostgreSQL tests start a throwaway server of their own from them: tests/conftest.py, scripts/postgres.sh --throwaway).
need_data= need_pg=
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_data=1
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_pg=1
if [ -n "$need_data$need_pg" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    ${need_data:+dataset-fashion-mnist} ${need_pg:+postgresql} >/dev/null
else
  [ -z "$need_data" ] || echo "note: Fashion-MNIST not in /usr/share/datasets/fashion-mnist and apt-get is" \
    "unavailable (or not root); slowai will look in SLOWAI_DATA and ~/.cache/slowai," \
    "then try torchvision's download." >&2
  [ -z "$need_pg" ] || echo "note: no PostgreSQL server installed (initdb) and apt-get is unavailable (or not root);" \
    "the PostgreSQL tests will be skipped unless SLOWAI_TEST_PG_URL names a server." >&2
fi

# The torch this project is tested with; installed first so that the editable install below keeps it.
python -c "import torch, torchvision" 2>/dev/null || pip install -q "torch==2.14.1" "torchvision==0.29.1"
pip install -q -e ".[dev]"

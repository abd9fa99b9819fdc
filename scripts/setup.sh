#!/usr/bin/env bash
# Set up a fresh machine for slowai: Python packages, and (as root, where apt is available) Fashion-MNIST and the
# PostgreSQL server from Debian's packages.
# Idempotent: a second run only checks. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages, where apt is available and this runs as root: Fashion-MNIST, and the servers the distributed-study
# tests start throwaway copies of (tests/conftest.py): PostgreSQL (scripts/postgres.sh --throwaway), Redis, and a
# single-node Slurm with munge.
need_data= need_pg= need_redis= need_slurm=
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need_data=1
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || need_pg=1
command -v redis-server >/dev/null 2>&1 || need_redis=1
{ command -v slurmctld && command -v slurmd && command -v munged; } >/dev/null 2>&1 || need_slurm=1
if [ -n "$need_data$need_pg$need_redis$need_slurm" ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    ${need_data:+dataset-fashion-mnist} ${need_pg:+postgresql} ${need_redis:+redis-server} \
    ${need_slurm:+slurm-wlm munge} >/dev/null
else
  [ -z "$need_data" ] || echo "note: Fashion-MNIST not in /usr/share/datasets/fashion-mnist and apt-get is" \
    "unavailable (or not root); slowai will look in SLOWAI_DATA and ~/.cache/slowai," \
    "then try torchvision's download." >&2
  [ -z "$need_pg" ] || echo "note: no PostgreSQL server installed (initdb) and apt-get is unavailable (or not root);" \
    "the PostgreSQL tests will be skipped unless SLOWAI_TEST_PG_URL names a server." >&2
  [ -z "$need_redis" ] || echo "note: no redis-server installed; the Redis tests will be skipped." >&2
  [ -z "$need_slurm" ] || echo "note: no Slurm (slurmctld, slurmd, munged) installed; the Slurm tests will be skipped." >&2
fi

# The torch this project is tested with; installed first so that the editable install below keeps it.
python -c "import torch, torchvision" 2>/dev/null || pip install -q "torch==2.14.1" "torchvision==0.29.1"
pip install -q -e ".[dev]"

#!/usr/bin/env bash
# Start a PostgreSQL server on loopback for distributed studies and tests, with a `slowai` user and database.
# Installs Debian's postgresql if needed. Prints the storage URL on stdout. Usage: export SLOWAI_TEST_PG_URL=$(bash scripts/postgres.sh)
set -euo pipefail
if ! command -v pg_lsclusters >/dev/null 2>&1; then
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
read -r version cluster port status _ < <(pg_lsclusters --no-header | head -n 1)
if [ "$status" != online ]; then
  # loopback only: never listen on another interface
  pg_ctlcluster "$version" "$cluster" start -o "-c listen_addresses=127.0.0.1" >&2
fi
psql_admin() { su postgres -c "psql -p $port -v ON_ERROR_STOP=1 -qtAc \"$1\""; }
for _ in $(seq 30); do psql_admin "SELECT 1" >/dev/null 2>&1 && break; sleep 1; done
[ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='slowai'")" = 1 ] || psql_admin "CREATE ROLE slowai LOGIN PASSWORD 'slowai'"
[ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='slowai'")" = 1 ] || psql_admin "CREATE DATABASE slowai OWNER slowai"
echo "postgresql+psycopg2://slowai:slowai@127.0.0.1:$port/slowai"

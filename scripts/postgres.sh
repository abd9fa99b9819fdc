#!/usr/bin/env bash
# PostgreSQL for distributed studies and the tests, with a `slowai` user and database. Prints the storage URL on stdout.
#   bash scripts/postgres.sh                 the machine's Debian cluster, installed if needed, started on 127.0.0.1
#   bash scripts/postgres.sh --throwaway DIR a private server in the empty DIR (unix socket in DIR, no TCP), never
#                                            installs anything: exits 3 when no server binaries (initdb, pg_ctl) exist
#   bash scripts/postgres.sh --restart DIR [S] stops that server, waits S seconds (default 0), starts it again
#   bash scripts/postgres.sh --down DIR / --up DIR  stops that server (keeping its data) / starts it again
#   bash scripts/postgres.sh --stop DIR      stops that server and deletes DIR
# The tests (tests/conftest.py) start and stop a throwaway server by themselves; SLOWAI_TEST_PG_URL overrides it.
set -euo pipefail

# As root, a throwaway server runs as `postgres` (or `nobody`): PostgreSQL refuses to run as root.
owner() { id -u postgres >/dev/null 2>&1 && echo postgres || echo nobody; }
as_owner() {
  if [ "$(id -u)" != 0 ]; then
    "$@"
  elif command -v runuser >/dev/null 2>&1; then
    runuser -u "$(owner)" -- "$@"
  else
    su -s /bin/bash "$(owner)" -c "$(printf '%q ' "$@")"
  fi
}
# The newest installed server's binaries (Debian keeps them off PATH), else initdb and pg_ctl on PATH.
server_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d" && return
  done
  d=$(command -v initdb 2>/dev/null) && d=$(dirname "$d") && [ -x "$d/pg_ctl" ] && echo "$d" && return
  return 1
}
die() { echo "postgres.sh: $*" >&2; exit 1; }

throwaway() {
  local dir=$1 bin
  if ! bin=$(server_bindir); then
    echo "postgres.sh: no PostgreSQL server binaries (initdb, pg_ctl); install postgresql" >&2
    exit 3
  fi
  [[ "$dir" =~ ^/[A-Za-z0-9/._-]+$ ]] || die "--throwaway needs an absolute path of plain characters, not '$dir'"
  mkdir -p "$dir"
  [ -z "$(ls -A "$dir")" ] || die "$dir is not empty"
  chmod 700 "$dir"
  [ "$(id -u)" != 0 ] || chown "$(owner)" "$dir"
  echo "$bin" >"$dir/bindir"
  if ! as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    die "initdb failed"
  fi
  # No TCP: only a unix socket in the private DIR. Durability off: the data is thrown away. Room for a test session's
  # many short-lived clients (each worker process and each test's storage keeps a small connection pool).
  printf "%s\n" "listen_addresses = ''" "unix_socket_directories = '$dir'" "fsync = off" \
    "synchronous_commit = off" "full_page_writes = off" "max_connections = 400" >>"$dir/data/postgresql.conf"
  if ! as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null; then
    cat "$dir/server.log" >&2
    die "the server did not start"
  fi
  local psql=("$bin/psql" -h "$dir" -U postgres -d postgres -v ON_ERROR_STOP=1 -qtA)
  as_owner "${psql[@]}" -c "CREATE ROLE slowai LOGIN PASSWORD 'slowai'" -c "CREATE DATABASE slowai OWNER slowai" >&2
  echo "postgresql+psycopg2://slowai:slowai@/slowai?host=$dir"
}

stop() {
  local dir=$1
  [ -d "$dir" ] || return 0
  [ -f "$dir/bindir" ] || die "$dir was not made by --throwaway; not touching it"
  local bin
  bin=$(cat "$dir/bindir")
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null \
      || as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w stop >/dev/null
  fi
  rm -rf "$dir"
}

down() {
  [ -f "$1/bindir" ] || die "$1 was not made by --throwaway; not touching it"
  as_owner "$(cat "$1/bindir")/pg_ctl" -D "$1/data" -m fast -w -t 60 stop >/dev/null
}

up() {
  [ -f "$1/bindir" ] || die "$1 was not made by --throwaway; not touching it"
  as_owner "$(cat "$1/bindir")/pg_ctl" -D "$1/data" -l "$1/server.log" -w -t 60 start >/dev/null
}

restart() {
  down "$1"
  sleep "${2:-0}"
  up "$1"
}

case "${1:-}" in
  --restart) restart "${2:?usage: postgres.sh --restart DIR [SECONDS]}" "${3:-0}"; exit ;;
  --throwaway) throwaway "${2:?usage: postgres.sh --throwaway DIR}"; exit ;;
  --stop) stop "${2:?usage: postgres.sh --stop DIR}"; exit ;;
  --down) down "${2:?usage: postgres.sh --down DIR}"; exit ;;
  --up) up "${2:?usage: postgres.sh --up DIR}"; exit ;;
  "") ;;
  *) die "unknown argument '$1' (none, --throwaway DIR, --restart DIR [S], --down DIR, --up DIR or --stop DIR)" ;;
esac

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

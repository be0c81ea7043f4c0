#!/bin/bash
# PostgreSQL 15 for the controller's tests: a throwaway cluster run as the postgres
# user on 127.0.0.1 (trust auth, loopback only), state under $KVMCLOUD_TEST_ENV/postgres/.
# up: initdb once, start if the postmaster pid is not alive, wait until it accepts
# connections, and write postgres.env:
#   POSTGRES_URL (SQLAlchemy URL of the maintenance database), POSTGRES_HOST,
#   POSTGRES_PORT, POSTGRES_USER, POSTGRES_PIDFILE
set -euo pipefail
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
ENV_FILE=$ENV_DIR/postgres.env
DIR=$ENV_DIR/postgres
DATA=$DIR/data
PORT=${KVMCLOUD_POSTGRES_PORT:-55432}
BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
PIDFILE=$DATA/postmaster.pid
mkdir -p "$ENV_DIR"

# shellcheck source=../lib/pidfile.sh
. "$(dirname "$0")/../lib/pidfile.sh"
alive() { pid_alive "$PIDFILE" "$DATA"; }
as_pg() { su postgres -s /bin/bash -c "$*"; }

up() {
  [ -n "$BIN" ] || { echo "PostgreSQL server binaries not found (apt-get install postgresql)" >&2; exit 1; }
  mkdir -p "$DIR"
  chown postgres: "$DIR"
  if [ ! -s "$DATA/PG_VERSION" ]; then
    as_pg "'$BIN/initdb' -D '$DATA' -A trust -U postgres --no-sync" >"$DIR/initdb.log"
  fi
  if ! alive; then
    as_pg "'$BIN/pg_ctl' -D '$DATA' -l '$DIR/pg.log' -w -t 60 -o \"-k '$DIR' -c listen_addresses=127.0.0.1 -p $PORT -c fsync=off -c max_connections=300\" start" >/dev/null
  fi
  for _ in $(seq 1 300); do
    "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT" && break
    sleep 0.1
  done
  "$BIN/pg_isready" -q -h 127.0.0.1 -p "$PORT"
  cat > "$ENV_FILE.tmp" <<ENV
POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:$PORT/postgres
POSTGRES_HOST=127.0.0.1
POSTGRES_PORT=$PORT
POSTGRES_USER=postgres
POSTGRES_PIDFILE=$PIDFILE
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

down() {
  if alive; then
    as_pg "'$BIN/pg_ctl' -D '$DATA' -m fast -w -t 60 stop" >/dev/null
  fi
  rm -f "$ENV_FILE"
}

status() { alive && echo running || { echo stopped; return 1; }; }

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac

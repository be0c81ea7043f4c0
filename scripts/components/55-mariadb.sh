#!/bin/bash
# MariaDB for the controller's tests: a throwaway server (mariadbd from
# mariadb-server-core, which ships no init script, so nothing auto-starts) run by
# hand on 127.0.0.1 with its own datadir, socket and pid file under
# $KVMCLOUD_TEST_ENV/mariadb/. Durability is traded for speed (no fsync, small
# buffer pool, no performance schema): the data are scratch.
# up: mariadb-install-db once, start mariadbd if its pid file names no live
# process (a stale pid file or socket from a kill -9 is removed first), wait until
# the test user can connect, and write mariadb.env:
#   MARIADB_URL (SQLAlchemy URL without a database), MARIADB_HOST, MARIADB_PORT,
#   MARIADB_USER, MARIADB_PASSWORD (the test user may create and drop databases),
#   MARIADB_SOCKET, MARIADB_PIDFILE
set -euo pipefail
ENV_DIR=${KVMCLOUD_TEST_ENV:-/var/tmp/kvmcloud-test}
ENV_FILE=$ENV_DIR/mariadb.env
DIR=$ENV_DIR/mariadb
DATA=$DIR/data
PORT=${KVMCLOUD_MARIADB_PORT:-53306}
PIDFILE=$DIR/mariadbd.pid
SOCKET=$DIR/mariadbd.sock
USER_NAME=kvmcloud
PASSWORD=kvmcloud
mkdir -p "$ENV_DIR"

# running PID: a mariadbd that is not a zombie (one killed -9 may wait to be reaped)
# nor a process that reused a dead one's pid
running() {
  [ "$(cat "/proc/$1/comm" 2>/dev/null)" = mariadbd ] && ! grep -q '^State:.*zombie' "/proc/$1/status" 2>/dev/null
}
alive() { [ -s "$PIDFILE" ] && running "$(cat "$PIDFILE")"; }
ready() {
  mariadb --no-defaults --protocol=tcp -h 127.0.0.1 -P "$PORT" -u "$USER_NAME" -p"$PASSWORD" \
    -e 'SELECT 1' >/dev/null 2>&1
}

start() {
  rm -f "$PIDFILE" "$SOCKET" "$SOCKET.lock"
  setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$DATA" --pid-file="$PIDFILE" \
    --socket="$SOCKET" --bind-address=127.0.0.1 --port="$PORT" --skip-name-resolve \
    --init-file="$DIR/init.sql" --log-error="$DIR/mariadbd.log" \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --max-connections=300 --performance-schema=OFF --skip-log-bin \
    --innodb-buffer-pool-size=128M --innodb-log-file-size=48M \
    --innodb-flush-log-at-trx-commit=0 --innodb-doublewrite=0 --innodb-flush-method=nosync \
    --innodb-use-native-aio=0 </dev/null >/dev/null 2>&1 &
  started=1
}

up() {
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || {
    echo "mariadbd not found (apt-get install mariadb-server-core mariadb-client-core)" >&2; exit 1; }
  mkdir -p "$DIR"
  if [ ! -d "$DATA/mysql" ]; then  # made aside and moved in whole: an interrupted run redoes it
    rm -rf "$DATA" "$DATA.new"
    mariadb-install-db --no-defaults --datadir="$DATA.new" --user=root --skip-test-db \
      --auth-root-authentication-method=socket --skip-name-resolve >"$DIR/install-db.log" 2>&1
    mv "$DATA.new" "$DATA"
  fi
  # the test user, (re)created at every start: the server runs this file before it listens
  cat > "$DIR/init.sql" <<SQL
CREATE USER IF NOT EXISTS '$USER_NAME'@'127.0.0.1' IDENTIFIED BY '$PASSWORD';
GRANT ALL PRIVILEGES ON *.* TO '$USER_NAME'@'127.0.0.1';
SQL
  started=
  alive || start
  for _ in $(seq 1 300); do
    ready && break
    # one found alive may have been dying (a kill -9 just sent): start it then
    [ -n "$started" ] || alive || start
    sleep 0.1
  done
  ready || { echo "mariadbd did not come up; see $DIR/mariadbd.log" >&2; exit 1; }
  cat > "$ENV_FILE.tmp" <<ENV
MARIADB_URL=mysql+pymysql://$USER_NAME:$PASSWORD@127.0.0.1:$PORT/?charset=utf8mb4
MARIADB_HOST=127.0.0.1
MARIADB_PORT=$PORT
MARIADB_USER=$USER_NAME
MARIADB_PASSWORD=$PASSWORD
MARIADB_SOCKET=$SOCKET
MARIADB_PIDFILE=$PIDFILE
ENV
  mv "$ENV_FILE.tmp" "$ENV_FILE"
}

down() {
  if alive; then
    pid=$(cat "$PIDFILE")
    kill "$pid"
    for _ in $(seq 1 600); do
      running "$pid" || break
      sleep 0.1
    done
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

#!/usr/bin/env bash
# A private PostgreSQL from Debian's `postgresql` package, for crane-server's run archive in
# tests and on the local cluster: its own data directory, a free loopback port, a generated
# password, nothing shared with a system PostgreSQL. PostgreSQL refuses to run as root, so as
# root every server command runs as the `postgres` user (created by the Debian package; `nobody`
# without it) through setpriv, which execs in place: the process id is the server's.
#
#   postgres.sh init DIR          initdb into DIR (once; a second init does nothing), with a
#                                 superuser `crane` (password in DIR/password) and database `crane`
#   postgres.sh start DIR [PORT]  init if needed, start in the background (pg_ctl) on PORT (default
#                                 a free port, or the one it used last), wait until it accepts
#                                 connections, print `export CRANE_ARCHIVE_URL=...`
#   postgres.sh run DIR PORT      exec the server in the foreground (test harnesses wrap this)
#   postgres.sh stop DIR          fast shutdown (sessions are cut, nothing is lost); no-op if stopped
#   postgres.sh url DIR           print the URL (postgres://crane:PW@127.0.0.1:PORT/crane)
#   postgres.sh status DIR        exit 0 when it runs
#   postgres.sh ready DIR         exit 0 when it accepts connections (pg_isready)
#
# Files in DIR: data/ (PGDATA), password, port, postgres.log, the Unix socket.
set -euo pipefail
cmd=${1:?usage: postgres.sh init|start|run|stop|url|status DIR [PORT]}
dir=${2:?usage: postgres.sh $cmd DIR [PORT]}

bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bindir" ] || [ ! -x "$bindir/postgres" ]; then
  echo "postgres.sh: PostgreSQL is not installed (apt-get install postgresql; make deps does it)" >&2
  exit 1
fi

# as_owner CMD...: runs CMD as the data directory's owner (root cannot run PostgreSQL).
owner() { if id postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi; }
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid="$(owner)" --regid="$(id -g "$(owner)")" --init-groups -- "$@"
  else
    "$@"
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

init() {
  [ -f "$dir/data/PG_VERSION" ] && return 0
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  [ "$(id -u)" -eq 0 ] && chown "$(owner)" "$dir"
  chmod 700 "$dir"
  if ! as_owner test -w "$dir"; then
    echo "postgres.sh: user $(owner) cannot reach $dir: every parent directory must be traversable (e.g. use a directory under /tmp)" >&2
    exit 1
  fi
  local pw
  pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  (umask 077; printf '%s\n' "$pw" >"$dir/password")
  [ "$(id -u)" -eq 0 ] && chown "$(stat -c %U "$dir")" "$dir/password"
  # Password (SCRAM) over TCP, the OS user over the private socket; UTF-8 whatever the locale.
  as_owner "$bindir/initdb" -D "$dir/data" -U crane --pwfile="$dir/password" \
    --auth-host=scram-sha-256 --auth-local=peer -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 || {
      cat "$dir/initdb.log" >&2; exit 1; }
  # The database, created in single-user mode: no server, no port, no password needed yet.
  echo "CREATE DATABASE crane;" | as_owner "$bindir/postgres" --single -D "$dir/data" postgres >>"$dir/initdb.log" 2>&1 || {
    cat "$dir/initdb.log" >&2; exit 1; }
}

url() {
  echo "postgres://crane:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/crane"
}

# Server settings: loopback only, the socket in DIR, fsync off (test data; a crash of the
# machine may lose it, a crash of the server does not), small memory.
server_opts() {
  echo -p "$1" -k "$dir" -c listen_addresses=127.0.0.1 -c fsync=off \
    -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB -c max_connections=100
}

running() { [ -f "$dir/data/postmaster.pid" ] && as_owner "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; }

case "$cmd" in
  init) init ;;
  run)
    port=${3:?usage: postgres.sh run DIR PORT}
    init
    dir=$(cd "$dir" && pwd)
    echo "$port" >"$dir/port"
    # exec: the caller's process id becomes the server's, so killing it kills PostgreSQL.
    # shellcheck disable=SC2046
    if [ "$(id -u)" -eq 0 ]; then
      exec setpriv --reuid="$(owner)" --regid="$(id -g "$(owner)")" --init-groups -- \
        "$bindir/postgres" -D "$dir/data" $(server_opts "$port")
    fi
    # shellcheck disable=SC2046
    exec "$bindir/postgres" -D "$dir/data" $(server_opts "$port")
    ;;
  start)
    init
    dir=$(cd "$dir" && pwd)
    if running; then url | sed 's/^/export CRANE_ARCHIVE_URL=/'; exit 0; fi
    port=${3:-}
    [ -z "$port" ] && [ -f "$dir/port" ] && port=$(cat "$dir/port")
    if [ -z "$port" ] || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then port=$(free_port); fi
    echo "$port" >"$dir/port"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 \
      -o "$(server_opts "$port")" start >/dev/null || {
        tail -n 20 "$dir/postgres.log" >&2; exit 1; }
    url | sed 's/^/export CRANE_ARCHIVE_URL=/'
    ;;
  stop)
    [ -d "$dir/data" ] || exit 0
    if running; then as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null; fi
    ;;
  url) url ;;
  status) running ;;
  ready) [ -f "$dir/port" ] && "$bindir/pg_isready" -q -h 127.0.0.1 -p "$(cat "$dir/port")" ;;
  *) echo "postgres.sh: unknown command $cmd" >&2; exit 2 ;;
esac

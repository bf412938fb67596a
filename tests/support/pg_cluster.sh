#!/usr/bin/env bash
# tests/support/pg_cluster.sh: a throwaway PostgreSQL cluster for the tests and benchmarks.
#
#   pg_cluster.sh start DIR              initdb into DIR/data (first time), start the server
#   pg_cluster.sh stop DIR [--immediate] stop it (--immediate: a crash, WAL replay at start)
#   pg_cluster.sh destroy DIR            stop it and remove DIR
#   pg_cluster.sh url DIR [SCHEMA]       print certmint's store URL (search_path SCHEMA)
#   pg_cluster.sh psql DIR [ARGS...]     psql on the cluster's database
#
# The server listens on a Unix socket in DIR and on 127.0.0.1 at a free port, for the database
# "certmint" owned by the superuser "certmint". Authentication is scram-sha-256 with a random
# password kept in DIR/pgpass (0600), so that certmint's URL carries a passfile, never a
# password. initdb and postgres refuse to run as root: as root (CI) the cluster runs as the
# unprivileged user $CM_PG_USER (default nobody) through setpriv, DIR is made traversable for
# it, and root connects through the socket like anyone. DIR/env has PGHOST, PGPORT, PGUSER,
# PGDATABASE, PGPASSFILE and CM_PG_URL for shell scripts. Fsync stays on (the default).
set -euo pipefail

die() { echo "pg_cluster.sh: $*" >&2; exit 1; }

pg_bin() {
  if [ -n "${CM_PG_BIN:-}" ]; then echo "$CM_PG_BIN"; return; fi
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then echo "$d"; return; fi
  done
  die "no PostgreSQL server found: apt-get install postgresql-15 (or run tools/install-deps.sh)"
}

# as_owner CMD...: run as the cluster's owner (nobody when we are root).
as_owner() {
  if [ "$(id -u)" -eq 0 ]; then
    local u="${CM_PG_USER:-nobody}"
    setpriv --reuid="$u" --regid="$(id -g "$u")" --clear-groups env HOME="$DIR" "$@"
  else
    "$@"
  fi
}

cmd="${1:-}"
DIR="${2:-}"
[ -n "$cmd" ] && [ -n "$DIR" ] || { sed -n '2,16p' "$0" >&2; exit 2; }
BIN="$(pg_bin)"

start() {
  mkdir -p "$DIR"
  DIR="$(cd "$DIR" && pwd)"
  [ ${#DIR} -le 90 ] || die "$DIR is too long for a Unix socket path"
  if [ "$(id -u)" -eq 0 ]; then
    local u="${CM_PG_USER:-nobody}"
    chmod 0755 "$DIR"
    as_owner test -x "$DIR" || die "$DIR is not reachable for $u (a parent folder is private)"
  fi
  if [ ! -f "$DIR/data/PG_VERSION" ]; then
    rm -rf "$DIR/data"
    mkdir -m 0700 "$DIR/data"
    local pw
    pw="$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
    (umask 077; printf '%s\n' "$pw" >"$DIR/pwfile"
     printf '*:*:*:certmint:%s\n' "$pw" >"$DIR/pgpass")
    if [ "$(id -u)" -eq 0 ]; then
      chown "${CM_PG_USER:-nobody}" "$DIR/data" "$DIR/pwfile"
    fi
    as_owner "$BIN/initdb" -D "$DIR/data" -U certmint --pwfile="$DIR/pwfile" \
      --auth=scram-sha-256 -E UTF8 --locale=C >"$DIR/initdb.log" 2>&1 \
      || { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    rm -f "$DIR/pwfile"
  fi
  if [ "$(id -u)" -eq 0 ]; then
    chown "${CM_PG_USER:-nobody}" "$DIR"
  fi
  local port="" try
  for try in 1 2 3 4 5 6 7 8; do
    # A restart keeps the port, so that URLs handed out stay valid.
    if [ "$try" = 1 ] && [ -f "$DIR/port" ]; then
      port="$(cat "$DIR/port")"
    else
      port=$((10000 + (RANDOM * 32768 + RANDOM) % 22000)) # below the ephemeral range
      [ -e "$DIR/.s.PGSQL.$port" ] && continue
    fi
    if as_owner "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t 60 \
         -o "-k $DIR -p $port -c listen_addresses=127.0.0.1 -c max_connections=200" \
         start >/dev/null 2>&1; then
      break
    fi
    port=""
    # A taken port fails the start; anything else is in the log.
    grep -q "could not bind\|Address already in use" "$DIR/postgres.log" 2>/dev/null \
      || { tail -20 "$DIR/postgres.log" >&2 || true; die "postgres did not start"; }
  done
  [ -n "$port" ] || die "no free port found"
  echo "$port" >"$DIR/port"
  export PGPASSFILE="$DIR/pgpass"
  if ! "$BIN/psql" -h "$DIR" -p "$port" -U certmint -d postgres -Atqc \
       "SELECT 1 FROM pg_database WHERE datname = 'certmint'" | grep -q 1; then
    "$BIN/psql" -h "$DIR" -p "$port" -U certmint -d postgres -qc "CREATE DATABASE certmint" \
      >/dev/null
  fi
  cat >"$DIR/env" <<EOF
PGHOST=$DIR
PGPORT=$port
PGUSER=certmint
PGDATABASE=certmint
PGPASSFILE=$DIR/pgpass
CM_PG_URL=$(url)
EOF
}

stop() {
  [ -f "$DIR/data/PG_VERSION" ] || return 0
  local mode=fast
  [ "${1:-}" = "--immediate" ] && mode=immediate
  if [ -f "$DIR/data/postmaster.pid" ]; then
    as_owner "$BIN/pg_ctl" -D "$DIR/data" -m "$mode" -w -t 60 stop >/dev/null 2>&1 || true
  fi
}

url() {
  local port schema="${1:-}"
  port="$(cat "$DIR/port")"
  local u="postgresql://certmint@/certmint?host=$DIR&port=$port&passfile=$DIR/pgpass"
  [ -z "$schema" ] || u="$u&options=-csearch_path%3D$schema"
  echo "$u"
}

case "$cmd" in
  start) start ;;
  stop) stop "${3:-}" ;;
  destroy) stop; rm -rf "$DIR" ;;
  url) DIR="$(cd "$DIR" && pwd)"; url "${3:-}" ;;
  psql)
    DIR="$(cd "$DIR" && pwd)"
    shift 2
    PGPASSFILE="$DIR/pgpass" exec "$BIN/psql" -h "$DIR" -p "$(cat "$DIR/port")" -U certmint \
      -d certmint -X "$@" ;;
  *) die "unknown command $cmd" ;;
esac

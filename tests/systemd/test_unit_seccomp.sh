#!/usr/bin/env bash
# tests/systemd/test_unit_seccomp.sh UNIT CERTMINTD CERTMINT SRC_DIR [SECCOMP_RUN]
# certmintd under the seccomp filter its systemd unit asks for (SystemCallFilter=,
# RestrictAddressFamilies=, MemoryDenyWriteExecute=: tests/systemd/unit_filter.py derives them,
# seccomp_run applies them and executes certmintd), outside systemd: `certmintd --check` (the
# unit's ExecStartPre) passes, the daemon answers /healthz and enrols a device with
# `openssl cmp`, and stops cleanly on SIGTERM. The same filter without io_uring's three calls
# must kill it, which shows the test notices a filter that breaks the event loops. As root the
# daemon runs as `nobody`, as the unit runs it as `certmint` (a root process would take paths,
# such as SQLite's fchown of its journal, that the service never takes).
set -uo pipefail
unit=$1
certmintd=$(realpath "$2")
certmint=$(realpath "$3")
src=$4
seccomp_run=${5:-}
if [ -z "$seccomp_run" ]; then
  echo "SKIP: seccomp_run not built (apt-get install libseccomp-dev, then reconfigure)"; exit 77
fi
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze not found (apt-get install systemd)"; exit 77
fi
seccomp_run=$(realpath "$seccomp_run")
work=$(mktemp -d /tmp/certmint-seccomp-XXXXXX)
pid=""
lpid=""
fails=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ -n "$lpid" ] && kill -0 "$lpid" 2>/dev/null; then kill "$lpid"; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

as_user=()
if [ "$(id -u)" -eq 0 ]; then
  chown nobody "$work"
  # setpriv execs (runuser would stay as the parent and take the SIGTERM).
  as_user=(setpriv --reuid=nobody --regid=nogroup --clear-groups --)
fi
python3 "$src/unit_filter.py" "$unit" "$work/filter" || { fail "unit_filter.py"; exit 1; }
python3 "$src/unit_filter.py" "$unit" "$work/noring" --without io_uring_setup io_uring_enter \
  io_uring_register >/dev/null || { fail "unit_filter.py --without"; exit 1; }
grep -qx io_uring_setup "$work/filter.syscalls" && ok "the unit allows io_uring_setup" ||
  fail "the unit's filter lacks io_uring_setup"
families=$(cat "$work/filter.families")
# filter_cmd PREFIX: sets cmd to the command line that runs a program under the filter PREFIX
# as the service's user (a chain of execs, so $! of "${cmd[@]}" PROG & is PROG itself).
filter_cmd() {
  local f=$1
  cmd=("${as_user[@]}" env ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0")
  # (LeakSanitizer stops the world with ptrace, which no service filter allows.)
  cmd+=($(cat "$work/inst/env") "$seccomp_run" --syscalls "$f.syscalls")
  [ -n "$families" ] && cmd+=(--families "$families")
  [ "$(cat "$f.mdwe")" = yes ] && cmd+=(--mdwe)
  cmd+=(--)
}

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"${as_user[@]}" "$certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 ||
  { cat "$work/init.log"; fail "certmint init"; exit 1; }
ok "certmint init"

filter_cmd "$work/filter"
if "${cmd[@]}" "$certmintd" -c "$work/inst/certmint.cnf" --check >"$work/check.log" 2>&1; then ok "certmintd --check under the filter"
else cat "$work/check.log"; fail "certmintd --check under the filter"; fi

# With sd_notify on, as under systemd: the notification socket must work through the filter.
python3 "$src/notify_listen.py" "$work/notify.sock" "$work/notes.txt" >"$work/listen.out" &
lpid=$!
for _ in $(seq 1 100); do grep -q listening "$work/listen.out" 2>/dev/null && break; sleep 0.05; done
NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=400000 \
  "${cmd[@]}" "$certmintd" -c "$work/inst/certmint.cnf" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then ok "healthz under the filter"
else tail -5 "$work/daemon.log"; fail "certmintd under the filter does not answer"; fi
cd "$work"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null
if openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp -ref demo-device -mac hmacWithSHA256 \
     -secret "file:inst/secrets/demo-device" -newkey dev.key -subject /CN=seccomp-dev \
     -trusted inst/ca.pem -certout dev.pem >cmp.log 2>&1 &&
   openssl verify -CAfile inst/ca.pem dev.pem >/dev/null 2>&1; then
  ok "openssl cmp ir enrolled a device through the filtered daemon"
else cat cmp.log; fail "openssl cmp ir under the filter"; fi
for _ in $(seq 1 60); do grep -q 'WATCHDOG=1' "$work/notes.txt" 2>/dev/null && break; sleep 0.05; done
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"
  wait "$pid"; rc=$?
  pid=""
  [ "$rc" -eq 0 ] && ok "SIGTERM: exit 0" || { tail -5 "$work/daemon.log"; fail "exit $rc after SIGTERM"; }
else
  wait "$pid"; rc=$?; pid=""
  fail "certmintd died under the filter (status $rc; 159 = SIGSYS)"
fi
grep -q 'READY=1' "$work/notes.txt" && grep -q 'WATCHDOG=1' "$work/notes.txt" &&
  grep -q 'STOPPING=1' "$work/notes.txt" &&
  ok "READY=1, WATCHDOG=1 and STOPPING=1 came through the filter" ||
  fail "sd_notify under the filter: $(tr '\n' ' ' <"$work/notes.txt" | cut -c1-200)"

# The same filter without io_uring: the daemon must not survive.
filter_cmd "$work/noring"
"${cmd[@]}" "$certmintd" -c "$work/inst/certmint.cnf" >"$work/noring.log" 2>&1 &
pid=$!
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  fail "certmintd kept running without io_uring in its filter"
else
  wait "$pid"; rc=$?; pid=""
  [ "$rc" -eq 159 ] && ok "without io_uring in the filter certmintd is killed (SIGSYS)" ||
    fail "without io_uring: status $rc, expected 159 (SIGSYS)"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "seccomp: all checks passed"

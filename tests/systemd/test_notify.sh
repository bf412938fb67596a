#!/usr/bin/env bash
# tests/systemd/test_notify.sh CERTMINTD CERTMINT SRC_DIR
# certmintd's sd_notify, outside systemd: NOTIFY_SOCKET points at a datagram socket this test
# reads (notify_listen.py) and WATCHDOG_USEC asks for a 600 ms watchdog.
#   - READY=1 comes once it serves: /healthz answers at the first try right after it;
#   - STATUS= lines carry the enrolment rate and the HSM sessions, and count an enrolment;
#   - WATCHDOG=1 comes about every 300 ms while the loops turn;
#   - SIGTERM: STOPPING=1, no WATCHDOG=1 after it, exit 0;
#   - a NOTIFY_SOCKET nobody listens on changes nothing: certmintd serves all the same.
# (A loop that stops turning is tested in the front suite: test_front_watchdog_probe_*.)
set -uo pipefail
certmintd=$1
certmint=$2
src=$3
work=$(mktemp -d /tmp/certmint-notify-XXXXXX)
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
# wait_for PATTERN SECONDS: until a line of notes.txt matches.
wait_for() {
  local i
  for i in $(seq 1 $(( $2 * 20 ))); do
    grep -q -- "$1" "$work/notes.txt" 2>/dev/null && return 0
    sleep 0.05
  done
  return 1
}

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 ||
  { cat "$work/init.log"; fail "certmint init"; exit 1; }
python3 "$src/notify_listen.py" "$work/notify.sock" "$work/notes.txt" >"$work/listen.out" &
lpid=$!
for _ in $(seq 1 100); do grep -q listening "$work/listen.out" 2>/dev/null && break; sleep 0.05; done
touch "$work/notes.txt"

env $(cat "$work/inst/env") NOTIFY_SOCKET="$work/notify.sock" WATCHDOG_USEC=600000 \
  "$certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon.log" >/dev/null 2>&1 &
pid=$!
if wait_for 'READY=1' 30; then
  if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null; then
    ok "READY=1, and /healthz answers at the first try"
  else fail "READY=1 came before /healthz answers"; fi
else tail -5 "$work/daemon.log"; fail "no READY=1"; fi
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/dev.key" 2>/dev/null
openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp -ref demo-device -mac hmacWithSHA256 \
  -secret "file:$work/inst/secrets/demo-device" -newkey "$work/dev.key" -subject /CN=notify \
  -trusted "$work/inst/ca.pem" -implicit_confirm -certout "$work/dev.pem" >"$work/cmp.log" 2>&1 ||
  { cat "$work/cmp.log"; fail "openssl cmp ir"; }
if wait_for 'STATUS=.* enrolments/s, [0-9]* HSM sessions .*, 1 enrolments and' 10; then
  ok "STATUS=: $(grep -o 'STATUS=.*enrolments/s, [0-9]* HSM sessions.*, 1 enrolments.*' "$work/notes.txt" | tail -1 | cut -c1-90)"
else grep STATUS "$work/notes.txt" | tail -2; fail "no STATUS= line counting the enrolment"; fi
t0=$(grep -c 'WATCHDOG=1' "$work/notes.txt")
sleep 2
t1=$(grep -c 'WATCHDOG=1' "$work/notes.txt")
[ $(( t1 - t0 )) -ge 4 ] && ok "WATCHDOG=1 $(( t1 - t0 )) times in 2 s (600 ms watchdog)" ||
  fail "WATCHDOG=1 only $(( t1 - t0 )) times in 2 s"
kill -TERM "$pid"
wait "$pid"; rc=$?
pid=""
[ "$rc" -eq 0 ] && ok "SIGTERM: exit 0" || fail "exit $rc after SIGTERM"
if wait_for 'STOPPING=1' 2; then
  after=$(awk '/STOPPING=1/ {s=1; next} s && /WATCHDOG=1/ {n++} END {print n+0}' "$work/notes.txt")
  [ "$after" -eq 0 ] && ok "STOPPING=1, then no WATCHDOG=1" || fail "$after WATCHDOG=1 after STOPPING=1"
else fail "no STOPPING=1 on SIGTERM"; fi

# Nobody listening: sd_notify fails quietly, the daemon serves.
env $(cat "$work/inst/env") NOTIFY_SOCKET="$work/nobody.sock" WATCHDOG_USEC=600000 \
  "$certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon2.log" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && ok "no listener on NOTIFY_SOCKET: serves anyway" ||
  fail "certmintd does not serve when NOTIFY_SOCKET has no listener"
kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ "$rc" -eq 0 ] || fail "exit $rc after SIGTERM (no listener)"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "notify: all checks passed"

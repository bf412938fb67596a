#!/usr/bin/env bash
# tests/integration/test_poll.sh CERTMINTD CERTMINT [CERTMINT-BENCH]
# Delayed delivery and manual approval (issue 16) end to end: a throwaway instance (certmint
# init) whose profile has approval = manual, a real certmintd, and the real `openssl cmp`, which
# polls by itself after a `waiting` answer (pollReq, pollRep with checkAfter). While the client
# polls, `certmint pending` lists the request and `certmint approve` or `reject` decides it:
# ir, cr (signed by the first certificate), kur and p10cr (certReqId -1) approved and
# delivered, with certConf and with implicitConfirm; an ir rejected with the operator's reason;
# an ir nobody decides rejected after waiting_timeout; the daemon restarted while a request
# waits (its state is in the store), the request approved and collected afterwards; and
# certmint-bench, which polls too, approved while it runs.
set -uo pipefail
certmintd=$(realpath "$1")
certmint=$(realpath "$2")
bench=${3:+$(realpath "$3")}
work=$(mktemp -d /tmp/certmint-poll-XXXXXX)
pid=""
fails=0
passes=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" --subject "/O=certmint poll/CN=poll Root CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "certmint init"; exit 1; }
conf=$work/inst/certmint.cnf
# Every request waits for an operator; the client polls every second; a request nobody decides
# is rejected after 10 s.
sed -i 's/^\[certmintd\]$/[certmintd]\napproval_check_after = 1\nwaiting_timeout = 10/;
        s/^extensions = devices_ext$/extensions = devices_ext\napproval = manual/' "$conf"
grep -q "^approval = manual" "$conf" && ok "the profile needs approval" || fail "config edit"
export $(cat "$work/inst/env")
cd "$work"
start() {
  "$certmintd" -c "$conf" >>"$work/daemon.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  fail "certmintd did not start"; tail -5 "$work/daemon.log"; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid"; pid=""; }
start

srv=(-server "127.0.0.1:$port" -path /.well-known/cmp -trusted inst/ca.pem -total_timeout 60)
mac=(-mac hmacWithSHA256 -ref demo-device -secret file:inst/secrets/demo-device)
newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
# client NAME CMD OPTIONS...: openssl cmp -cmd CMD in the background, log NAME.log, exit code in
# NAME.rc once it ended.
client() {
  local name=$1 cmd=$2; shift 2
  rm -f "$name.rc"
  (openssl cmp -cmd "$cmd" "${srv[@]}" "$@" >"$name.log" 2>&1; echo $? >"$name.rc") &
}
# wait_pending CN: the `certmint pending` line of the request for CN (10 s at most).
wait_pending() {
  for _ in $(seq 1 100); do
    "$certmint" pending -c "$conf" --state approval | grep " CN=$1 " && return 0
    sleep 0.1
  done
  return 1
}
# wait_rc NAME: the background client's exit code (40 s at most).
wait_rc() {
  for _ in $(seq 1 400); do [ -e "$1.rc" ] && { cat "$1.rc"; return; }; sleep 0.1; done
  echo timeout
}
# decide NAME CN approve|reject [--reason TEXT]: waits for the request, lets the client poll
# twice, decides, and waits for the client.
decide() {
  local name=$1 cn=$2 how=$3; shift 3
  local line
  if ! line=$(wait_pending "$cn"); then fail "$name: not pending"; tail -5 "$name.log"; return; fi
  ok "$name: pending ($line)"
  sleep 2
  if "$certmint" "$how" -c "$conf" "${line%% *}" "$@" >>"$work/tool.log" 2>&1; then
    ok "  $how ${line%% *}"
  else fail "  $how ${line%% *}"; tail -3 "$work/tool.log"; fi
  rc=$(wait_rc "$name")
}
polled() { # polled NAME: the client was answered waiting and polled before its answer came
  grep -q "received 'waiting' PKIStatus" "$1.log" && grep -q "received POLLREP" "$1.log" \
    && grep -q "after polling" "$1.log" && ok "  $1 waited and polled" \
    || { fail "  $1 did not poll"; tail -5 "$1.log"; }
}
issued() { # issued NAME RC KEY: the client ended RC 0 with a certificate for KEY from this CA
  if [ "$2" = 0 ] && openssl verify -CAfile inst/ca.pem "$1.pem" >/dev/null 2>&1 &&
     [ "$(openssl x509 -in "$1.pem" -noout -pubkey)" = "$(openssl pkey -in "$3" -pubout)" ]; then
    ok "  $1: certificate issued and verified"
  else fail "  $1: exit $2"; tail -5 "$1.log"; fi
}
status_of() { # status_of CN: the store status `certmint list` prints for CN
  "$certmint" list -c "$conf" --subject "CN=$1" | awk '{print $2}' | tail -1
}

# ir with certConf, approved.
newkey a.key
client a ir "${mac[@]}" -newkey a.key -subject /CN=poll-a -certout a.pem
decide a poll-a approve
issued a "$rc" a.key
polled a
grep -q "sending CERTCONF" a.log && ok "  certConf after the delivery" || fail "  no certConf"
[ "$(status_of poll-a)" = valid ] && ok "  confirmed: valid" || fail "  status $(status_of poll-a)"
# cr signed by that certificate, approved.
newkey b.key
client b cr -cert a.pem -key a.key -newkey b.key -subject /CN=poll-a -certout b.pem
decide b poll-a approve
issued b "$rc" b.key
polled b
# kur of the first certificate, approved; the requester is its signer.
newkey c.key
client c kur -cert a.pem -key a.key -newkey c.key -certout c.pem
decide c poll-a approve
issued c "$rc" c.key
polled c
# p10cr (its certReqId is -1) with implicitConfirm, approved.
newkey d.key
openssl req -new -key d.key -subj /CN=poll-d -out d.csr 2>/dev/null
client d p10cr "${mac[@]}" -csr d.csr -implicit_confirm -certout d.pem
decide d poll-d approve
issued d "$rc" d.key
polled d
grep -q "sending CERTCONF" d.log && fail "  certConf despite implicitConfirm" || ok "  implicitConfirm: no certConf"
[ "$(status_of poll-d)" = valid ] && ok "  valid at once" || fail "  status $(status_of poll-d)"
# ir rejected with a reason.
newkey e.key
client e ir "${mac[@]}" -newkey e.key -subject /CN=poll-e -certout e.pem
decide e poll-e reject --reason "unknown device"
[ "$rc" != 0 ] && ok "  e: the client fails" || fail "  e: exit 0"
grep -q 'PKIFailureInfo: notAuthorized; StatusString: "rejected by the CA operator: unknown device"' \
  e.log && ok "  e: notAuthorized with the operator's reason" || { fail "  e: rejection"; tail -3 e.log; }
polled e
[ ! -e e.pem ] && ok "  e: no certificate" || fail "  e: a certificate"
[ -z "$(status_of poll-e)" ] && ok "  e: nothing in the store" || fail "  e: $(status_of poll-e)"
# ir nobody decides: rejected after waiting_timeout (10 s) by the daemon's maintenance.
newkey f.key
client f ir "${mac[@]}" -newkey f.key -subject /CN=poll-f -certout f.pem
rc=$(wait_rc f)
[ "$rc" != 0 ] && [ "$rc" != timeout ] && ok "f: the client gives up after the rejection" \
  || fail "f: exit $rc"
grep -q 'PKIFailureInfo: systemUnavail.*waiting_timeout' f.log \
  && ok "  f: systemUnavail, waited longer than waiting_timeout" || { fail "  f: rejection"; tail -3 f.log; }
# The state is in the store: a request that waits survives a restart of the daemon. The client
# is stopped (SIGSTOP) while the daemon restarts, so none of its polls meets a closed port, and
# runs on afterwards: its next pollReq (a new connection: -keep_alive 0) reaches the new process,
# which answers from the store; once approved there the client collects its certificate.
newkey g.key
client g ir "${mac[@]}" -keep_alive 0 -newkey g.key -subject /CN=poll-g -certout g.pem
sub=$!
if line=$(wait_pending poll-g); then ok "g: pending before the restart"; else fail "g: not pending"; fi
gpid=$(ps -o pid= --ppid "$sub" | tr -d ' ')
kill -STOP "$gpid"
stop
start
if "$certmint" pending -c "$conf" | grep -q "^${line%% *}  approval .* CN=poll-g "; then
  ok "  still pending after the restart"; else fail "  lost in the restart"; fi
kill -CONT "$gpid"
sleep 2
if "$certmint" approve -c "$conf" "${line%% *}" >>"$work/tool.log" 2>&1; then ok "  approved"
else fail "  approve"; fi
rc=$(wait_rc g)
issued g "$rc" g.key
polled g

# certmint-bench polls for the answers of waiting requests (and counts the polls); an operator
# approves whatever waits meanwhile.
if [ -n "$bench" ]; then
  (for _ in $(seq 1 100); do
     "$certmint" pending -c "$conf" --state approval | cut -d' ' -f1 | while read -r id; do
       "$certmint" approve -c "$conf" "$id" >/dev/null 2>&1
     done
     sleep 0.3
   done) &
  approver=$!
  if "$bench" --url "http://127.0.0.1:$port/.well-known/cmp" \
    --secret "demo-device:$(cat inst/secrets/demo-device)" -n 4 --connections 2 \
    --flow ir-confirm --ca inst/ca.pem --json bench.json >bench.out 2>&1; then
    ok "certmint-bench: 4 enrolments approved while it polled"
  else fail "certmint-bench"; tail -8 bench.out; fi
  kill "$approver" 2>/dev/null; wait "$approver" 2>/dev/null
  python3 - bench.json <<'PY' && ok "  4 ok, each answered waiting, polls counted" \
    || { fail "  bench JSON"; cat bench.json; }
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] == 4 and r["failed"] == 0 and r["waiting"] == 4 and r["polls"] >= 4, r
PY
fi
stop

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/env bash
# tests/integration/test_scaleout.sh CERTMINTD CERTMINT CERTMINT-BENCH
# Two certmintd nodes on two loopback ports sharing one throwaway PostgreSQL database
# (tests/support/pg_cluster.sh) and one SoftHSM token folder, behind HAProxy (round robin,
# option httpchk GET /healthz, run by this test as an unprivileged process on loopback, the
# configuration README "Scale-out" shows): an `openssl cmp` ir through the balancer whose
# certConf lands on the other node (both nodes' logs); rr on one node and the revoked signer
# refused on the other; each CRL issued once, by the node holding the leader lock; `kill -9`
# of the leader under load from certmint-bench: the balancer moves the traffic, the other
# node takes the leader lock, and every certificate any client received is in the database;
# the killed node restarts and rejoins. About a minute under ASan.
set -uo pipefail
certmintd=$(realpath "$1")
certmint=$(realpath "$2")
bench=$(realpath "$3")
here=$(dirname "$(realpath "$0")")
cluster=$here/../support/pg_cluster.sh
work=$(mktemp -d /tmp/certmint-scaleout-XXXXXX)
chmod 711 "$work" # the cluster's and HAProxy's user (nobody, when we are root) reach into it
pg=$work/pg
pids=(0 0 0) # node1, node2, haproxy
fails=0
passes=0
cleanup() {
  for p in "${pids[@]}"; do
    if [ "$p" != 0 ] && kill -0 "$p" 2>/dev/null; then kill -KILL "$p"; fi
  done
  "$cluster" destroy "$pg" >/dev/null 2>&1
  if [ "$fails" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
die()  { fail "$*"; exit 1; }
. "$(dirname "$0")/../support/free_port.sh"
command -v haproxy >/dev/null || die "haproxy not found: apt-get install haproxy (tools/install-deps.sh)"
p1=$(free_port); p2=$(free_port); pb=$(free_port); ps=$(free_port)
ports=(0 "$p1" "$p2")

# --- the instance, the database, the two nodes -------------------------------------------------
inst=$work/inst
conf=$inst/certmint.cnf
"$certmint" init --dir "$inst" --port "$p1" --subject "/O=certmint scale-out/CN=scale-out CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; die "certmint init"; }
"$cluster" start "$pg" >"$work/pg.log" 2>&1 || { cat "$work/pg.log"; die "PostgreSQL cluster"; }
ok "instance and PostgreSQL cluster"
pgport=$(cat "$pg/port")
psql_() { "$cluster" psql "$pg" -Atq "$@"; }
# The shared store (the password stays in the cluster's passfile); CRLs as soon as revocations
# happen (at most one a second).
sed -i "s|^store = .*|store = postgresql://certmint@/certmint?host=$pg\&port=$pgport\nstore_passfile = $pg/pgpass|" "$conf"
sed -i 's/^caPubs = on/caPubs = on\ncrl_min_interval = 1/' "$conf"
# certmint-bench draws its device keys from a pool: this CA may certify a key again.
sed -i 's/^\[profile:devices\]/[profile:devices]\nallow_key_reuse = on/' "$conf"
export $(cat "$inst/env") # both nodes: the same SOFTHSM2_CONF, so the same token folder

start_node() { # start_node N: certmintd on 127.0.0.1:${ports[N]}, log in node-N.log
  local n=$1
  "$certmintd" -c "$conf" --listen "127.0.0.1:${ports[$n]}" --log "$work/node-$n.log" \
    >>"$work/node-$n.out" 2>&1 &
  pids[$((n - 1))]=$!
}
wait_health() { # wait_health PORT WANT_CODE
  local code=""
  for _ in $(seq 1 100); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz")
    [ "$code" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
# One after the other: SoftHSM2 can miss its token when two processes open the token folder
# at the same instant (a network HSM has no such folder). The first creates the schema.
start_node 1
wait_health "$p1" 200 && ok "node 1 healthy on $p1" || die "node 1 did not start"
start_node 2
wait_health "$p2" 200 && ok "node 2 healthy on $p2" || die "node 2 did not start"
[ "$(psql_ -c "SELECT value FROM certmint_meta WHERE name = 'schema_version'")" = 4 ] \
  && ok "  one schema, version 4" || fail "  schema version"

# --- HAProxy ----------------------------------------------------------------------------------
# tests/integration/haproxy.cfg.in is the configuration of README "Scale-out", with ports here.
sed -e "s/@BALANCER@/127.0.0.1:$pb/" -e "s/@STATS@/127.0.0.1:$ps/" \
    -e "s/@NODE1@/127.0.0.1:$p1/" -e "s/@NODE2@/127.0.0.1:$p2/" \
    "$here/haproxy.cfg.in" >"$work/haproxy.cfg"
chmod 644 "$work/haproxy.cfg"
# README "Scale-out" shows this very file (its body after the leading comment lines).
python3 - "$here/../../README.md" "$here/haproxy.cfg.in" <<'PY' && ok "README shows the HAProxy configuration the test uses" || fail "README's HAProxy example differs from tests/integration/haproxy.cfg.in"
import re, sys
readme = open(sys.argv[1]).read()
cfg = open(sys.argv[2]).read().splitlines(True)
while cfg and cfg[0].startswith("#"):
    cfg.pop(0)
m = re.search(r"## Scale-out\n.*?```haproxy\n(.*?)```", readme, re.S)
sys.exit(0 if m and m.group(1) == "".join(cfg) else 1)
PY
haproxy -c -f "$work/haproxy.cfg" >"$work/haproxy-check.log" 2>&1 \
  && ok "haproxy -c accepts the configuration" || { cat "$work/haproxy-check.log"; die "haproxy -c"; }
if [ "$(id -u)" -eq 0 ]; then
  setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
    haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
else
  haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
fi
pids[2]=$!
# state NODE: HAProxy's view of a server (UP, DOWN, ...) from its CSV statistics.
state() {
  curl -s "http://127.0.0.1:$ps/stats;csv" | awk -F, -v s="$1" '$1 == "certmint" && $2 == s {print $18}'
}
wait_state() { # wait_state NODE WANT [TRIES of 0.1 s]
  for _ in $(seq 1 "${3:-100}"); do
    [ "$(state "$1")" = "$2" ] && return 0
    sleep 0.1
  done
  return 1
}
wait_state node1 UP && wait_state node2 UP && ok "HAProxy sees both nodes UP" \
  || die "HAProxy: node1 $(state node1), node2 $(state node2)"
[ "$(ps -o user= -p "${pids[2]}")" != root ] && ok "  HAProxy runs unprivileged" \
  || fail "  HAProxy runs as root"

cd "$work"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out new.key 2>/dev/null
mac=(-ref demo-device -secret file:inst/secrets/demo-device -mac hmacWithSHA256)
via() { echo "-server 127.0.0.1:$1 -path /.well-known/cmp -trusted inst/ca.pem"; }
lines() { grep -c "$2" "$work/node-$1.log" 2>/dev/null || true; }

# --- ir through the balancer, certConf on the other node -------------------------------------
landed=""
for try in 1 2 3 4; do
  i1=$(lines 1 "body=ir outcome=ok"); i2=$(lines 2 "body=ir outcome=ok")
  c1=$(lines 1 "body=certConf outcome=ok"); c2=$(lines 2 "body=certConf outcome=ok")
  # shellcheck disable=SC2046
  openssl cmp -cmd ir $(via "$pb") "${mac[@]}" -newkey dev.key -subject "/CN=split-$try" \
    -certout "split-$try.pem" >>"$work/cmp.log" 2>&1 || { fail "ir through the balancer"; break; }
  di1=$(( $(lines 1 "body=ir outcome=ok") - i1 )); di2=$(( $(lines 2 "body=ir outcome=ok") - i2 ))
  dc1=$(( $(lines 1 "body=certConf outcome=ok") - c1 )); dc2=$(( $(lines 2 "body=certConf outcome=ok") - c2 ))
  if { [ "$di1" = 1 ] && [ "$dc2" = 1 ]; } || { [ "$di2" = 1 ] && [ "$dc1" = 1 ]; }; then
    landed="ir on node $([ "$di1" = 1 ] && echo 1 || echo 2), certConf on node $([ "$dc1" = 1 ] && echo 1 || echo 2)"
    break
  fi
done
[ -n "$landed" ] && ok "ir + certConf through the balancer: $landed" \
  || fail "the ir and its certConf never landed on different nodes"
st=$(psql_ -c "SELECT status FROM cert WHERE subject_text = 'CN=split-$try'")
[ "$st" = valid ] && ok "  the certificate is confirmed in the shared database" || fail "  status '$st'"

# --- rr on node 1, the revoked signer refused on node 2 ---------------------------------------
# shellcheck disable=SC2046
openssl cmp -cmd ir $(via "$pb") "${mac[@]}" -newkey dev.key -subject "/CN=revoked-signer" \
  -implicit_confirm -certout rs.pem >>"$work/cmp.log" 2>&1 && ok "enrol revoked-signer" \
  || fail "enrol revoked-signer"
# shellcheck disable=SC2046
openssl cmp -cmd kur $(via "$p2") -cert rs.pem -key dev.key -newkey new.key -implicit_confirm \
  -certout rs-kur0.pem >>"$work/cmp.log" 2>&1 && ok "  node 2 accepts it as a signer (kur)" \
  || fail "  kur on node 2 before the revocation"
# Node 2 authenticates the new certificate as a signer now, so its status is in node 2's cache
# when node 1 revokes it: the refusal below then needs node 1's announcement (LISTEN/NOTIFY).
# shellcheck disable=SC2046
openssl cmp -cmd genm $(via "$p2") -cert rs-kur0.pem -key new.key -infotype signKeyPairTypes \
  >>"$work/cmp.log" 2>&1 && ok "  node 2 authenticates the updated certificate (genm)" \
  || fail "  genm on node 2 signed by the updated certificate"
inv0=$(curl -s "http://127.0.0.1:$p2/metrics" | sed -n 's/^certmint_store_status_cache_invalidations_total //p')
numbers0=$(psql_ -c "SELECT coalesce(max(numbers_issued), 0) FROM crl_state")
# shellcheck disable=SC2046
openssl cmp -cmd rr $(via "$p1") -cert rs-kur0.pem -key new.key -oldcert rs-kur0.pem \
  -revreason 1 >>"$work/cmp.log" 2>&1 && ok "rr on node 1" || fail "rr on node 1"
rejected=$(lines 2 "body=kur outcome=rejected")
# shellcheck disable=SC2046
if openssl cmp -cmd kur $(via "$p2") -cert rs-kur0.pem -key new.key -newkey dev.key \
  -implicit_confirm -certout rs-kur1.pem >>"$work/cmp.log" 2>&1; then
  fail "node 2 accepted a signer node 1 revoked"
else
  ok "node 2 refuses the signer node 1 revoked"
fi
[ "$(lines 2 "body=kur outcome=rejected")" -gt "$rejected" ] && ok "  node 2 logged the refusal" \
  || fail "  no refusal in node 2's log"
inv1=$(curl -s "http://127.0.0.1:$p2/metrics" | sed -n 's/^certmint_store_status_cache_invalidations_total //p')
[ "${inv1:-0}" -gt "${inv0:-0}" ] && ok "  node 2 dropped the cached status on node 1's announcement ($inv0 -> $inv1)" \
  || fail "  node 2's status cache saw no invalidation ($inv0 -> $inv1)"

# --- each CRL once, by the leader --------------------------------------------------------------
leader=0
for n in 1 2; do grep -q "now holds the leader lock" "$work/node-$n.log" && leader=$n; done
[ "$leader" != 0 ] && ok "node $leader holds the leader lock" || fail "no node holds the leader lock"
other=$((3 - leader))
numbers=$numbers0
for _ in $(seq 1 80); do
  numbers=$(psql_ -c "SELECT coalesce(max(numbers_issued), 0) FROM crl_state")
  [ "$numbers" -gt "$numbers0" ] && break
  sleep 0.1
done
[ "$numbers" -gt "$numbers0" ] && ok "a CRL after the revocation (number $numbers)" \
  || fail "no CRL after the revocation"
sleep 3 # two more maintenance rounds: nothing more is due
issued_l=$(lines "$leader" "issued a CRL"); issued_o=$(lines "$other" "issued a CRL")
numbers=$(psql_ -c "SELECT coalesce(max(numbers_issued), 0) FROM crl_state")
[ "$issued_o" = 0 ] && ok "  node $other issued none" || fail "  node $other issued $issued_o CRLs"
[ "$issued_l" = "$numbers" ] && ok "  node $leader issued each of the $numbers numbers once" \
  || fail "  node $leader logged $issued_l CRLs for $numbers numbers"
for n in 1 2; do curl -sf "http://127.0.0.1:${ports[$n]}/crl/devices.crl" -o "crl-$n.der"; done
cmp -s crl-1.der crl-2.der && [ -s crl-1.der ] && ok "  both nodes serve that CRL" \
  || fail "  the nodes serve different CRLs"
openssl crl -inform DER -in crl-1.der -out crl.pem 2>/dev/null
openssl verify -crl_check -CAfile inst/ca.pem -CRLfile crl.pem rs-kur0.pem >verify.log 2>&1
grep -q "certificate revoked" verify.log && ok "  it lists the certificate node 1 revoked" \
  || fail "  the CRL does not list it: $(cat verify.log)"

# --- kill -9 of the leader under load ---------------------------------------------------------
secret=$(cat inst/secrets/demo-device)
b0=$(lines "$other" "body=ir outcome=ok")
"$bench" --url "http://127.0.0.1:$pb/.well-known/cmp" --secret "demo-device:$secret" \
  --flow ir-implicit --duration 8 --prepare 12000 --key-pool 16 --connections 8 --timeout 10 \
  --subject-template 'CN=load-%d' --save-serials "$work/received.txt" --json "$work/bench.json" \
  >"$work/bench.out" 2>&1 &
bpid=$!
for _ in $(seq 1 200); do # the load starts once the requests are prepared
  [ "$(lines "$other" "body=ir outcome=ok")" -gt $((b0 + 50)) ] && break
  sleep 0.1
done
sleep 2
at_kill=$(lines "$other" "body=ir outcome=ok")
kill -KILL "${pids[$((leader - 1))]}"
wait "${pids[$((leader - 1))]}" 2>/dev/null
pids[$((leader - 1))]=0
killed_at=$(date +%s)
ok "kill -9 node $leader (the leader) under load"
wait_state "node$leader" DOWN 60 && ok "  HAProxy marks node $leader DOWN" \
  || fail "  HAProxy: node $leader $(state "node$leader")"
took=""
for i in $(seq 1 100); do
  grep -q "now holds the leader lock" "$work/node-$other.log" && { took=$i; break; }
  sleep 0.1
done
[ -n "$took" ] && ok "  node $other takes the leader lock ($((took * 100)) ms after the kill was seen)" \
  || fail "  node $other never took the leader lock"
wait "$bpid"; brc=$?
# Exit 1: some transactions failed, as they may when their node dies under them (a reset
# connection; the bench's retry of a request the dead node had taken is refused with
# transactionIdInUse). None of those got a certificate.
[ "$brc" -le 1 ] && [ -s bench.json ] && ok "certmint-bench finished (exit $brc)" \
  || { fail "certmint-bench exit $brc"; tail -5 bench.out; }
grep -E "enrolments|errors" bench.out | sed 's/^/     | /'
grep -q "raise --prepare" bench.out && fail "  the load stopped early (raise --prepare)"
received=$(wc -l <received.txt)
okcount=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["ok"])' bench.json 2>/dev/null)
[ "$received" -gt 0 ] && [ "$received" = "${okcount:-x}" ] \
  && ok "  $received certificates received ($okcount successes)" \
  || fail "  received $received, successes ${okcount:-?}"
served_after=$(( $(lines "$other" "body=ir outcome=ok") - at_kill ))
[ "$served_after" -gt 0 ] && ok "  node $other served $served_after enrolments after the kill" \
  || fail "  node $other served nothing after the kill"
missing=$(psql_ -c "CREATE TEMP TABLE got (hex text)" -c "\\copy got FROM '$work/received.txt'" \
  -c "SELECT count(*) FROM got WHERE NOT EXISTS (SELECT 1 FROM cert WHERE ca = 'devices' AND upper(encode(serial, 'hex')) = got.hex)")
[ "$missing" = 0 ] && ok "  every certificate a client received is in the database" \
  || fail "  $missing received certificates are not in the database"
# transactionIdInUse: seen by the lookup before signing (SRV_E_TXN_IN_USE), or, when the dead
# node's transaction committed while this node signed, by the reservation itself
# (STORE_E_TXN_IN_USE, which waited for the other session and revoked what this node signed).
other_err=$(cat "$work"/node-*.log | grep "body=ir outcome=rejected" | grep -Evc "(SRV|STORE)_E_TXN_IN_USE")
[ "$other_err" = 0 ] && ok "  the refused enrolments were retries of requests the dead node took" \
  || { fail "  $other_err enrolments refused otherwise"; grep "body=ir outcome=rejected" "$work"/node-*.log | grep -Ev "(SRV|STORE)_E_TXN_IN_USE" | head -5; }
dup=$(sort received.txt | uniq -d | wc -l)
[ "$dup" = 0 ] && ok "  no serial received twice" || fail "  $dup serials received twice"

# --- the killed node restarts and rejoins -----------------------------------------------------
logged=$(wc -l <"$work/node-$leader.log")
start_node "$leader"
wait_health "${ports[$leader]}" 200 && ok "node $leader restarted" || fail "node $leader did not restart"
wait_state "node$leader" UP 100 && ok "  HAProxy marks it UP again" \
  || fail "  HAProxy: node $leader $(state "node$leader")"
before=$(lines "$leader" "outcome=ok")
for i in 1 2 3 4; do
  # shellcheck disable=SC2046
  openssl cmp -cmd ir $(via "$pb") "${mac[@]}" -newkey dev.key -subject "/CN=rejoin-$i" \
    -implicit_confirm -certout "rejoin-$i.pem" >>"$work/cmp.log" 2>&1 || fail "ir rejoin-$i"
done
[ "$(lines "$leader" "outcome=ok")" -gt "$before" ] && ok "  node $leader serves requests again" \
  || fail "  node $leader got none of four requests"
tail -n +$((logged + 1)) "$work/node-$leader.log" | grep -q "now holds the leader lock" \
  && fail "  node $leader took the lock back from a live leader" || ok "  node $other stays the leader"

for i in 0 1 2; do
  if [ "${pids[$i]}" != 0 ]; then kill -TERM "${pids[$i]}"; wait "${pids[$i]}" 2>/dev/null; pids[$i]=0; fi
done
echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

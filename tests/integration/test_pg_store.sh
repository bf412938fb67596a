#!/usr/bin/env bash
# tests/integration/test_pg_store.sh CERTMINTD CERTMINT
# An instance moved from SQLite to PostgreSQL and run there: certmintd on SQLite enrols with
# the real `openssl cmp`; `certmint store copy` moves the store into a throwaway PostgreSQL
# cluster (tests/support/pg_cluster.sh: its own folder, socket and port, the password in a
# passfile) and refuses a non-empty target without --force; the configuration then names the
# database (store = postgresql://..., store_passfile) and the admin tool's list, show, revoke
# and crl work on it; certmintd on PostgreSQL enrols and honours the tool's revocations; with
# the database server down, enrolments are refused with systemUnavail and no certificate goes
# out, and once it is back certmintd reconnects by itself.
set -uo pipefail
certmintd=$(realpath "$1")
certmint=$(realpath "$2")
cluster=$(dirname "$(realpath "$0")")/../support/pg_cluster.sh
work=$(mktemp -d /tmp/certmint-pgstore-XXXXXX)
chmod 711 "$work" # the cluster's owner (nobody, when we are root) must reach $work/pg
pg=$work/pg
pid=""
fails=0
passes=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  "$cluster" destroy "$pg" >/dev/null 2>&1
  if [ "$fails" -eq 0 ] && [ -z "${KEEP:-}" ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { passes=$((passes + 1)); echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
# run WHAT WANT_RC CMD...: stdout in $work/out, stderr in $work/err; checks the exit code.
run() {
  local what=$1 want=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$what (exit $rc)"; else
    fail "$what: exit $rc, want $want"; sed 's/^/     | /' "$work/out" "$work/err" | head -20; fi
}
has() { if grep -Eq -- "$3" "$work/$2"; then ok "  $1"; else
  fail "  $1: no /$3/ in $2"; sed 's/^/     | /' "$work/$2" | head -20; fi; }

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
inst=$work/inst
conf=$inst/certmint.cnf
cm() { "$certmint" "$@"; }
run "certmint init" 0 cm init --dir "$inst" --port "$port" --subject "/O=certmint pg/CN=pg Root CA"
run "start a PostgreSQL cluster" 0 "$cluster" start "$pg"
pgurl=$("$cluster" url "$pg")
pgport=$(cat "$pg/port")

start_daemon() {
  "$certmintd" -c "$conf" --log "$work/daemon.log" >>"$work/stdout.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  return 1
}
stop_daemon() { kill -TERM "$pid"; wait "$pid"; pid=""; }

export $(cat "$inst/env")
cd "$work"
srv=(-server "127.0.0.1:$port" -path /.well-known/cmp -trusted inst/ca.pem)
mac=(-ref demo-device -secret file:inst/secrets/demo-device -mac hmacWithSHA256)
# enrol CN [openssl cmp options]: a fresh key in CN.key (the CA certifies a key once), the
# certificate in CN.pem.
enrol() {
  local cn=$1; shift
  [ -s "$cn.key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 \
    -out "$cn.key" 2>/dev/null
  openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" -newkey "$cn.key" -subject "/CN=$cn" \
    -certout "$cn.pem" "$@" >"$work/cmp.log" 2>&1
}
serial() { openssl x509 -in "$1.pem" -noout -serial | cut -d= -f2; }

# --- on SQLite ----------------------------------------------------------------------------
start_daemon && ok "certmintd on SQLite" || fail "certmintd on SQLite did not start"
enrol lite-a && ok "enrol lite-a" || fail "enrol lite-a"
enrol lite-b -implicit_confirm && ok "enrol lite-b" || fail "enrol lite-b"
enrol lite-u -disable_confirm && ok "enrol lite-u (unconfirmed)" || fail "enrol lite-u"
stop_daemon
run "revoke lite-b on SQLite" 0 cm revoke -c "$conf" "$(serial lite-b)" --reason superseded
run "crl on SQLite" 0 cm crl -c "$conf" --out "$work/lite.crl"
run "list on SQLite" 0 cm list -c "$conf"
cp "$work/out" list-sqlite.txt

# --- store copy -----------------------------------------------------------------------------
run "store without an action" 2 cm store
run "store copy --help" 0 cm store copy --help
has "it explains --force" out "--force"
run "store copy without --to" 2 cm store copy --from "sqlite:$inst/certmint.db"
run "store copy onto itself" 2 cm store copy --from "sqlite:$inst/certmint.db" \
  --to "sqlite:$inst/certmint.db"
run "store copy to a URL with a password" 1 cm store copy --from "sqlite:$inst/certmint.db" \
  --to "postgresql://certmint:pw@/certmint?host=$pg&port=$pgport"
run "store copy to a server that is not there" 1 cm store copy \
  --from "sqlite:$inst/certmint.db" --to "postgresql://certmint@/certmint?host=$work&port=1"
has "  it says the store is unavailable" err "STORE_E_UNAVAILABLE"
run "store copy SQLite -> PostgreSQL" 0 cm store copy --from "sqlite:$inst/certmint.db" \
  --to "$pgurl"
has "  three certificates, counts verified" out \
  "copied 3 certificates \(1 valid, 1 unconfirmed, 1 revoked, 0 on hold\), [0-9]+ transactions and 1 CRL states into postgresql store; counts verified"
run "store copy into the filled target" 1 cm store copy --from "sqlite:$inst/certmint.db" \
  --to "$pgurl"
has "  it says what is there and what to do" err "already holds 3 certificates.*--force"
run "store copy --force" 0 cm store copy --from "sqlite:$inst/certmint.db" --to "$pgurl" --force
has "  the same counts" out "copied 3 certificates"
n=$("$cluster" psql "$pg" -Atc "SELECT count(*) FROM cert")
[ "$n" = 3 ] && ok "  3 rows in PostgreSQL" || fail "  $n rows in PostgreSQL"

# --- the instance on PostgreSQL -------------------------------------------------------------
# store and store_passfile: the password stays in the passfile.
sed -i "s|^store = .*|store = postgresql://certmint@/certmint?host=$pg\&port=$pgport\nstore_passfile = $pg/pgpass|" "$conf"
grep -q "^store_passfile" "$conf" && ok "config names the database" || fail "config edit"
run "certmintd --check on PostgreSQL" 0 "$certmintd" -c "$conf" --check
run "list on PostgreSQL" 0 cm list -c "$conf"
cmp -s "$work/out" list-sqlite.txt && ok "  the same listing as on SQLite" \
  || { fail "  listings differ"; diff list-sqlite.txt "$work/out"; }
run "show on PostgreSQL" 0 cm show -c "$conf" "$(serial lite-b)"
has "  revoked, with its reason" out "Reason: superseded"
run "revoke lite-a on PostgreSQL" 0 cm revoke -c "$conf" "$(serial lite-a)" --reason keyCompromise
run "revoke it again" 1 cm revoke -c "$conf" "$(serial lite-a)"
run "crl on PostgreSQL" 0 cm crl -c "$conf" --out "$work/pg.crl"
has "  2 entries, a newer number" out "CRL number [0-9]+, 2 entries"
openssl crl -inform DER -in "$work/pg.crl" -out pg.crl.pem
run "  openssl verify -crl_check: lite-a revoked" 2 openssl verify -crl_check \
  -CAfile inst/ca.pem -CRLfile pg.crl.pem lite-a.pem

start_daemon && ok "certmintd on PostgreSQL" || { fail "certmintd on PostgreSQL"; tail "$work/daemon.log"; }
enrol pg-a && ok "enrol pg-a (ir, certConf)" || { fail "enrol pg-a"; tail -5 cmp.log; }
openssl verify -CAfile inst/ca.pem pg-a.pem >/dev/null 2>&1 && ok "  pg-a verifies" \
  || fail "  pg-a does not verify"
st=$("$cluster" psql "$pg" -Atc "SELECT status FROM cert WHERE subject_text = 'CN=pg-a'")
[ "$st" = valid ] && ok "  confirmed in PostgreSQL" || fail "  pg-a status '$st'"
run "the tool revokes pg-a while certmintd runs" 0 cm revoke -c "$conf" "$(serial pg-a)"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out new.key 2>/dev/null
cp lite-a.key reuse.key
if enrol reuse -implicit_confirm; then fail "a key the CA certified before was certified again"
else ok "a key certified on SQLite is refused on PostgreSQL (the key-reuse rule's lookup)"; fi
if openssl cmp -cmd kur "${srv[@]}" -cert pg-a.pem -key pg-a.key -newkey new.key \
  -certout kur.pem >>"$work/cmp.log" 2>&1; then fail "kur with the revoked pg-a accepted"
else ok "kur with pg-a (revoked by the tool) refused"; fi

# --- the database goes away and comes back --------------------------------------------------
before=$("$cluster" psql "$pg" -Atc "SELECT count(*) FROM cert")
run "stop PostgreSQL (immediate: a crash)" 0 "$cluster" stop "$pg" --immediate
if enrol pg-down -implicit_confirm; then fail "an enrolment succeeded without a database"
else
  ok "enrolment refused while the database is down"
  grep -qi "systemUnavail" cmp.log && ok "  with systemUnavail" \
    || { fail "  not systemUnavail"; tail -5 cmp.log; }
fi
[ ! -s pg-down.pem ] && ok "  no certificate went out" || fail "  a certificate went out"
kill -0 "$pid" 2>/dev/null && ok "  certmintd keeps running" || fail "  certmintd exited"
for _ in $(seq 1 30); do # the writer's idle check notices within about a second
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
  [ "$code" = 503 ] && break
  sleep 0.1
done
[ "$code" = 503 ] && ok "  /healthz answers 503 while the store is down" \
  || fail "  /healthz answered $code with the store down"
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics.down"
grep -q "^certmint_store_up 0$" "$work/metrics.down" && ok "  /metrics: certmint_store_up 0" \
  || fail "  /metrics store_up: $(grep store_up "$work/metrics.down")"
run "start PostgreSQL again" 0 "$cluster" start "$pg"
up=""
for _ in $(seq 1 50); do
  if enrol pg-back -implicit_confirm; then up=1; break; fi
  sleep 0.2
done
[ -n "$up" ] && ok "certmintd reconnected: pg-back enrolled" || { fail "no enrolment after the restart"; tail -5 cmp.log; }
after=$("$cluster" psql "$pg" -Atc "SELECT count(*) FROM cert")
[ "$after" -eq $((before + 1)) ] && ok "  one more certificate in the database ($before -> $after)" \
  || fail "  $before -> $after certificates"
grep -q "postgresql (writer): connection lost" "$work/daemon.log" && ok "  the loss is logged" \
  || fail "  no loss in the log"
grep -q "postgresql (writer): reconnected" "$work/daemon.log" && ok "  the reconnection is logged" \
  || fail "  no reconnection in the log"
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/healthz")
[ "$code" = 200 ] && ok "  /healthz is 200 again" || fail "  /healthz answered $code after"
curl -s "http://127.0.0.1:$port/metrics" >"$work/metrics.up"
grep -q "^certmint_store_up 1$" "$work/metrics.up" && ok "  /metrics: certmint_store_up 1" \
  || fail "  /metrics store_up after: $(grep store_up "$work/metrics.up")"
rec=$(sed -n 's/^certmint_store_reconnects_total //p' "$work/metrics.up")
[ "${rec:-0}" -ge 1 ] && ok "  /metrics counts $rec store reconnects" \
  || fail "  /metrics reconnects: '${rec}'"
stop_daemon

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

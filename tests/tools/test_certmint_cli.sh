#!/usr/bin/env bash
# tests/tools/test_certmint_cli.sh CERTMINTD CERTMINT
# The admin tool against a throwaway instance (certmint init) and a real certmintd on a free
# loopback port, with certificates enrolled by the real `openssl cmp`: every subcommand with
# good and bad input (missing config, wrong PIN, token not found, existing instance, unknown
# serial, bad reason, --help), its exit code (0 ok, 1 failed, 2 usage), list filters and
# --json, revoke -> crl -> `openssl verify -crl_check`, hold and release; pending, approve and
# reject while the real client polls a CA whose profile needs approval.
set -uo pipefail
certmintd=$(realpath "$1")
certmint=$(realpath "$2")
work=$(mktemp -d /tmp/certmint-cli-XXXXXX)
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
# run WHAT WANT_RC CMD...: runs CMD with stdout in $work/out, stderr in $work/err; checks the
# exit code.
run() {
  local what=$1 want=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [ "$rc" -eq "$want" ]; then ok "$what (exit $rc)"; else
    fail "$what: exit $rc, want $want"; sed 's/^/     | /' "$work/out" "$work/err" | head -20; fi
}
# has WHAT FILE PATTERN: FILE (out or err) matches the extended regex PATTERN.
has() { if grep -Eq -- "$3" "$work/$2"; then ok "  $1"; else
  fail "  $1: no /$3/ in $2"; sed 's/^/     | /' "$work/$2" | head -20; fi; }
hasnt() { if grep -Eq -- "$3" "$work/$2"; then fail "  $1: /$3/ in $2"; else ok "  $1"; fi; }

# The tool must find SOFTHSM2_CONF itself (from DIR/env), as an operator's shell lacks it.
unset SOFTHSM2_CONF
. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
inst=$work/inst
conf=$inst/certmint.cnf
cm() { "$certmint" "$@"; }

# --- usage, --help, init ----------------------------------------------------------------------
run "no arguments" 2 cm
run "--help" 0 cm --help
for c in init keys secret list show revoke revive crl pending approve reject; do
  has "--help lists $c" out "certmint $c "
done
run "unknown command" 2 cm frobnicate
for c in init keys secret list show revoke revive crl pending approve reject; do
  run "$c --help" 0 cm "$c" --help
  has "$c --help prints its usage" out "^usage: certmint $c"
done
run "init without --dir" 2 cm init
run "init --key-type bogus" 2 cm init --dir "$work/x" --key-type bogus
run "init" 0 cm init --dir "$inst" --port "$port" --subject "/O=certmint cli/CN=cli Root CA"
run "init refuses an existing instance" 1 cm init --dir "$inst"
has "it says why" err "already holds an instance"
for c in keys list show revoke revive crl pending approve reject; do
  run "$c without -c" 2 cm "$c"
done
run "secret without an action" 2 cm secret
run "secret bogus action" 2 cm secret frob -c "$conf"
run "list with an unknown option" 2 cm list -c "$conf" --bogus
run "list --status bogus" 2 cm list -c "$conf" --status bogus
run "list: missing config" 1 cm list -c "$work/nope.cnf"
has "it names the file" err "nope.cnf"
has "it says what to do" err "certmint init --dir"
run "show: missing config" 1 cm show -c "$work/nope.cnf" 01
run "keys: missing config" 1 cm keys -c "$work/nope.cnf"
run "crl: missing config" 1 cm crl -c "$work/nope.cnf"

# --- keys -----------------------------------------------------------------------------------
run "keys (SOFTHSM2_CONF from DIR/env)" 0 cm keys -c "$conf"
has "it shows the key, type and size" out "ca devices +key 'ca' EC P-256 256 bits, matches"

# --- secret (before the daemon starts: it reads the secrets at start) ----------------------
# A comment in the section and an empty line after it must survive the edits.
python3 - "$conf" <<'PY'
import sys
p = sys.argv[1]
t = open(p).read().replace("[clients:devices]\n", "[clients:devices]\n# factory line secrets\n")
open(p, "w").write(t + "\n# trailing comment\n")
PY
cp "$conf" "$work/conf.orig"
run "secret list" 0 cm secret list -c "$conf"
has "it lists demo-device" out "^demo-device$"
hasnt "it never prints a secret" out "$(cat "$inst/secrets/demo-device")"
run "secret add" 0 cm secret add -c "$conf" --ref line-7
has "it prints the secret once" out "secret: +[A-Za-z0-9]{32} "
secret7=$(sed -n 's/^ *secret: *\([A-Za-z0-9]*\) .*/\1/p' "$work/out")
[ "$secret7" = "$(cat "$inst/secrets/line-7")" ] && ok "  the printed secret is the stored one" \
  || fail "  the printed secret is not the stored one"
[ "$(stat -c %a "$inst/secrets/line-7")" = 600 ] && ok "  secret file mode 0600" \
  || fail "  secret file mode $(stat -c %a "$inst/secrets/line-7")"
diff "$work/conf.orig" "$conf" >"$work/diff"
if [ "$(grep -c '^[<>]' "$work/diff")" -eq 1 ] && grep -q '^> secret.line-7 = secrets/line-7$' "$work/diff"
then ok "  config: exactly one line added, comments and order kept"; else
  fail "  config edit"; cat "$work/diff"; fi
awk '/^\[clients:devices\]/{s=1} s&&/^secret.line-7/{print "in"; exit} /^\[/&&!/clients/{s=0}' \
  "$conf" | grep -q in && ok "  the line is in [clients:devices]" || fail "  line placement"
run "secret add: duplicate" 1 cm secret add -c "$conf" --ref line-7
has "it says how to resolve it" err "already.*secret remove"
run "secret add: bad reference" 2 cm secret add -c "$conf" --ref "bad/ref"
run "secret add without --ref" 2 cm secret add -c "$conf"
run "secret add --ca unknown" 1 cm secret add -c "$conf" --ca nope --ref x
has "it lists the CAs" err "no \[ca:nope\].*devices"
printf 'operator-chosen-secret\n' >"$work/given"
run "secret add --secret-file" 0 cm secret add -c "$conf" --ref line-8 --secret-file "$work/given"
hasnt "  the given secret is not printed" out "operator-chosen-secret"
[ "$(cat "$inst/secrets/line-8")" = operator-chosen-secret ] && ok "  the secret was copied" \
  || fail "  --secret-file content"
run "secret add --secret-file missing" 1 cm secret add -c "$conf" --ref line-9 \
  --secret-file "$work/none"
[ ! -e "$inst/secrets/line-9" ] && ok "  nothing left behind" || fail "  line-9 left behind"
run "secret list (3)" 0 cm secret list -c "$conf"
[ "$(tr '\n' ' ' <"$work/out")" = "demo-device line-7 line-8 " ] && ok "  three references" \
  || fail "  secret list: $(cat "$work/out")"
run "secret remove" 0 cm secret remove -c "$conf" --ref line-8
[ ! -e "$inst/secrets/line-8" ] && ok "  the file is deleted" || fail "  line-8 file kept"
grep -q line-8 "$conf" && fail "  the line is still there" || ok "  the line is gone"
run "secret remove: unknown reference" 1 cm secret remove -c "$conf" --ref line-8
run "secret list --ref (does not apply)" 2 cm secret list -c "$conf" --ref x

# --- a CA whose profile needs approval (delayed delivery, issue 16) -------------------------
# [ca:held] serves the same CA key under a profile with approval = manual; the client's polls
# come every second (approval_check_after).
python3 - "$conf" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read()
s = s.replace("[certmintd]\n", "[certmintd]\napproval_check_after = 1\n", 1)
ca = s[s.index("[ca:devices]"):s.index("[profile:devices]")]
prof = s[s.index("[profile:devices]"):s.index("[devices_ext]")]
held = ca.replace("[ca:devices]", "[ca:held]").replace("profile = devices", "profile = held")
held += prof.replace("[profile:devices]", "[profile:held]").rstrip("\n") + "\napproval = manual\n\n"
open(p, "w").write(s.replace("[devices_ext]", held + "[devices_ext]", 1))
PY

# --- the daemon and a few enrolments --------------------------------------------------------
export $(cat "$inst/env")
"$certmintd" -c "$conf" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
unset SOFTHSM2_CONF
cd "$work"
# openssl cmp's default PBM MAC is HMAC-SHA1, which certmint accepts only with allow_sha1 = on.
srv=(-server "127.0.0.1:$port" -path /.well-known/cmp -trusted inst/ca.pem -mac hmacWithSHA256)
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key 2>/dev/null
enrol() { # enrol CN [openssl cmp options]: a fresh key CN.key each (the CA refuses key reuse)
  local cn=$1; shift
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$cn.key" 2>/dev/null
  if openssl cmp -cmd ir "${srv[@]}" -newkey "$cn.key" -subject "/CN=$cn" -certout "$cn.pem" \
    "$@" >>"$work/cmp.log" 2>&1; then ok "enrol $cn"; else fail "enrol $cn"; tail -5 "$work/cmp.log"; fi
}
enrol dev-a -ref demo-device -secret file:inst/secrets/demo-device
enrol dev-b -ref demo-device -secret file:inst/secrets/demo-device -implicit_confirm
enrol dev-c -ref line-7 -secret file:inst/secrets/line-7   # the secret `secret add` made
enrol dev-u -ref demo-device -secret file:inst/secrets/demo-device -disable_confirm
# A subject with characters JSON must escape.
if openssl cmp -cmd ir "${srv[@]}" -newkey dev.key -subject '/CN=dev-"q"' -certout dev-q.pem \
  -ref demo-device -secret file:inst/secrets/demo-device -implicit_confirm >>"$work/cmp.log" 2>&1
then ok "enrol dev-\"q\""; else fail "enrol dev-\"q\""; fi
serial() { openssl x509 -in "$1.pem" -noout -serial | cut -d= -f2; }
sa=$(serial dev-a); sb=$(serial dev-b); sc=$(serial dev-c); su=$(serial dev-u)

# --- list -----------------------------------------------------------------------------------
run "list" 0 cm list -c "$conf"
[ "$(wc -l <"$work/out")" -eq 5 ] && ok "  five certificates" || fail "  list: $(cat "$work/out")"
has "  serial, status, notAfter, CA, subject" out \
  "^$sa  valid +[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z  devices  CN=dev-a$"
has "  the unconfirmed one" out "^$su  unconfirmed .* CN=dev-u$"
run "list --status valid" 0 cm list -c "$conf" --status valid
[ "$(wc -l <"$work/out")" -eq 4 ] && ok "  four valid" || fail "  valid: $(cat "$work/out")"
run "list --status unconfirmed" 0 cm list -c "$conf" --status unconfirmed
[ "$(cut -d' ' -f1 "$work/out")" = "$su" ] && ok "  only dev-u" || fail "  unconfirmed: $(cat "$work/out")"
run "list --subject dev-b" 0 cm list -c "$conf" --subject dev-b
[ "$(cut -d' ' -f1 "$work/out")" = "$sb" ] && ok "  only dev-b" || fail "  subject: $(cat "$work/out")"
run "list --subject (no match)" 0 cm list -c "$conf" --subject nobody
[ ! -s "$work/out" ] && ok "  empty" || fail "  no-match output"
run "list --json" 0 cm list -c "$conf" --json
python3 -m json.tool "$work/out" >/dev/null && ok "  json.tool parses it" || fail "  invalid JSON"
python3 - "$work/out" "$sa" <<'PY' && ok "  5 objects with the fields" || fail "  JSON content"
import json, sys
a = json.load(open(sys.argv[1]))
assert len(a) == 5
assert any(c["subject"] in ('CN=dev-"q"', 'CN=dev-\\"q\\"') for c in a), [c["subject"] for c in a]
d = {c["serial"]: c for c in a}
c = d[sys.argv[2]]
assert c["status"] == "valid" and c["subject"] == "CN=dev-a" and c["ca"] == "devices"
assert c["not_after"].endswith("Z") and c["not_before"] < c["not_after"]
PY
run "list --json --status revoked (none yet)" 0 cm list -c "$conf" --json --status revoked
[ "$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$work/out")" = 0 ] \
  && ok "  an empty array" || fail "  empty JSON: $(cat "$work/out")"
run "list --ca nope" 1 cm list -c "$conf" --ca nope

# --- show -----------------------------------------------------------------------------------
run "show SERIAL (as openssl x509 -serial prints it)" 0 cm show -c "$conf" "$sa"
has "  the certificate text" out "Subject: CN ?= ?dev-a"
has "  its serial" out "Serial Number:"
has "  its store record" out "Status: valid"
has "  its requester" out "Requester: MAC, senderKID 'demo-device'"
lower=$(echo "$sa" | tr 'A-F' 'a-f')
colons=$(echo "$sa" | sed 's/../&:/g; s/:$//')
run "show 0xlowercase" 0 cm show -c "$conf" "0x$lower"
run "show with colons" 0 cm show -c "$conf" "$colons"
run "show --ca devices" 0 cm show -c "$conf" --ca devices "$sa"
run "show: unknown serial" 1 cm show -c "$conf" 0123456789ABCDEF
has "  it says so and how to find serials" err "no certificate with serial 0123456789ABCDEF.*certmint list"
run "show with leading zeros" 0 cm show -c "$conf" "00$sa"
run "show: not a serial" 2 cm show -c "$conf" xyz
run "show: 0x alone" 2 cm show -c "$conf" 0x
run "show: longer than 20 octets" 2 cm show -c "$conf" 112233445566778899AABBCCDDEEFF00112233445566
run "show: two serials" 2 cm show -c "$conf" "$sa" "$sb"
run "show: no serial" 2 cm show -c "$conf"

# --- revoke, crl, openssl verify -crl_check ------------------------------------------------
run "revoke --reason bogus" 2 cm revoke -c "$conf" "$sa" --reason bogus
has "  it lists the reasons" err "keyCompromise.*aACompromise"
run "revoke: unknown serial" 1 cm revoke -c "$conf" 0123456789ABCDEF
run "revoke --reason keyCompromise" 0 cm revoke -c "$conf" "$sa" --reason keyCompromise
run "revoke again" 1 cm revoke -c "$conf" "$lower"
has "  already revoked" err "revoked already \(reason keyCompromise"
run "show after revoke" 0 cm show -c "$conf" "$sa"
has "  status and reason" out "Status: revoked"
has "  reason" out "Reason: keyCompromise"
run "list --status revoked" 0 cm list -c "$conf" --status revoked
[ "$(cut -d' ' -f1 "$work/out")" = "$sa" ] && ok "  only dev-a" || fail "  revoked: $(cat "$work/out")"
run "crl --days 0" 2 cm crl -c "$conf" --days 0
run "crl --ca nope" 1 cm crl -c "$conf" --ca nope
run "crl --out" 0 cm crl -c "$conf" --out "$work/1.crl"
has "  number and entries" out "CRL number [0-9]+, 1 entries"
num1=$(sed -n 's/.*CRL number \([0-9]*\),.*/\1/p' "$work/out")
run "  openssl crl verifies its signature" 0 openssl crl -inform DER -in "$work/1.crl" \
  -CAfile inst/ca.pem -noout
has "  verify OK" err "verify OK"
openssl crl -inform DER -in "$work/1.crl" -out 1.crl.pem
run "  openssl verify -crl_check: revoked" 2 openssl verify -crl_check -CAfile inst/ca.pem \
  -CRLfile 1.crl.pem dev-a.pem
grep -q "certificate revoked" "$work/out" "$work/err" && ok "  says certificate revoked" \
  || fail "  no 'certificate revoked'"
run "  openssl verify -crl_check: dev-b still good" 0 openssl verify -crl_check \
  -CAfile inst/ca.pem -CRLfile 1.crl.pem dev-b.pem
openssl crl -inform DER -in "$work/1.crl" -noout -text >crl.txt
grep -q "Key Compromise" crl.txt && ok "  the reason is in the CRL" || fail "  CRL reason"
run "crl --days 30" 0 cm crl -c "$conf" --days 30 --out "$work/30.crl"
openssl crl -inform DER -in "$work/30.crl" -noout -lastupdate -nextupdate >upd.txt
python3 - upd.txt <<'PY' && ok "  nextUpdate is 30 days after thisUpdate" || fail "  --days: $(cat upd.txt)"
import sys, datetime
v = dict(l.strip().split("=", 1) for l in open(sys.argv[1]))
f = lambda s: datetime.datetime.strptime(s, "%b %d %H:%M:%S %Y GMT")
assert f(v["nextUpdate"]) - f(v["lastUpdate"]) == datetime.timedelta(days=30), v
PY
run "crl (default path)" 0 cm crl -c "$conf"
[ -s inst/devices.crl ] && ok "  inst/devices.crl written" || fail "  no inst/devices.crl"
num2=$(sed -n 's/.*CRL number \([0-9]*\),.*/\1/p' "$work/out")
[ "${num2:-0}" -gt "${num1:-0}" ] && ok "  a higher CRL number ($num1 -> $num2)" \
  || fail "  CRL number $num1 -> $num2"

# --- hold and release ---------------------------------------------------------------------
run "revoke --reason certificateHold" 0 cm revoke -c "$conf" "$sb" --reason certificateHold
run "hold again" 1 cm revoke -c "$conf" "$sb" --reason certificateHold
has "  it says how to release" err "removeFromCRL releases it"
run "list --status hold" 0 cm list -c "$conf" --status hold
[ "$(cut -d' ' -f1 "$work/out")" = "$sb" ] && ok "  only dev-b" || fail "  hold: $(cat "$work/out")"
run "crl with the hold" 0 cm crl -c "$conf" --out "$work/2.crl"
openssl crl -inform DER -in "$work/2.crl" -out 2.crl.pem
openssl verify -crl_check -CAfile inst/ca.pem -CRLfile 2.crl.pem dev-b.pem >v.txt 2>&1
grep -q "certificate revoked" v.txt && ok "  held certificate reported revoked" || fail "  hold: $(cat v.txt)"
openssl crl -in 2.crl.pem -noout -text | grep -q "Certificate Hold" && ok "  reason certificateHold" \
  || fail "  hold reason missing"
run "release (removeFromCRL)" 0 cm revoke -c "$conf" "$sb" --reason removeFromCRL
run "removeFromCRL on a valid certificate" 1 cm revoke -c "$conf" "$sc" --reason removeFromCRL
has "  not on hold" err "not on hold"
run "crl after the release" 0 cm crl -c "$conf" --out "$work/3.crl"
openssl crl -inform DER -in "$work/3.crl" -out 3.crl.pem
run "  released certificate verifies again" 0 openssl verify -crl_check -CAfile inst/ca.pem \
  -CRLfile 3.crl.pem dev-b.pem
run "  dev-a stays revoked" 2 openssl verify -crl_check -CAfile inst/ca.pem -CRLfile 3.crl.pem \
  dev-a.pem
# revive: the same release, by its own name.
run "revive a valid certificate" 1 cm revive -c "$conf" "$sb"
has "  only on hold" err "is valid, not on hold: only a certificate revoked with certificateHold"
run "revive: unknown serial" 1 cm revive -c "$conf" 0123456789ABCDEF
run "hold dev-b again" 0 cm revoke -c "$conf" "$sb" --reason certificateHold
run "revive" 0 cm revive -c "$conf" "$sb"
has "  it says so" out "revived $sb"
run "  list: dev-b valid again" 0 cm list -c "$conf" --status valid
grep -q "^$sb " "$work/out" && ok "  dev-b listed valid" || fail "  dev-b not valid: $(cat "$work/out")"
run "crl after revive" 0 cm crl -c "$conf" --out "$work/4.crl"
openssl crl -inform DER -in "$work/4.crl" -out 4.crl.pem
run "  revived certificate verifies" 0 openssl verify -crl_check -CAfile inst/ca.pem \
  -CRLfile 4.crl.pem dev-b.pem
run "revive a revoked certificate" 1 cm revive -c "$conf" "$sa"
has "  revoked for good" err "is revoked, not on hold"
run "revoke the unconfirmed one" 0 cm revoke -c "$conf" "$su" --reason cessationOfOperation

# The daemon sees the tool's revocation: kur with the revoked certificate is refused.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out new.key 2>/dev/null
if openssl cmp -cmd kur "${srv[@]}" -cert dev-a.pem -key dev-a.key -newkey new.key \
  -certout kur.pem >>"$work/cmp.log" 2>&1; then fail "kur with a revoked certificate accepted"
else ok "kur with a certificate revoked by the tool is refused"; fi
# ... also when the daemon had its status cached (a cr it signed was accepted just before): the
# daemon notices the tool's write at its next store batch (the maintenance runs every 2 s).
enrol dev-x -ref demo-device -secret file:inst/secrets/demo-device -implicit_confirm
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out x2.key 2>/dev/null
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out x3.key 2>/dev/null
if openssl cmp -cmd cr "${srv[@]}" -cert dev-x.pem -key dev-x.key -newkey x2.key \
  -subject /CN=dev-x -certout x2.pem >>"$work/cmp.log" 2>&1; then ok "cr signed by dev-x"
else fail "cr signed by dev-x"; fi
run "revoke dev-x with the tool" 0 cm revoke -c "$conf" "$(serial dev-x)" --reason keyCompromise
sleep 3
if openssl cmp -cmd cr "${srv[@]}" -cert dev-x.pem -key dev-x.key -newkey x3.key \
  -subject /CN=dev-x -certout x3.pem >"$work/crx.log" 2>&1; then fail "cr by dev-x after the tool revoked it"
elif grep -q certRevoked "$work/crx.log"; then ok "  the daemon's cached status followed the tool: certRevoked"
else fail "  cr by dev-x refused, but not certRevoked"; cat "$work/crx.log"; fi

# --- pending, approve, reject while the real client polls -----------------------------------
held=(-server "127.0.0.1:$port" -path /.well-known/cmp/p/held -trusted inst/ca.pem
      -mac hmacWithSHA256 -ref demo-device -secret file:inst/secrets/demo-device -total_timeout 60)
# wait_pending CN: waits (10 s at most) for the request of CN to be listed; prints its line.
wait_pending() {
  for _ in $(seq 1 100); do
    if "$certmint" pending -c "$conf" | grep " CN=$1 "; then return 0; fi
    sleep 0.1
  done
  return 1
}
# poll_bg CMD CN [options]: openssl cmp -cmd CMD for CN (a fresh key unless CN.key exists) in the
# background; its log is CN.log, its exit code CN.rc once it ended.
poll_bg() {
  local cmd=$1 cn=$2; shift 2
  [ -e "$cn.key" ] || openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$cn.key" 2>/dev/null
  rm -f "$cn.rc"
  (openssl cmp -cmd "$cmd" "${held[@]}" -newkey "$cn.key" -subject "/CN=$cn" -certout "$cn.pem" \
     "$@" >"$cn.log" 2>&1; echo $? >"$cn.rc") &
}
# wait_rc CN: waits (30 s at most) for the background client of CN to end; prints its exit code.
wait_rc() {
  for _ in $(seq 1 300); do [ -e "$1.rc" ] && { cat "$1.rc"; return; }; sleep 0.1; done
  echo timeout
}
run "pending (nothing waits)" 0 cm pending -c "$conf"
[ ! -s "$work/out" ] && ok "  empty" || fail "  pending: $(cat "$work/out")"
run "pending --state bogus" 2 cm pending -c "$conf" --state bogus
run "pending --ca nope" 1 cm pending -c "$conf" --ca nope
run "approve without an ID" 2 cm approve -c "$conf"
run "approve: not an ID" 2 cm approve -c "$conf" 12x
run "approve: unknown ID" 1 cm approve -c "$conf" 999
has "  it says so" err "no pending request 999"
run "reject: unknown ID" 1 cm reject -c "$conf" 999 --reason x
run "reject --reason with a control character" 2 cm reject -c "$conf" 1 --reason "$(printf 'a\tb')"
# ir: held for approval while openssl cmp polls; approved; the client gets the certificate.
poll_bg ir held-a
line=$(wait_pending held-a) && ok "pending lists the waiting ir" || fail "the ir is not listed"
echo "$line" >"$work/out"
has "  id, state, age, CA, profile, key, subject, requester" out \
  "^[0-9]+  approval +[0-9]+s  held  held  EC P-256  CN=held-a  senderKID demo-device$"
id_a=$(echo "$line" | cut -d' ' -f1)
run "pending --json" 0 cm pending -c "$conf" --json
python3 - "$work/out" "$id_a" <<'PY' && ok "  the JSON object" || fail "  pending JSON: $(cat "$work/out")"
import json, sys
a = json.load(open(sys.argv[1]))
assert len(a) == 1, a
p = a[0]
assert p["id"] == int(sys.argv[2]) and p["state"] == "approval" and p["why"] == "approval", p
assert p["ca"] == "held" and p["subject"] == "CN=held-a" and p["key"] == "EC P-256", p
assert p["requester"] == "senderKID demo-device" and p["expires"] > p["created"], p
PY
run "pending --state queued (none)" 0 cm pending -c "$conf" --state queued
[ ! -s "$work/out" ] && ok "  empty" || fail "  queued: $(cat "$work/out")"
sleep 2 # the client polls meanwhile (its own log is buffered: the daemon's says so)
polls=$(grep -c "ca=held body=pollReq outcome=ok" "$work/daemon.log")
[ "$polls" -ge 1 ] && ok "  the client polls while it waits ($polls pollReq)" || fail "  no pollReq yet"
run "approve" 0 cm approve -c "$conf" "$id_a"
has "  it says what happens" out "approved pending request $id_a \(ca held, CN=held-a\)"
rc=$(wait_rc held-a)
[ "$rc" = 0 ] && ok "  the polling client got its certificate" || fail "  client exit $rc: $(tail -5 held-a.log)"
grep -q "received 'waiting' PKIStatus" held-a.log && grep -q "received POLLREP" held-a.log \
  && grep -q "received ip/cp/kup after polling" held-a.log && ok "  after waiting and polling" \
  || fail "  not after polling: $(tail -5 held-a.log)"
run "  it verifies" 0 openssl verify -CAfile inst/ca.pem held-a.pem
run "  certmint list shows it valid (confirmed)" 0 cm list -c "$conf" --ca held --subject held-a
has "  valid" out "  valid  .*  held  CN=held-a$"
run "approve again" 1 cm approve -c "$conf" "$id_a"
has "  it is delivered" err "pending request $id_a is delivered: its certificate is issued"
run "pending (nothing waits again)" 0 cm pending -c "$conf"
[ ! -s "$work/out" ] && ok "  empty" || fail "  pending: $(cat "$work/out")"
run "pending --all" 0 cm pending -c "$conf" --all
has "  the delivered one" out "^$id_a  delivered .* CN=held-a "
# cr: rejected while the client polls; it gets the operator's reason; the key is given back.
poll_bg cr held-r
line=$(wait_pending held-r) && ok "pending lists the waiting cr" || fail "the cr is not listed"
id_r=$(echo "$line" | cut -d' ' -f1)
run "reject --reason" 0 cm reject -c "$conf" "$id_r" --reason "not on the device list"
rc=$(wait_rc held-r)
[ "$rc" = 1 ] && ok "  the polling client failed" || fail "  client exit $rc"
grep -q 'PKIFailureInfo: notAuthorized; StatusString: "rejected by the CA operator: not on the device list"' \
  held-r.log && ok "  with notAuthorized and the reason" || fail "  rejection: $(tail -3 held-r.log)"
[ ! -e held-r.pem ] && ok "  no certificate" || fail "  a certificate was written"
run "reject again" 1 cm reject -c "$conf" "$id_r"
has "  it was rejected" err "is (rejected|delivered): it was rejected"
poll_bg ir held-r # the same key: its reservation was given back, so it may ask again
line=$(wait_pending held-r) && ok "the rejected key asks again and waits" || fail "the key is not free"
run "approve it" 0 cm approve -c "$conf" "$(echo "$line" | cut -d' ' -f1)"
rc=$(wait_rc held-r)
[ "$rc" = 0 ] && ok "  certified this time" || fail "  client exit $rc: $(tail -5 held-r.log)"

kill -TERM "$pid"; wait "$pid"; pid=""

# --- token failures (daemon stopped) ------------------------------------------------------
cp inst/user.pin user.pin.good
printf 'wrong-pin-0000' >inst/user.pin
run "keys with a wrong PIN" 1 cm keys -c "$conf"
has "  it names the PKCS#11 error" err "CKR_PIN_INCORRECT"
has "  it says what to check" err "PIN is wrong.*pin-source"
run "crl with a wrong PIN" 1 cm crl -c "$conf" --out "$work/x.crl"
has "  the same hint" err "PIN is wrong"
cp user.pin.good inst/user.pin
mkdir -p empty-tokens
printf 'directories.tokendir = %s/empty-tokens\nobjectstore.backend = file\n' "$work" >empty.conf
run "keys: token not found" 1 env SOFTHSM2_CONF="$work/empty.conf" "$certmint" keys -c "$conf"
has "  it says what to check" err "no token has that label.*SOFTHSM2_CONF"
run "crl: token not found" 1 env SOFTHSM2_CONF="$work/empty.conf" "$certmint" crl -c "$conf"
run "keys again with the right PIN" 0 cm keys -c "$conf"

# --- init in an existing token of a PKCS#11 module (--module/--token/--pin-file) ------------
mkdir -p ext-tokens
printf 'directories.tokendir = %s/ext-tokens\nobjectstore.backend = file\nlog.level = ERROR\n' \
  "$work" >ext.conf
SOFTHSM2_CONF="$work/ext.conf" softhsm2-util --init-token --free --label ext-token \
  --so-pin 1234 --pin 5678 >/dev/null
printf 5678 >ext.pin
chmod 600 ext.pin
module=$(grep -o 'module-path=[^&]*' inst/certmint.cnf | head -1 | cut -d= -f2)
run "init --module --token --pin-file" 0 env SOFTHSM2_CONF="$work/ext.conf" "$certmint" init \
  --dir "$work/ext" --module "$module" --token ext-token --pin-file ext.pin
has "  the keys are in the existing token" out "in token 'ext-token'"
run "  certmintd --check accepts it" 0 env SOFTHSM2_CONF="$work/ext.conf" "$certmintd" \
  -c "$work/ext/certmint.cnf" --check
run "init into a token that already has the keys" 1 env SOFTHSM2_CONF="$work/ext.conf" \
  "$certmint" init --dir "$work/ext2" --module "$module" --token ext-token --pin-file ext.pin
has "  it says why" err "already has a private key with label 'ca'"
run "init --module without --token" 2 cm init --dir "$work/ext3" --module "$module"

# --- init --csr, a parent CA signs it, import-ca-cert ----------------------------------------
run "init --csr" 0 cm init --dir "$work/sub" --csr --subject "/O=Example/CN=Example Issuing CA"
run "  the CSR verifies" 0 openssl req -in "$work/sub/ca.csr" -noout -verify
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-384 -nodes -keyout parent.key \
  -out parent.pem -subj "/CN=Example Root" -days 30 2>/dev/null
printf 'basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n' >sub-ext.cnf
openssl x509 -req -in "$work/sub/ca.csr" -CA parent.pem -CAkey parent.key -set_serial 77 \
  -days 20 -extfile sub-ext.cnf -out sub-signed.pem 2>/dev/null
run "import-ca-cert refuses a certificate for another key" 1 cm import-ca-cert \
  -c "$work/sub/certmint.cnf" --cert parent.pem
has "  it says why" err "does not hold the CA key"
run "import-ca-cert" 0 cm import-ca-cert -c "$work/sub/certmint.cnf" --cert sub-signed.pem \
  --chain parent.pem
run "  the CMP certificate chains to the parent" 0 openssl verify -CAfile parent.pem \
  -untrusted "$work/sub/ca.pem" "$work/sub/cmp.pem"
run "  certmintd --check accepts it" 0 env $(cat "$work/sub/env") "$certmintd" \
  -c "$work/sub/certmint.cnf" --check
run "import-ca-cert a second time" 1 cm import-ca-cert -c "$work/sub/certmint.cnf" \
  --cert sub-signed.pem
run "import-ca-cert without --cert" 2 cm import-ca-cert -c "$work/sub/certmint.cnf"

# --- init --kga: the CMP certificate may sign centrally generated keys (issue 19) -------------
run "init --kga --csr" 2 cm init --dir "$work/kga0" --kga --csr
has "  it says why" err "give --kga without --csr"
run "init --kga" 0 cm init --dir "$work/kga" --kga
openssl x509 -in "$work/kga/cmp.pem" -noout -ext extendedKeyUsage >"$work/out" 2>&1
has "  the CMP certificate has id-kp-cmKGA" out "1\.3\.6\.1\.5\.5\.7\.3\.32|Key Generation Authority"
has "  and id-kp-cmcCA" out "1\.3\.6\.1\.5\.5\.7\.3\.27|CMC Certificate Authority"
cp "$work/kga/certmint.cnf" "$work/out"
has "  the profile allows central key generation" out "^central_keygen = allowed$"
run "  certmintd --check accepts it" 0 env $(cat "$work/kga/env") "$certmintd" \
  -c "$work/kga/certmint.cnf" --check
openssl x509 -in "$inst/cmp.pem" -noout -ext extendedKeyUsage >"$work/out" 2>&1
hasnt "  without --kga, no id-kp-cmKGA" out "1\.3\.6\.1\.5\.5\.7\.3\.32|Key Generation Authority"
cp "$conf" "$work/out"
hasnt "  and no central_keygen" out "central_keygen"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

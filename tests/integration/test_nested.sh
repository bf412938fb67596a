#!/usr/bin/env bash
# tests/integration/test_nested.sh CERTMINTD CERTMINT CERTMINT_BENCH
# Nested messages (issue 16) against a real certmintd: a throwaway instance (certmint init) with
# an RA certificate (id-kp-cmcRA, from a vendor CA in trust_anchors) in ra_certs; certmint-bench
# sends batches of PBM-protected and of signature-protected irs nested and signed by the RA,
# and the certConfs of a batch as a second nested round, every inner answer checked and
# verified against the CA. Refused: a batch signed by a trusted certificate that is not an RA,
# a batch over max_nested_messages. Then a graceful SIGTERM.
set -uo pipefail
certmintd=$1
certmint=$2
bench=$3
work=$(mktemp -d /tmp/certmint-nested-XXXXXX)
pid=""
rc=1
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
fail() { echo "FAIL $*"; exit 1; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 \
  || { cat "$work/init.log"; fail "certmint init"; }
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout vendor.key \
    -out vendor.pem -subj "/CN=nested vendor CA" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  printf '[ra]\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = 1.3.6.1.5.5.7.3.28\nsubjectKeyIdentifier = hash\n[dev]\nsubjectKeyIdentifier = hash\n' >ext.cnf
  for who in ra other device; do
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $who.key
    openssl req -new -key $who.key -subj "/CN=nested $who" -out $who.csr
  done
  openssl x509 -req -in ra.csr -CA vendor.pem -CAkey vendor.key -set_serial 11 -days 2 \
    -extfile ext.cnf -extensions ra -out ra.pem
  for who in other device; do
    openssl x509 -req -in $who.csr -CA vendor.pem -CAkey vendor.key -set_serial 1$RANDOM -days 2 \
      -extfile ext.cnf -extensions dev -out $who.pem
  done
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log"; fail "test PKI"; }
# [clients:devices] is the last section: the vendor CA for signed irs, the RA certificate.
printf 'trust_anchors = %s\nra_certs = %s\n' "$work/vendor.pem" "$work/ra.pem" >>"$work/inst/certmint.cnf"
sed -i "s/^listen = .*/&\nmax_nested_messages = 32/" "$work/inst/certmint.cnf"
"$certmintd" -c "$work/inst/certmint.cnf" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { tail -20 "$work/daemon.log"; fail "healthz"; }
url="http://127.0.0.1:$port/.well-known/cmp/p/devices"
ra=(--ra-cert "$work/ra.pem" --ra-key "$work/ra.key")

# expect_ok NAME N: the run's JSON has N ok and nothing failed.
expect_ok() {
  python3 - "$work/$1.json" "$2" <<'PY' || { cat "$work/$1.log"; fail "$1: $2 ok, 0 failed"; }
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] == int(sys.argv[2]) and r["failed"] == 0, r
assert all(v == 0 for v in r["errors"].values()), r["errors"]
PY
}

"$bench" --url "$url" --secret "demo-device:$secret" --flow nested --batch 8 -n 64 \
  --connections 2 "${ra[@]}" --ca "$work/inst/ca.pem" --verify --json "$work/pbm.json" \
  --save-serials "$work/pbm.serials" >"$work/pbm.log" 2>&1 || { cat "$work/pbm.log"; fail "nested PBM"; }
expect_ok pbm 64
[ "$(sort -u "$work/pbm.serials" | grep -c '^[0-9A-F]\+$')" -eq 64 ] || fail "--save-serials: 64 serials"
grep -q "nested (batches of 8)" "$work/pbm.log" || { cat "$work/pbm.log"; fail "report line"; }
echo "ok   64 PBM-protected irs in batches of 8, each ip checked and verified"

"$bench" --url "$url" --cert "$work/device.pem" --key "$work/device.key" --flow nested \
  --batch 4 -n 16 --subject-template 'CN=signed-%d' "${ra[@]}" --ca "$work/inst/ca.pem" \
  --verify --json "$work/sig.json" >"$work/sig.log" 2>&1 || { cat "$work/sig.log"; fail "nested signed"; }
expect_ok sig 16
echo "ok   16 signature-protected irs in batches of 4, CA-signed ips verified"

"$bench" --url "$url" --secret "demo-device:$secret" --flow nested-confirm --batch 8 -n 32 \
  --subject-template 'CN=conf-%d' "${ra[@]}" --ca "$work/inst/ca.pem" --verify \
  --json "$work/conf.json" >"$work/conf.log" 2>&1 || { cat "$work/conf.log"; fail "nested-confirm"; }
expect_ok conf 32
echo "ok   nested-confirm: 32 irs, then their certConfs nested, every pkiConf verified"

# A batch signed by a trusted certificate that is not an RA: every inner request fails with the
# batch (an error answer, counted once per inner request); nothing is issued.
if "$bench" --url "$url" --secret "demo-device:$secret" --flow nested --batch 4 -n 8 \
  --ra-cert "$work/other.pem" --ra-key "$work/other.key" --subject-template 'CN=no-ra-%d' \
  --json "$work/notra.json" >"$work/notra.log" 2>&1; then
  fail "a batch signed by a non-RA certificate was served"
fi
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==0 and r["errors"]["cmp_error"]==8, r' \
  "$work/notra.json" || { cat "$work/notra.log"; fail "non-RA batch: 8 cmp errors"; }
grep -q 'error=SRV_E_NESTED_NOT_RA' "$work/daemon.log" || fail "the log names SRV_E_NESTED_NOT_RA"
echo "ok   a batch signed by a certificate that is not an RA is refused"

# Over max_nested_messages (32 here): refused before any work.
if "$bench" --url "$url" --secret "demo-device:$secret" --flow nested --batch 33 -n 33 "${ra[@]}" \
  --subject-template 'CN=over-%d' --json "$work/over.json" >"$work/over.log" 2>&1; then
  fail "a batch over max_nested_messages was served"
fi
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==0 and r["errors"]["cmp_error"]==33, r' \
  "$work/over.json" || { cat "$work/over.log"; fail "over the limit: 33 cmp errors"; }
grep -q 'error=SRV_E_NESTED_COUNT' "$work/daemon.log" || fail "the log names SRV_E_NESTED_COUNT"
echo "ok   a batch over max_nested_messages is refused"

kill -TERM "$pid"
wait "$pid"
drc=$?
pid=""
[ "$drc" -eq 0 ] || { tail -30 "$work/daemon.log"; fail "SIGTERM: exit $drc"; }
echo "ok   SIGTERM: clean exit"
rc=0

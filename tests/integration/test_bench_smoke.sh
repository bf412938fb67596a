#!/usr/bin/env bash
# tests/integration/test_bench_smoke.sh CERTMINTD CERTMINT CERTMINT_BENCH
# A smoke run of certmint-bench: a throwaway instance (certmint init), certmintd on a free
# loopback port, 100 PBM-protected enrolments over 4 keep-alive connections (checked, and
# verified against the CA after the run), key-based MAC enrolments (--mac), kur and rr, central
# key generation (ir-ckg: the instance is made with --kga), then a graceful SIGTERM.
set -uo pipefail
certmintd=$1
certmint=$2
bench=$3
work=$(mktemp -d /tmp/certmint-bench-smoke-XXXXXX)
pid=""
rc=1
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ "$rc" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
fail() { echo "FAIL $*"; exit 1; }

# A free port: bind port 0 and read what the kernel picked.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$certmint" init --dir "$work/inst" --port "$port" --kga >"$work/init.log" 2>&1 \
  || { cat "$work/init.log"; fail "certmint init"; }
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
# A key for the key-based MACs (key.REF: hex, mode 0600).
key=$(openssl rand -hex 32)
(umask 077; echo "$key" >"$work/inst/secrets/rak.key")
sed -i 's|^\[clients:devices\]|[clients:devices]\nkey.rak = secrets/rak.key|' \
  "$work/inst/certmint.cnf"
# A password too short to encrypt a centrally generated key under (ir-ckg below).
(umask 077; printf 'short-secret' >"$work/inst/secrets/ckg-short")
sed -i 's|^\[clients:devices\]|[clients:devices]\nsecret.ckg-short = secrets/ckg-short|' \
  "$work/inst/certmint.cnf"
"$certmintd" -c "$work/inst/certmint.cnf" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null || { tail -20 "$work/daemon.log"; fail "healthz"; }

"$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$secret" -n 100 --connections 4 --ca "$work/inst/ca.pem" --verify \
  --json "$work/run.json" >"$work/bench.log" 2>&1
brc=$?
cat "$work/bench.log"
[ "$brc" -eq 0 ] || fail "certmint-bench exit $brc"
python3 - "$work/run.json" <<'PY' || fail "JSON: 100 ok, 0 failed"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] == 100 and r["failed"] == 0, r
assert all(v == 0 for v in r["errors"].values()), r["errors"]
# The latency histogram: increasing bounds, a count per bound, one entry per transaction, and
# the median inside the bucket the counts put it in.
h = r["latency_histogram"]
le, n = h["le_ms"], h["count"]
assert len(le) == len(n) > 0 and all(a < b for a, b in zip(le, le[1:])), h
assert sum(n) == 100, h
acc, k = 0, 0
while acc + n[k] < 51:  # p50 is the 51st of 100 sorted latencies
    acc += n[k]
    k += 1
lo = le[k - 1] if k > 0 else 0.0
assert lo <= r["latency_ms"]["p50"] <= le[k], (h, r["latency_ms"])
PY
echo "ok   100 enrolments, 0 failures, latency histogram"

# The same with certConf on the same connection; --verify also checks each pkiConf's MAC.
"$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$secret" -n 20 --connections 2 --flow ir-confirm \
  --ca "$work/inst/ca.pem" --verify --json "$work/confirm.json" >"$work/bench2.log" 2>&1 \
  || { cat "$work/bench2.log"; fail "ir-confirm"; }
python3 - "$work/confirm.json" <<'PY' || fail "ir-confirm JSON: 20 ok, 0 failed"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["ok"] == 20 and r["failed"] == 0, r
PY
echo "ok   ir-confirm, ip and pkiConf verified"

# Key-based MACs (RFC 9481 §6.2): ir and certConf with HMAC-SHA256, KMAC128 and AES-GMAC, each
# response verified with the key; the password secret is refused under a key-based MAC.
for m in hmac-sha256 kmac128 gmac; do
  "$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" --secret "rak:$key" \
    --mac "$m" -n 20 --connections 2 --flow ir-confirm --ca "$work/inst/ca.pem" --verify \
    --json "$work/mac-$m.json" >"$work/bench-$m.log" 2>&1 || { cat "$work/bench-$m.log"; fail "--mac $m"; }
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==20 and r["failed"]==0, r' \
    "$work/mac-$m.json" || fail "--mac $m: 20 ok"
  echo "ok   --mac $m: ir and certConf, responses verified"
done
if "$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$(printf %s "$secret" | xxd -p | tr -d '\n' | head -c 64)" --mac hmac-sha256 \
  -n 2 >"$work/bench-pw.log" 2>&1; then
  fail "a password under a key-based MAC was accepted"
fi
echo "ok   a password under a key-based MAC refused"

# kur and rr: each request's certificate is enrolled before the clock, then updated / revoked
# with a request signed by it; the revocations must be in the store afterwards.
"$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$secret" -n 20 --connections 2 --flow kur --ca "$work/inst/ca.pem" \
  --verify --subject-template 'CN=kur-%d' --json "$work/kur.json" >"$work/bench3.log" 2>&1 \
  || { cat "$work/bench3.log"; fail "kur"; }
grep -q "enrolled 20 certificates" "$work/bench3.log" || { cat "$work/bench3.log"; fail "kur enrolment"; }
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==20 and r["failed"]==0, r' \
  "$work/kur.json" || fail "kur: 20 ok"
echo "ok   kur"
"$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$secret" -n 20 --connections 2 --flow rr --ca "$work/inst/ca.pem" \
  --verify --subject-template 'CN=rr-%d' --json "$work/rr.json" >"$work/bench4.log" 2>&1 \
  || { cat "$work/bench4.log"; fail "rr"; }
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==20 and r["failed"]==0, r' \
  "$work/rr.json" || fail "rr: 20 ok"
echo "ok   rr"
# kur/rr cannot run against a server that returns someone else's certificate.
if "$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" --secret "demo-device:$secret" \
  -n 1 --flow rr --no-key-check >"$work/bench5.log" 2>&1; then
  fail "rr with --no-key-check was accepted"
fi
echo "ok   rr --no-key-check refused"

# Central key generation: an ir without a key; the key comes back under the secret, decrypted
# by certmint-bench and matched with the certificate. Nothing of the keys reaches the store.
"$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "demo-device:$secret" -n 20 --connections 2 --flow ir-ckg --key-pool 1 \
  --ca "$work/inst/ca.pem" --verify --subject-template 'CN=ckg-%d' --json "$work/ckg.json" \
  >"$work/bench6.log" 2>&1 || { cat "$work/bench6.log"; tail -20 "$work/daemon.log"; fail "ir-ckg"; }
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==20 and r["failed"]==0, r' \
  "$work/ckg.json" || fail "ir-ckg: 20 ok"
echo "ok   ir-ckg: 20 keys generated, decrypted, matching their certificates"
# A secret too short to encrypt a key under (central_keygen_min_secret, 16 octets): refused.
if "$bench" --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" \
  --secret "ckg-short:short-secret" -n 1 --flow ir-ckg --key-pool 1 --json "$work/ckg2.json" \
  >"$work/bench7.log" 2>&1; then
  fail "ir-ckg with a 12-octet secret was accepted"
fi
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); assert r["ok"]==0 and r["errors"]["rejected"]==1, r' \
  "$work/ckg2.json" || { cat "$work/bench7.log"; fail "ir-ckg short secret: 1 rejected"; }
echo "ok   ir-ckg under a short secret refused"
kill -TERM "$pid"
wait "$pid"
drc=$?
pid=""
[ "$drc" -eq 0 ] || { tail -30 "$work/daemon.log"; fail "SIGTERM: exit $drc"; }
echo "ok   SIGTERM: clean exit"
rc=0

#!/usr/bin/env bash
# tests/integration/test_tls.sh CERTMINTD CERTMINT [CERTMINT-BENCH]
# HTTPS (issue 18) against a real certmintd: a throwaway instance (certmint init) with an
# https:// listener next to its plain one, a TLS server certificate from a test CA, and an RA
# client certificate. openssl cmp -tls_used for ir, kur and rr; curl for /healthz and the CRL;
# client authentication optional, required and refused; refused versions, garbage and plain
# HTTP on the TLS port, a stalled handshake; the HTTP suite's malformed requests over TLS;
# session resumption; the TLS metrics; certmint-bench --tls; the tls_ keys' errors.
set -uo pipefail
certmintd=$1
certmint=$2
bench=${3:+$(realpath "$3")}
work=$(mktemp -d /tmp/certmint-tls-XXXXXX)
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
check() { local what=$1; shift; if "$@" >>"$work/cmds.log" 2>&1; then ok "$what"; else fail "$what"; fi; }
check_not() { local what=$1; shift; if "$@" >>"$work/cmds.log" 2>&1; then fail "$what"; else ok "$what"; fi; }

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
tport=$(( port + 1 )); aport=$(( port + 2 ))
"$certmint" init --dir "$work/inst" --port "$port" --subject "/O=certmint tls/CN=tls Root CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "certmint init"; exit 1; }
sed -i 's/^caPubs = on/caPubs = on\ncrl_min_interval = 0/' "$work/inst/certmint.cnf"
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
cd "$work"

# A TLS CA, the server's certificate (127.0.0.1 and localhost), an RA's client certificate, and
# a client certificate of a foreign CA.
{
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls-ca.key \
    -out tls-ca.pem -subj "/CN=certmint test TLS CA" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key \
    -subj /CN=localhost -out tls.csr
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >srv.ext
  openssl x509 -req -in tls.csr -CA tls-ca.pem -CAkey tls-ca.key -set_serial 2 -days 2 \
    -extfile srv.ext -out tls.pem
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ra.key \
    -subj "/O=certmint tls/CN=ra-front-end" -out ra.csr
  printf 'extendedKeyUsage=clientAuth\n' >cli.ext
  openssl x509 -req -in ra.csr -CA tls-ca.pem -CAkey tls-ca.key -set_serial 3 -days 2 \
    -extfile cli.ext -out ra.pem
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout rogue.key \
    -out rogue.pem -subj "/CN=ra-front-end" -days 2
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out dev.key
} >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log"; fail "TLS fixtures"; exit 1; }
chmod 600 tls.key

# tls_cnf FILE EXTRA: (FILE in the instance's directory, where its relative paths resolve) the
# instance's configuration serving HTTP on $port, HTTPS on $tport and
# the admin endpoints on $aport, with the test's TLS keys and |EXTRA|.
tls_cnf() {
  { cat "$work/inst/certmint.cnf"
    printf '\n[certmintd]\nlisten = 127.0.0.1:%s, https://127.0.0.1:%s\n' "$port" "$tport"
    printf 'admin_listen = 127.0.0.1:%s\ntls_cert = %s/tls.pem\ntls_key = %s/tls.key\n' "$aport" \
      "$work" "$work"
    printf 'tls_client_ca = %s/tls-ca.pem\ntls_handshake_timeout = 2\nheader_timeout = 3\n%b' \
      "$work" "$2"; } >"$1"
}
start() { # start CNF LOG
  "$certmintd" -c "$1" --log "$2" >>"$work/stdout.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$aport/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
stop() { kill -TERM "$pid"; wait "$pid"; local rc=$?; pid=""; return $rc; }
metric() { # metric NAME{LABELS}: its value on the admin listener
  curl -sf "http://127.0.0.1:$aport/metrics" | awk -v k="$1" '$1 == k { print $2 }'
}

# --- the keys' errors (certmintd --check) --------------------------------------------------------
check_refused() { # check_refused WHAT WORDS EXTRA
  tls_cnf "$work/inst/bad.cnf" "$3"
  if "$certmintd" -c "$work/inst/bad.cnf" --check >"$work/bad.log" 2>&1; then
    fail "$1 (accepted)"
  elif grep -qF "$2" "$work/bad.log"; then ok "$1: $2"
  else fail "$1"; cat "$work/bad.log"; fi
}
check_refused "tls_key as a PKCS#11 URI" "a PKCS#11 URI is not supported for the TLS key" \
  'tls_key = pkcs11:token=x;object=tls\n'
cp tls.key loose.key && chmod 644 loose.key
check_refused "a TLS key readable by others" "must not be accessible by group or others" \
  "tls_key = $work/loose.key\\n"
chmod 600 dev.key
check_refused "a key that is not tls_cert's" "does not hold the public key of tls_cert" \
  "tls_key = $work/dev.key\\n"
check_refused "a tls_client_ca that cannot be read" "tls_client_ca" \
  'tls_client_ca = nope.pem\ntls_client_auth = required\n'
check_refused "a bad tls_client_auth" "is not off, optional or required" \
  'tls_client_auth = sometimes\n'
check_refused "https:// on the admin listener" "https:// is not served on the admin listener" \
  "admin_listen = https://127.0.0.1:$aport\\n"
tls_cnf "$work/inst/tls.cnf" 'tls_client_auth = optional\n'
check "certmintd --check reports the TLS identity" sh -c "\"$certmintd\" -c \"$work/inst/tls.cnf\" \
  --check | grep -q 'tls .*tls.pem (1 https:// address(es)), client certificates optional'"

# --- HTTPS with optional client certificates -------------------------------------------------------
start "$work/inst/tls.cnf" "$work/tls.log" || fail "certmintd with HTTPS started"
check "curl --cacert: /healthz over HTTPS" sh -c \
  "[ \"\$(curl -sf --cacert tls-ca.pem https://127.0.0.1:$tport/healthz)\" = ok ]"
check "ALPN: http/1.1" sh -c "curl -sv --cacert tls-ca.pem https://localhost:$tport/healthz \
  --resolve localhost:$tport:127.0.0.1 2>&1 | grep -qi 'ALPN.*accepted.*http/1.1'"
check "plain HTTP still served" curl -sf "http://127.0.0.1:$port/healthz"
check_not "curl without the TLS CA refuses the server" curl -sf "https://127.0.0.1:$tport/healthz"

tls=(-tls_used -tls_trusted tls-ca.pem)
srv=(-server "127.0.0.1:$tport" -path /.well-known/cmp/p/devices -trusted inst/ca.pem "${tls[@]}")
mac=(-ref demo-device -mac hmacWithSHA256 -secret "pass:$secret")
enrolled() {
  openssl verify -CAfile inst/ca.pem "$1" >/dev/null 2>&1 &&
    [ "$(openssl x509 -in "$1" -noout -pubkey)" = "$(openssl pkey -in "$2" -pubout)" ]
}
check "openssl cmp -tls_used: ir PBM + certConf" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey dev.key -subject /CN=tls-dev -certout ir.pem
check "  the certificate verifies and holds the key" enrolled ir.pem dev.key
# A fresh key for every enrolment: the CA refuses a key it already certified (allow_key_reuse).
fresh_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
fresh_key kur.key
check "openssl cmp -tls_used: kur" openssl cmp -cmd kur "${srv[@]}" -cert ir.pem -key dev.key \
  -newkey kur.key -certout kur.pem
check "  the certificate verifies and holds the key" enrolled kur.pem kur.key
check "openssl cmp -tls_used: rr" openssl cmp -cmd rr "${srv[@]}" -cert kur.pem -key kur.key \
  -oldcert kur.pem -revreason 1
serial=$(openssl x509 -in kur.pem -noout -serial | cut -d= -f2)
crl_lists() {
  for _ in $(seq 1 40); do
    curl -sf --cacert tls-ca.pem -o crl.der "https://127.0.0.1:$tport/crl/devices.crl" &&
      openssl crl -inform DER -in crl.der -noout -text 2>/dev/null | grep -q "$serial" && return 0
    sleep 0.25
  done
  return 1
}
check "curl --cacert: the CRL over HTTPS lists the revoked certificate" crl_lists
fresh_key k1.key
check "TLS client certificate (optional): ir with the RA's certificate" openssl cmp -cmd ir \
  "${srv[@]}" "${mac[@]}" -tls_cert ra.pem -tls_key ra.key -newkey k1.key -subject /CN=via-ra \
  -implicit_confirm -certout via-ra.pem
sleep 0.3
grep -q 'tls_peer="CN=ra-front-end,O=certmint tls" ca=devices body=ir outcome=ok' "$work/tls.log" \
  && ok "  the request's log line names the TLS client" || fail "  tls_peer in the log line"
fresh_key k2.key
check_not "TLS client certificate of a foreign CA is refused" openssl cmp -cmd ir "${srv[@]}" \
  "${mac[@]}" -tls_cert rogue.pem -tls_key rogue.key -newkey k2.key -subject /CN=rogue \
  -implicit_confirm -certout rogue-out.pem
check "TLS 1.2 works" sh -c "echo | openssl s_client -connect 127.0.0.1:$tport -tls1_2 \
  -CAfile tls-ca.pem 2>&1 | grep -q 'Verify return code: 0'"
check_not "TLS 1.1 is refused" sh -c "echo | openssl s_client -connect 127.0.0.1:$tport \
  -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' 2>&1 | grep -q 'Cipher is [A-Z]'"
check_not "TLS 1.2 without forward secrecy is refused" sh -c "echo | openssl s_client \
  -connect 127.0.0.1:$tport -tls1_2 -cipher AES128-GCM-SHA256 2>&1 | grep -q 'Cipher is [A-Z]'"
rm -f sess.pem
check "session resumption with a ticket" sh -c "(printf 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'; \
  sleep 0.5) | openssl s_client -connect 127.0.0.1:$tport -CAfile tls-ca.pem -sess_out sess.pem \
  -quiet >/dev/null 2>&1; (printf 'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'; sleep 0.5) | \
  openssl s_client -connect 127.0.0.1:$tport -CAfile tls-ca.pem -sess_in sess.pem 2>&1 | \
  grep -q '^Reused, TLSv1.3'"

# Raw bytes on the TLS port, and the HTTP suite's malformed requests over TLS (python's ssl).
python3 - "$tport" "$work/tls-ca.pem" >"$work/raw.out" 2>&1 <<'PY'
import socket, ssl, sys, time
port, ca = int(sys.argv[1]), sys.argv[2]
def closed_after(data, wait=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=wait)
    if data: s.sendall(data)
    t = time.time(); got = b""
    try:
        while True:
            c = s.recv(4096)
            if not c: break
            got += c
    except Exception as e:
        return "open(%s)" % type(e).__name__, got
    return "closed %.1f" % (time.time() - t), got
st, got = closed_after(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
print("plain_http", st.split()[0], b"HTTP/" in got)
st, got = closed_after(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\xff")
print("garbage_hello", st.split()[0], got[:1] == b"\x15" if got else "noalert")
st, got = closed_after(bytes(range(256)) * 4)
print("random_bytes", st.split()[0])
st, got = closed_after(b"", wait=10)
print("stalled", st)
ctx = ssl.create_default_context(cafile=ca)
ctx.check_hostname = False
def status(raw, timeout=10):
    s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=timeout))
    s.sendall(raw)
    d = b""
    try:
        while b"\r\n" not in d:
            c = s.recv(4096)
            if not c: break
            d += c
    except Exception: pass
    s.close()
    return d.split(b" ")[1].decode() if d.startswith(b"HTTP/") else "none"
big = b"a" * 9000
cases = [
    ("400", "garbage", b"GARBAGE\r\n\r\n"),
    ("404", "unknown_path", b"POST /nope HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"),
    ("405", "get_cmp", b"GET /.well-known/cmp HTTP/1.1\r\nHost: x\r\n\r\n"),
    ("415", "content_type", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc"),
    ("411", "no_length", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\n\r\n"),
    ("501", "coding", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nTransfer-Encoding: gzip\r\n\r\n"),
    ("413", "oversized_body", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 99999999\r\n\r\n"),
    ("431", "oversized_head", b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + big + b"\r\n\r\n"),
    ("200", "cmp_garbage", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nContent-Length: 4\r\n\r\n\x30\x02\x05\x00"),
    ("200", "chunked_cmp_garbage", b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\nContent-Type: application/pkixcmp\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n\x30\x02\r\n2\r\n\x05\x00\r\n0\r\n\r\n"),
]
for want, name, raw in cases:
    print("http_" + name, status(raw), want)
t = time.time()
print("http_slow", status(b"POST /.well-known/cmp HTTP/1.1\r\nHost: x\r\n", timeout=20), "408",
      int(time.time() - t))
PY
res() { awk -v k="$1" '$1 == k { $1 = ""; sub(/^ /, ""); print; exit }' "$work/raw.out"; }
[ "$(res plain_http)" = "closed False" ] && ok "plain HTTP on the TLS port: closed, no HTTP answer" \
  || { fail "plain HTTP on the TLS port ($(res plain_http))"; cat "$work/raw.out"; }
[ "$(res garbage_hello)" = "closed True" ] && ok "garbage ClientHello: an alert, then closed" \
  || fail "garbage ClientHello ($(res garbage_hello))"
[ "$(res random_bytes)" = "closed" ] && ok "random bytes: closed" || fail "random bytes ($(res random_bytes))"
case "$(res stalled)" in
  closed\ 1.*|closed\ 2.*|closed\ 3.*) ok "stalled handshake: closed after $(res stalled | cut -d' ' -f2) s (tls_handshake_timeout 2)";;
  *) fail "stalled handshake ($(res stalled))";;
esac
for c in garbage unknown_path get_cmp content_type no_length coding oversized_body oversized_head \
         cmp_garbage chunked_cmp_garbage; do
  set -- $(res "http_$c")
  [ "${1:-x}" = "${2:-y}" ] && ok "HTTPS $c -> $1" || fail "HTTPS $c -> ${1:-?} (want ${2:-?})"
done
set -- $(res http_slow)
[ "${1:-x}" = 408 ] && ok "HTTPS slow request -> 408 after ${3:-?} s" || fail "HTTPS slow request ($*)"
fresh_key k3.key
check "still serving HTTPS after bad input" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -newkey k3.key -subject /CN=after-bad -implicit_confirm -certout after.pem

full=$(metric 'certmint_tls_handshakes_total{result="full"}')
resumed=$(metric 'certmint_tls_handshakes_total{result="resumed"}')
failed=$(metric 'certmint_tls_handshakes_total{result="failed"}')
timeouts=$(metric 'certmint_tls_handshakes_total{result="timeout"}')
hs_sum=$(metric 'certmint_tls_handshake_seconds_sum')
[ "${full:-0}" -ge 20 ] && ok "metrics: $full full handshakes" || fail "metrics: full ${full:-?}"
[ "${resumed:-0}" -ge 1 ] && ok "metrics: $resumed resumed" || fail "metrics: resumed ${resumed:-?}"
[ "${failed:-0}" -ge 6 ] && ok "metrics: $failed failed" || fail "metrics: failed ${failed:-?}"
[ "${timeouts:-0}" -ge 1 ] && ok "metrics: $timeouts timed out" || fail "metrics: timeout ${timeouts:-?}"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) > 0 else 1)" "${hs_sum:-0}" \
  && ok "metrics: handshake seconds $hs_sum" || fail "metrics: handshake seconds ${hs_sum:-?}"

if [ -n "$bench" ]; then
  burl="https://127.0.0.1:$tport/.well-known/cmp/p/devices"
  check "certmint-bench --tls: 300 enrolments over 4 keep-alive connections" "$bench" --url "$burl" \
    --tls-ca tls-ca.pem --secret "demo-device:$secret" -n 300 --connections 4 --ca inst/ca.pem \
    --quiet --json ka.json
  check "certmint-bench --tls --reconnect: resumed handshakes" sh -c "\"$bench\" --url \"$burl\" \
    --tls-ca tls-ca.pem --secret demo-device:$secret -n 100 --connections 2 --reconnect \
    --quiet --json rc.json && python3 -c 'import json,sys; r=json.load(open(\"rc.json\")); \
    sys.exit(0 if r[\"ok\"] == 100 and r[\"tls_resumed\"] >= 90 else 1)'"
  check "certmint-bench --tls --reconnect --tls-no-resume: full handshakes" sh -c "\"$bench\" \
    --url \"$burl\" --tls-ca tls-ca.pem --secret demo-device:$secret -n 50 --reconnect \
    --tls-no-resume --quiet --json nr.json && python3 -c 'import json,sys; \
    r=json.load(open(\"nr.json\")); sys.exit(0 if r[\"ok\"] == 50 and r[\"tls_full\"] == 50 else 1)'"
  check "certmint-bench --tls with a client certificate" "$bench" --url "$burl" \
    --tls-ca tls-ca.pem --tls-cert ra.pem --tls-key ra.key --secret "demo-device:$secret" -n 20 \
    --quiet
fi
stop && ok "SIGTERM: clean exit" || fail "SIGTERM: exit status"

# --- client certificates required --------------------------------------------------------------------
tls_cnf "$work/inst/req.cnf" 'tls_client_auth = required\n'
start "$work/inst/req.cnf" "$work/req.log" || fail "certmintd with required client certificates started"
fresh_key k4.key
check "required: ir with the RA's certificate" openssl cmp -cmd ir "${srv[@]}" "${mac[@]}" \
  -tls_cert ra.pem -tls_key ra.key -newkey k4.key -subject /CN=req-ra -implicit_confirm \
  -certout req-ra.pem
fresh_key k5.key
check_not "required: ir without a client certificate is refused" openssl cmp -cmd ir "${srv[@]}" \
  "${mac[@]}" -newkey k5.key -subject /CN=req-none -implicit_confirm -certout req-none.pem
check_not "required: curl without a client certificate is refused" curl -sf --cacert tls-ca.pem \
  "https://127.0.0.1:$tport/healthz"
check "required: curl with the RA's certificate" curl -sf --cacert tls-ca.pem --cert ra.pem \
  --key ra.key "https://127.0.0.1:$tport/healthz"
check "required: the admin listener needs none" curl -sf "http://127.0.0.1:$aport/healthz"
# CMP protection still decides: a TLS-authenticated RA with a wrong MAC secret is rejected.
fresh_key k6.key
if openssl cmp -cmd ir "${srv[@]}" -ref demo-device -mac hmacWithSHA256 -secret pass:wrong -tls_cert ra.pem \
     -tls_key ra.key -newkey k6.key -subject /CN=x -certout x.pem >"$work/wrong.log" 2>&1; then
  fail "a TLS client certificate does not replace CMP protection (was accepted)"
elif grep -q badMessageCheck "$work/wrong.log"; then
  ok "a TLS client certificate does not replace CMP protection (badMessageCheck)"
else fail "a TLS client certificate does not replace CMP protection"; cat "$work/wrong.log"; fi
stop && ok "SIGTERM: clean exit" || fail "SIGTERM: exit status"

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/env bash
# tests/integration/test_coap.sh CERTMINTD CERTMINT COAP_CLIENT [P11SHIM]
# CMP over CoAP (RFC 9482) end to end: a throwaway instance with coap_listen, requests made by
# the real `openssl cmp` client (-reqout against its mock server), sent by the real libcoap
# client (coap-client, confirmable and not, in one datagram and block-wise both ways), and the
# answers checked by `openssl cmp` again (-reqin/-rspin: transactionID, nonces, MAC, the
# certificate). Then what must fail safely: an oversized body, a truncated block sequence (the
# transfer expires), garbage datagrams, a flood from one address while HTTP clients enrol, and
# with P11SHIM, a slow HSM (separate responses after an Empty ACK).
set -uo pipefail
certmintd=$1
certmint=$2
coap=$3
shim=${4:-}
work=$(mktemp -d /tmp/certmint-coap-XXXXXX)
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

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
cport=$(( port + 1 ))
"$certmint" init --dir "$work/inst" --port "$port" --subject "/O=certmint coap/CN=coap Root CA" \
  >"$work/init.log" 2>&1 || { cat "$work/init.log"; fail "certmint init"; exit 1; }
sed -i "s/^listen = .*/&\ncoap_listen = 127.0.0.1:$cport\ncoap_transfer_timeout = 2\ncoap_peer_rate = 300\nmax_request_bytes = 8192/" \
  "$work/inst/certmint.cnf"
sed -i 's/^caPubs = on/caPubs = on\nunprotected_genm = on/' "$work/inst/certmint.cnf"
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
mac=(-ref demo-device -mac hmacWithSHA256 -secret "pass:$secret")
url="coap://127.0.0.1:$cport/.well-known/cmp/p/devices"
cd "$work"

start() { # start CONFIG: certmintd in the background, healthy
  "$certmintd" -c "$1" --log "$work/daemon.log" >>"$work/stdout.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  return 1
}
metric() { # metric 'SERIES': its value in /metrics (0 when absent)
  curl -sf "http://127.0.0.1:$port/metrics" | awk -v s="$1" '$1 == s {print $2; f=1} END {if (!f) print 0}'
}
# mkreq OUT CMD KEY CN [openssl args]: a request made by openssl cmp against its mock server.
mkreq() {
  local out=$1 cmd=$2 key=$3 cn=$4; shift 4
  openssl cmp -cmd "$cmd" -use_mock_srv -srv_ref demo-device -srv_secret "pass:$secret" \
    -srv_cert inst/ca.pem -srv_key ec.key -rsp_cert inst/ca.pem "${mac[@]}" -newkey "$key" \
    -subject "/CN=$cn" -reqout "$out" -certout mock.pem -disable_confirm "$@" >/dev/null 2>&1
  [ -s "$out" ]
}
# post IN OUT [coap-client args]: POST IN with Content-Format 259 to $url, the answer to OUT.
post() {
  local in=$1 out=$2; shift 2
  rm -f "$out"
  timeout 30 "$coap" -m post -t 259 -f "$in" -o "$out" "$@" "$url" >"$work/coap.out" 2>&1
  [ -s "$out" ]
}
enrolled() { # enrolled CERT KEY CN
  openssl verify -CAfile inst/ca.pem "$1" >/dev/null 2>&1 || return 1
  [ "$(openssl x509 -in "$1" -noout -pubkey)" = "$(openssl pkey -in "$2" -pubout)" ] || return 1
  openssl x509 -in "$1" -noout -subject | grep -q "CN = $3" || return 1
}

start "$work/inst/certmint.cnf" || { fail "certmintd with coap_listen"; cat "$work/stdout.log"; exit 1; }
grep -q "serving CMP over CoAP on coap://127.0.0.1:$cport" "$work/daemon.log" \
  && ok "certmintd serves coap://127.0.0.1:$cport" || fail "no CoAP serving line"
# A key per enrolment: the CA certifies a key once (allow_key_reuse = off).
for k in ec non conf http-1 http-2 http-3 http-4 http-5 after; do
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$k.key" 2>/dev/null
done
for k in rsa slow; do
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:3072 -out "$k.key" 2>/dev/null
done

# ir with implicitConfirm, one datagram each way (piggybacked in the ACK).
mkreq ir1.der ir ec.key coap-ec -implicit_confirm && post ir1.der ip1.der
check "ir implicitConfirm (CON, one datagram): the ip passes openssl cmp" openssl cmp -cmd ir \
  -reqin ir1.der -rspin ip1.der "${mac[@]}" -newkey ec.key -subject /CN=coap-ec \
  -implicit_confirm -trusted inst/ca.pem -certout c1.pem
check "  issued cert verifies, key and subject" enrolled c1.pem ec.key coap-ec
# Block-wise both ways: 256-byte blocks, a 1.1 KB request and a 1.8 KB answer.
mkreq ir2.der ir rsa.key coap-rsa -implicit_confirm && post ir2.der ip2.der -b 256
check "ir RSA-3072 block-wise (Block1 and Block2 of 256 bytes)" openssl cmp -cmd ir \
  -reqin ir2.der -rspin ip2.der "${mac[@]}" -newkey rsa.key -subject /CN=coap-rsa \
  -implicit_confirm -trusted inst/ca.pem -certout c2.pem
check "  issued cert verifies, key and subject" enrolled c2.pem rsa.key coap-rsa
# Non-confirmable, at an operation label (RFC 9483 §6.2's CoAP label "ir").
mkreq ir3.der ir non.key coap-non -implicit_confirm &&
  url="coap://127.0.0.1:$cport/.well-known/cmp/p/devices/ir" post ir3.der ip3.der -N
check "ir NON at /.well-known/cmp/p/devices/ir" openssl cmp -cmd ir -reqin ir3.der \
  -rspin ip3.der "${mac[@]}" -newkey non.key -subject /CN=coap-non -implicit_confirm \
  -trusted inst/ca.pem -certout c3.pem
# ir with certConf: openssl cmp makes the certConf from the ip (-rspin) and stops when no
# pkiConf file follows; the certConf goes over CoAP, and both answers pass openssl cmp.
mkreq ir4.der ir conf.key coap-conf && post ir4.der ip4.der
openssl cmp -cmd ir -reqin ir4.der -rspin ip4.der -reqout x4.der,cc4.der "${mac[@]}" \
  -newkey conf.key -subject /CN=coap-conf -trusted inst/ca.pem -certout c4.pem >/dev/null 2>&1
[ -s cc4.der ] && post cc4.der pc4.der
check "ir + certConf over CoAP: ip and pkiConf pass openssl cmp" openssl cmp -cmd ir \
  -reqin ir4.der,cc4.der -rspin ip4.der,pc4.der "${mac[@]}" -newkey conf.key \
  -subject /CN=coap-conf -trusted inst/ca.pem -certout c4.pem
check "  issued cert verifies, key and subject" enrolled c4.pem conf.key coap-conf
# genm caCerts (MAC-protected).
mkreq gm.der genm ec.key x -infotype caCerts && post gm.der gp.der
check "genm caCerts: the genp passes openssl cmp" sh -c "openssl cmp -cmd genm -reqin gm.der \
  -rspin gp.der -ref demo-device -secret pass:$secret -infotype caCerts -trusted inst/ca.pem \
  2>&1 | grep -q 'id-it-caCerts'"
check "ok log lines say via=coap" grep -q "ca=devices body=ir outcome=ok us=[0-9]* via=coap" \
  daemon.log
sum=$(curl -sf "http://127.0.0.1:$port/metrics" | awk '/^certmint_request_duration_seconds_count\{body="ir",outcome="ok"\}/ {print $2}')
[ "${sum:-0}" -ge 4 ] && ok "CoAP requests counted in certmint_request_duration_seconds ($sum ir)" \
  || fail "CoAP requests not in the request metrics (${sum:-none})"
timeout 10 "$coap" -m get "coap://127.0.0.1:$cport/.well-known/core" >core.txt 2>&1
grep -q '</.well-known/cmp/p/devices>;ct=259' core.txt && ok "GET /.well-known/core lists ct=259" \
  || fail "/.well-known/core: $(cat core.txt)"

# An oversized body (max_request_bytes = 8192): 4.13, nothing kept.
head -c 12000 /dev/urandom >big.der
timeout 30 "$coap" -m post -t 259 -f big.der -o big.out "$url" >big.log 2>&1
grep -q "4.13" big.log && ok "oversized body -> 4.13" || fail "oversized body: $(cat big.log)"
[ "$(metric 'certmint_coap_refused_total{reason="too_large"}')" -ge 1 ] \
  && ok "  counted in certmint_coap_refused_total{reason=\"too_large\"}" || fail "  too_large not counted"

# A truncated block sequence: the first of three blocks only; the transfer is open, then
# expires after coap_transfer_timeout (2 s) and a late block finds nothing (4.08).
cat >udp.py <<'PY'
import socket, sys, os, time
port = int(sys.argv[1]); what = sys.argv[2]
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.connect(("127.0.0.1", port)); s.settimeout(2)
def opt(delta, val):
    d = bytes([delta << 4 | len(val)]) if delta < 13 and len(val) < 13 else None
    if d is None:  # deltas of the paths below stay < 13; lengths < 13
        raise SystemExit("bad option")
    return d + val
def post(mid, block1, payload, path=(b".well-known", b"cmp")):
    m = bytes([0x41, 0x02, mid >> 8, mid & 255, 0x77])
    m += opt(11, path[0]) + opt(0, path[1]) + bytes([0x12, 0x01, 0x03]) + bytes([0xd1, 27 - 12 - 13, block1])
    return m + b"\xff" + payload
if what == "first":
    s.send(post(1, 0x0e, b"\x30" * 1024)); print(s.recv(2048)[1])  # 0/M/1024 -> 2.31 (95)
elif what == "late":
    s.send(post(2, 0x1e, b"\x30" * 1024)); print(s.recv(2048)[1])  # 1/M/1024 -> 4.08 (136)
elif what == "garbage":
    for i in range(100):
        s.send(bytes([0x00]) + os.urandom(30))         # version 0: not CoAP
        s.send(bytes([0x49, 1, 0, i]) + os.urandom(4))  # token length 9: a format error (RST)
    s.send(b"\x40\x00\x12\x34")                     # a ping still gets its RST (type 3)
    while True:
        b = s.recv(64)
        if b[2:4] == b"\x12\x34": print((b[0] >> 4) & 3); break
elif what == "flood":
    end = time.time() + float(sys.argv[3]); n = 0
    while time.time() < end:
        for _ in range(200):
            try: s.send(post(n & 0xffff, 0x06, b"\x30")); n += 1
            except OSError: pass
    print(n)
PY
[ "$(python3 udp.py "$cport" first)" = 95 ] && ok "first block of three -> 2.31 Continue" \
  || fail "first block: no 2.31"
[ "$(metric certmint_coap_transfers_open)" = 1 ] && ok "  one transfer open" || fail "  transfers open: $(metric certmint_coap_transfers_open)"
sleep 3
[ "$(metric certmint_coap_transfers_open)" = 0 ] && [ "$(metric certmint_coap_transfers_expired_total)" -ge 1 ] \
  && ok "  abandoned: freed after coap_transfer_timeout" || fail "  the truncated transfer was not freed"
[ "$(python3 udp.py "$cport" late)" = 136 ] && ok "  a late block -> 4.08" || fail "  late block: no 4.08"

# Garbage datagrams: counted, a Reset for the malformed Confirmable ones, nothing breaks.
g0=$(metric 'certmint_coap_datagrams_total{kind="garbage"}')
[ "$(python3 udp.py "$cport" garbage)" = 3 ] && ok "200 garbage datagrams, then a ping -> RST" \
  || fail "garbage datagrams: the ping got no RST"
g1=$(metric 'certmint_coap_datagrams_total{kind="garbage"}')
[ $((g1 - g0)) -ge 200 ] && ok "  counted as garbage ($((g1 - g0)))" || fail "  garbage counted $((g1 - g0))"
check "  still serving HTTP" curl -sf "http://127.0.0.1:$port/healthz"

# A flood from one address (far over coap_peer_rate = 300/s) while HTTP clients enrol: the
# enrolments succeed and the flood is dropped and counted.
python3 udp.py "$cport" flood 4 >flood.out 2>&1 &
fpid=$!
sleep 0.5
t0=$(date +%s%N)
okc=0
for i in 1 2 3 4 5; do
  openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp/p/devices \
    -trusted inst/ca.pem "${mac[@]}" -newkey "http-$i.key" -subject "/CN=http-$i" -implicit_confirm \
    -certout "h$i.pem" >/dev/null 2>&1 && okc=$((okc + 1))
done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$fpid"
rl=$(metric 'certmint_coap_datagrams_total{kind="rate_limited"}')
[ "$okc" = 5 ] && ok "HTTP enrolments during a CoAP flood of $(cat flood.out) datagrams: 5/5 in ${ms} ms" \
  || fail "HTTP enrolments during a CoAP flood: $okc/5"
[ "${rl:-0}" -gt 1000 ] && ok "  the flood was rate-limited ($rl dropped)" || fail "  rate_limited $rl"
# Each flood request that got through was answered with a signed CMP error in Block2 slices
# nobody fetched: the address holds coap_max_transfers_per_peer of them until they expire.
tr=$(metric 'certmint_coap_refused_total{reason="transfers"}')
[ "${tr:-0}" -gt 0 ] && ok "  the rest refused by coap_max_transfers_per_peer ($tr)" || fail "  transfers cap: $tr"
# They expire coap_transfer_timeout (2 s) after their last block; on a loaded machine the
# sweep may run a little later: wait for it (at most 15 s) rather than a fixed time.
sleep 2
for _ in $(seq 1 130); do
  [ "$(metric certmint_coap_transfers_open)" = 0 ] && break
  sleep 0.1
done
mkreq ir5.der ir after.key coap-after -implicit_confirm && post ir5.der ip5.der
check "  CoAP serves the address again once its abandoned transfers expired" openssl cmp -cmd ir -reqin ir5.der -rspin ip5.der \
  "${mac[@]}" -newkey after.key -subject /CN=coap-after -implicit_confirm -trusted inst/ca.pem \
  -certout c5.pem

kill -TERM "$pid"; wait "$pid"; rc=$?; pid=""
[ "$rc" = 0 ] && ok "SIGTERM: exit 0" || fail "SIGTERM: exit $rc"

# A slow HSM (the p11shim delays every C_Sign by 1.2 s): the request is acknowledged with an
# Empty ACK and answered later in a separate Confirmable response, block-wise.
if [ -n "$shim" ]; then
  sed "s#module-path=[^&;?]*#module-path=$shim#g" inst/certmint.cnf >inst/slow.cnf
  export P11SHIM_MODULE=/usr/lib/softhsm/libsofthsm2.so P11SHIM_SIGN_DELAY_US=1200000
  if start "$work/inst/slow.cnf"; then
    mkreq ir6.der ir slow.key coap-slow -implicit_confirm && post ir6.der ip6.der -b 512
    check "slow HSM: ir block-wise answered by a separate response" openssl cmp -cmd ir \
      -reqin ir6.der -rspin ip6.der "${mac[@]}" -newkey slow.key -subject /CN=coap-slow \
      -implicit_confirm -trusted inst/ca.pem -certout c6.pem
    [ "$(metric certmint_coap_separate_responses_total)" -ge 1 ] \
      && ok "  counted in certmint_coap_separate_responses_total" || fail "  no separate response counted"
    kill -TERM "$pid"; wait "$pid"; pid=""
  else
    fail "certmintd behind the p11shim"
  fi
fi

echo "$passes passed, $fails failed"
[ "$fails" -eq 0 ]

#!/usr/bin/env bash
# bench/compare.sh [BUILD_DIR] — certmint side by side with OpenSSL's `openssl cmp` mock server
# and with the physical limit of this machine, in one run (issue 9). Writes
# bench/results/LATEST.md and bench/results/LATEST.json.
#
#   BUILD_DIR               a release build (default build/release; cmake --preset release)
#   CM_BENCH_DURATION=S     seconds per measured run (default 5)
#   CM_BENCH_CONNECTIONS    connection counts (default "1 8 64")
#   CM_BENCH_KEY_TYPE       device key type (default ec-p256)
#
# 1. a throwaway certmint instance (certmint init: SoftHSM token, EC P-256 CA, PBM secret), with
#    a vendor CA in trust_anchors for signature-protected requests, and an OpenSSL mock server
#    with the same secret and the same vendor CA (-srv_trusted);
# 2. the physical limit, in process on all cores (certmint-bench --limit): POPO verification,
#    PBM derivation + MAC check, response MAC and the certificate signature, once through the
#    instance's SoftHSM token and once with an in-memory OpenSSL key; measured again after
#    step 3, and the higher of the two is used (the machine's speed drifts);
# 3. certmint-bench against both servers: ir-implicit with PBM, ir-implicit signature-protected,
#    ir-confirm with PBM; at each connection count; same key type; requests prepared before the
#    clock. The mock server is single-threaded and signs no certificate (it returns its fixed
#    -rsp_cert and records nothing), so --no-key-check is used against it.
#    Then one row for certmint alone: ir-implicit at 8 connections with a key-based MAC
#    (HMAC-SHA256 over a key.REF key, RFC 9481 §6.2) against PBM (500 iterations), back to
#    back, so the cost of password stretching shows.
# 4. CMP over CoAP (RFC 9482) against HTTP on the same daemon, back to back: ir-implicit PBM at
#    8 concurrent clients, keep-alive HTTP and confirmable CoAP (certmint-bench --coap);
# 5. certmintd behind the p11shim's 2 ms HSM latency at hsm_sessions 1/16/64.
# 4c. Central key generation (issue 19): ir-ckg against ir-implicit PBM at 8 connections.
# 4b. Nested batches from an RA (issue 16): ir-implicit PBM in nested messages of 16 and of 64
#    signed by an RA certificate, 8 connections, against single ir-implicit PBM at 8
#    connections, interleaved twice in the same run; enrolments/s against the token-bound limit.
# 3b. HTTPS (issue 18): certmintd also serves https:// on another port with a test TLS
#    certificate; ir-implicit PBM at 8 connections over HTTP and HTTPS, each with keep-alive and
#    with a new connection per transaction (HTTPS: resuming a session ticket, and full
#    handshakes), interleaved in the same run.
# Also: the disk's durable-write floor (bench/fsync_floor.py: fdatasync of 4 KiB, median) and
# what it allows a closed loop of 1 and 8 clients; where certmintd's CPU goes during each
# keep-alive run, per thread, from /proc/PID/task/*/stat (bench/threadcpu.py), against the
# crypto the limit says an enrolment needs; and bench/results/LATEST.svg (gnuplot, when
# installed): enrolments/s against connections per flow beside the mock and the limit, and
# p50/p99 latency.
# Finishes in about 3-4 minutes on 2 cores with the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
dur=${CM_BENCH_DURATION:-5}
conns=${CM_BENCH_CONNECTIONS:-"1 8 64"}
ktype=${CM_BENCH_KEY_TYPE:-ec-p256}
certmintd=$build/engine/certmintd
certmint=$build/tools/certmint
bench=$build/bench/certmint-bench
for b in "$certmintd" "$certmint" "$bench"; do
  [ -x "$b" ] || { echo "compare.sh: $b missing (build the release preset first)" >&2; exit 2; }
done
out=$root/bench/results
mkdir -p "$out"
work=$(mktemp -d /tmp/certmint-compare-XXXXXX)
dpid=""
mpid=""
cleanup() {
  for p in $dpid $mpid; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $dpid $mpid; do wait "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_port() { # wait_port PORT
  for _ in $(seq 1 100); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),1)' "$1" \
      2>/dev/null && return 0
    sleep 0.1
  done
  echo "compare.sh: nothing listens on port $1" >&2
  return 1
}

echo "== setting up in $work"
cport=$(free_port)
# --kga: the CMP certificate may sign central key generation's key packages (step 4c).
"$certmint" init --dir "$work/inst" --port "$cport" --kga >"$work/init.log" 2>&1 \
  || { cat "$work/init.log"; exit 1; }
secret=$(cat "$work/inst/secrets/demo-device")
token_uri=$(sed -n 's/^key *= *//p' "$work/inst/certmint.cnf" | head -1)
# A vendor CA and a device certificate for signature-protected requests (RFC 9483 §4.1.1:
# a manufacturer certificate), trusted by both servers.
(
  cd "$work"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout vendor-ca.key \
    -out vendor-ca.pem -subj "/CN=bench vendor CA" -days 2 \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out device.key
  openssl req -new -key device.key -subj "/CN=bench-device" -out device.csr
  openssl x509 -req -in device.csr -CA vendor-ca.pem -CAkey vendor-ca.key -set_serial 1 \
    -days 2 -out device.pem
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out mock.key
  openssl req -x509 -key mock.key -subj "/CN=openssl mock CA" -days 2 -out mock.pem
  # HTTPS: a TLS CA and the server's certificate for 127.0.0.1.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls-ca.key \
    -out tls-ca.pem -subj "/CN=bench TLS CA" -days 2 -addext basicConstraints=critical,CA:TRUE
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout tls.key \
    -subj /CN=127.0.0.1 -out tls.csr
  printf 'subjectAltName=IP:127.0.0.1\n' >tls.ext
  openssl x509 -req -in tls.csr -CA tls-ca.pem -CAkey tls-ca.key -set_serial 2 -days 2 \
    -extfile tls.ext -out tls.pem
  chmod 600 tls.key
  # Step 4b: an RA certificate (extended key usage id-kp-cmcRA) from the vendor CA.
  printf '[ra]\nkeyUsage = critical, digitalSignature\nextendedKeyUsage = 1.3.6.1.5.5.7.3.28\nsubjectKeyIdentifier = hash\n' >ra.ext
  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ra.key
  openssl req -new -key ra.key -subj "/CN=bench RA" -out ra.csr
  openssl x509 -req -in ra.csr -CA vendor-ca.pem -CAkey vendor-ca.key -set_serial 3 -days 2 \
    -extfile ra.ext -extensions ra -out ra.pem
) >"$work/openssl.log" 2>&1 || { cat "$work/openssl.log"; exit 1; }
echo "trust_anchors = $work/vendor-ca.pem" >>"$work/inst/certmint.cnf" # [clients:devices] is last
echo "ra_certs = $work/ra.pem" >>"$work/inst/certmint.cnf"
# The runs reuse a pool of 256 device keys (--key-pool): the CA must be allowed to certify a key
# again (issue 14's key-reuse rule refuses it by default).
sed -i 's/^\[profile:devices\]/&\nallow_key_reuse = on/' "$work/inst/certmint.cnf"
# CoAP for step 4: every bench client shares 127.0.0.1, so the per-address caps are lifted.
coport=$(python3 -c 'import socket; s=socket.socket(type=socket.SOCK_DGRAM); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^listen = .*/&\ncoap_listen = 127.0.0.1:$coport\ncoap_peer_rate = none\ncoap_max_transfers_per_peer = 64/" \
  "$work/inst/certmint.cnf"
# A key for the key-based MAC row (key.REF: hex, mode 0600).
mac_key=$(openssl rand -hex 32)
(umask 077; echo "$mac_key" >"$work/inst/secrets/bench-key")
echo "key.bench-key = secrets/bench-key" >>"$work/inst/certmint.cnf"
tport=$(free_port)
printf '\n[certmintd]\nlisten = 127.0.0.1:%s, https://127.0.0.1:%s\ntls_cert = %s\ntls_key = %s\n' \
  "$cport" "$tport" "$work/tls.pem" "$work/tls.key" >>"$work/inst/certmint.cnf"
export $(cat "$work/inst/env")
start_certmintd() {
  "$certmintd" -c "$work/inst/certmint.cnf" >>"$work/certmintd.log" 2>&1 &
  dpid=$!
}
# check_certmintd WHAT: if the daemon died during WHAT, note it (exit status, log tail) in the
# report and start it again so the remaining runs still measure something.
check_certmintd() {
  kill -0 "$dpid" 2>/dev/null && return 0
  local rc=0
  wait "$dpid" || rc=$?
  echo "!! certmintd died during $1 (exit status $rc); its last log lines:" | tee -a "$work/notes.txt"
  tail -5 "$work/certmintd.log" | sed 's/^/   /' | tee -a "$work/notes.txt"
  start_certmintd
  wait_port "$cport"
}
start_certmintd
mport=$(free_port)
openssl cmp -port "$mport" -srv_ref demo-device -srv_secret "pass:$secret" \
  -srv_cert "$work/mock.pem" -srv_key "$work/mock.key" -rsp_cert "$work/mock.pem" \
  -srv_trusted "$work/vendor-ca.pem" >"$work/mock.log" 2>&1 &
mpid=$!
wait_port "$cport"
wait_port "$tport"
wait_port "$mport"

echo "== durable-write floor (fdatasync of 4 KiB where the store lives)"
python3 "$root/bench/fsync_floor.py" "$work/inst" 200 | tee "$work/fsync.json" \
  || echo '{}' >"$work/fsync.json"

echo "== physical limit (in process, all cores)"
"$bench" --limit --token-uri "$token_uri" --key-type "$ktype" --duration 3 \
  --json "$work/limit.json" | tee "$work/limit.txt"
# Enough prepared requests for a run at 1.3 x the limit (the rest would be wasted preparation).
prepare=$(python3 -c 'import json,sys; print(int(json.load(open(sys.argv[1]))["limit_token_eps"] * 1.3 * float(sys.argv[2])) + 200)' \
  "$work/limit.json" "$dur")

curl_url="http://127.0.0.1:$cport/.well-known/cmp/p/devices"
mock_url="http://127.0.0.1:$mport/pkix/"
run() { # run NAME URL FLOW PROT CONNS EXTRA...
  local name=$1 url=$2 flow=$3 prot=$4 c=$5
  shift 5
  local auth=(--secret "demo-device:$secret")
  [ "$prot" = signature ] && auth=(--cert "$work/device.pem" --key "$work/device.key")
  "$bench" --url "$url" "${auth[@]}" --flow "$flow" --key-type "$ktype" \
    --connections "$c" --duration "$dur" --prepare "$prepare" --warmup 50 --timeout 20 \
    --json "$work/$name-$flow-$prot-$c.json" "$@" >"$work/$name-$flow-$prot-$c.txt" 2>&1 || true
  sed -n '1,3p;5p;/unfinished/p;/errors/p' "$work/$name-$flow-$prot-$c.txt" | sed 's/^/    /'
}
for fp in "ir-implicit pbm" "ir-implicit signature" "ir-confirm pbm"; do
  set -- $fp
  for c in $conns; do
    echo "== $1 / $2 / $c connection(s)"
    python3 "$root/bench/threadcpu.py" snap "$dpid" "$work/cpu0-$1-$2-$c.json" || true
    run certmint "$curl_url" "$1" "$2" "$c" --ca "$work/inst/ca.pem"
    python3 "$root/bench/threadcpu.py" snap "$dpid" "$work/cpu1-$1-$2-$c.json" || true
    check_certmintd "$1/$2/$c keep-alive"
    run certmint-reconnect "$curl_url" "$1" "$2" "$c" --ca "$work/inst/ca.pem" --reconnect
    check_certmintd "$1/$2/$c reconnect"
    run mock "$mock_url" "$1" "$2" "$c" --no-key-check
    run mock-reconnect "$mock_url" "$1" "$2" "$c" --no-key-check --reconnect
  done
done

# Key-based MAC against PBM: certmint alone (the mock has no key-based MACs), 8 connections.
echo "== ir-implicit / key-based MAC (hmac-sha256) vs PBM / 8 connections"
for prot in pbm hmac-sha256; do
  auth=(--secret "demo-device:$secret")
  [ "$prot" = pbm ] || auth=(--secret "bench-key:$mac_key" --mac "$prot")
  "$bench" --url "$curl_url" "${auth[@]}" --flow ir-implicit --key-type "$ktype" \
    --connections 8 --duration "$dur" --prepare "$prepare" --warmup 50 --timeout 20 \
    --ca "$work/inst/ca.pem" --json "$work/keymac-$prot.json" >"$work/keymac-$prot.txt" 2>&1 || true
  sed -n '1,3p;5p;/errors/p' "$work/keymac-$prot.txt" | sed 's/^/    /'
  check_certmintd "ir-implicit/$prot/8 (key-based MAC row)"
done
# HTTPS against HTTP, ir-implicit PBM at 8 connections, interleaved: keep-alive, then a new
# connection per transaction (HTTPS resuming its session ticket, and with full handshakes).
https_url="https://127.0.0.1:$tport/.well-known/cmp/p/devices"
echo "== HTTPS: ir-implicit / pbm / 8 connections"
run http-ka "$curl_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem"
run https-ka "$https_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem" --tls-ca "$work/tls-ca.pem"
check_certmintd "HTTPS keep-alive"
run http-rc "$curl_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem" --reconnect
run https-rc "$https_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem" --tls-ca "$work/tls-ca.pem" \
  --reconnect
run https-full "$https_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem" --tls-ca "$work/tls-ca.pem" \
  --reconnect --tls-no-resume
check_certmintd "HTTPS new connections"
curl -sf "http://127.0.0.1:$cport/metrics" | grep '^certmint_tls_handshake' >"$work/tls-metrics.txt" || true

# The limit again after the runs: the machine is shared and its speed drifts over minutes; the
# higher of the two limits is used for the ratios (the stricter comparison).
echo "== physical limit again (in process, all cores)"
"$bench" --limit --token-uri "$token_uri" --key-type "$ktype" --duration 3 \
  --json "$work/limit-end.json" | tee "$work/limit-end.txt"

echo "== results"
python3 - "$work" "$out" "$dur" "$ktype" "$conns" "$root/bench" <<'PY'
import json, os, platform, re, subprocess, sys
work, out, dur, ktype, conns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
sys.path.insert(0, sys.argv[6])
import threadcpu  # bench/threadcpu.py
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
def cmd(*a):
    try:
        return subprocess.run(a, capture_output=True, text=True).stdout.strip()
    except Exception:
        return "?"
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
machine = {
    "cores": os.cpu_count(),
    "cpu_model": cpu,
    "kernel": platform.release(),
    "openssl": cmd("openssl", "version"),
    "softhsm": cmd("softhsm2-util", "--version"),
    "key_type": ktype,
    "seconds_per_run": float(dur),
}
limits = [l for l in (load(os.path.join(work, "limit.json")),
                      load(os.path.join(work, "limit-end.json"))) if l]
limit = max(limits, key=lambda l: l.get("limit_token_eps") or 0) if limits else {}
machine["limit"] = limit
machine["limit_token_eps_measured"] = [l.get("limit_token_eps") for l in limits]
runs = []
for flow, prot in (("ir-implicit", "pbm"), ("ir-implicit", "signature"), ("ir-confirm", "pbm")):
    for c in conns.split():
        cm = load(os.path.join(work, f"certmint-{flow}-{prot}-{c}.json")) or {}
        cr = load(os.path.join(work, f"certmint-reconnect-{flow}-{prot}-{c}.json")) or {}
        mk = load(os.path.join(work, f"mock-{flow}-{prot}-{c}.json")) or {}
        mr = load(os.path.join(work, f"mock-reconnect-{flow}-{prot}-{c}.json")) or {}
        # The mock serves one keep-alive connection at a time (the others wait), so its
        # better mode is the one compared against.
        best = max((mk, mr), key=lambda d: d.get("eps") or 0)
        runs.append({
            "flow": flow, "protection": prot, "connections": int(c),
            "certmint_eps": cm.get("eps"), "certmint_p99_ms": cm.get("latency_ms", {}).get("p99"),
            "certmint_p50_ms": cm.get("latency_ms", {}).get("p50"),
            "certmint_latency_histogram": cm.get("latency_histogram"),
            "certmint_failed": cm.get("failed"), "certmint_client_cpu_s": cm.get("client_cpu_s"),
            "certmint_seconds": cm.get("seconds"),
            "certmint_reconnect_eps": cr.get("eps"),
            "certmint_reconnect_p99_ms": cr.get("latency_ms", {}).get("p99"),
            "certmint_reconnect_failed": cr.get("failed"),
            "openssl_mock_eps": best.get("eps"),
            "openssl_mock_p99_ms": best.get("latency_ms", {}).get("p99"),
            "openssl_mock_p50_ms": best.get("latency_ms", {}).get("p50"),
            "openssl_mock_mode": "reconnect" if best is mr else "keep-alive",
            "openssl_mock_keepalive_eps": mk.get("eps"),
            "openssl_mock_keepalive_unfinished": mk.get("unfinished"),
            "openssl_mock_reconnect_eps": mr.get("eps"),
            "openssl_mock_failed": best.get("failed"),
            "limit_token_eps": limit.get("limit_token_eps"),
            "limit_memory_eps": limit.get("limit_memory_eps"),
        })
keymac = []
for prot in ("pbm", "hmac-sha256"):
    k = load(os.path.join(work, f"keymac-{prot}.json")) or {}
    keymac.append({"flow": "ir-implicit", "protection": prot, "connections": 8,
                   "certmint_eps": k.get("eps"), "certmint_p99_ms": k.get("latency_ms", {}).get("p99"),
                   "certmint_failed": k.get("failed"),
                   "certmint_client_cpu_s": k.get("client_cpu_s")})
# Where certmintd's CPU went in each keep-alive run (bench/threadcpu.py), against the crypto an
# ir-implicit PBM enrolment needs (the limit's single-threaded figures).
crypto_pbm = (sum(limit.get(k) or 0 for k in ("popo_us", "pbm_us", "mac_us", "sign_token_us"))
              if limit else None)
for r in runs:
    tag = f"{r['flow']}-{r['protection']}-{r['connections']}"
    a, b = load(os.path.join(work, f"cpu0-{tag}.json")), load(os.path.join(work, f"cpu1-{tag}.json"))
    cm = load(os.path.join(work, f"certmint-{tag}.json")) or {}
    n = (cm.get("ok") or 0) + (cm.get("failed") or 0)
    if a and b and n:
        pbm = (r["flow"], r["protection"]) == ("ir-implicit", "pbm")
        r["certmint_cpu"] = threadcpu.diff(a, b, n, crypto_pbm if pbm else None)
fs = (load(os.path.join(work, "fsync.json")) or {}).get("fdatasync_4k_ms")
machine["fdatasync_4k_ms"] = fs
json.dump({"machine": machine, "runs": runs, "key_mac_vs_pbm": keymac},
          open(os.path.join(out, "LATEST.json"), "w"), indent=1)
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"
lines = [
    "# certmint vs OpenSSL mock server vs the physical limit",
    "",
    f"Machine: {machine['cores']} cores, {cpu}, kernel {machine['kernel']}; {machine['openssl']}; "
    f"SoftHSM {machine['softhsm']}. Device keys {ktype}, {dur} s per run, requests prepared "
    "before the clock (certmint-bench).",
    "",
    f"Physical limit (certmint-bench --limit, {limit.get('threads', '?')} threads; POPO verify "
    f"{f(limit.get('popo_us'), '{:.1f}')} us, PBM derive+check {f(limit.get('pbm_us'), '{:.1f}')} us, "
    f"response MAC {f(limit.get('mac_us'), '{:.1f}')} us, certificate signature "
    f"{f(limit.get('sign_token_us'), '{:.1f}')} us via the token / "
    f"{f(limit.get('sign_memory_us'), '{:.1f}')} us in memory, single-threaded): "
    f"**{f(limit.get('limit_token_eps'))}/s via the SoftHSM token, "
    f"{f(limit.get('limit_memory_eps'))}/s with in-memory keys**. Measured before and after "
    "the runs (token: " + " and ".join(f(v) + "/s" for v in machine["limit_token_eps_measured"])
    + "); the higher one is shown and used for the ratios.",
    "",
    (f"Durable-write floor of the disk the store is on (bench/fsync_floor.py, fdatasync of 4 KiB): "
     f"p50 **{fs['p50']:.3f} ms** (p90 {fs['p90']:.3f} ms). With store_sync = full every answer "
     f"waits for its commit's fdatasync, so a closed loop of 1 client cannot exceed "
     f"{1000 / fs['p50']:.0f}/s on this disk whatever the CPU does, and 8 clients sharing each "
     f"group commit {8000 / fs['p50']:.0f}/s; the CPU limit above is the other bound."
     if fs else "Durable-write floor: not measured."),
    "",
    "| flow | protection | conns | certmint /s | certmint p99 ms | certmint /s, new conn. each | mock /s (best mode) | mock p99 ms | certmint / mock | certmint / limit (token) | certmint errors | mock errors | bench CPU s (certmint run) |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
]
for r in runs:
    lines.append(
        f"| {r['flow']} | {r['protection']} | {r['connections']} | {f(r['certmint_eps'])} | "
        f"{f(r['certmint_p99_ms'], '{:.2f}')} | {f(r['certmint_reconnect_eps'])} | "
        f"{f(r['openssl_mock_eps'])} ({r['openssl_mock_mode']}) | "
        f"{f(r['openssl_mock_p99_ms'], '{:.2f}')} | {ratio(r['certmint_eps'], r['openssl_mock_eps'])} | "
        f"{ratio(r['certmint_eps'], r['limit_token_eps'])} | {f(r['certmint_failed'])} | "
        f"{f(r['openssl_mock_failed'])} | {f(r['certmint_client_cpu_s'], '{:.2f}')} |")
lines += [
    "",
    "Notes: the OpenSSL mock server (`openssl cmp -port`) is single-threaded, signs no "
    "certificate (it returns its fixed `-rsp_cert`) and records nothing; certmint signs every "
    "certificate in the HSM and commits it to SQLite before answering. certmint-bench runs on "
    "the same cores as the server: its own CPU during each certmint run is in the last column. "
    "Ratios against the limit use the token-bound limit measured in the same run. "
    "certmint figures are with keep-alive connections; the mock is measured with keep-alive "
    "and with a new TCP connection per transaction (as `openssl cmp` clients do) and its better "
    "figure is used: with keep-alive it serves one connection at a time while the others wait "
    "(their transactions show as unfinished). Rates count the transactions completed within "
    "the measured window.",
]
cpu_rows = [r for r in runs if r.get("certmint_cpu")]
if cpu_rows:
    lines += ["", "## Where certmintd's CPU goes", "",
              "Per thread, from /proc/PID/task/*/stat over each keep-alive run (bench/threadcpu.py), "
              "divided by the run's transactions (10 ms clock ticks); context switches from "
              "/proc/PID/task/*/status. For ir-implicit PBM the crypto an enrolment needs is the "
              "limit's single-threaded figures (POPO verify + PBM + response MAC + token "
              "signature). The load generator shares the cores (its CPU is in the first table)."]
    for r in cpu_rows:
        lines += ["", f"**{r['flow']} {r['protection']}, {r['connections']} connection(s)**, "
                  f"{f(r['certmint_eps'])}/s:", "", threadcpu.table(r["certmint_cpu"])]
pbm_eps, key_eps = keymac[0]["certmint_eps"], keymac[1]["certmint_eps"]
lines += [
    "",
    "Key-based MAC against PBM (certmint alone, ir-implicit, 8 connections, back to back): the "
    "same enrolment MAC-protected with HMAC-SHA256 over a random key (`key.REF`, RFC 9481 §6.2) "
    "instead of PasswordBasedMac (500 SHA-256 iterations derive the key of each request; the "
    "response reuses it). The clients' MACs are made before the clock.",
    "",
    "| flow | protection | conns | certmint /s | certmint p99 ms | certmint errors | bench CPU s |",
    "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
]
for r in keymac:
    lines.append(f"| {r['flow']} | {r['protection']} | {r['connections']} | {f(r['certmint_eps'])} | "
                 f"{f(r['certmint_p99_ms'], '{:.2f}')} | {f(r['certmint_failed'])} | "
                 f"{f(r['certmint_client_cpu_s'], '{:.2f}')} |")
lines += ["", f"Key-based MAC / PBM: {ratio(key_eps, pbm_eps)}."]
for r, (flow, prot, c) in zip(runs, [(f, p, c) for f, p in (("ir-implicit", "pbm"), ("ir-implicit", "signature"), ("ir-confirm", "pbm")) for c in conns.split()]):
    mr = load(os.path.join(work, f"mock-reconnect-{flow}-{prot}-{c}.json")) or {}
    if mr.get("failed"):
        errs = ", ".join(f"{k} {v}" for k, v in mr.get("errors", {}).items() if v)
        lines.append(f"- mock with a new connection per transaction, {flow}/{prot}/{c}: "
                     f"{mr['failed']} failed ({errs}): it keeps one transaction at a time, so "
                     "concurrent ir/certConf exchanges abort each other.")
notes = os.path.join(work, "notes.txt")
if os.path.exists(notes):
    lines += ["", "Incidents during this run:", "", "```", open(notes).read().rstrip(), "```"]
open(os.path.join(out, "LATEST.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

# The HTTPS rows (3b), appended to both files.
python3 - "$work" "$out" <<'PY'
import json, os, sys
work, out = sys.argv[1], sys.argv[2]
def load(name):
    try:
        return json.load(open(os.path.join(work, f"{name}-ir-implicit-pbm-8.json")))
    except Exception:
        return {}
http_ka, https_ka = load("http-ka"), load("https-ka")
http_rc, https_rc, https_full = load("http-rc"), load("https-rc"), load("https-full")
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"
rows = [("keep-alive", http_ka, https_ka), ("new connection per transaction, TLS resumed", http_rc, https_rc),
        ("new connection per transaction, TLS full handshake", http_rc, https_full)]
doc = json.load(open(os.path.join(out, "LATEST.json")))
doc["https"] = [{"mode": m, "http_eps": h.get("eps"), "https_eps": t.get("eps"),
                 "https_p99_ms": t.get("latency_ms", {}).get("p99"), "https_failed": t.get("failed"),
                 "tls_full": t.get("tls_full"), "tls_resumed": t.get("tls_resumed"),
                 "https_client_cpu_s": t.get("client_cpu_s")} for m, h, t in rows]
json.dump(doc, open(os.path.join(out, "LATEST.json"), "w"), indent=1)
lines = ["", "## HTTPS (issue 18): ir-implicit PBM, 8 connections", "",
         "certmintd serving plain HTTP and HTTPS (TLS 1.3, P-256 server key, OpenSSL over memory "
         "BIOs in the io_uring loops) at once; the runs are interleaved in the same minute. "
         "Target: keep-alive HTTPS >= 0.9 x HTTP.", "",
         "| mode | HTTP /s | HTTPS /s | HTTPS / HTTP | HTTPS p99 ms | TLS handshakes (full / resumed) | HTTPS errors | bench CPU s (HTTPS) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for m, h, t in rows:
    lines.append(f"| {m} | {f(h.get('eps'))} | {f(t.get('eps'))} | {ratio(t.get('eps'), h.get('eps'))} | "
                 f"{f(t.get('latency_ms', {}).get('p99'), '{:.2f}')} | {f(t.get('tls_full'))} / "
                 f"{f(t.get('tls_resumed'))} | {f(t.get('failed'))} | {f(t.get('client_cpu_s'), '{:.2f}')} |")
try:
    metrics = open(os.path.join(work, "tls-metrics.txt")).read().split()
    kv = dict(zip(metrics[0::2], metrics[1::2]))
    s, n = float(kv["certmint_tls_handshake_seconds_sum"]), float(kv["certmint_tls_handshake_seconds_count"])
    lines += ["", f"Server side (certmint_tls_handshake_seconds): {n:.0f} handshakes, "
              f"{1e6 * s / n:.0f} us of I/O-loop time each on average (full and resumed together)."]
except Exception:
    pass
open(os.path.join(out, "LATEST.md"), "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

# 4. CMP over CoAP against HTTP, same daemon, back to back (HTTP, CoAP, HTTP, CoAP: the mean
#    of each pair is reported, so a drift of the machine's speed affects both alike).
echo "== ir-implicit PBM at 8 clients: HTTP keep-alive vs CoAP"
check_certmintd "the CoAP comparison"
coap_url="coap://127.0.0.1:$coport/.well-known/cmp/p/devices"
for i in 1 2; do
  run http$i "$curl_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem"
  run coap$i "$coap_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem"
done
check_certmintd "the CoAP comparison"
python3 - "$work" >>"$out/LATEST.md" <<'PY'
import json, os, sys
w = sys.argv[1]
def load(n):
    try:
        return json.load(open(os.path.join(w, n)))
    except Exception:
        return {}
rows = []
for t in ("http", "coap"):
    rs = [load(f"{t}{i}-ir-implicit-pbm-8.json") for i in (1, 2)]
    eps = [r.get("eps") or 0 for r in rs]
    p99 = [r.get("latency_ms", {}).get("p99") or 0 for r in rs]
    fails = sum(r.get("failed") or 0 for r in rs)
    rows.append((t, sum(eps) / 2, eps, max(p99), fails))
print()
print("## CMP over CoAP (RFC 9482) vs HTTP, ir-implicit PBM, 8 concurrent clients, same daemon")
print()
print("Runs interleaved HTTP, CoAP, HTTP, CoAP; CoAP is confirmable with 1024-byte blocks (the "
      "ir fits one datagram, the ip takes two Block2 slices), answers piggybacked unless the "
      "HSM takes over 500 ms. coap_peer_rate = none and coap_max_transfers_per_peer = 64, as "
      "all clients share 127.0.0.1.")
print()
print("| transport | /s (mean) | runs /s | p99 ms (worst) | errors | / HTTP |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
base = rows[0][1]
for t, m, e, p, f in rows:
    print(f"| {t} | {m:.0f} | {' / '.join(f'{x:.0f}' for x in e)} | {p:.2f} | {f} | "
          f"{(m / base if base else 0):.2f} |")
PY
tail -4 "$out/LATEST.md"

# 4b. Nested batches from an RA against single requests, interleaved (single, 16, 64, twice).
echo "== nested batches of 16 and 64 vs single ir-implicit PBM, 8 connections"
check_certmintd "the nested comparison"
for i in 1 2; do
  run single$i "$curl_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem"
  for n in 16 64; do
    run nested$n-$i "$curl_url" nested pbm 8 --ca "$work/inst/ca.pem" --batch "$n" \
      --ra-cert "$work/ra.pem" --ra-key "$work/ra.key"
  done
done
check_certmintd "the nested comparison"
python3 - "$work" "$out" <<'PY'
import json, os, sys
w, out = sys.argv[1], sys.argv[2]
def load(n):
    try:
        return json.load(open(os.path.join(w, n)))
    except Exception:
        return {}
limits = [load("limit.json").get("limit_token_eps") or 0, load("limit-end.json").get("limit_token_eps") or 0]
limit = max(limits)
rows = []
for name, flow, batch in (("single", "ir-implicit", 1), ("nested16", "nested", 16), ("nested64", "nested", 64)):
    rs = [load(f"{name}-{i}-{flow}-pbm-8.json") if name != "single" else load(f"single{i}-{flow}-pbm-8.json")
          for i in (1, 2)]
    eps = [r.get("eps") or 0 for r in rs]
    p99 = [r.get("latency_ms", {}).get("p99") or 0 for r in rs]
    fails = sum(r.get("failed") or 0 for r in rs)
    rows.append({"mode": name, "batch": batch, "eps_mean": sum(eps) / 2, "eps_runs": eps,
                 "p99_ms_worst": max(p99), "failed": fails})
base = rows[0]["eps_mean"]
for r in rows:
    r["vs_single"] = r["eps_mean"] / base if base else None
    r["vs_limit_token"] = r["eps_mean"] / limit if limit else None
doc = json.load(open(os.path.join(out, "LATEST.json")))
doc["nested"] = {"limit_token_eps": limit, "rows": rows}
json.dump(doc, open(os.path.join(out, "LATEST.json"), "w"), indent=1)
def f(v, fmt="{:.2f}"):
    return "-" if v is None else fmt.format(v)
lines = ["", "## Nested batches from an RA (issue 16): ir-implicit PBM, 8 connections", "",
         "Each inner ir PBM-protected with implicitConfirm, wrapped with 15 or 63 others in a "
         "nested message signed by an RA certificate (ra_certs); each inner answer checked like a "
         "single one; rates are of enrolments (inner requests). Runs interleaved single, 16, 64, "
         "twice; the mean of each pair is shown. Targets: >= 1.5 x single and >= 0.8 x the "
         f"token-bound limit ({limit:.0f}/s, measured above).", "",
         "| mode | batch | enrolments/s (mean) | runs /s | p99 ms (worst) | errors | / single | / limit (token) |",
         "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
for r in rows:
    lines.append(f"| {r['mode']} | {r['batch']} | {r['eps_mean']:.0f} | "
                 f"{' / '.join(f'{x:.0f}' for x in r['eps_runs'])} | {r['p99_ms_worst']:.2f} | "
                 f"{r['failed']} | {f(r['vs_single'])} | {f(r['vs_limit_token'])} |")
open(os.path.join(out, "LATEST.md"), "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

# 4c. Central key generation (issue 19): ir-ckg (no key in the request: the CA generates an EC
#     P-256 key, signs its key package with the KGA key in the token and encrypts it to the
#     device's shared secret, PBKDF2 + AES key wrap) against ir-implicit PBM, 8 connections,
#     interleaved twice. certmint-bench opens every key and checks it against the certificate.
echo "== central key generation (ir-ckg) vs ir-implicit PBM, 8 connections"
check_certmintd "the central key generation comparison"
for i in 1 2; do
  run ckgbase$i "$curl_url" ir-implicit pbm 8 --ca "$work/inst/ca.pem"
  run ckg$i "$curl_url" ir-ckg pbm 8 --ca "$work/inst/ca.pem"
done
check_certmintd "the central key generation comparison"
python3 - "$work" "$out" <<'PY'
import json, os, sys
w, out = sys.argv[1], sys.argv[2]
def load(n):
    try:
        return json.load(open(os.path.join(w, n)))
    except Exception:
        return {}
rows = []
for name, flow in (("ckgbase", "ir-implicit"), ("ckg", "ir-ckg")):
    rs = [load(f"{name}{i}-{flow}-pbm-8.json") for i in (1, 2)]
    eps = [r.get("eps") or 0 for r in rs]
    p99 = [r.get("latency_ms", {}).get("p99") or 0 for r in rs]
    rows.append({"flow": flow, "eps_mean": sum(eps) / 2, "eps_runs": eps,
                 "p99_ms_worst": max(p99), "failed": sum(r.get("failed") or 0 for r in rs)})
base = rows[0]["eps_mean"]
for r in rows:
    r["vs_ir_implicit"] = r["eps_mean"] / base if base else None
doc = json.load(open(os.path.join(out, "LATEST.json")))
doc["central_keygen"] = {"rows": rows}
json.dump(doc, open(os.path.join(out, "LATEST.json"), "w"), indent=1)
lines = ["", "## Central key generation (issue 19): ir-ckg against ir-implicit PBM, 8 connections", "",
         "ir-ckg: the request carries no key; the CA generates an EC P-256 key, signs the key "
         "package with its KGA key (in the token) and encrypts it to the device's shared secret "
         "(password recipient: PBKDF2-HMAC-SHA256, AES-256 key wrap); certmint-bench opens every "
         "key and checks it against the certificate. Runs interleaved, twice; the mean is shown.", "",
         "| flow | enrolments/s (mean) | runs /s | p99 ms (worst) | errors | / ir-implicit |",
         "| --- | ---: | ---: | ---: | ---: | ---: |"]
for r in rows:
    v = "-" if r["vs_ir_implicit"] is None else f"{r['vs_ir_implicit']:.2f}"
    lines.append(f"| {r['flow']} | {r['eps_mean']:.0f} | "
                 f"{' / '.join(f'{x:.0f}' for x in r['eps_runs'])} | {r['p99_ms_worst']:.2f} | "
                 f"{r['failed']} | {v} |")
open(os.path.join(out, "LATEST.md"), "a").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY

# 5. The HSM latency shim through the whole server (tests/support/p11shim): certmintd with every C_Sign
#    delayed 2 ms, as a network HSM would, and hsm_sessions 1/16/64, 128 connections of
#    ir-implicit PBM: the session pool should hide the latency up to the CPU limit.
shim=$build/tests/support/p11shim/libp11shim.so
if [ -f "$shim" ]; then
  echo "== certmintd behind the 2 ms latency shim (hsm_sessions 1/16/64)"
  kill -TERM "$dpid" 2>/dev/null || true
  wait "$dpid" 2>/dev/null || true
  dpid=""
  real_module=$(grep -o 'module-path=[^&]*' "$work/inst/certmint.cnf" | head -1 | cut -d= -f2)
  base=$(python3 -c 'import json,sys
runs=json.load(open(sys.argv[1]))["runs"]
print(max([r["certmint_eps"] or 0 for r in runs if r["flow"]=="ir-implicit" and r["protection"]=="pbm"] or [0]))' "$out/LATEST.json")
  {
    echo
    echo "## certmintd behind a 2 ms HSM (tests/support/p11shim), ir-implicit PBM, 128 connections"
    echo
    echo "Every C_Sign waits 2 ms before SoftHSM signs. Expected: min(CPU limit, sessions / 2 ms);"
    echo "the CPU limit here is certmint's best ir-implicit PBM rate without the shim above ($base/s)."
    echo "Each run starts with an empty store; the runs above share one, which grows as they go."
    echo
    echo "| hsm_sessions | certmint /s | p99 ms | sessions / 2 ms | expected | certmint / expected |"
    echo "| ---: | ---: | ---: | ---: | ---: | ---: |"
  } >>"$out/LATEST.md"
  for n in 1 16 64; do
    # A fresh store per run: the instance's database holds every certificate of the runs above
    # by now, and a larger database costs more per commit than the one the baseline ran on.
    sed -e "s|module-path=$real_module|module-path=$shim|g" -e "s/^hsm_sessions = .*/hsm_sessions = $n/" \
      -e "s|^store *=.*|store = sqlite:$work/inst/shim-$n.db|" \
      "$work/inst/certmint.cnf" >"$work/inst/shim-$n.cnf"
    sport=$(free_port)
    P11SHIM_MODULE=$real_module P11SHIM_SIGN_DELAY_US=2000 "$certmintd" \
      -c "$work/inst/shim-$n.cnf" --listen "127.0.0.1:$sport" >>"$work/certmintd-shim.log" 2>&1 &
    spid=$!
    wait_port "$sport"
    "$bench" --url "http://127.0.0.1:$sport/.well-known/cmp" --secret "demo-device:$secret" \
      --connections 128 --duration "$dur" --prepare $((5000 * dur)) --json "$work/shim-$n.json" \
      >"$work/shim-$n.log" 2>&1 || true
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
    python3 - "$work/shim-$n.json" "$n" "$base" >>"$out/LATEST.md" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2]); base = float(sys.argv[3])
eps = r.get("eps", 0.0); p99 = r.get("latency_ms", {}).get("p99", 0.0)
ideal = n / 0.002; exp = min(ideal, base) if base > 0 else ideal
print(f"| {n} | {eps:.0f} | {p99:.2f} | {ideal:.0f} | {exp:.0f} | {eps / exp if exp else 0:.2f} |")
PY
    echo "   hsm_sessions $n: $(tail -1 "$out/LATEST.md")"
  done
fi
# The picture (issue 24): throughput against connections per flow, certmint beside the mock
# and the limit, and certmint's p50/p99 latency; gnuplot from Debian (tools/install-deps.sh).
if command -v gnuplot >/dev/null 2>&1; then
  python3 - "$out/LATEST.json" "$work" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); w = sys.argv[2]
flows = [("ir-implicit", "pbm"), ("ir-implicit", "signature"), ("ir-confirm", "pbm")]
for i, (fl, pr) in enumerate(flows):
    with open(f"{w}/plot-{i}.dat", "w") as o:
        for r in d["runs"]:
            if (r["flow"], r["protection"]) == (fl, pr):
                v = lambda k: r.get(k) if r.get(k) is not None else "NaN"
                o.write(f"{r['connections']} {v('certmint_eps')} {v('openssl_mock_eps')} "
                        f"{v('certmint_p50_ms')} {v('certmint_p99_ms')}\n")
lim = d["machine"].get("limit", {}).get("limit_token_eps") or 0
open(f"{w}/plot-limit.txt", "w").write(f"{lim}\n")
PY
  lim=$(cat "$work/plot-limit.txt")
  day=$(date -u +%Y-%m-%d)
  gnuplot <<GP || echo "compare.sh: gnuplot failed; no LATEST.svg" >&2
set terminal svg size 960,720 dynamic font "sans,12" background rgb "white"
set output "$out/LATEST.svg"
set multiplot layout 2,1 title "certmint vs OpenSSL's mock CMP server, $day (bench/compare.sh)"
set logscale x 2
set xrange [0.8:80]
set xtics (1, 8, 64)
set grid
set key outside right
set ylabel "enrolments / s"
set yrange [0:*]
set offsets 0, 0, graph 0.08, 0
plot "$work/plot-0.dat" u 1:2 w lp lw 2 pt 7 lc rgb "#1f77b4" t "certmint ir-implicit PBM", \
     "$work/plot-1.dat" u 1:2 w lp lw 2 pt 5 lc rgb "#2ca02c" t "certmint ir-implicit signature", \
     "$work/plot-2.dat" u 1:2 w lp lw 2 pt 9 lc rgb "#9467bd" t "certmint ir-confirm PBM", \
     "$work/plot-0.dat" u 1:3 w lp dt 2 pt 6 lc rgb "#1f77b4" t "mock ir-implicit PBM", \
     "$work/plot-1.dat" u 1:3 w lp dt 2 pt 4 lc rgb "#2ca02c" t "mock ir-implicit signature", \
     "$work/plot-2.dat" u 1:3 w lp dt 2 pt 8 lc rgb "#9467bd" t "mock ir-confirm PBM", \
     $lim w l lw 2 dt 3 lc rgb "#d62728" t "crypto limit via the token"
set ylabel "certmint latency, ms"
set xlabel "connections"
set logscale y 10
set yrange [*:*]
plot "$work/plot-0.dat" u 1:4 w lp lw 2 pt 7 lc rgb "#1f77b4" t "ir-implicit PBM p50", \
     "$work/plot-0.dat" u 1:5 w lp dt 2 pt 6 lc rgb "#1f77b4" t "ir-implicit PBM p99", \
     "$work/plot-1.dat" u 1:4 w lp lw 2 pt 5 lc rgb "#2ca02c" t "ir-implicit signature p50", \
     "$work/plot-1.dat" u 1:5 w lp dt 2 pt 4 lc rgb "#2ca02c" t "ir-implicit signature p99", \
     "$work/plot-2.dat" u 1:4 w lp lw 2 pt 9 lc rgb "#9467bd" t "ir-confirm PBM p50", \
     "$work/plot-2.dat" u 1:5 w lp dt 2 pt 8 lc rgb "#9467bd" t "ir-confirm PBM p99"
unset multiplot
GP
  [ -s "$out/LATEST.svg" ] && echo "written: $out/LATEST.svg"
else
  echo "compare.sh: gnuplot not installed (tools/install-deps.sh); no LATEST.svg" >&2
fi
echo "written: $out/LATEST.md $out/LATEST.json"

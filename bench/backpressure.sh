#!/usr/bin/env bash
# bench/backpressure.sh [BUILD_DIR] — delayed delivery as backpressure (issue 16), measured:
# certmintd behind a 2 ms network HSM (the PKCS#11 latency shim tests/support/p11shim) with
# hsm_sessions = 4, loaded by certmint-bench ir-implicit PBM at 512 connections, with
# backpressure on (the defaults: max_hsm_queue auto, max_commit_latency 250 ms) and off (both at
# their maximum, so no enrolment waits), interleaved on, off, on, off. Writes
# bench/results/BACKPRESSURE.md.
#
#   BUILD_DIR               a release build (default build/release; cmake --preset release &&
#                           cmake --build --preset release -j2), with the p11shim built
#   CM_BENCH_DURATION=S     seconds per measured run (default 10)
#   CM_BENCH_CONNECTIONS=N  concurrent connections (default 512)
#   CM_BENCH_ROUNDS=N       rounds of (on, off) (default 2)
#
# Each run starts certmintd on an empty store (a throwaway `certmint init` instance,
# allow_key_reuse = on for the bench's pool of 256 keys, max_connections_per_peer = none as all
# clients share 127.0.0.1) and stops it after the run; then every certificate a client received
# (--save-serials) is looked up in the store, and every certificate in the store that no client
# received is explained (a waiting enrolment the bench stopped polling for when the run ended) or
# counted as lost. Needs python3 and sqlite3. Takes about 2 minutes with the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
die() {
  echo "backpressure.sh: $*" >&2
  exit 2
}
build=$(cd "${1:-$root/build/release}" 2>/dev/null && pwd) \
  || die "no build directory ${1:-$root/build/release} (cmake --preset release first)"
dur=${CM_BENCH_DURATION:-10}
conns=${CM_BENCH_CONNECTIONS:-512}
rounds=${CM_BENCH_ROUNDS:-2}
certmintd=$build/engine/certmintd
certmint=$build/tools/certmint
bench=$build/bench/certmint-bench
shim=$build/tests/support/p11shim/libp11shim.so
for b in "$certmintd" "$certmint" "$bench"; do
  [ -x "$b" ] || die "$b missing (cmake --build --preset release -j2 first)"
done
[ -f "$shim" ] || die "$shim missing (the release build makes it: tests/support/p11shim)"
for t in python3 sqlite3; do
  command -v "$t" >/dev/null || die "$t is needed"
done
[ "$(ulimit -n)" -ge $((conns * 2 + 256)) ] || ulimit -n $((conns * 2 + 256)) 2>/dev/null \
  || die "ulimit -n is $(ulimit -n): $conns connections need about $((conns * 2 + 256)) descriptors"
out=$root/bench/results
mkdir -p "$out"
work=$(mktemp -d /tmp/certmint-backpressure-XXXXXX)
dpid=""
cleanup() {
  [ -z "$dpid" ] || { kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; }
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
    kill -0 "$dpid" 2>/dev/null || { tail -5 "$work/certmintd.log" >&2; die "certmintd exited"; }
    sleep 0.1
  done
  die "nothing listens on port $1"
}

echo "== setting up in $work"
"$certmint" init --dir "$work/inst" --port "$(free_port)" >"$work/init.log" 2>&1 \
  || { cat "$work/init.log" >&2; die "certmint init failed"; }
secret=$(cat "$work/inst/secrets/demo-device")
set -a # the instance's SOFTHSM2_CONF
# shellcheck disable=SC1091
. "$work/inst/env"
set +a
real_module=$(grep -o 'module-path=[^&]*' "$work/inst/certmint.cnf" | head -1 | cut -d= -f2)
[ -n "$real_module" ] || die "no module-path in the instance's key URIs"
sed -i 's/^\[profile:devices\]/&\nallow_key_reuse = on/' "$work/inst/certmint.cnf"
# The shim in front of SoftHSM, 4 sessions; the store line is set per run.
sed -i -e "s|module-path=$real_module|module-path=$shim|g" -e 's/^hsm_sessions = .*/hsm_sessions = 4/' \
  -e 's/^store = .*/&\nmax_connections_per_peer = none/' "$work/inst/certmint.cnf"
grep -q '^hsm_sessions = 4$' "$work/inst/certmint.cnf" || die "no hsm_sessions line to set"
# on: the defaults; off: both bounds at the maximum the configuration accepts.
for mode in on off; do
  extra=""
  [ "$mode" = off ] && extra='\nmax_hsm_queue = 10000000\nmax_commit_latency = 600000'
  sed -e "s/^max_connections_per_peer = none$/&$extra/" "$work/inst/certmint.cnf" >"$work/inst/$mode.cnf"
done
prepare=$((2500 * dur + 1000)) # above what 4 sessions / 2 ms (2000/s) can sign
url_base=.well-known/cmp/p/devices

run() { # run MODE ROUND
  local mode=$1 i=$2 name=$1-$2 port
  port=$(free_port)
  sed -e "s|^store = .*|store = sqlite:$work/inst/$name.db|" -e "s|^listen = .*|listen = 127.0.0.1:$port|" \
    "$work/inst/$mode.cnf" >"$work/inst/$name.cnf"
  P11SHIM_MODULE=$real_module P11SHIM_SIGN_DELAY_US=2000 "$certmintd" -c "$work/inst/$name.cnf" \
    >>"$work/certmintd.log" 2>&1 &
  dpid=$!
  wait_port "$port"
  uptime >"$work/$name.load"
  "$bench" --url "http://127.0.0.1:$port/$url_base" --secret "demo-device:$secret" \
    --flow ir-implicit --key-pool 256 --connections "$conns" --duration "$dur" \
    --prepare "$prepare" --timeout 30 --ca "$work/inst/ca.pem" --save-serials "$work/$name.serials" \
    --json "$work/$name.json" >"$work/$name.txt" 2>&1 || true
  uptime >>"$work/$name.load"
  sed -n '2,3p;5p;/delayed/,/latency ms/p;/unfinished/p;/errors/p' "$work/$name.txt" | sed 's/^/    /'
  [ -s "$work/$name.json" ] || { cat "$work/$name.txt" >&2; die "certmint-bench wrote no report"; }
  # A drain may still be signing what waits: give it a moment, then stop the daemon and read the
  # store it leaves.
  sleep 2
  kill -TERM "$dpid" 2>/dev/null || true
  wait "$dpid" 2>/dev/null || true
  dpid=""
  sqlite3 "$work/inst/$name.db" "SELECT hex(serial) FROM cert" >"$work/$name.store"
  sqlite3 "$work/inst/$name.db" "SELECT hex(serial), state FROM pending" | tr '|' ' ' >"$work/$name.pending"
}
for i in $(seq 1 "$rounds"); do
  for mode in on off; do
    echo "== backpressure $mode, round $i: ir-implicit PBM, $conns connections, ${dur} s"
    run "$mode" "$i"
  done
done

echo "== results"
python3 - "$work" "$out" "$dur" "$conns" "$rounds" <<'PY'
import json, os, sys
work, out, dur, conns, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
def serials(path):
    # Hex of the INTEGER's content octets, from the bench and from the store alike: compared
    # as numbers, so a leading zero octet cannot differ.
    return {int(l.split()[0], 16) for l in open(path) if l.strip()}
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
rows = []
for i in range(1, rounds + 1):
    for mode in ("on", "off"):
        n = f"{mode}-{i}"
        r = json.load(open(os.path.join(work, n + ".json")))
        got = serials(os.path.join(work, n + ".serials"))
        store = serials(os.path.join(work, n + ".store"))
        pend = {}
        for l in open(os.path.join(work, n + ".pending")):
            if l.strip():
                s, st = l.split()
                pend[int(s, 16)] = int(st)
        missing = got - store            # received but not recorded: lost
        extra = store - got              # recorded but no client got it
        # An extra certificate is explained when it is a waiting enrolment's whose answer was
        # never collected (pending state 4, issued: the bench stopped polling at the end).
        uncollected = {s for s in extra if pend.get(s) == 4}
        load = open(os.path.join(work, n + ".load")).read().split("load average:")
        la = [x.strip().split(",")[0] for x in load[1:]]
        d, p = r.get("latency_direct_ms", {}), r.get("latency_polled_ms", {})
        ok = r["ok"]
        rows.append({"mode": mode, "round": i, "eps": r["eps"], "ok": ok, "failed": r["failed"],
                     "errors": {k: v for k, v in r["errors"].items() if v},
                     "unfinished": r["unfinished"], "ran_out": r["ran_out"],
                     "direct_n": d.get("n"), "direct_p50": d.get("p50"), "direct_p99": d.get("p99"),
                     "polled_n": p.get("n"), "polled_p50": p.get("p50"), "polled_p99": p.get("p99"),
                     "all_p99": r["latency_ms"]["p99"], "max": r["latency_ms"]["max"],
                     "waiting": r["waiting"], "polls": r["polls"],
                     "polls_per_enrolment": r["polls"] / ok if ok else None,
                     "received": len(got), "in_store": len(store), "lost": len(missing),
                     "uncollected": len(uncollected), "unexplained": len(extra - uncollected),
                     "client_cpu_s": r["client_cpu_s"], "load_1min": la})
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
def mean(mode, k):
    v = [r[k] for r in rows if r["mode"] == mode and r[k] is not None]
    return sum(v) / len(v) if v else None
lines = [
    "# Delayed delivery as backpressure (issue 16)", "",
    f"`bench/backpressure.sh build/release`: certmintd behind the 2 ms PKCS#11 latency shim "
    f"(tests/support/p11shim, P11SHIM_SIGN_DELAY_US=2000) with hsm_sessions = 4 (at most "
    f"4 / 2 ms = 2000 signatures/s), `certmint-bench --flow ir-implicit` (PBM) at {conns} "
    f"connections for {dur} s per run, each run on an empty SQLite store; backpressure **on** "
    "(defaults: max_hsm_queue auto = what 100 ms of the measured signing rate drains, "
    "max_commit_latency 250 ms) and **off** (max_hsm_queue = 10000000, max_commit_latency = "
    f"600000: nothing waits), interleaved on, off, ... for {rounds} rounds.", "",
    f"Machine: {os.cpu_count()} cores ({cpu}), shared with other work (1-minute load average "
    "before / after each run in the last column): the absolute rates are noisy; compare "
    "on against off within a round.", "",
    "| mode | round | enrolments/s | direct: n | p50 ms | p99 ms | waited: n | p50 ms | p99 ms "
    "| polls / enrolment | errors | unfinished | received / in store | lost | uncollected | load |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
for r in rows:
    errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "0"
    lines.append(
        f"| {r['mode']} | {r['round']} | {f(r['eps'])} | {r['direct_n']} | {f(r['direct_p50'], '{:.1f}')} | "
        f"{f(r['direct_p99'], '{:.1f}')} | {r['polled_n']} | {f(r['polled_p50'], '{:.1f}') if r['polled_n'] else '-'} | "
        f"{f(r['polled_p99'], '{:.1f}') if r['polled_n'] else '-'} | {f(r['polls_per_enrolment'], '{:.3f}')} | "
        f"{errs} | {r['unfinished']} | {r['received']} / {r['in_store']} | {r['lost']} | "
        f"{r['uncollected']}{' (+' + str(r['unexplained']) + ' unexplained)' if r['unexplained'] else ''} | "
        f"{' / '.join(r['load_1min'])} |")
lines += ["",
          "*direct*: enrolments answered with the certificate on the first response; *waited*: "
          "answered `waiting`, then collected with pollReq (latency up to the certificate). "
          "*lost*: certificates a client received that the store lacks. *uncollected*: "
          "certificates in the store that no client received, all of waiting enrolments whose "
          "answer was issued (pending state issued) after the bench stopped polling at the end "
          "of the run; anything else in the store no client received is shown as unexplained.",
          "",
          f"Means: on {f(mean('on', 'eps'))}/s, direct p99 {f(mean('on', 'direct_p99'), '{:.1f}')} ms; "
          f"off {f(mean('off', 'eps'))}/s, p99 {f(mean('off', 'direct_p99'), '{:.1f}')} ms."]
json.dump({"duration_s": float(dur), "connections": conns, "hsm_sessions": 4,
           "sign_delay_us": 2000, "runs": rows}, open(os.path.join(out, "BACKPRESSURE.json"), "w"), indent=1)
open(os.path.join(out, "BACKPRESSURE.md"), "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
echo "written: $out/BACKPRESSURE.md $out/BACKPRESSURE.json (add the reading by hand)"

#!/usr/bin/env bash
# bench/ab.sh BEFORE_BUILD AFTER_BUILD — two certmintd builds against each other, interleaved,
# with the same load generator, on this machine in one run: before/after tables for a change.
#
#   BEFORE_BUILD, AFTER_BUILD   release build dirs (engine/certmintd, tools/certmint inside);
#                               certmint-bench and certmint init come from AFTER_BUILD
#   CM_AB_ROUNDS=N              rounds (default 5): each round runs every case once per build,
#                               alternating which build goes first
#   CM_AB_DURATION=S            seconds per run (default 5)
#   CM_AB_CONNECTIONS           connection counts (default "8 64")
#   CM_AB_FLOW, CM_AB_PROT      flow and protection (default ir-implicit, pbm)
#   CM_AB_KEEP=1                keep the work folder (logs, JSON) for inspection
#   CM_AB_AFTER_CONF            lines appended to the AFTER build's configuration (e.g.
#                               "hsm_dispatch = pool"), to tell one change from the others
#
# Also measured in the same run: the token-bound crypto limit (certmint-bench --limit, before
# and after the rounds, the higher one used for the ratios), the disk's fdatasync floor
# (bench/fsync_floor.py), and for every run certmintd's CPU per enrolment, per thread, and its
# context switches per enrolment (bench/threadcpu.py over /proc/PID/task/*), minus the crypto
# an enrolment needs: the CPU "beyond the crypto" of issue 24.
#
# One instance (certmint init: SoftHSM token, EC P-256 CA, PBM secret) serves both builds; each
# run starts the build's certmintd on an empty store (the database is removed before each run)
# so neither build measures the other's records. Prints a Markdown table of medians (with the
# min-max range) and the after/before ratio, and writes it to $CM_AB_OUT when set. The machine
# is shared and noisy: compare the ratio, not the absolute rates.
set -euo pipefail
before=$(cd "$1" && pwd)
after=$(cd "$2" && pwd)
rounds=${CM_AB_ROUNDS:-5}
dur=${CM_AB_DURATION:-5}
conns=${CM_AB_CONNECTIONS:-"8 64"}
flow=${CM_AB_FLOW:-ir-implicit}
prot=${CM_AB_PROT:-pbm}
bench=$after/bench/certmint-bench
here=$(cd "$(dirname "$0")" && pwd)
for b in "$before/engine/certmintd" "$after/engine/certmintd" "$after/tools/certmint" "$bench"; do
  [ -x "$b" ] || { echo "ab.sh: $b missing (build the release preset)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/certmint-ab-XXXXXX)
dpid=""
cleanup() {
  if [ -n "$dpid" ]; then kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; fi
  if [ -n "${CM_AB_KEEP:-}" ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$after/tools/certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 \
  || { cat "$work/init.log"; exit 1; }
secret=$(cat "$work/inst/secrets/demo-device")
export $(cat "$work/inst/env")
db=$(sed -n 's/^store *= *sqlite://p' "$work/inst/certmint.cnf" | head -1)
case "$db" in /*) ;; *) db="$work/inst/$db" ;; esac
url="http://127.0.0.1:$port/.well-known/cmp/p/devices"
cp "$work/inst/certmint.cnf" "$work/inst/after.cnf"
if [ -n "${CM_AB_AFTER_CONF:-}" ]; then
  printf '\n[certmintd]\n%s\n' "$CM_AB_AFTER_CONF" >>"$work/inst/after.cnf"
fi
token_uri=$(sed -n 's/^key *= *//p' "$work/inst/certmint.cnf" | head -1)
limit() { # limit OUT.json
  "$bench" --limit --token-uri "$token_uri" --key-type ec-p256 --duration 3 --json "$1" \
    >"$1.txt" 2>&1 || true
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  limit: %.0f/s via the token (crypto %.0f us per enrolment)" % (d["limit_token_eps"], d["popo_us"]+d["pbm_us"]+d["mac_us"]+d["sign_token_us"]))' "$1" 2>/dev/null || echo "  limit: not measured"
}
echo "== crypto limit and fdatasync floor"
limit "$work/limit-1.json"
python3 "$here/fsync_floor.py" "$(dirname "$db")" 200 >"$work/fsync.json" || echo '{}' >"$work/fsync.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["fdatasync_4k_ms"]; print("  fdatasync of 4 KiB: p50 %.3f ms, p90 %.3f ms" % (d["p50"], d["p90"]))' "$work/fsync.json" 2>/dev/null || true
auth=(--secret "demo-device:$secret")
if [ "$prot" = signature ]; then
  echo "ab.sh: only PBM protection is set up here" >&2
  exit 2
fi

wait_up() {
  for _ in $(seq 1 200); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "ab.sh: certmintd did not come up" >&2
  tail -5 "$work/d.log" >&2
  return 1
}
run_one() { # run_one LABEL BUILD CONNS ROUND
  local label=$1 build=$2 c=$3 r=$4
  rm -f "$db" "$db-wal" "$db-shm"
  local cnf=$work/inst/certmint.cnf
  [ "$label" = after ] && cnf=$work/inst/after.cnf
  "$build/engine/certmintd" -c "$cnf" >>"$work/d.log" 2>&1 &
  dpid=$!
  wait_up
  python3 "$here/threadcpu.py" snap "$dpid" "$work/$label-$c-$r.cpu0"
  "$bench" --url "$url" "${auth[@]}" --flow "$flow" --key-type ec-p256 \
    --connections "$c" --duration "$dur" --warmup 50 --timeout 20 --ca "$work/inst/ca.pem" \
    --json "$work/$label-$c-$r.json" >"$work/$label-$c-$r.txt" 2>&1 || true
  python3 "$here/threadcpu.py" snap "$dpid" "$work/$label-$c-$r.cpu1"
  local n
  n=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print((d.get("ok") or 0) + (d.get("failed") or 0))' "$work/$label-$c-$r.json" 2>/dev/null || echo 0)
  python3 "$here/threadcpu.py" diff "$work/$label-$c-$r.cpu0" "$work/$label-$c-$r.cpu1" "$n" \
    --json "$work/$label-$c-$r.cpu.json" >"$work/$label-$c-$r.cpu.md" 2>/dev/null || true
  kill -TERM "$dpid"
  wait "$dpid" 2>/dev/null || true
  dpid=""
  python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print("  %-6s c=%-3s round %s: %8.1f/s p99 %6.2f ms failed %s" % (sys.argv[2], sys.argv[3], sys.argv[4], d.get("eps") or 0, d.get("latency_ms",{}).get("p99") or 0, d.get("failed")))' \
    "$work/$label-$c-$r.json" "$label" "$c" "$r" 2>/dev/null || echo "  $label c=$c round $r: no result"
}
for r in $(seq 1 "$rounds"); do
  for c in $conns; do
    if [ $((r % 2)) -eq 1 ]; then
      run_one before "$before" "$c" "$r"
      run_one after "$after" "$c" "$r"
    else
      run_one after "$after" "$c" "$r"
      run_one before "$before" "$c" "$r"
    fi
  done
done
echo "== crypto limit again"
limit "$work/limit-2.json"
python3 - "$work" "$rounds" "$conns" "$flow" "$prot" "$dur" "${CM_AB_AFTER_CONF:-}" <<'PY' | tee "${CM_AB_OUT:-/dev/null}"
import json, statistics, sys
work, rounds, conns, flow, prot, dur, after_conf = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6], sys.argv[7]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return None
limits = [l for l in (load(f"{work}/limit-1.json"), load(f"{work}/limit-2.json")) if l]
limit = max(limits, key=lambda l: l["limit_token_eps"]) if limits else None
crypto = (limit["popo_us"] + limit["pbm_us"] + limit["mac_us"] + limit["sign_token_us"]) if limit else None
def get(label, c, key):
    vals = []
    for r in range(1, rounds + 1):
        d = load(f"{work}/{label}-{c}-{r}.json")
        u = load(f"{work}/{label}-{c}-{r}.cpu.json")
        if d is None:
            continue
        v = {"eps": d.get("eps"), "p99": d.get("latency_ms", {}).get("p99"),
             "cpu": (u or {}).get("us_per_enrolment"),
             "cs": (u or {}).get("switches_per_enrolment"),
             "wr": ((u or {}).get("write_bytes_per_enrolment") or 0) / 1024 if u else None,
             "sys": (u or {}).get("write_syscalls_per_enrolment")}[key]
        if v is not None:
            vals.append(v)
    return vals
def med(vals):
    return statistics.median(vals) if vals else None
def fmt(vals, nd):
    if not vals:
        return "-"
    return f"{statistics.median(vals):.{nd}f} ({min(vals):.{nd}f}-{max(vals):.{nd}f})"
def ratio(a, b, nd=2):
    return f"{a / b:.{nd}f}" if a and b else "-"
print(f"{flow} {prot}, {rounds} interleaved rounds of {dur} s per build and connection count; median (min-max)")
if after_conf:
    print(f"(the after build ran with: {after_conf})")
print()
if limit:
    print(f"Token-bound crypto limit (certmint-bench --limit, {limit.get('threads')} threads): "
          + " and ".join(f"{l['limit_token_eps']:.0f}/s" for l in limits)
          + f" before and after the rounds; {limit['limit_token_eps']:.0f}/s used. The crypto of one "
          f"enrolment: {crypto:.0f} us (POPO {limit['popo_us']:.0f}, PBM {limit['pbm_us']:.0f}, "
          f"MAC {limit['mac_us']:.0f}, token signature {limit['sign_token_us']:.0f}).")
fs = (load(f"{work}/fsync.json") or {}).get("fdatasync_4k_ms")
if fs:
    print(f"Durable-write floor of the store's disk: fdatasync of 4 KiB p50 {fs['p50']:.3f} ms "
          f"(p90 {fs['p90']:.3f} ms): a closed loop of 1 client cannot exceed "
          f"{1000 / fs['p50']:.0f} enrolments/s with store_sync = full, 8 clients sharing each "
          f"group commit {8000 / fs['p50']:.0f}/s.")
print()
print("| conns | before /s | after /s | after/before | before / limit | after / limit | before p99 ms | after p99 ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
L = limit["limit_token_eps"] if limit else None
for c in conns:
    b, a = get("before", c, "eps"), get("after", c, "eps")
    print(f"| {c} | {fmt(b, 0)} | {fmt(a, 0)} | {ratio(med(a), med(b), 3)} | {ratio(med(b), L)} | "
          f"{ratio(med(a), L)} | {fmt(get('before', c, 'p99'), 2)} | {fmt(get('after', c, 'p99'), 2)} |")
print()
print("certmintd CPU per enrolment (all threads, /proc/PID/task/*/stat over each run) and context "
      "switches per enrolment; 'beyond crypto' subtracts the crypto above.")
print()
print("| conns | before µs | after µs | before beyond crypto µs | after beyond crypto µs | before switches | after switches |")
print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
for c in conns:
    bc, ac = med(get("before", c, "cpu")), med(get("after", c, "cpu"))
    f = lambda v: "-" if v is None else f"{v:.0f}"
    g = lambda v: "-" if v is None or crypto is None else f"{v - crypto:.0f}"
    print(f"| {c} | {fmt(get('before', c, 'cpu'), 0)} | {fmt(get('after', c, 'cpu'), 0)} | {g(bc)} | "
          f"{g(ac)} | {fmt(get('before', c, 'cs'), 2)} | {fmt(get('after', c, 'cs'), 2)} |")
print()
print("Storage writes per enrolment (/proc/PID/io: write_bytes, KiB; write calls, log lines included).")
print()
print("| conns | before KiB | after KiB | before write calls | after write calls |")
print("| ---: | ---: | ---: | ---: | ---: |")
for c in conns:
    print(f"| {c} | {fmt(get('before', c, 'wr'), 1)} | {fmt(get('after', c, 'wr'), 1)} | "
          f"{fmt(get('before', c, 'sys'), 2)} | {fmt(get('after', c, 'sys'), 2)} |")
for label in ("before", "after"):
    for c in conns:
        md = None
        try:
            md = open(f"{work}/{label}-{c}-{rounds}.cpu.md").read().strip()
        except Exception:
            pass
        if md:
            print(f"\nPer thread, {label}, {c} connection(s), round {rounds}:\n\n{md}")
PY

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
for b in "$before/engine/certmintd" "$after/engine/certmintd" "$after/tools/certmint" "$bench"; do
  [ -x "$b" ] || { echo "ab.sh: $b missing (build the release preset)" >&2; exit 2; }
done
work=$(mktemp -d /tmp/certmint-ab-XXXXXX)
dpid=""
cleanup() {
  if [ -n "$dpid" ]; then kill -TERM "$dpid" 2>/dev/null || true; wait "$dpid" 2>/dev/null || true; fi
  rm -rf "$work"
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
  "$build/engine/certmintd" -c "$work/inst/certmint.cnf" >>"$work/d.log" 2>&1 &
  dpid=$!
  wait_up
  "$bench" --url "$url" "${auth[@]}" --flow "$flow" --key-type ec-p256 --key-pool 256 \
    --connections "$c" --duration "$dur" --warmup 50 --timeout 20 --ca "$work/inst/ca.pem" \
    --json "$work/$label-$c-$r.json" >"$work/$label-$c-$r.txt" 2>&1 || true
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
python3 - "$work" "$rounds" "$conns" "$flow" "$prot" "$dur" <<'PY' | tee "${CM_AB_OUT:-/dev/null}"
import json, statistics, sys
work, rounds, conns, flow, prot, dur = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4], sys.argv[5], sys.argv[6]
def get(label, c, key):
    vals = []
    for r in range(1, rounds + 1):
        try:
            d = json.load(open(f"{work}/{label}-{c}-{r}.json"))
        except Exception:
            continue
        v = d.get("eps") if key == "eps" else d.get("latency_ms", {}).get("p99")
        if v is not None:
            vals.append(v)
    return vals
def fmt(vals, nd):
    if not vals:
        return "-"
    return f"{statistics.median(vals):.{nd}f} ({min(vals):.{nd}f}-{max(vals):.{nd}f})"
print(f"{flow} {prot}, {rounds} interleaved rounds of {dur} s per build and connection count; median (min-max)\n")
print("| conns | before /s | after /s | after/before | before p99 ms | after p99 ms |")
print("| ---: | ---: | ---: | ---: | ---: | ---: |")
for c in conns:
    b, a = get("before", c, "eps"), get("after", c, "eps")
    ratio = statistics.median(a) / statistics.median(b) if a and b else float("nan")
    print(f"| {c} | {fmt(b, 0)} | {fmt(a, 0)} | {ratio:.3f} | {fmt(get('before', c, 'p99'), 2)} | {fmt(get('after', c, 'p99'), 2)} |")
PY

#!/usr/bin/env bash
# bench/malloc_count.sh [BUILD_DIR] [N1] [N2] — heap calls per enrolment in certmintd.
# Runs a throwaway instance (certmint init) twice under libmalloc_count.so, serving N1 and then
# N2 ir-implicit PBM enrolments from certmint-bench over one keep-alive connection, and prints
# (total(N2) - total(N1)) / (N2 - N1) for the whole process and for the I/O loop threads
# (cm-io*, where the front and the engine's CPU work run). The loop threads' figures are exact
# (the same every run); the whole process adds the HSM and store threads' allocations, which
# vary by a few per request with batching. BUILD_DIR: a release build (default build/release).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
n1=${2:-200}
n2=${3:-1200}
[ -f "$build/bench/libmalloc_count.so" ] || { echo "no $build/bench/libmalloc_count.so" >&2; exit 1; }
work=$(mktemp -d /tmp/certmint-malloc-XXXXXX)
trap 'rm -rf "$work"' EXIT
run() { # run N -> the counter's two lines
  local n=$1 port pid secret
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$work/inst" "$work/count"
  "$build/tools/certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1
  secret=$(cat "$work/inst/secrets/demo-device")
  env $(cat "$work/inst/env") MALLOC_COUNT_THREADS=cm-io MALLOC_COUNT_OUT="$work/count" \
    LD_PRELOAD="$build/bench/libmalloc_count.so" \
    "$build/engine/certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon.log" &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  env $(cat "$work/inst/env") "$build/bench/certmint-bench" \
    --url "http://127.0.0.1:$port/.well-known/cmp/p/devices" --secret "demo-device:$secret" \
    -n "$n" --connections 1 >"$work/bench.log" 2>&1
  kill -TERM "$pid"
  wait "$pid"
  cat "$work/count"
}
a=$(run "$n1")
b=$(run "$n2")
python3 - "$n1" "$n2" "$a" "$b" <<'PY'
import re, sys
n1, n2, a, b = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].splitlines(), sys.argv[4].splitlines()
for label, la, lb in zip(("process", "cm-io* threads"), a, b):
    va = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", la))
    vb = dict((k, int(v)) for k, v in re.findall(r"(\w+)=(\d+)", lb))
    per = {k: (vb[k] - va[k]) / (n2 - n1) for k in ("malloc", "calloc", "realloc", "memalign", "free")}
    alloc = per["malloc"] + per["calloc"] + per["realloc"] + per["memalign"]
    print(f"{label:15s} per enrolment: allocations {alloc:.2f} (malloc {per['malloc']:.2f}, "
          f"calloc {per['calloc']:.2f}, realloc {per['realloc']:.2f}), free {per['free']:.2f}")
PY

#!/usr/bin/env bash
# tests/abuse/run.sh [--short | --full] [--build DIR]
#                    [--certmintd F --certmint F --bench F [--flood F]] [--markdown FILE] [--keep]
#
# Holding up under abuse (issue 23): a throwaway instance (certmint init, default settings but
# an admin listener and allow_key_reuse for the load generator's key pool), then each attack
# with a legit load beside it (certmint-bench from 127.0.0.2, 8 keep-alive connections; the
# attackers come from 127.0.0.3 and up), and a table:
#
#   attack -> legit throughput / the baseline of this run -> legit requests lost (no answer)
#          -> certificates in the store that no client received -> pass/fail
#
# Attacks (tests/abuse/abuse.py): churn (two processes opening connections as fast as they can,
# each sending part of a request and closing, beside 16 keep-alive clients); 5,000 slow-header
# connections from one address, and the same against a certmintd limited to 1,024 descriptors
# (also: certmintd's CPU with only the attacker, /healthz on the admin listener throughout);
# 4 connections of wrong-MAC PBM at max_pbm_iterations and of PBMAC1 at max_pbmac1_iterations
# (the legit load's own senderKID); a garbage flood from 4 connections.
#
# --short (the default; about 100 s with an ASan build on 2 cores, so not a ctest test) runs
# every attack for a few seconds and fails only on correctness: a legit request without an answer, a certificate no
# client received, /healthz failing, certmintd dying. The throughput, latency and CPU targets
# depend on the machine and what else runs on it (tests never assert timings), so only --full
# checks them: legit >= 0.8 of the baseline and certmintd < 10 % CPU for the slow attacks,
# >= 0.7 and p99 < 20 ms for the MAC floods, >= 0.7 for the garbage flood; run it on a quiet
# machine with a release build (the default when build/release exists).
# CM_ABUSE_CONF: lines added to [certmintd] (a setting to compare, e.g. "kdf_inline = off").
# Exit: 0 all passed, 1 a target failed, 2 usage or set-up failure.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
abuse="$here/abuse.py"
mode=short
build=""
certmintd=""
certmint=""
bench=""
flood=""
markdown=""
keep=0
usage() {
  sed -n '2,3p' "$0" | sed 's/^# //'
}
while [ $# -gt 0 ]; do
  case $1 in
    --short) mode=short ;;
    --full) mode=full ;;
    --build) build=$2; shift ;;
    --certmintd) certmintd=$2; shift ;;
    --certmint) certmint=$2; shift ;;
    --bench) bench=$2; shift ;;
    --flood) flood=$2; shift ;;
    --markdown) markdown=$2; shift ;;
    --keep) keep=1 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
  shift
done
if [ -z "$certmintd" ]; then
  if [ -z "$build" ]; then
    for b in "$root/build/release" "$root/build/asan"; do
      if [ -x "$b/engine/certmintd" ]; then build=$b; break; fi
    done
  fi
  [ -n "$build" ] || { echo "run.sh: no build found (give --build DIR)" >&2; exit 2; }
  certmintd=$build/engine/certmintd
  certmint=$build/tools/certmint
  bench=$build/bench/certmint-bench
  flood=$build/tests/abuse/abuse-flood
fi
# The C flood when built (it leaves the server more of the machine than Python would).
if [ -n "$flood" ] && [ ! -x "$flood" ]; then flood=""; fi
for f in "$certmintd" "$certmint" "$bench"; do
  [ -x "$f" ] || { echo "run.sh: $f is not there (build it first)" >&2; exit 2; }
done
if [ "$mode" = full ]; then
  secs=10   # each legit measurement
  idle=5    # certmintd's CPU with only the attacker
else
  secs=3
  idle=3
fi
legit_src=127.0.0.2
attack_src=127.0.0.3

work=$(mktemp -d /tmp/certmint-abuse-XXXXXX)
pid=""
bg=()
failed=0
cleanup() {
  for p in "${bg[@]}"; do kill -TERM "$p" 2>/dev/null; done
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
  if [ "$failed" -eq 0 ] && [ "$keep" -eq 0 ]; then rm -rf "$work"; else echo "kept $work"; fi
}
trap cleanup EXIT
die() { echo "run.sh: $*" >&2; failed=1; exit 2; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
port=$(free_port)
admin=$(free_port)
[ "$port" != "$admin" ] || admin=$(free_port)

# --- the instance ---------------------------------------------------------------------------------
"$certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 ||
  { cat "$work/init.log"; die "certmint init failed"; }
cnf=$work/inst/certmint.cnf
sed -i "s|^log_level = info|log_level = warn\nadmin_listen = 127.0.0.1:$admin|" "$cnf"
sed -i 's|^implicit_confirm = on|implicit_confirm = on\nallow_key_reuse = on|' "$cnf"
if [ -n "${CM_ABUSE_CONF:-}" ]; then # settings to compare, e.g. "kdf_inline = off"
  sed -i "s|^log_level = warn|log_level = warn\n$CM_ABUSE_CONF|" "$cnf"
fi
export $(cat "$work/inst/env")
secret=$(cat "$work/inst/secrets/demo-device")
url="http://127.0.0.1:$port/.well-known/cmp/p/devices"
db=$work/inst/certmint.db

start_daemon() { # [prlimit args...]
  "$@" "$certmintd" -c "$cnf" --log "$work/daemon.log" &
  pid=$!
  for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$admin/healthz" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  tail -20 "$work/daemon.log"
  die "certmintd did not start"
}
stop_daemon() {
  kill -TERM "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null
  local rc=$?
  pid=""
  [ "$rc" -eq 0 ] || { tail -20 "$work/daemon.log"; die "certmintd exited $rc"; }
}
start_daemon

certs() { python3 "$abuse" certs --db "$db"; }
jget() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))" "$@"; }

# legit NAME CONNECTIONS: certmint-bench from $legit_src for $secs seconds; leaves $work/NAME.json
# and the number of certificates the store gained meanwhile in $work/NAME.certs.
legit() {
  local name=$1 conns=$2
  local before after
  before=$(certs)
  "$bench" --url "$url" --secret "demo-device:$secret" --source "$legit_src" \
    --connections "$conns" --duration "$secs" --key-pool 256 --timeout 10 --quiet \
    --json "$work/$name.json" >"$work/$name.bench.log" 2>&1
  [ -s "$work/$name.json" ] || { cat "$work/$name.bench.log"; die "certmint-bench ($name) failed"; }
  sleep 0.5 # answers the bench gave up on may still be committing
  after=$(certs)
  echo $((after - before)) >"$work/$name.certs"
}

# attack NAME CMD...: starts an attacker in the background (its JSON summary in
# $work/NAME.attack.json); stop_attacks ends them all.
attack() {
  local name=$1
  shift
  python3 "$abuse" "$@" >"$work/$name.attack.json" 2>"$work/$name.attack.err" &
  bg+=($!)
}
attack_c() { # NAME ARGS...: the C flood
  local name=$1
  shift
  "$flood" "$@" >"$work/$name.attack.json" 2>"$work/$name.attack.err" &
  bg+=($!)
}
stop_attacks() {
  for p in "${bg[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${bg[@]}"; do wait "$p" 2>/dev/null; done
  bg=()
}

# --- the table ------------------------------------------------------------------------------------
base_eps=0
rows=()
# row NAME DESCRIPTION RATIO_MIN P99_MAX CPU_MAX HEALTH(0/1): judges $work/NAME.json.
row() {
  local name=$1 desc=$2 rmin=$3 p99max=$4 cpumax=$5 health=$6
  local eps ok lost refused p99 ratio undelivered cpu="-" hfail="-" verdict=pass why=""
  eps=$(jget "$work/$name.json" 'd["eps"]')
  ok=$(jget "$work/$name.json" 'd["ok"]')
  # Without an answer: connect, I/O and timeout failures, malformed HTTP, still in flight.
  lost=$(jget "$work/$name.json" \
    'sum(d["errors"].get(k,0) for k in ("connect","io","timeout","http_malformed")) + d["unfinished"]')
  refused=$(jget "$work/$name.json" 'd["failed"]')
  p99=$(jget "$work/$name.json" 'd["latency_ms"]["p99"]')
  undelivered=$(( $(cat "$work/$name.certs") - ok ))
  ratio=$(python3 -c "print(f'{$eps / $base_eps:.2f}' if $base_eps > 0 else '1.00')")
  if [ -f "$work/$name.cpu.json" ]; then cpu=$(jget "$work/$name.cpu.json" 'd["percent"]'); fi
  if [ -f "$work/$name.health.json" ]; then hfail=$(jget "$work/$name.health.json" 'd["failed"]'); fi
  # Correctness, in both modes.
  [ "$lost" -eq 0 ] || { verdict=FAIL; why+=" lost"; }
  [ "$undelivered" -eq 0 ] || { verdict=FAIL; why+=" undelivered"; }
  [ "$refused" -eq "$lost" ] || { verdict=FAIL; why+=" legit-refused"; }
  if [ "$health" = 1 ] && [ "$hfail" != 0 ]; then verdict=FAIL; why+=" healthz"; fi
  # Targets: --full only.
  local targets=""
  if [ -n "$rmin" ]; then targets+="legit>=$rmin "; fi
  if [ -n "$p99max" ]; then targets+="p99<${p99max}ms "; fi
  if [ -n "$cpumax" ]; then targets+="cpu<$cpumax% "; fi
  if [ "$mode" = full ]; then
    if [ -n "$rmin" ] && ! python3 -c "import sys; sys.exit(0 if $ratio >= $rmin else 1)"; then
      verdict=FAIL; why+=" ratio"
    fi
    if [ -n "$p99max" ] && ! python3 -c "import sys; sys.exit(0 if $p99 < $p99max else 1)"; then
      verdict=FAIL; why+=" p99"
    fi
    if [ -n "$cpumax" ] && ! python3 -c "import sys; sys.exit(0 if $cpu < $cpumax else 1)"; then
      verdict=FAIL; why+=" cpu"
    fi
  fi
  [ "$verdict" = pass ] || failed=1
  rows+=("| $desc | $ratio | $lost | $undelivered | $(printf '%.0f' "$eps")/s, p99 ${p99} ms | $cpu | $hfail | ${targets:-—} | $verdict${why:+ ($why )} |")
}

# --- baseline ---------------------------------------------------------------------------------------
legit baseline 8
base_eps=$(jget "$work/baseline.json" 'd["eps"]')
row baseline "baseline (no attack)" "" "" "" 0

# --- churn beside 16 keep-alive clients ---------------------------------------------------------------
legit churn-base 16
churn_base=$(jget "$work/churn-base.json" 'd["eps"]')
attack churn churn --port "$port" --source "$attack_src,127.0.0.4,127.0.0.5,127.0.0.6" --procs 2
sleep 1
legit churn 16
stop_attacks
saved_base=$base_eps
base_eps=$churn_base # the same 16 connections without churn
row churn "churn: 2 processes × connect, part of a request, close (16 keep-alive legit)" "" "" "" 0
base_eps=$saved_base

# --- wrong-MAC floods: the legit load's own senderKID, the maximum iterations --------------------------
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/attack.key" 2>/dev/null
mac_flood() { # NAME KIND ITERATIONS
  local name=$1 kind=$2 it=$3
  rm -f "$work/base.der"
  # A real ir from openssl cmp, under a senderKID the CA does not know (no MAC is checked, no
  # failure counted), rewritten with the legit senderKID, the iterations and a wrong MAC.
  openssl cmp -server "127.0.0.1:$port" -path .well-known/cmp/p/devices -cmd ir -ref nobody \
    -secret pass:x -mac hmacWithSHA256 -newkey "$work/attack.key" -subject /CN=attacker \
    -reqout "$work/base.der" -certout "$work/unused.pem" -unprotected_errors \
    >"$work/$name.cmp.log" 2>&1
  [ -s "$work/base.der" ] || { cat "$work/$name.cmp.log"; die "openssl cmp wrote no request"; }
  python3 "$abuse" mkmac --input "$work/base.der" --output "$work/$name.der" --kind "$kind" \
    --iterations "$it" --kid demo-device || die "mkmac"
  if [ -n "$flood" ]; then
    attack_c "$name" --port "$port" --source "$attack_src" --conns 4 --body "$work/$name.der"
  else
    attack "$name" macflood --port "$port" --source "$attack_src" --conns 4 --der "$work/$name.der"
  fi
  sleep 1
  legit "$name" 8
  stop_attacks
}
max_pbm=$(sed -n 's/^max_pbm_iterations *= *//p' "$cnf")
max_pbmac1=$(sed -n 's/^max_pbmac1_iterations *= *//p' "$cnf")
mac_flood pbm pbm "${max_pbm:-10000}"
row pbm "4 connections of wrong-MAC PBM, ${max_pbm:-10000} iterations" 0.7 20 "" 0
mac_flood pbmac1 pbmac1 "${max_pbmac1:-2500}"
row pbmac1 "4 connections of wrong-MAC PBMAC1, ${max_pbmac1:-2500} iterations" 0.7 20 "" 0

# --- garbage ------------------------------------------------------------------------------------------
if [ -n "$flood" ]; then
  attack_c garbage --port "$port" --source "$attack_src" --conns 4 --garbage
else
  attack garbage garbage --port "$port" --source "$attack_src" --conns 4
fi
sleep 1
legit garbage 8
stop_attacks
row garbage "garbage flood from 4 connections (random bodies as application/pkixcmp)" 0.7 "" "" 0

# --- slow connections ---------------------------------------------------------------------------------
slow_phase() { # NAME
  local name=$1
  attack "$name" slow --port "$port" --source "$attack_src" --conns 5000
  python3 "$abuse" health --port "$admin" --interval 0.1 --timeout 1 \
    >"$work/$name.health.json" 2>&1 &
  local hp=$!
  sleep 3 # every slow connection open or refused
  python3 "$abuse" cpu --pid "$pid" --seconds "$idle" >"$work/$name.cpu.json"
  legit "$name" 8
  kill -TERM "$hp"
  wait "$hp" 2>/dev/null
  stop_attacks
}
slow_phase slow
row slow "5,000 slow connections from one address" 0.8 "" 10 1
# The same against certmintd with 1,024 descriptors (the systemd default without LimitNOFILE).
stop_daemon
start_daemon prlimit --nofile=1024:1024
slow_phase slow1024
row slow1024 "5,000 slow connections from one address, 1,024 descriptors" 0.8 "" 10 1
lowered=$(grep -c "max_connections lowered" "$work/daemon.log")
stop_daemon

# --- the report ---------------------------------------------------------------------------------------
{
  echo "certmint abuse run ($mode mode, $secs s per measurement, $(basename "$(dirname "$(dirname "$certmintd")")") build, $(nproc) cores)"
  echo
  echo "| attack | legit / baseline | legit lost | certificates no client received | legit load | certmintd CPU, attacker only (%) | /healthz failures | targets | result |"
  echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for r in "${rows[@]}"; do echo "$r"; done
  echo
  for a in churn pbm pbmac1 garbage slow slow1024; do
    [ -s "$work/$a.attack.json" ] && echo "- $a attacker: $(cat "$work/$a.attack.json")"
  done
  echo "- with 1,024 descriptors certmintd logged 'max_connections lowered' $lowered time(s)"
  if [ "$mode" = short ]; then
    echo "- short mode: only lost, undelivered, refused legit requests and /healthz decide; the"
    echo "  throughput, latency and CPU targets are checked by --full"
  fi
} | tee "$work/report.md"
if [ -n "$markdown" ]; then cp "$work/report.md" "$markdown"; fi
if [ "$failed" -ne 0 ]; then
  echo "FAIL: a target was missed (see the table)"
  exit 1
fi
echo "ok: every attack held"
exit 0

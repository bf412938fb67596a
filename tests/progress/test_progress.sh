#!/usr/bin/env bash
# tests/progress/test_progress.sh CERTMINTD CERTMINT [CERTMINT_BENCH]
# Long work shows progress: `certmint init` reports its four steps (token, keys, root, store)
# in order, each as it starts and when it is done; certmint-bench on a terminal (a pty made by
# script(1)) shows the preparation ("preparing N requests") and a live line with the rate and
# p99, and shows none of it with --quiet or when stderr is not a terminal.
set -uo pipefail
certmintd=$1
certmint=$2
bench=${3:-}
work=$(mktemp -d /tmp/certmint-progress-XXXXXX)
pid=""
fails=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid"; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" >"$work/init.out" 2>"$work/init.err" ||
  { cat "$work/init.out" "$work/init.err"; fail "certmint init"; exit 1; }
steps=$(grep -o '^certmint init: \[[0-9]/4\] [a-z]*' "$work/init.out" | awk '{print $3 $4}' | tr '\n' ' ')
[ "$steps" = "[1/4]token [2/4]keys [3/4]root [4/4]store " ] &&
  ok "init reports token, keys, root, store in order" || fail "init steps: '$steps'"
[ "$(grep -c '^certmint init:       done in [0-9.]* s$' "$work/init.out")" -eq 4 ] &&
  ok "init says when each step is done" || fail "init: not four 'done in' lines"
awk '/\[4\/4\]/ {s=NR} /^certmint: instance created/ {c=NR} END {exit !(s && c && s < c)}' \
  "$work/init.out" && ok "the steps come before the summary" || fail "init: steps after the summary"

if [ -z "$bench" ]; then
  echo "skip certmint-bench: not built"
  [ "$fails" -eq 0 ] || exit 1
  exit 0
fi
if ! command -v script >/dev/null; then
  echo "SKIP: script(1) not found (apt-get install bsdutils)"; exit 77
fi
export $(cat "$work/inst/env")
"$certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon.log" >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
secret=$(cat "$work/inst/secrets/demo-device")
args=(--url "http://127.0.0.1:$port/.well-known/cmp" --secret "demo-device:$secret" --duration 2.5
      --prepare 400 --connections 2 --threads 2)
# on_tty FILE ARGS...: certmint-bench with stdin, stdout and stderr on a pty; FILE gets the
# terminal's output.
on_tty() {
  local out=$1; shift
  script -qfec "$(printf '%q ' "$bench" "$@")" "$out" >/dev/null 2>&1
}
if on_tty "$work/tty.out" "${args[@]}"; then ok "certmint-bench on a terminal"; else
  fail "certmint-bench on a terminal failed"; cat "$work/tty.out"; fi
tr '\r' '\n' <"$work/tty.out" >"$work/tty.lines"
grep -q '^  preparing 400 requests: 400 of 400 (100%)' "$work/tty.lines" &&
  ok "the terminal shows 'preparing 400 requests'" || fail "no preparation progress on the terminal"
grep -qE '^ +[0-9.]+ s +[0-9]+ done +[0-9]+/s +p99 +[0-9.]+ ms +[0-9]+ errors' "$work/tty.lines" &&
  ok "the terminal shows the live rate and p99" || fail "no live rate/p99 line on the terminal"
grep -q 'enrolments/s' "$work/tty.lines" && ok "the report follows" || fail "no report"

if on_tty "$work/quiet.out" "${args[@]}" --quiet; then ok "certmint-bench --quiet"; else
  fail "certmint-bench --quiet failed"; fi
if grep -q $'\r  ' "$work/quiet.out" || grep -qE 'preparing [0-9]+ requests|p99 +[0-9.]+ ms' "$work/quiet.out"; then
  fail "--quiet still shows progress"; else ok "--quiet on a terminal shows no progress"; fi
grep -q 'enrolments/s' "$work/quiet.out" && ok "--quiet keeps the report" || fail "--quiet: no report"

"$bench" "${args[@]}" >"$work/pipe.out" 2>"$work/pipe.err" </dev/null ||
  fail "certmint-bench without a terminal failed"
if [ -s "$work/pipe.err" ]; then fail "stderr not a terminal, yet it wrote: $(head -c 200 "$work/pipe.err")"
else ok "without a terminal stderr stays silent"; fi
grep -q 'enrolments/s' "$work/pipe.out" && ok "the report goes to stdout" || fail "no report on stdout"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "progress: all checks passed"

#!/usr/bin/env bash
# tests/monitoring/test_monitoring.sh SOURCE_DIR CERTMINTD CERTMINT
# The monitoring files against Prometheus and against certmintd:
#   - `promtool check rules` passes on tools/monitoring/certmint.rules.yml and `promtool test
#     rules` on its unit test certmint.rules.test.yml; with a threshold changed the unit test
#     fails (so it tests something);
#   - the Grafana dashboard is valid JSON and each panel's query is valid PromQL (promtool
#     checks them as recording rules);
#   - a live certmintd's /metrics (a throwaway instance, after an enrolment and a rejection)
#     passes `promtool check metrics` without a word, and serves every certmint_* series the
#     rules and the dashboard use, except those listed in PENDING below, which must not be
#     served yet (empty now; a stale entry fails).
set -uo pipefail
src=$(realpath "$1")
certmintd=$2
certmint=$3
mon="$src/tools/monitoring"
# Series the rules use that certmintd does not serve yet (none).
PENDING=""
if ! command -v promtool >/dev/null; then
  echo "SKIP: promtool not found (apt-get install prometheus)"; exit 77
fi
work=$(mktemp -d /tmp/certmint-monitoring-XXXXXX)
pid=""
fails=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; wait "$pid"; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

promtool check rules "$mon/certmint.rules.yml" >"$work/check.log" 2>&1 &&
  ok "promtool check rules" || { cat "$work/check.log"; fail "promtool check rules"; }
(cd "$mon" && promtool test rules certmint.rules.test.yml) >"$work/test.log" 2>&1 &&
  ok "promtool test rules" || { cat "$work/test.log"; fail "promtool test rules"; }
mkdir "$work/mut"
sed 's/        expr: rate(certmint_store_commit_failures_total\[5m\]) > 0$/        expr: rate(certmint_store_commit_failures_total[5m]) > 5/' \
  "$mon/certmint.rules.yml" >"$work/mut/certmint.rules.yml"
cp "$mon/certmint.rules.test.yml" "$work/mut/"
if cmp -s "$mon/certmint.rules.yml" "$work/mut/certmint.rules.yml"; then
  fail "could not mutate the rules (the CertmintStoreCommitFailures expression changed?)"
elif (cd "$work/mut" && promtool test rules certmint.rules.test.yml) >/dev/null 2>&1; then
  fail "the unit test passes with a changed threshold"
else ok "the unit test fails with a changed threshold"; fi

python3 - "$mon/certmint-dashboard.json" "$work/dash.rules.yml" <<'PY' || fail "dashboard JSON"
import json, sys
d = json.load(open(sys.argv[1]))
exprs = [t["expr"] for p in d["panels"] for t in p.get("targets", [])]
assert d["title"] and exprs, "no panels with queries"
with open(sys.argv[2], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "5m").replace("$instance", ".*")
        f.write(f"      - record: dashboard:panel_{i}\n        expr: {json.dumps(e)}\n")
print(f"dashboard: {len(d['panels'])} panels, {len(exprs)} queries")
PY
promtool check rules "$work/dash.rules.yml" >"$work/dash.log" 2>&1 &&
  ok "every dashboard query is valid PromQL" || { cat "$work/dash.log"; fail "dashboard PromQL"; }

# The series the files use, as metric family names (histogram suffixes dropped).
used=$(cat "$mon/certmint.rules.yml" "$mon/certmint-dashboard.json" |
       grep -o 'certmint_[a-z0-9_]*' | sed -E 's/_(bucket|count|sum)$//' | sort -u)
. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
"$certmint" init --dir "$work/inst" --port "$port" >"$work/init.log" 2>&1 ||
  { cat "$work/init.log"; fail "certmint init"; exit 1; }
env $(cat "$work/inst/env") "$certmintd" -c "$work/inst/certmint.cnf" --log "$work/daemon.log" \
  >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# One enrolment, so that the per-body series exist.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/dev.key" 2>/dev/null
openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp -ref demo-device -mac hmacWithSHA256 \
  -secret "file:$work/inst/secrets/demo-device" -newkey "$work/dev.key" -subject /CN=mon \
  -trusted "$work/inst/ca.pem" -certout "$work/dev.pem" >"$work/cmp.log" 2>&1 ||
  { cat "$work/cmp.log"; fail "openssl cmp ir"; }
# And one rejection (a wrong MAC secret: badMessageCheck), for the rejections by failInfo.
openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp -ref demo-device -mac hmacWithSHA256 \
  -secret pass:wrong -newkey "$work/dev.key" -subject /CN=mon -trusted "$work/inst/ca.pem" \
  -certout "$work/x.pem" >"$work/bad.log" 2>&1 && fail "a wrong secret was accepted"
curl -sf "http://127.0.0.1:$port/metrics" >"$work/metrics.txt" || fail "GET /metrics"
lint=$(promtool check metrics <"$work/metrics.txt" 2>&1)
[ $? -eq 0 ] && [ -z "$lint" ] && ok "promtool check metrics on a live /metrics: nothing to say" ||
  { echo "$lint"; fail "promtool check metrics"; }
grep -q 'certmint_rejections_total{failinfo="badMessageCheck"} 1$' "$work/metrics.txt" &&
  ok "the rejection counts under badMessageCheck" || fail "no badMessageCheck rejection in /metrics"
grep -q 'certmint_request_duration_seconds_count{body="ir",outcome="ok"} 1$' "$work/metrics.txt" &&
  ok "the enrolment's ir is in the duration histogram" || fail "no ir in the duration histogram"
served=$(grep -v '^#' "$work/metrics.txt" | grep -o '^certmint_[a-z0-9_]*' |
         sed -E 's/_(bucket|count|sum)$//' | sort -u)
for m in $used; do
  if grep -qx "$m" <<<"$served"; then
    grep -qw "$m" <<<"$PENDING" && fail "$m is served now: remove it from PENDING in $0"
  elif grep -qw "$m" <<<"$PENDING"; then
    echo "note $m is used by the rules but not served yet (pending)"
  else
    fail "$m is used by the rules or the dashboard but certmintd does not serve it"
  fi
done
ok "checked $(wc -w <<<"$used") series against a live /metrics"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "monitoring: all checks passed"

#!/usr/bin/env bash
# bench/scaleout.sh [BUILD_DIR] — one certmintd on SQLite vs one on PostgreSQL vs two behind
# HAProxy on PostgreSQL, in one run (issue 17). Writes bench/results/SCALEOUT.md and
# bench/results/SCALEOUT.json.
#
#   BUILD_DIR               a release build (default build/release; cmake --preset release)
#   CM_BENCH_DURATION=S     seconds per measured run (default 10)
#   CM_BENCH_CONNECTIONS    connection counts (default "8 64")
#   CM_BENCH_REPEAT=N       rounds, the configurations interleaved in each (default 2); the
#                           report takes each configuration's median round
#   CM_BENCH_IO_THREADS=N   io_threads of every node (default: the configuration's, = cores)
#
# One instance (certmint init: SoftHSM token, EC P-256 CA, PBM secret) and one throwaway
# PostgreSQL 15 cluster (tests/support/pg_cluster.sh: fsync on, synchronous_commit on), each
# configuration on an empty store (a fresh SQLite file, a fresh database). Load:
# certmint-bench ir-implicit with PBM, requests prepared before the clock. Measured per run:
# enrolments/s and latency (certmint-bench), CPU per enrolment of certmintd (all nodes), of its
# store writer thread and of its HSM workers, of the PostgreSQL server (every process of the
# cluster), jobs per commit, mean commit latency and round trips (/metrics deltas). Then
# `pgbench -N` on the same cluster for the database's commits/s. HAProxy runs the
# configuration the integration test and README "Scale-out" use
# (tests/integration/haproxy.cfg.in). About 3 minutes with the defaults.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=$(cd "${1:-$root/build/release}" && pwd)
dur=${CM_BENCH_DURATION:-10}
conns=${CM_BENCH_CONNECTIONS:-"8 64"}
repeat=${CM_BENCH_REPEAT:-2}
iothreads=${CM_BENCH_IO_THREADS:-}
certmintd=$build/engine/certmintd
certmint=$build/tools/certmint
bench=$build/bench/certmint-bench
cluster=$root/tests/support/pg_cluster.sh
for b in "$certmintd" "$certmint" "$bench"; do
  [ -x "$b" ] || { echo "scaleout.sh: $b missing (build the release preset first)" >&2; exit 2; }
done
command -v haproxy >/dev/null || { echo "scaleout.sh: haproxy missing (tools/install-deps.sh)" >&2; exit 2; }
out=$root/bench/results
mkdir -p "$out"
work=$(mktemp -d /tmp/certmint-scaleout-bench-XXXXXX)
chmod 711 "$work"
pids=""
cleanup() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  "$cluster" destroy "$work/pg" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
wait_health() { # wait_health PORT
  for _ in $(seq 1 200); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$1/healthz")" = 200 ] && return 0
    sleep 0.1
  done
  echo "scaleout.sh: nothing healthy on port $1" >&2
  return 1
}

echo "== setting up in $work"
p1=$(free_port); p2=$(free_port); pb=$(free_port); ps=$(free_port)
"$certmint" init --dir "$work/inst" --port "$p1" >"$work/init.log" 2>&1 \
  || { cat "$work/init.log"; exit 1; }
secret=$(cat "$work/inst/secrets/demo-device")
export $(cat "$work/inst/env")
"$cluster" start "$work/pg" >"$work/pg.log" 2>&1 || { cat "$work/pg.log"; exit 1; }
pgport=$(cat "$work/pg/port")
psql_() { "$cluster" psql "$work/pg" -Atq "$@"; }
# conf NAME STORE-LINES: a copy of the instance's configuration with another store.
conf() {
  # certmint-bench draws its device keys from a pool: the CA may certify a key again.
  sed -e "s|^store = .*|$2|" -e 's/^\[profile:devices\]/[profile:devices]\nallow_key_reuse = on/' \
    "$work/inst/certmint.cnf" >"$work/inst/$1.cnf"
  if [ -n "$iothreads" ]; then
    sed -i "s|^io_threads = .*|io_threads = $iothreads|" "$work/inst/$1.cnf"
  fi
}
pgstore() { # the store lines for database $1
  echo "store = postgresql://certmint@/$1?host=$work/pg\&port=$pgport\nstore_passfile = $work/pg/pgpass"
}
sed -e "s/@BALANCER@/127.0.0.1:$pb/" -e "s/@STATS@/127.0.0.1:$ps/" \
    -e "s/@NODE1@/127.0.0.1:$p1/" -e "s/@NODE2@/127.0.0.1:$p2/" \
    "$root/tests/integration/haproxy.cfg.in" >"$work/haproxy.cfg"
chmod 644 "$work/haproxy.cfg"
postmaster=$(head -1 "$work/pg/data/postmaster.pid")

# cpu_ticks PID [THREAD-PREFIX]: utime + stime of a process, or of its threads named PREFIX*.
cpu_ticks() {
  local pid=$1 prefix=${2:-} t=0 f
  if [ -z "$prefix" ]; then
    awk '{print $14 + $15}' "/proc/$pid/stat"
    return
  fi
  for f in /proc/"$pid"/task/*; do
    case "$(cat "$f/comm" 2>/dev/null)" in
      "$prefix"*) t=$((t + $(awk '{print $14 + $15}' "$f/stat"))) ;;
    esac
  done
  echo "$t"
}
# pg_ticks: every process of the cluster (the postmaster and its children), live ones only;
# exited backends are counted through the postmaster's cutime/cstime.
pg_ticks() {
  python3 - "$postmaster" <<'PY'
import os, sys
pm = sys.argv[1]
total = 0
for d in os.listdir("/proc"):
    if not d.isdigit():
        continue
    try:
        f = open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    # after the comm: state ppid ... utime(14) stime(15) cutime(16) cstime(17), 1-based overall
    ppid, ut, st, cut, cst = f[1], int(f[11]), int(f[12]), int(f[13]), int(f[14])
    if d == pm:
        total += ut + st + cut + cst
    elif ppid == pm:
        total += ut + st
print(total)
PY
}
metric() { # metric PORT NAME
  curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n {print $2}'
}

start_node() { # start_node CONF PORT
  "$certmintd" -c "$work/inst/$1.cnf" --listen "127.0.0.1:$2" --log "$work/$1-$2.log" \
    >>"$work/$1-$2.out" 2>&1 &
  local pid=$!
  pids="$pids $pid"
  wait_health "$2"
  echo "$pid"
}
stop_all() {
  for p in $pids; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $pids; do wait "$p" 2>/dev/null || true; done
  pids=""
}

# measure NAME URL CONNS PORTS...: one certmint-bench run; writes $work/NAME-CONNS.json with
# the bench's result and the CPU and /metrics deltas of the nodes listening on PORTS.
measure() {
  local name=$1 url=$2 c=$3
  shift 3
  local ports=("$@") pidlist=() before=() b
  for p in "${ports[@]}"; do pidlist+=("$(ss -Hltnp "sport = :$p" | sed -n 's/.*pid=\([0-9]*\).*/\1/p' | head -1)"); done
  # The snapshots bracket the whole bench run; the nodes idle while it prepares, and the CPU
  # is divided by the enrolments they answered in between (warm-up included).
  snap() {
    local i
    for i in "${!ports[@]}"; do
      echo "${ports[$i]} $(cpu_ticks "${pidlist[$i]}") $(cpu_ticks "${pidlist[$i]}" cm-store) $(cpu_ticks "${pidlist[$i]}" cm-hsm) $(metric "${ports[$i]}" certmint_store_commit_seconds_sum) $(metric "${ports[$i]}" certmint_store_commit_seconds_count) $(metric "${ports[$i]}" certmint_store_jobs_total) $(metric "${ports[$i]}" certmint_store_round_trips_total) $(metric "${ports[$i]}" 'certmint_requests_total{outcome="ok"}')"
    done
    echo "pg $(pg_ticks)"
    if [ -n "${hapid:-}" ]; then echo "haproxy $(cpu_ticks "$hapid")"; fi
  }
  snap >"$work/$name-$c.before"
  "$bench" --url "$url" --secret "demo-device:$secret" --flow ir-implicit --key-pool 256 \
    --connections "$c" --duration "$dur" --prepare "$((3500 * dur))" --warmup 200 --timeout 20 \
    --json "$work/$name-$c.bench.json" >"$work/$name-$c.txt" 2>&1 || true
  snap >"$work/$name-$c.after"
  sed -n '2,3p;/errors/p' "$work/$name-$c.txt" | sed 's/^/    /'
}

for round in $(seq 1 "$repeat"); do
for c in $conns; do
  echo "== round $round: one node, SQLite, $c connections"
  conf sqlite "store = sqlite:$work/sqlite-$c-$round.db"
  start_node sqlite "$p1" >/dev/null
  measure "sqlite-r$round" "http://127.0.0.1:$p1/.well-known/cmp" "$c" "$p1"
  stop_all

  echo "== round $round: one node, PostgreSQL, $c connections"
  psql_ -d postgres -c "CREATE DATABASE one_${c}_$round" >/dev/null
  conf pg1 "$(pgstore "one_${c}_$round")"
  start_node pg1 "$p1" >/dev/null
  measure "pg1-r$round" "http://127.0.0.1:$p1/.well-known/cmp" "$c" "$p1"
  stop_all

  echo "== round $round: two nodes behind HAProxy, PostgreSQL, $c connections"
  psql_ -d postgres -c "CREATE DATABASE two_${c}_$round" >/dev/null
  conf pg2 "$(pgstore "two_${c}_$round")"
  start_node pg2 "$p1" >/dev/null
  start_node pg2 "$p2" >/dev/null
  if [ "$(id -u)" -eq 0 ]; then
    setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups \
      haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  else
    haproxy -db -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  fi
  hapid=$!
  pids="$pids $hapid"
  for _ in $(seq 1 100); do
    [ "$(curl -s "http://127.0.0.1:$ps/stats;csv" | grep -c '^certmint,node[12],.*,UP,')" = 2 ] && break
    sleep 0.1
  done
  measure "pg2-r$round" "http://127.0.0.1:$pb/.well-known/cmp" "$c" "$p1" "$p2"
  stop_all
  hapid=""
done
done

echo "== pgbench -N (the database's commits/s, fsync on)"
(
  export $(grep -v CM_PG_URL "$work/pg/env")
  pgbench -i -s 1 -q >"$work/pgbench-init.log" 2>&1
  for c in 1 8 64; do
    echo "$c $(pgbench -N -c "$c" -j 2 -T 5 2>/dev/null | sed -n 's/^tps = \([0-9.]*\).*/\1/p')"
  done
) | tee "$work/pgbench.txt"

echo "== results"
python3 - "$work" "$out" "$dur" "$conns" "$(getconf CLK_TCK)" "$repeat" "${iothreads:-default}" <<'PY'
import json, os, platform, subprocess, sys
work, out, dur, conns, hz = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4].split(), int(sys.argv[5])
repeat, iothreads = int(sys.argv[6]), sys.argv[7]
def load(p):
    try:
        return json.load(open(p))
    except Exception:
        return {}
def snap(p):
    nodes, other = {}, {"pg": 0, "haproxy": 0}
    for line in open(p):
        f = line.split()
        if f[0] in other:
            other[f[0]] = int(f[1])
            continue
        v = [float(x) for x in f[1:]] + [0.0] * 9
        nodes[f[0]] = dict(cpu=v[0], store=v[1], hsm=v[2], commit_sum=v[3], commits=v[4],
                           jobs=v[5], rtt=v[6], answered=v[7])
    return nodes, other
cpu = "?"
for line in open("/proc/cpuinfo"):
    if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
pgb = {}
for line in open(os.path.join(work, "pgbench.txt")):
    f = line.split()
    if len(f) == 2:
        pgb[int(f[0])] = float(f[1])
labels = {"sqlite": "1 node, SQLite", "pg1": "1 node, PostgreSQL", "pg2": "2 nodes + HAProxy, PostgreSQL"}
def one(name, c, rnd):
        run = f"{name}-r{rnd}"
        b = load(os.path.join(work, f"{run}-{c}.bench.json"))
        try:
            n0, pg0 = snap(os.path.join(work, f"{run}-{c}.before"))
            n1, pg1 = snap(os.path.join(work, f"{run}-{c}.after"))
        except OSError:
            return None
        d = {k: sum(n1[p][k] - n0[p][k] for p in n1) for k in ("cpu", "store", "hsm", "commit_sum", "commits", "jobs", "rtt", "answered")}
        # CPU is per enrolment the nodes answered between the snapshots (warm-up included).
        ok = b.get("ok") or 0
        answered = d["answered"]
        secs = b.get("seconds") or dur
        per = lambda ticks: (ticks / hz) / answered * 1e6 if answered else None  # µs/enrolment
        return {
            "config": name, "label": labels[name], "connections": int(c), "round": rnd,
            "eps": b.get("eps"), "p50_ms": b.get("latency_ms", {}).get("p50"),
            "p99_ms": b.get("latency_ms", {}).get("p99"), "failed": b.get("failed"),
            "seconds": secs, "ok": ok,
            "certmintd_cpu_us": per(d["cpu"]), "store_thread_cpu_us": per(d["store"]),
            "hsm_cpu_us": per(d["hsm"]),
            "pg_cpu_us": per(pg1["pg"] - pg0["pg"]) if name != "sqlite" else None,
            "haproxy_cpu_us": per(pg1["haproxy"] - pg0["haproxy"]) if name == "pg2" else None,
            "jobs_per_commit": d["jobs"] / d["commits"] if d["commits"] else None,
            "commit_ms": d["commit_sum"] / d["commits"] * 1e3 if d["commits"] else None,
            "round_trips_per_enrolment": d["rtt"] / answered if answered and name != "sqlite" else None,
            "commits_per_s": d["commits"] / secs if secs else None,
        }
rows, all_rows = [], []
for c in conns:
    for name in ("sqlite", "pg1", "pg2"):
        got = [r for r in (one(name, c, k) for k in range(1, repeat + 1)) if r]
        all_rows += got
        if got:
            got.sort(key=lambda r: r["eps"] or 0)
            med = got[(len(got) - 1) // 2]
            med["eps_rounds"] = [r["eps"] for r in sorted(got, key=lambda r: r["round"])]
            rows.append(med)
machine = {"cores": os.cpu_count(), "cpu_model": cpu, "kernel": platform.release(),
           "seconds_per_run": dur, "pgbench_tps": pgb,
           "loadavg_end": open("/proc/loadavg").read().split()[:3]}
machine["rounds"] = repeat
machine["io_threads"] = iothreads
json.dump({"machine": machine, "runs": rows, "all_rounds": all_rows},
          open(os.path.join(out, "SCALEOUT.json"), "w"), indent=1)
def f(v, fmt="{:.0f}"):
    return "-" if v is None else fmt.format(v)
L = []
L.append("# Scale-out: SQLite vs PostgreSQL vs two nodes behind HAProxy (bench/scaleout.sh)\n")
L.append(f"Machine: {machine['cores']} cores ({cpu}), kernel {machine['kernel']}; {dur:.0f} s per run; "
         "ir-implicit with PBM, EC P-256, SoftHSM2 in process; PostgreSQL 15 on the same machine "
         "(fsync on, synchronous_commit on), over its Unix socket; HAProxy 2.6 round robin. "
         "Everything shares the 2 cores: certmint-bench, the nodes, HAProxy and PostgreSQL.\n")
L.append(f"{repeat} rounds, the configurations interleaved in each; each row is the configuration's "
         f"median round (enrol/s of every round in brackets); io_threads {iothreads}.\n")
L.append("| configuration | conns | enrol/s | p50 ms | p99 ms | failed | certmintd CPU µs/enrol | of which HSM | store writer µs/enrol | PostgreSQL CPU µs/enrol | HAProxy µs/enrol | jobs/commit | commit ms | round trips/enrol |")
L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
for r in rows:
    L.append(f"| {r['label']} | {r['connections']} | {f(r['eps'])} [{', '.join(f(e) for e in r['eps_rounds'])}] | {f(r['p50_ms'], '{:.1f}')} | {f(r['p99_ms'], '{:.1f}')} | "
             f"{f(r['failed'])} | {f(r['certmintd_cpu_us'])} | {f(r['hsm_cpu_us'])} | {f(r['store_thread_cpu_us'])} | "
             f"{f(r['pg_cpu_us'])} | {f(r['haproxy_cpu_us'])} | {f(r['jobs_per_commit'], '{:.1f}')} | {f(r['commit_ms'], '{:.2f}')} | "
             f"{f(r['round_trips_per_enrolment'], '{:.3f}')} |")
ratio = {}
for c in conns:
    s = next((r for r in rows if r["config"] == "sqlite" and r["connections"] == int(c)), None)
    p = next((r for r in rows if r["config"] == "pg1" and r["connections"] == int(c)), None)
    if s and p and s["eps"]:
        ratio[c] = p["eps"] / s["eps"]
L.append("")
# The same ratio round by round (both configurations ran back to back in each round).
paired = {}
for c in conns:
    for k in range(1, repeat + 1):
        s1 = next((r for r in all_rows if r["config"] == "sqlite" and r["connections"] == int(c) and r["round"] == k), None)
        p1 = next((r for r in all_rows if r["config"] == "pg1" and r["connections"] == int(c) and r["round"] == k), None)
        if s1 and p1 and s1["eps"]:
            paired.setdefault(c, []).append(p1["eps"] / s1["eps"])
L.append("One node on PostgreSQL / one node on SQLite (medians): " +
         ", ".join(f"{v:.2f} at {c} connections" for c, v in ratio.items()) +
         "; round by round: " +
         "; ".join(f"{', '.join(f'{x:.2f}' for x in v)} at {c}" for c, v in paired.items()) +
         " (target: >= 0.8 at 64).")
L.append("")
L.append("pgbench -N -j 2 -T 5 on the same cluster (commits/s): " +
         ", ".join(f"{v:.0f} at -c {c}" for c, v in sorted(pgb.items())) + ".")
# An estimate for N nodes on N machines (each like this one: 2 cores) with a network HSM and a
# database server of its own, from the one-node PostgreSQL run at the highest connection count.
top = max((r for r in rows if r["config"] == "pg1"), key=lambda r: r["connections"], default=None)
if top and top["certmintd_cpu_us"] and top["pg_cpu_us"]:
    cores = os.cpu_count() or 2
    node_us = top["certmintd_cpu_us"] - (top["hsm_cpu_us"] or 0)  # the HSM signs elsewhere
    node_eps = cores * 1e6 / node_us
    db_cpu_eps = cores * 1e6 / top["pg_cpu_us"]
    per_commit = (top["jobs_per_commit"] or 2) / 2  # two jobs (certificate, transaction) each
    commits = max(pgb.values()) if pgb else 0
    commit_eps = commits * per_commit
    L.append("")
    L.append("## Estimate: N nodes on N machines")
    L.append("")
    L.append(f"From the one-node PostgreSQL run at {top['connections']} connections: a node spends "
             f"{top['certmintd_cpu_us']:.0f} µs of CPU per enrolment, {top['hsm_cpu_us'] or 0:.0f} µs of "
             f"them in SoftHSM's signatures, which a network HSM takes off the node: about "
             f"{node_us:.0f} µs, so a node on a {cores}-core machine of its own tops out near "
             f"{node_eps:.0f} enrolments/s (CPU-bound, load generator elsewhere). The database spends "
             f"{top['pg_cpu_us']:.0f} µs of CPU per enrolment (one indexed read on the request path, "
             f"two rows written in a batch), so a {cores}-core database server carries about "
             f"{db_cpu_eps:.0f} enrolments/s. Each batch is one commit and one round trip: "
             f"{per_commit:.1f} enrolments per commit here, and pgbench measured at most "
             f"{commits:.0f} commits/s on this disk, a ceiling of about {commit_eps:.0f} enrolments/s "
             f"at this batch size (batches grow when commits queue, so this binds late). The round "
             f"trips per enrolment are one read plus {1 / per_commit:.2f} of a batch, so a network "
             f"between node and database adds its round-trip time to each enrolment's latency, not "
             f"to the throughput.")
    L.append("")
    L.append("| nodes | nodes' CPU limit | database CPU limit | commit limit | estimate (enrol/s) |")
    L.append("|---|---|---|---|---|")
    for n in (1, 2, 4, 8):
        est = min(n * node_eps, db_cpu_eps, commit_eps)
        L.append(f"| {n} | {n * node_eps:.0f} | {db_cpu_eps:.0f} | {commit_eps:.0f} | {est:.0f} |")
    L.append("")
    L.append("So nodes add throughput until the database server's CPU is the limit; beyond that a "
             "bigger database machine (the work per enrolment is small and parallel across "
             "sessions) moves the ceiling. On this machine's 2 shared cores two nodes cannot be "
             "faster than one: they split the same CPU with HAProxy, PostgreSQL and the load "
             "generator (the table above).")
open(os.path.join(out, "SCALEOUT.md"), "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY

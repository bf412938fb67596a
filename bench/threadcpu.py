#!/usr/bin/env python3
# bench/threadcpu.py — where a process's CPU goes, per thread, over a measured run (issue 24).
#
#   threadcpu.py snap PID OUT.json
#       reads /proc/PID/task/*/stat (utime, stime) and /proc/PID/task/*/status (voluntary and
#       involuntary context switches) of every thread, and /proc/PID/io (bytes written to
#       storage, write calls), with the time of the reading
#   threadcpu.py diff BEFORE.json AFTER.json ENROLMENTS [CRYPTO_US] [--json OUT.json]
#       prints a Markdown table: per thread name (cm-io0, cm-hsm1, cm-store, ...) its CPU over
#       the run, µs of CPU per enrolment and context switches per enrolment, then the totals and,
#       given CRYPTO_US (the crypto an enrolment needs, from certmint-bench --limit), the CPU per
#       enrolment beyond it
#
# Threads are matched by thread id; one that started or ended during the run counts from zero
# or to its last reading. Clock ticks are 1/SC_CLK_TCK s (10 ms), so runs of a few seconds at
# thousands of enrolments per second resolve well under a microsecond per enrolment.
import json
import os
import sys
import time


def snap(pid):
    tasks = {}
    base = f"/proc/{pid}/task"
    for tid in os.listdir(base):
        try:
            stat = open(f"{base}/{tid}/stat").read()
            status = open(f"{base}/{tid}/status").read()
        except OSError:
            continue  # the thread ended between listdir and open
        # comm is in parentheses and may contain spaces: split after the last ')'.
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime = int(fields[11]), int(fields[12])
        sw = {}
        for line in status.splitlines():
            k, _, v = line.partition(":")
            if k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"):
                sw[k] = int(v)
        tasks[tid] = {"name": name, "ticks": utime + stime,
                      "vcs": sw.get("voluntary_ctxt_switches", 0),
                      "ivcs": sw.get("nonvoluntary_ctxt_switches", 0)}
    io = {}
    try:
        for line in open(f"/proc/{pid}/io"):
            k, _, v = line.partition(":")
            io[k] = int(v)
    except OSError:
        pass
    return {"pid": pid, "t": time.monotonic(), "hz": os.sysconf("SC_CLK_TCK"), "tasks": tasks,
            "io": io}


def group(name):
    # cm-io0, cm-io1 -> kept apart (loops differ); the HSM workers are summed as cm-hsm*.
    return "cm-hsm*" if name.startswith("cm-hsm") else name


def diff(a, b, enrolments, crypto_us):
    hz = b["hz"]
    rows = {}
    for tid, t in b["tasks"].items():
        t0 = a["tasks"].get(tid, {"ticks": 0, "vcs": 0, "ivcs": 0})
        r = rows.setdefault(group(t["name"]), {"threads": 0, "cpu_s": 0.0, "cs": 0})
        r["threads"] += 1
        r["cpu_s"] += (t["ticks"] - t0["ticks"]) / hz
        r["cs"] += (t["vcs"] - t0["vcs"]) + (t["ivcs"] - t0["ivcs"])
    for tid, t0 in a["tasks"].items():  # threads that ended during the run
        if tid not in b["tasks"]:
            rows.setdefault(group(t0["name"]), {"threads": 0, "cpu_s": 0.0, "cs": 0})
    n = max(enrolments, 1)
    out = {"seconds": b["t"] - a["t"], "enrolments": enrolments, "threads": []}
    for name in sorted(rows, key=lambda k: -rows[k]["cpu_s"]):
        r = rows[name]
        out["threads"].append({"name": name, "threads": r["threads"], "cpu_s": r["cpu_s"],
                               "us_per_enrolment": 1e6 * r["cpu_s"] / n,
                               "switches_per_enrolment": r["cs"] / n})
    total = sum(r["cpu_s"] for r in rows.values())
    out["cpu_s"] = total
    out["us_per_enrolment"] = 1e6 * total / n
    out["switches_per_enrolment"] = sum(r["cs"] for r in rows.values()) / n
    ia, ib = a.get("io", {}), b.get("io", {})
    if "write_bytes" in ib and "write_bytes" in ia:
        # What reached the block layer (WAL frames, checkpoints): pages per enrolment.
        out["write_bytes_per_enrolment"] = (ib["write_bytes"] - ia["write_bytes"]) / n
        out["write_syscalls_per_enrolment"] = (ib.get("syscw", 0) - ia.get("syscw", 0)) / n
    if crypto_us is not None:
        out["crypto_us"] = crypto_us
        out["beyond_crypto_us"] = out["us_per_enrolment"] - crypto_us
    return out


def table(d):
    lines = ["| thread | count | CPU s | µs / enrolment | context switches / enrolment |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for t in d["threads"]:
        lines.append(f"| {t['name']} | {t['threads']} | {t['cpu_s']:.2f} | "
                     f"{t['us_per_enrolment']:.0f} | {t['switches_per_enrolment']:.2f} |")
    lines.append(f"| **all** | | {d['cpu_s']:.2f} | **{d['us_per_enrolment']:.0f}** | "
                 f"**{d['switches_per_enrolment']:.2f}** |")
    if "write_bytes_per_enrolment" in d:
        lines += ["", f"Written to storage per enrolment (/proc/PID/io write_bytes): "
                  f"{d['write_bytes_per_enrolment'] / 1024:.1f} KiB; write(2)-family calls: "
                  f"{d['write_syscalls_per_enrolment']:.2f}."]
    if "crypto_us" in d:
        lines += ["", f"{d['enrolments']} enrolments in {d['seconds']:.1f} s: "
                  f"{d['us_per_enrolment']:.0f} µs of certmintd CPU each, of which "
                  f"{d['crypto_us']:.0f} µs is the crypto it must do (certmint-bench --limit), "
                  f"so **{d['beyond_crypto_us']:.0f} µs beyond the crypto**."]
    return "\n".join(lines)


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "snap":
        json.dump(snap(int(sys.argv[2])), open(sys.argv[3], "w"))
        return 0
    if len(sys.argv) >= 5 and sys.argv[1] == "diff":
        args = sys.argv[2:]
        out_json = None
        if "--json" in args:
            i = args.index("--json")
            out_json = args[i + 1]
            del args[i:i + 2]
        a, b = json.load(open(args[0])), json.load(open(args[1]))
        crypto = float(args[3]) if len(args) > 3 else None
        d = diff(a, b, int(float(args[2])), crypto)
        if out_json:
            json.dump(d, open(out_json, "w"), indent=1)
        print(table(d))
        return 0
    print(__doc__ if __doc__ else "usage: threadcpu.py snap PID OUT | diff A B N [CRYPTO_US]",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""unit_filter.py UNIT OUT_PREFIX [--without CALL...]

Derives the seccomp settings a systemd unit asks for, for tests/systemd/seccomp_run.c:
  OUT_PREFIX.syscalls  the allowed system calls, one a line: the first SystemCallFilter= line
                       (an allow-list) with its @groups expanded by `systemd-analyze
                       syscall-filter`, minus every later "~" line, plus what systemd always
                       allows (systemd.exec(5): execve, exit, ..., time and sleep calls),
                       minus --without CALLs
  OUT_PREFIX.families  RestrictAddressFamilies= as a comma-separated list ("" when unset)
  OUT_PREFIX.mdwe      "yes" when MemoryDenyWriteExecute=yes, else "no"
Exits 1 (with a message) when the unit has no allow-list filter: a unit that only deny-lists
cannot be tested this way, and certmint's must allow-list.
"""
import subprocess
import sys


# systemd.exec(5), SystemCallFilter=: allowed implicitly, whatever the list says.
IMPLICIT = {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn",
            "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64",
            "clock_nanosleep", "clock_nanosleep_time64", "gettimeofday", "nanosleep", "time"}


def expand(name, seen):
    """The system calls of NAME (a call, or an @group expanded recursively)."""
    if not name.startswith("@"):
        return {name}
    if name in seen:
        return set()
    seen.add(name)
    out = subprocess.run(["systemd-analyze", "syscall-filter", name], check=True,
                         capture_output=True, text=True).stdout
    calls = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= expand(item, seen)
    return calls


def main(argv):
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 2
    unit, prefix = argv[1], argv[2]
    without = set(argv[4:]) if len(argv) > 3 and argv[3] == "--without" else set()
    filters, families, mdwe = [], "", "no"
    with open(unit, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if line.startswith("#") or "=" not in line:
                continue
            key, value = (s.strip() for s in line.split("=", 1))
            if key == "SystemCallFilter":
                filters.append(value)
            elif key == "RestrictAddressFamilies":
                families = ",".join(value.split())
            elif key == "MemoryDenyWriteExecute":
                mdwe = "yes" if value in ("yes", "true", "on", "1") else "no"
    if not filters or filters[0].startswith("~"):
        print(f"unit_filter: {unit} has no allow-list SystemCallFilter=", file=sys.stderr)
        return 1
    allowed = set()
    for value in filters:
        deny = value.startswith("~")
        items = value.lstrip("~").split()
        calls = set()
        for item in items:
            calls |= expand(item.split(":", 1)[0], set())
        allowed = allowed - calls if deny else allowed | calls
    allowed |= IMPLICIT
    allowed -= without
    with open(prefix + ".syscalls", "w", encoding="utf-8") as f:
        f.write("".join(c + "\n" for c in sorted(allowed)))
    with open(prefix + ".families", "w", encoding="utf-8") as f:
        f.write(families + "\n")
    with open(prefix + ".mdwe", "w", encoding="utf-8") as f:
        f.write(mdwe + "\n")
    print(f"unit_filter: {len(allowed)} system calls, families {families or 'any'}, "
          f"MemoryDenyWriteExecute {mdwe}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

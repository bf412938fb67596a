#!/usr/bin/env bash
# tests/systemd/test_unit_verify.sh BUILD_DIR: the systemd unit as `cmake --install --prefix
# /usr` lays it out (into a throwaway DESTDIR) passes `systemd-analyze verify` without a word
# (its Documentation= man pages resolved against the installed ones when they are built) and
# `systemd-analyze security --offline=true` rates its exposure at most 2.0. systemd is not PID 1
# here, which both commands work without. The checks are also run on a unit with a bad setting
# and on an unhardened one, which must fail them.
set -uo pipefail
build=$1
if ! command -v systemd-analyze >/dev/null; then
  echo "SKIP: systemd-analyze not found (apt-get install systemd)"; exit 77
fi
work=$(mktemp -d /tmp/certmint-unit-XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

DESTDIR="$work/root" cmake --install "$build" --prefix /usr >"$work/install.log" 2>&1 ||
  { cat "$work/install.log"; echo "FAIL cmake --install"; exit 1; }
unit=$(find "$work/root" -name certmintd.service -path '*/systemd/system/*')
[ -n "$unit" ] || { echo "FAIL no certmintd.service installed"; exit 1; }
ok "installed unit ${unit#"$work/root"}"

# verify_quiet UNIT: systemd-analyze verify succeeds and prints nothing. The command paths
# point into the DESTDIR tree (verify checks they are executables).
verify_quiet() {
  local u=$1 dir out man=no
  dir=$(mktemp -d "$work/verify-XXXXXX")
  sed "s#/usr/sbin/certmintd#$work/root/usr/sbin/certmintd#g" "$u" >"$dir/certmintd.service"
  if [ -d "$work/root/usr/share/man/man8" ]; then man=yes; fi
  out=$(MANPATH="$work/root/usr/share/man" systemd-analyze verify --man=$man \
        "$dir/certmintd.service" 2>&1) || { echo "$out"; return 1; }
  [ -z "$out" ] || { echo "$out"; return 1; }
}
# exposure UNIT: prints the overall exposure; fails above 2.0.
exposure() {
  local out
  out=$(systemd-analyze security --offline=true --threshold=20 "$1" 2>&1)
  local rc=$?
  local level
  level=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
  echo "exposure ${level:-?}"
  [ "$rc" -eq 0 ] && [ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }'
}

if verify_quiet "$unit"; then ok "systemd-analyze verify: no complaint"; else
  fail "systemd-analyze verify"; fi
if e=$(exposure "$unit"); then ok "systemd-analyze security: $e (<= 2.0)"; else
  fail "systemd-analyze security: $e (must be <= 2.0)"; fi
grep -q '^ExecStart=/usr/sbin/certmintd -c /etc/certmint/certmint.cnf$' "$unit" &&
  grep -q '^ReadWritePaths=/var/lib/certmint$' "$unit" &&
  ok "unit paths follow the /usr prefix" || fail "unit paths (ExecStart, ReadWritePaths)"

# The checks can fail: a misspelt setting, an unhardened unit.
sed 's/^ProtectSystem=strict/ProtectSystem=strickt/' "$unit" >"$work/bad.service"
if verify_quiet "$work/bad.service" >/dev/null; then fail "verify accepted ProtectSystem=strickt"
else ok "verify rejects a bad setting"; fi
sed -n '1,/^# Files:/p; /^\[Install\]/,$p' "$unit" >"$work/soft.service"
if e=$(exposure "$work/soft.service"); then fail "an unhardened unit passed: $e"; else
  ok "an unhardened unit fails the exposure check ($e)"; fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "systemd unit: all checks passed"

#!/usr/bin/env bash
# tests/package/test_package.sh SOURCE_DIR BUILD_DIR
# The Debian package, end to end, on this machine (root only; it installs into the system and
# removes everything again, also on failure):
#   1. tools/package.sh builds the .deb from a release tree in BUILD_DIR; lintian reports no
#      error and no warning (packaging/debian/lintian-overrides explains the rest);
#   2. dpkg -i: the certmint system user and group, /var/lib/certmint (certmint, 0750), the
#      conffiles, the installed unit passes `systemd-analyze verify` and scores <= 2.0;
#   3. `certmint init` as certmint into /var/lib/certmint; the shipped
#      /etc/certmint/certmint.cnf then passes `certmintd --check`; certmintd from /usr/sbin
#      (as certmint, not through systemd: it is not PID 1) enrols a device with openssl cmp;
#   4. dpkg -i again (an upgrade) leaves the CA and the configuration as they are;
#   5. dpkg --remove leaves configuration and state; dpkg --purge removes the configuration and
#      leaves exactly what the README's "Install" section lists between its after-purge markers.
# Skipped (exit 77) when not root, without dpkg/lintian, or when certmint is installed or its
# user or folders exist (a real installation is never touched).
set -uo pipefail
src=$(realpath "$1")
build=$2
state=/var/lib/certmint
conf=/etc/certmint

skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "not root: the package test installs into the system (CI runs as root)"
for t in dpkg lintian dpkg-shlibdeps scdoc setpriv runuser; do
  command -v "$t" >/dev/null || skip "$t not found (tools/install-deps.sh installs it)"
done
if dpkg-query -W -f='${Status}' certmint 2>/dev/null | grep -q 'installed'; then
  skip "the certmint package is installed here; the test does not touch it"
fi
if getent passwd certmint >/dev/null || getent group certmint >/dev/null || [ -e "$state" ] ||
   [ -e "$conf" ]; then
  skip "a certmint user, group, $state or $conf exists; the test does not touch them"
fi

work=$(mktemp -d /tmp/certmint-package-XXXXXX)
pid=""
fails=0
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; wait "$pid" 2>/dev/null; fi
  if dpkg-query -W -f='${Status}' certmint 2>/dev/null | grep -q 'installed\|config-files'; then
    dpkg_run --purge certmint >/dev/null 2>&1 || echo "cleanup: dpkg --purge certmint failed"
  fi
  # What the package left on purpose, and only because this test made it.
  rm -rf "$state" "$conf"
  if getent passwd certmint >/dev/null; then deluser --system --quiet certmint >/dev/null 2>&1; fi
  if getent group certmint >/dev/null; then delgroup --system --quiet certmint >/dev/null 2>&1; fi
  if [ "$fails" -eq 0 ]; then rm -rf "$work"; else echo "kept $work for inspection"; fi
}
trap cleanup EXIT
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }
die()  { fail "$*"; exit 1; }

# dpkg_run ARGS...: dpkg, waiting for the lock while another apt or dpkg holds it.
dpkg_run() {
  local i out rc
  for i in $(seq 1 60); do
    out=$(DEBIAN_FRONTEND=noninteractive dpkg "$@" 2>&1); rc=$?
    if [ "$rc" -ne 0 ] && grep -q 'lock' <<<"$out"; then sleep 2; continue; fi
    printf '%s\n' "$out"
    return "$rc"
  done
  printf '%s\n' "$out"
  return 1
}
as_certmint() { runuser -u certmint -- "$@"; }
# tree_sum DIR: every entry of DIR with its type, owner, mode and (for files) checksum.
tree_sum() {
  (cd "$1" && find . -printf '%y %u:%g %m %p\n' | sort &&
   find . -type f -print0 | sort -z | xargs -0 sha256sum)
}

# --- 1. build and lint --------------------------------------------------------------------
t0=$(date +%s)
"$src/tools/package.sh" "$build" >"$work/package.log" 2>&1 ||
  { tail -30 "$work/package.log"; die "tools/package.sh"; }
deb=$(tail -1 "$work/package.log")
[ -f "$deb" ] || die "no .deb ($deb)"
ok "built $(basename "$deb") in $(( $(date +%s) - t0 )) s"
lintian --pedantic --display-info "$deb" >"$work/lintian.log" 2>&1
grep -v '^running with root privileges' "$work/lintian.log" >"$work/lintian.tags"
if grep -q '^[EW]: ' "$work/lintian.tags"; then
  cat "$work/lintian.tags"; fail "lintian reports errors or warnings"
else
  ok "lintian: no error, no warning ($(grep -c . "$work/lintian.tags") info/pedantic tags)"
  cat "$work/lintian.tags"
fi

# --- 2. install ---------------------------------------------------------------------------
dpkg_run -i "$deb" >"$work/install.log" || { cat "$work/install.log"; die "dpkg -i"; }
ok "dpkg -i"
uid=$(getent passwd certmint | cut -d: -f3)
[ -n "$uid" ] && [ "$uid" -lt 1000 ] && ok "system user certmint (uid $uid)" ||
  fail "no system user certmint"
getent group certmint >/dev/null && ok "group certmint" || fail "no group certmint"
[ "$(stat -c '%U:%G %a' "$state" 2>/dev/null)" = "certmint:certmint 750" ] &&
  ok "$state is certmint:certmint 0750" || fail "$state: $(stat -c '%U:%G %a' "$state" 2>&1)"
conffiles=$(dpkg-query -W -f='${Conffiles}\n' certmint | awk 'NF {print $1}' | sort | tr '\n' ' ')
[ "$conffiles" = "$conf/certmint.cnf $conf/env " ] && ok "conffiles: $conffiles" ||
  fail "conffiles: '$conffiles'"
unit=/lib/systemd/system/certmintd.service
out=$(systemd-analyze verify "$unit" 2>&1)
[ $? -eq 0 ] && [ -z "$out" ] && ok "systemd-analyze verify on the installed unit: no complaint" ||
  { echo "$out"; fail "systemd-analyze verify $unit"; }
out=$(systemd-analyze security --offline=true --threshold=20 "$unit" 2>&1)
level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
[ -n "$level" ] && awk -v l="$level" 'BEGIN { exit !(l <= 2.0) }' &&
  ok "systemd-analyze security on the installed unit: exposure $level" ||
  fail "exposure of the installed unit: ${level:-?}"
pages=""
for m in "8 certmintd" "1 certmint" "1 certmint-bench" "5 certmint.cnf"; do
  man -w $m >/dev/null 2>&1 || pages+=" ${m#* }(${m%% *})"
done
[ -z "$pages" ] && ok "man finds certmintd(8), certmint(1), certmint-bench(1), certmint.cnf(5)" ||
  fail "man pages not found:$pages"

# --- 3. a CA in /var/lib/certmint, certmintd from the installed paths ----------------------
as_certmint /usr/bin/certmint init --dir "$state" >"$work/init.log" 2>&1 ||
  { cat "$work/init.log"; die "certmint init --dir $state as certmint"; }
ok "certmint init --dir $state as certmint"
grep -q '^certmint init: \[4/4\] store' "$work/init.log" && ok "init reported its steps" ||
  fail "init did not report its steps"
env=$(grep -v '^#' "$conf/env")
as_certmint env $env /usr/sbin/certmintd -c "$conf/certmint.cnf" --check >"$work/check.log" 2>&1 &&
  ok "the shipped $conf/certmint.cnf passes certmintd --check" ||
  { cat "$work/check.log"; fail "certmintd --check on the shipped configuration"; }
. "$(dirname "$0")/../support/free_port.sh"
port=$(free_port)
setpriv --reuid=certmint --regid=certmint --init-groups -- env $env /usr/sbin/certmintd \
  -c "$conf/certmint.cnf" --listen "127.0.0.1:$port" >"$work/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && ok "/usr/sbin/certmintd answers" ||
  { tail -5 "$work/daemon.log"; fail "/usr/sbin/certmintd does not answer"; }
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$work/dev.key" 2>/dev/null
if openssl cmp -cmd ir -server "127.0.0.1:$port" -path /.well-known/cmp -ref demo-device -mac hmacWithSHA256 \
     -secret "file:$state/secrets/demo-device" -newkey "$work/dev.key" -subject /CN=pkg-device \
     -trusted "$state/ca.pem" -certout "$work/dev.pem" >"$work/cmp.log" 2>&1 &&
   openssl verify -CAfile "$state/ca.pem" "$work/dev.pem" >/dev/null 2>&1; then
  ok "openssl cmp ir enrolled a device with the installed certmintd"
else cat "$work/cmp.log"; fail "openssl cmp ir against the installed certmintd"; fi
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"; wait "$pid"; rc=$?
  [ "$rc" -eq 0 ] && ok "SIGTERM: exit 0" || fail "certmintd exit $rc after SIGTERM"
fi
pid=""
as_certmint /usr/bin/certmint list -c "$conf/certmint.cnf" >"$work/list.log" 2>&1 &&
  grep -q 'CN=pkg-device' "$work/list.log" && ok "certmint list shows the device" ||
  { cat "$work/list.log"; fail "certmint list"; }

# --- 4. an upgrade keeps the CA -------------------------------------------------------------
tree_sum "$state" >"$work/state.before"
sha256sum "$conf/certmint.cnf" "$conf/env" >"$work/conf.before"
dpkg_run -i "$deb" >"$work/upgrade.log" || { cat "$work/upgrade.log"; fail "dpkg -i (upgrade)"; }
tree_sum "$state" | cmp -s - "$work/state.before" && ok "upgrade: $state untouched" ||
  fail "upgrade changed $state"
sha256sum -c --quiet "$work/conf.before" && ok "upgrade: configuration untouched" ||
  fail "upgrade changed the configuration"

# --- 5. remove, purge, and what remains -----------------------------------------------------
dpkg-query -L certmint >"$work/files"
dpkg_run --remove certmint >"$work/remove.log" || { cat "$work/remove.log"; fail "dpkg --remove"; }
[ ! -e /usr/sbin/certmintd ] && [ -f "$conf/certmint.cnf" ] &&
  tree_sum "$state" | cmp -s - "$work/state.before" &&
  ok "remove: programs gone, configuration and $state kept" || fail "dpkg --remove left the wrong things"
dpkg_run --purge certmint >"$work/purge.log" || { cat "$work/purge.log"; fail "dpkg --purge"; }
# The documentation: the README's list between <!-- after-purge: begin --> and ... end -->.
block=$(sed -n '/<!-- after-purge: begin -->/,/<!-- after-purge: end -->/p' "$src/README.md")
[ -n "$block" ] || fail "README.md has no after-purge block"
doc_paths=$(grep -o '`/[^`]*`' <<<"$block" | tr -d '`' | sed 's#/$##' | sort -u)
doc_users=$(grep -o 'the `[a-z]*` user' <<<"$block" | cut -d'`' -f2 | sort -u)
[ -n "$doc_paths" ] && [ -n "$doc_users" ] || fail "the after-purge block lists no path or user"
for p in $doc_paths; do
  [ -e "$p" ] && ok "after purge $p remains, as documented" || fail "documented $p is gone"
done
tree_sum "$state" | cmp -s - "$work/state.before" && ok "after purge $state is unchanged" ||
  fail "purge changed $state"
for u in $doc_users; do
  getent passwd "$u" >/dev/null && getent group "$u" >/dev/null &&
    ok "after purge the $u user and group remain, as documented" || fail "user/group $u gone"
done
left=""
while read -r f; do
  [ -d "$f" ] && continue # shared folders (/usr/bin, /lib, ...)
  [ -e "$f" ] || [ -L "$f" ] && left+=" $f"
done <"$work/files"
[ -e "$conf" ] && left+=" $conf"
# Anything named certmint elsewhere that the documentation does not list.
prune=()
for p in $doc_paths; do prune+=(-path "$p" -prune -o); done
stray=$(find /etc /usr /var/lib /opt /srv -xdev "${prune[@]}" -name '*certmint*' -print 2>/dev/null)
[ -z "$left$stray" ] && ok "purge left nothing else (package files, $conf, *certmint*)" ||
  fail "purge left undocumented files:$left $stray"

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "package: all checks passed"

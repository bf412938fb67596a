#!/usr/bin/env bash
# tests/docs/test_settings.sh SOURCE_DIR: the configuration settings the loader accepts are
# exactly those certmint.cnf(5) and the README document (tests/docs/check_settings.py), and
# the check fails as it should on copies of the tree with a setting added to the loader only
# and with a documented setting the loader lost.
set -uo pipefail
src=$(realpath "$1")
here=$(dirname "$(realpath "$0")")
work=$(mktemp -d /tmp/certmint-settings-XXXXXX)
trap 'rm -rf "$work"' EXIT
fails=0
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

if python3 "$here/check_settings.py" "$src"; then ok "settings documented"; else
  fail "settings and documentation disagree (see above)"; fi

# copy_tree DIR: the files the check reads.
copy_tree() {
  mkdir -p "$1/engine/config" "$1/docs/man" "$1/packaging"
  cp "$src"/engine/config/*.c "$1/engine/config/"
  cp "$src/docs/man/certmint.cnf.5.scd" "$1/docs/man/"
  cp "$src/README.md" "$1/"
  cp "$src/packaging/certmint.cnf.in" "$1/packaging/"
}
copy_tree "$work/added"
sed -i 's/if (strcmp(k, "io_threads") == 0) {/if (strcmp(k, "brand_new_limit") == 0) {\n        } else if (strcmp(k, "io_threads") == 0) {/' \
  "$work/added/engine/config/cfg_daemon.c"
out=$(python3 "$here/check_settings.py" "$work/added")
if [ $? -ne 0 ] && grep -q 'undocumented: \[certmintd\] brand_new_limit' <<<"$out"; then
  ok "a setting only the loader knows fails the check"
else echo "$out"; fail "an undocumented setting was not caught"; fi

copy_tree "$work/lost"
sed -i 's/strcmp(k, "crl_min_interval")/strcmp(k, "crl_minimum_interval")/' \
  "$work/lost/engine/config/cfg_ca.c"
out=$(python3 "$here/check_settings.py" "$work/lost")
if [ $? -ne 0 ] && grep -q 'stale: \[ca\] crl_min_interval' <<<"$out" &&
   grep -q 'undocumented: \[ca\] crl_minimum_interval' <<<"$out"; then
  ok "a renamed setting fails the check (stale and undocumented)"
else echo "$out"; fail "a stale setting was not caught"; fi

[ "$fails" -eq 0 ] || exit 1
echo "docs settings: all checks passed"

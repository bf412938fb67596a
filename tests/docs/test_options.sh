#!/usr/bin/env bash
# tests/docs/test_options.sh SOURCE_DIR MAN_DIR CERTMINTD CERTMINT [CERTMINT_BENCH]
# The man pages against the programs: every subcommand `certmint --help` lists has its section
# in certmint(1); every option a program's --help (or a subcommand's) prints is documented in
# its page; every option a page documents is one the program's source parses (none stale); and
# each built page renders with `man --warnings` without a warning.
set -uo pipefail
src=$(realpath "$1")
mandir=$2
certmintd=$3
certmint=$4
bench=${5:-}
fails=0
ok()   { echo "ok   $*"; }
fail() { fails=$((fails + 1)); echo "FAIL $*"; }

options_of() { grep -o -- '--[a-z][a-z0-9-]*' | grep -vx -- '--help' | sort -u; }
# documented PAGE OPTIONS...: each option appears as *--opt* in the page.
documented() {
  local page=$1 o missing=""
  shift
  for o in "$@"; do grep -qF -- "*$o*" "$page" || missing+=" $o"; done
  [ -z "$missing" ] || { echo "  not in $(basename "$page"):$missing"; return 1; }
}
# not_stale PAGE SOURCES...: each *--opt* of the page is spelt in the program's sources.
not_stale() {
  local page=$1 o stale=""
  shift
  for o in $(grep -o -- '\*--[a-z][a-z0-9-]*\*' "$page" | tr -d '*' | sort -u); do
    [ "$o" = --help ] && continue
    grep -qE -- "\"(${o}|${o#--})\"" "$@" || stale+=" $o"
  done
  [ -z "$stale" ] || { echo "  documented in $(basename "$page") but not parsed:$stale"; return 1; }
}

# certmint(1): the commands and their options.
page="$src/docs/man/certmint.1.scd"
cmds=$("$certmint" --help | sed -n 's/^  certmint \([a-z-]*\).*/\1/p' | sort -u)
[ -n "$cmds" ] || fail "certmint --help lists no command"
for c in $cmds; do
  if grep -qx "## certmint $c" "$page"; then ok "certmint(1) has a section for '$c'"; else
    fail "certmint(1) has no '## certmint $c' section"; fi
  if documented "$page" $("$certmint" "$c" --help | options_of); then
    ok "certmint(1) documents every option of 'certmint $c --help'"
  else fail "certmint(1) misses options of 'certmint $c'"; fi
done
for h in $(grep -o '^## certmint [a-z-]*' "$page" | cut -d' ' -f3); do
  grep -qx "$h" <<<"$cmds" || fail "certmint(1) documents '$h', which certmint --help does not list"
done
not_stale "$page" "$src"/tools/certmint/*.c && ok "certmint(1) documents no stale option" ||
  fail "certmint(1) has stale options"

# certmintd(8) and certmint-bench(1).
page="$src/docs/man/certmintd.8.scd"
documented "$page" $("$certmintd" --help | options_of) &&
  ok "certmintd(8) documents every option of certmintd --help" || fail "certmintd(8) misses options"
not_stale "$page" "$src/engine/main.c" && ok "certmintd(8) documents no stale option" ||
  fail "certmintd(8) has stale options"
if [ -n "$bench" ]; then
  page="$src/docs/man/certmint-bench.1.scd"
  documented "$page" $("$bench" --help | options_of) &&
    ok "certmint-bench(1) documents every option of certmint-bench --help" ||
    fail "certmint-bench(1) misses options"
  not_stale "$page" "$src/bench/certmint_bench.c" && ok "certmint-bench(1) documents no stale option" ||
    fail "certmint-bench(1) has stale options"
else
  echo "skip certmint-bench(1): certmint-bench is not built"
fi

# The pages render without warnings.
if [ -d "$mandir" ] && command -v man >/dev/null; then
  for p in "$mandir"/*.[0-9]; do
    w=$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -E UTF-8 -l "$p" 2>&1 >/dev/null)
    [ -z "$w" ] && ok "$(basename "$p") renders without warnings" ||
      { echo "$w"; fail "$(basename "$p") renders with warnings"; }
  done
else
  echo "skip rendering: no built man pages (scdoc) or no man"
fi

[ "$fails" -eq 0 ] || { echo "$fails check(s) failed"; exit 1; }
echo "docs options: all checks passed"

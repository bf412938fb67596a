#!/usr/bin/env bash
# tests/tools/test_check_includes.sh CHECK_INCLUDES SOURCE_DIR: the include checker's own test.
# Runs tools/check-includes.sh --root on throwaway trees: layered includes pass; an upward,
# sideways or cross-module internal include, a non-root-relative include, a .c include and an
# unknown module each fail with FILE:LINE; and a copy of a real source file fails once a
# forbidden include is added to it.
set -euo pipefail

check="$1"
src="$2"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
failures=0
n=0

# tree NAME: a fresh empty tree under $tmp; prints its path.
tree() {
  local d="$tmp/$1"
  rm -rf "$d"
  mkdir -p "$d"
  echo "$d"
}

# put TREE PATH LINES...: writes the lines as the file PATH of TREE.
put() {
  local d="$1" p="$2"
  shift 2
  mkdir -p "$d/$(dirname "$p")"
  printf '%s\n' "$@" >"$d/$p"
}

# expect_pass NAME TREE
expect_pass() {
  n=$((n + 1))
  local out rc=0
  out="$("$check" --root "$2" 2>&1)" || rc=$?
  if [ "$rc" != 0 ]; then
    echo "FAIL $1: expected no violation, got rc=$rc:" >&2
    echo "$out" >&2
    failures=$((failures + 1))
  fi
}

# expect_fail NAME TREE WHERE: the checker must exit 1 and name WHERE (FILE:LINE).
expect_fail() {
  n=$((n + 1))
  local out rc=0
  out="$("$check" --root "$2" 2>&1)" || rc=$?
  if [ "$rc" != 1 ] || ! grep -q -F "$3: " <<<"$out"; then
    echo "FAIL $1: expected rc=1 naming $3, got rc=$rc:" >&2
    echo "$out" >&2
    failures=$((failures + 1))
  fi
}

# Layered includes, own internal headers, tests of a module with its internal header,
# programs with public headers and generated headers, main.c with anything public.
d="$(tree good)"
put "$d" engine/ca/ca_x.c '#include <openssl/x509.h>' '#include "engine/ca/ca_internal.h"' \
  '#include "engine/der/der.h"' '#include "engine/base/base.h"'
put "$d" engine/server/srv_x.c '#include "engine/cmp/cmp.h"' '#include "hsm/hsm.h"' \
  '#include "engine/store/store.h"' '#include "engine/crmf/crmf.h"'
put "$d" engine/front/front_x.c '#include "engine/config/cfg.h"' '#include "engine/net/net.h"'
put "$d" engine/main.c '#include "engine/front/front.h"' '#include "engine/server/srv.h"'
put "$d" tests/engine/store/test_x.c '#include "engine/store/store_internal.h"'
put "$d" tests/hsm/test_x.c '#include "hsm/hsm_internal.h"' '#include "engine/der/der.h"'
put "$d" tests/runner.c '#include "cm_suites.h"' '#include "tests/support/test_support.h"'
put "$d" tools/certmint/tool.c '#include "tools/certmint/tool.h"' '#include "engine/ca/ca.h"'
put "$d" bench/b.c '#include "bench/b.h"' '#include "tests/support/p11shim.h"'
expect_pass "layered includes" "$d"

d="$(tree upward)"
put "$d" engine/der/der_x.c '#include "engine/der/der.h"' '#include "engine/cmp/cmp.h"'
expect_fail "der includes cmp" "$d" engine/der/der_x.c:2

d="$(tree cmp_ca)"
put "$d" engine/cmp/cmp_x.c '// a comment' '' '#include "engine/ca/ca.h"'
expect_fail "cmp includes ca" "$d" engine/cmp/cmp_x.c:3

d="$(tree sideways)"
put "$d" engine/net/net_x.c '#include "engine/http/http.h"'
expect_fail "net includes http" "$d" engine/net/net_x.c:1

d="$(tree hsm_cmp)"
put "$d" hsm/hsm_x.c '#include "hsm/hsm_internal.h"' '#include "engine/cmp/cmp.h"'
expect_fail "hsm includes cmp" "$d" hsm/hsm_x.c:2

d="$(tree config_front)"
put "$d" engine/config/cfg_x.c '#include "engine/front/front.h"'
expect_fail "config includes front" "$d" engine/config/cfg_x.c:1

d="$(tree cross_internal)"
put "$d" engine/server/srv_x.c '#include "engine/store/store_internal.h"'
expect_fail "server includes store_internal.h" "$d" engine/server/srv_x.c:1

d="$(tree main_internal)"
put "$d" engine/main.c '#include "engine/server/srv.h"' '#include "engine/server/srv_internal.h"'
expect_fail "main.c includes srv_internal.h" "$d" engine/main.c:2

d="$(tree test_other_internal)"
put "$d" tests/engine/ca/test_x.c '#include "engine/ca/ca_internal.h"' \
  '#include "engine/store/store_internal.h"'
expect_fail "ca tests include store_internal.h" "$d" tests/engine/ca/test_x.c:2

d="$(tree tool_internal)"
put "$d" tools/x.c '#include "hsm/hsm_internal.h"'
expect_fail "a tool includes hsm_internal.h" "$d" tools/x.c:1

d="$(tree relative)"
put "$d" engine/ca/ca_x.c '#include "der.h"'
expect_fail "a relative include" "$d" engine/ca/ca_x.c:1

d="$(tree engine_tests)"
put "$d" engine/base/x.c '#include "tests/support/test_support.h"'
expect_fail "engine code includes tests/" "$d" engine/base/x.c:1

d="$(tree dot_c)"
put "$d" tests/engine/der/test_x.c '#include "engine/der/der_reader.c"'
expect_fail "a .c include" "$d" tests/engine/der/test_x.c:1

d="$(tree unknown_module)"
put "$d" engine/newmod/new_x.c '#include "engine/base/base.h"'
expect_fail "a module missing from the table" "$d" engine/newmod/new_x.c:1

d="$(tree spellings)"
put "$d" engine/der/der_x.c '#  include "engine/crmf/crmf.h"'
put "$d" engine/der/der_y.c '#include <engine/cmp/cmp.h>'
expect_fail "'#  include'" "$d" engine/der/der_x.c:1
expect_fail "'#include <engine/...>'" "$d" engine/der/der_y.c:1

# A real file: passes as it is, fails with a forbidden include added at the end.
d="$(tree real)"
mkdir -p "$d/engine/der"
cp "$src/engine/der/der_reader.c" "$d/engine/der/der_reader.c"
expect_pass "engine/der/der_reader.c as it is" "$d"
echo '#include "engine/cmp/cmp.h"' >>"$d/engine/der/der_reader.c"
expect_fail "engine/der/der_reader.c including cmp.h" "$d" \
  "engine/der/der_reader.c:$(wc -l <"$d/engine/der/der_reader.c")"

if [ "$failures" -gt 0 ]; then
  echo "test_check_includes.sh: $failures of $n checks failed" >&2
  exit 1
fi
echo "test_check_includes.sh: $n checks passed"

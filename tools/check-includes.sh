#!/usr/bin/env bash
# tools/check-includes.sh [--root DIR] [--table]: the include layering check (STYLE.md §2.9).
#   Reads every #include of the .c and .h files under engine/, hsm/, tests/, tools/ and bench/
#   of DIR (default: this repository) and fails on any include that breaks the layering:
#   - a module (engine/<m>/, hsm/) includes only its own headers and the public headers of
#     the modules the table below allows it, root-relative ("engine/der/der.h");
#   - nothing includes another module's *_internal.h; only tests/engine/<m>/ (tests/hsm/ for
#     hsm) may include the internal headers of the module it tests;
#   - engine/main.c, tests/, tools/ and bench/ may include any public header, and tests/,
#     tools/ and bench/ each other's headers (and generated ones, e.g. cm_suites.h);
#   - no file includes a .c file.
#   Prints each violation as FILE:LINE: what is wrong, and exits 1 if there is any, else 0.
#   --table prints the dependency table and exits.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
table_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --root) root="$(cd "$2" && pwd)"; shift 2 ;;
    --table) table_only=1; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "check-includes.sh: unknown option $1" >&2; exit 2 ;;
  esac
done

# The modules each module may include, as the code has them (DESIGN.md "Layout":
# main -> front -> {net, http, server, config}, server -> {cmp, crmf, ca, hsm, store},
# {cmp, crmf, ca, hsm} -> der -> base). Each row lists everything below the module, so it is
# closed under "depends on": config -> ca brings der and base with it. hsm and config also
# read crmf's algorithm table (the CA's signature AlgorithmIdentifier; the names in
# protection_algs, pop_algs and sig_alg).
declare -A allowed=(
  [base]=""
  [der]="base"
  [crmf]="der base"
  [cmp]="crmf der base"
  [ca]="der base"
  [store]="base"
  [config]="ca crmf der base"
  [http]="base"
  [net]="base"
  [hsm]="crmf der base"
  [server]="cmp crmf ca hsm store der base"
  [front]="net http server config cmp crmf ca hsm store der base"
)
order="base der crmf cmp ca store config http net hsm server front"

if [ "$table_only" = 1 ]; then
  for m in $order; do
    printf '%-7s -> %s\n' "$m" "${allowed[$m]:-(nothing)}"
  done
  echo "main.c  -> any public header"
  exit 0
fi

# module_of PATH prints the module a repository path belongs to: a module name, "main" for
# files directly in engine/, "test:<m>" for tests/engine/<m>/ and tests/hsm/, "program" for
# the rest of tests/, tools/ and bench/, or "" for a path outside the checked tree.
module_of() {
  case "$1" in
    engine/*/*) local rest="${1#engine/}"; echo "${rest%%/*}" ;;
    engine/*) echo main ;;
    hsm/*) echo hsm ;;
    tests/engine/*/*) local rest="${1#tests/engine/}"; echo "test:${rest%%/*}" ;;
    tests/hsm/*) echo test:hsm ;;
    tests/*|tools/*|bench/*) echo program ;;
    *) echo "" ;;
  esac
}

violations=0
report() {
  echo "$1:$2: $3" >&2
  violations=$((violations + 1))
}

cd "$root"
while IFS= read -r file; do
  from="$(module_of "$file")"
  if [[ "$from" != main && "$from" != program && "$from" != test:* &&
        -z "${allowed[$from]+set}" ]]; then
    report "$file" 1 "module '$from' is not in the dependency table of tools/check-includes.sh"
    continue
  fi
  # "LINE:TARGET" for every #include "..." and every #include <...> of a project path.
  while IFS=: read -r line target; do
    [ -n "$target" ] || continue
    if [[ "$target" == *.c ]]; then
      report "$file" "$line" "includes a .c file ($target)"
      continue
    fi
    to="$(module_of "$target")"
    internal=0
    [[ "$(basename "$target")" == *_internal.h ]] && internal=1
    if [ -z "$to" ]; then
      # Not root-relative (or not a project path): only the programs may (generated headers).
      if [[ "$from" != program && "$from" != test:* ]]; then
        report "$file" "$line" "include \"$target\" is not root-relative (engine/..., hsm/...)"
      fi
      continue
    fi
    if [[ "$to" == program || "$to" == test:* ]]; then
      if [[ "$from" != program && "$from" != test:* ]]; then
        report "$file" "$line" "$from includes $target from tests/, tools/ or bench/"
      fi
      continue
    fi
    if [[ "$to" == main ]]; then
      report "$file" "$line" "includes $target, which is not a module header"
      continue
    fi
    if [ "$internal" = 1 ]; then
      if [[ "$from" != "$to" && "$from" != "test:$to" ]]; then
        report "$file" "$line" "includes $target, the internal header of module $to"
      fi
      continue
    fi
    case "$from" in
      main|program|test:*) ;;
      "$to") ;;
      *)
        if [[ " ${allowed[$from]} " != *" $to "* ]]; then
          report "$file" "$line" \
            "module $from may not include $target (module $to; $from may include: ${allowed[$from]:-nothing})"
        fi
        ;;
    esac
  done < <(grep -n -E '^[[:space:]]*#[[:space:]]*include[[:space:]]*("[^"]+"|<(engine|hsm|tests|tools|bench)/[^>]+>)' "$file" |
           sed -E 's/^([0-9]+):[[:space:]]*#[[:space:]]*include[[:space:]]*["<]([^">]+)[">].*/\1:\2/')
done < <(find engine hsm tests tools bench -type f \( -name '*.c' -o -name '*.h' \) 2>/dev/null | sort)

if [ "$violations" -gt 0 ]; then
  echo "check-includes.sh: $violations include(s) break the layering" >&2
  exit 1
fi
echo "check-includes.sh: includes follow the layering"

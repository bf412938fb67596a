#!/usr/bin/env bash
# tools/format.sh --check|--fix [clang-format]: check or apply .clang-format to every C file
# of the project (engine, hsm, tests, bench, tools).
set -euo pipefail
mode=${1:---check}
cf=${2:-clang-format}
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files -co --exclude-standard -- 'engine/*.[ch]' 'hsm/*.[ch]' \
  'tests/*.[ch]' 'bench/*.[ch]' 'tools/*.[ch]' | sort -u | while read -r f; do [ -f "$f" ] && echo "$f"; done)
if [ ${#files[@]} -eq 0 ]; then
  echo "format: no files"; exit 0
fi
if [ "$mode" = "--fix" ]; then
  "$cf" -i "${files[@]}"
  echo "format: formatted ${#files[@]} files"
else
  "$cf" --dry-run --Werror "${files[@]}"
  echo "format-check: ${#files[@]} files clean"
fi

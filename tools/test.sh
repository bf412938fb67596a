#!/usr/bin/env bash
# tools/test.sh [--release] [--no-deps]: the whole test suite.
#   1. installs missing Debian packages (tools/install-deps.sh) unless --no-deps;
#   2. configures and builds the asan preset (ASan + UBSan), or release with --release;
#   3. runs every ctest test: the CUnit suites (one per module), fuzz corpus replays and
#      integration tests;
#   4. checks formatting (format-check target).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

preset=asan
deps=1
for arg in "$@"; do
  case "$arg" in
    --release) preset=release ;;
    --no-deps) deps=0 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "test.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done

if [ "$deps" = 1 ]; then
  tools/install-deps.sh
fi

jobs=$(nproc 2>/dev/null || echo 2)
cmake --preset "$preset"
cmake --build --preset "$preset" -j "$jobs"
ctest --preset "$preset" -j "$jobs"
cmake --build --preset "$preset" --target format-check
echo "test.sh: all tests passed ($preset)"

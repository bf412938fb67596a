#!/usr/bin/env bash
# tools/test.sh [--release] [--no-deps] [--no-abuse]: the whole test suite.
#   1. installs missing Debian packages (tools/install-deps.sh) unless --no-deps;
#   2. configures and builds the asan preset (ASan + UBSan), or release with --release;
#   3. runs every ctest test: the CUnit suites (one per module), fuzz corpus replays and
#      integration tests;
#   4. runs the abuse script's short mode (tests/abuse/run.sh --short, ~2 minutes: a throwaway
#      certmintd under each attack of issue 23 beside a legit load; it decides on lost
#      requests and undelivered certificates, not on throughput) on its own, after ctest,
#      so that its 5,000 connections do not share the machine with the timing-sensitive tests;
#      --no-abuse skips it;
#   5. checks formatting (format-check target).
# Exits non-zero if anything fails.
set -euo pipefail
cd "$(dirname "$0")/.."

preset=asan
deps=1
abuse=1
for arg in "$@"; do
  case "$arg" in
    --release) preset=release ;;
    --no-deps) deps=0 ;;
    --no-abuse) abuse=0 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
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
if [ "$abuse" = 1 ]; then
  tests/abuse/run.sh --short --build "build/$preset"
fi
cmake --build --preset "$preset" --target format-check
echo "test.sh: all tests passed ($preset)"

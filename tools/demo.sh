#!/usr/bin/env bash
# tools/demo.sh: the quick start. Installs what is missing, builds the release preset and
# (once certmintd exists) sets up a CA on a SoftHSM token in $CERTMINT_DIR (default
# ./var/demo) and serves CMP on 127.0.0.1:$CERTMINT_PORT (default 8080).
set -euo pipefail
cd "$(dirname "$0")/.."
tools/install-deps.sh
cmake --preset release
cmake --build --preset release -j "$(nproc 2>/dev/null || echo 2)"

if [ ! -x build/release/engine/certmintd ]; then
  cat <<MSG

certmint is built (build/release). Not there yet:
  - certmintd, the CMP server, and 'certmint init' (the admin tool) are still being written,
    so this script cannot yet set up a CA or serve CMP.
What works today: the DER codec and its tests (tools/test.sh) and
  build/release/bench/der_bench   (DER decode+encode against OpenSSL d2i_X509/i2d_X509)
MSG
  exit 0
fi

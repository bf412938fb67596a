#!/usr/bin/env bash
# tools/demo.sh: the quick start. On a fresh Debian 12 machine (as root, or with sudo):
# installs what is missing, builds the release preset, creates a CA instance in
# $CERTMINT_DIR (default ./var/demo: a SoftHSM2 token holding the CA key, a self-signed root,
# a demo MAC secret, certmint.cnf, the SQLite store) unless it exists, prints the openssl cmp
# command that enrols a device, and runs certmintd in the foreground on
# 127.0.0.1:$CERTMINT_PORT (default 8080). Ctrl-C stops it. Running it again reuses the
# instance.
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${CERTMINT_DIR:-./var/demo}
port=${CERTMINT_PORT:-8080}

tools/install-deps.sh
cmake --preset release >/dev/null
cmake --build --preset release -j "$(nproc 2>/dev/null || echo 2)" --target certmintd certmint

if [ ! -f "$dir/certmint.cnf" ]; then
  build/release/tools/certmint init --dir "$dir" --port "$port"
else
  echo "demo.sh: reusing the instance in $dir"
fi
export $(cat "$dir/env")
build/release/engine/certmintd -c "$dir/certmint.cnf" --check

cat <<MSG

== certmint is starting on http://127.0.0.1:$port/.well-known/cmp  (Ctrl-C stops it)
Enrol a device from another terminal, in this directory ($(pwd)):

  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $dir/device.key
  openssl cmp -cmd ir -server 127.0.0.1:$port -path /.well-known/cmp \\
      -ref demo-device -secret file:$dir/secrets/demo-device -mac hmacWithSHA256 \\
      -newkey $dir/device.key -subject /CN=device-0001 \\
      -trusted $dir/ca.pem -certout $dir/device.pem
  openssl verify -CAfile $dir/ca.pem $dir/device.pem

Renew it, signed with its own certificate (kur):

  openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out $dir/device2.key
  openssl cmp -cmd kur -server 127.0.0.1:$port -path /.well-known/cmp \\
      -cert $dir/device.pem -key $dir/device.key -newkey $dir/device2.key \\
      -trusted $dir/ca.pem -certout $dir/device2.pem

Revoke it (signed with its own certificate), then fetch the CRL (re-issued within a minute):

  openssl cmp -cmd rr -server 127.0.0.1:$port -path /.well-known/cmp \\
      -cert $dir/device.pem -key $dir/device.key -oldcert $dir/device.pem -revreason 1 \\
      -trusted $dir/ca.pem
  curl -s -o $dir/devices.crl http://127.0.0.1:$port/crl/devices.crl

The admin tool: build/release/tools/certmint list|show|revoke|crl|secret|keys -c $dir/certmint.cnf
MSG
exec build/release/engine/certmintd -c "$dir/certmint.cnf" --listen "127.0.0.1:$port"

#!/usr/bin/env bash
# Install every Debian 12 package that certmint's build, tests and benchmarks need (the last
# three lines: sd_notify and the seccomp test wrapper; the .deb, lintian and the man pages;
# promtool for the monitoring rules).
# Non-interactive and idempotent: packages already present are not reinstalled, and
# apt-get update runs only when something is missing.
set -euo pipefail

PKGS=(
  build-essential cmake pkg-config git ca-certificates
  clang clang-format clang-tidy libclang-rt-14-dev llvm
  libssl-dev openssl
  libp11-kit-dev p11-kit
  liburing-dev
  libcunit1-dev
  libsqlite3-dev sqlite3
  libpq-dev postgresql-15 haproxy
  softhsm2 opensc gnutls-bin
  libcoap3-dev libcoap3-bin
  curl procps iproute2 linux-perf valgrind gnuplot-nox
  libsystemd-dev libseccomp-dev
  dpkg-dev lintian scdoc
  prometheus
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all ${#PKGS[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo"
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"

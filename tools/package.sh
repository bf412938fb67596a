#!/usr/bin/env bash
# tools/package.sh [BUILD_DIR]: the Debian package (certmint_VERSION-REVISION_ARCH.deb).
#   1. configures BUILD_DIR (default build/package) as a release build for the /usr prefix,
#      without tests, with the man pages (scdoc required);
#   2. builds what the package ships (certmintd, certmint, certmint-bench, the man pages);
#   3. runs CPack's DEB generator (cmake/certmint_package.cmake): the tree of
#      `cmake --install --prefix /usr`, dependencies from dpkg-shlibdeps, the maintainer
#      scripts of packaging/debian/;
#   4. prints the path of the .deb (the last line of its output).
# Check it with `lintian PATH` and install it with `apt install ./PATH` (see README: Install).
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build/package}
case "$build" in /*) ;; *) build="$PWD/$build" ;; esac
jobs=$(nproc 2>/dev/null || echo 2)
for tool in dpkg-shlibdeps scdoc; do
  command -v "$tool" >/dev/null ||
    { echo "package.sh: $tool not found: apt-get install dpkg-dev scdoc (or tools/install-deps.sh)" >&2; exit 1; }
done
# CMAKE_SKIP_INSTALL_ALL_DEPENDENCY: CPack installs what is built below, not every bench.
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
  -DCM_BUILD_TESTS=OFF -DCM_BUILD_BENCH=ON -DCM_MAN_PAGES=ON -DCM_WERROR=ON \
  -DCMAKE_SKIP_INSTALL_ALL_DEPENDENCY=ON -DCMAKE_STRIP="$PWD/cmake/deb-strip.sh" \
  >"$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; exit 1; }
cmake --build "$build" -j "$jobs" --target certmintd certmint certmint-bench man cm_changelog
rm -f "$build"/packages/certmint_*.deb
(cd "$build" && cpack -G DEB >"$build/cpack.log" 2>&1) || { cat "$build/cpack.log" >&2; exit 1; }
deb=$(ls "$build"/packages/certmint_*.deb)
echo "package.sh: built $deb"
echo "$deb"

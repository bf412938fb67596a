# The Debian package (CPack's DEB generator): `cpack -G DEB` in a release build, or
# tools/package.sh, which configures such a build and runs it. The package holds what
# `cmake --install --prefix /usr` lays out (cmake/certmint_install.cmake) plus the maintainer
# scripts of packaging/debian/ (the certmint user, the state folder, conffiles). Its
# dependencies come from dpkg-shlibdeps; softhsm2 and p11-kit are recommended (the default
# instance keeps its keys in a SoftHSM2 token, loaded through p11-kit).
# Maintainer scripts and conffiles, with the paths of the /usr prefix CPack installs to.
cm_install_paths("/usr")
foreach(f postinst prerm postrm conffiles)
  configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/${f}.in
                 ${PROJECT_BINARY_DIR}/packaging/debian/${f} @ONLY)
endforeach()
# Back to the configured prefix for anything after this file.
cm_install_paths("${CMAKE_INSTALL_PREFIX}")
install(FILES ${PROJECT_SOURCE_DIR}/packaging/debian/lintian-overrides
        DESTINATION ${CMAKE_INSTALL_DATADIR}/lintian/overrides RENAME certmint)

set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME certmint)
set(CPACK_PACKAGE_VENDOR "the certmint developers")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "CMP certificate authority with its keys in a PKCS#11 token")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES TRUE)
set(CPACK_DEBIAN_PACKAGE_NAME certmint)
set(CPACK_DEBIAN_PACKAGE_RELEASE ${CM_DEB_RELEASE})
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_MAINTAINER "${CM_DEB_MAINTAINER}")
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_DEPENDS "adduser")
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "softhsm2, p11-kit")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "openssl, prometheus")
# The extended description (CPack puts the summary above it and indents each line; an empty
# line becomes " .").
set(CPACK_DEBIAN_PACKAGE_DESCRIPTION
    "certmint is a certificate authority signing engine that speaks CMP (RFC 4210,
RFC 9810, the Lightweight CMP Profile RFC 9483) over HTTP. Devices, RAs and
front ends enrol with it; it checks the request's protection and proof of
possession, signs the certificate with a key that never leaves the PKCS#11
token, records it durably in SQLite before answering, and publishes CRLs.

This package ships the daemon certmintd with a hardened systemd unit, the
admin tool certmint, the load generator certmint-bench, man pages, an example
configuration, Prometheus alert rules and a Grafana dashboard.")
set(CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA
    ${PROJECT_BINARY_DIR}/packaging/debian/postinst ${PROJECT_BINARY_DIR}/packaging/debian/prerm
    ${PROJECT_BINARY_DIR}/packaging/debian/postrm
    ${PROJECT_BINARY_DIR}/packaging/debian/conffiles)
set(CPACK_DEBIAN_PACKAGE_CONTROL_STRICT_PERMISSION TRUE)
set(CPACK_DEBIAN_COMPRESSION_TYPE xz)
set(CPACK_OUTPUT_FILE_PREFIX ${PROJECT_BINARY_DIR}/packages)
include(CPack)

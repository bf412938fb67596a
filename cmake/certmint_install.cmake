# Install rules (GNUInstallDirs), included at the end of the top-level CMakeLists.txt.
#
#   cmake --install build/release --prefix /usr --destdir D
#
# lays out exactly the tree the Debian package ships (cmake/certmint_package.cmake):
#   sbin/certmintd, bin/certmint, bin/certmint-bench
#   the systemd unit (from tools/certmintd.service.in, with the configured paths)
#   SYSCONFDIR/certmint/certmint.cnf and env (annotated example, see packaging/certmint.cnf.in)
#   the man pages (docs/man/*.scd, cmake/certmint_man.cmake)
#   DATADIR/certmint/monitoring: Prometheus rules and the Grafana dashboard
#   DOCDIR: README.md, copyright, changelog.Debian.gz
include(GNUInstallDirs)

# Where the instance lives. The paths written into the unit, certmint.cnf and env follow the
# prefix actually installed to (cmake --install --prefix P, or CPack's /usr), so they are made
# at install time (cmake/certmint_install_files.cmake); the build tree gets a copy for the
# configured prefix (PROJECT_BINARY_DIR/certmintd.service and packaging/), which the tests read.
set(CM_REL_SBINDIR "${CMAKE_INSTALL_SBINDIR}")
set(CM_REL_SYSCONFDIR "${CMAKE_INSTALL_SYSCONFDIR}")
set(CM_REL_LOCALSTATEDIR "${CMAKE_INSTALL_LOCALSTATEDIR}")
# systemd's unit folder for the /usr prefix (/lib/systemd/system on Debian 12).
pkg_get_variable(CM_SYSTEMD_UNIT_DIR_USR systemd systemdsystemunitdir)
if(NOT CM_SYSTEMD_UNIT_DIR_USR)
  set(CM_SYSTEMD_UNIT_DIR_USR "/lib/systemd/system")
endif()
set(CM_SOFTHSM2_MODULE_PATH "${CM_SOFTHSM2_MODULE}")
if(NOT CM_SOFTHSM2_MODULE_PATH)
  set(CM_SOFTHSM2_MODULE_PATH "/usr/lib/softhsm/libsofthsm2.so")
endif()

set(CM_SOURCE_DIR "${PROJECT_SOURCE_DIR}")
include(${CMAKE_CURRENT_LIST_DIR}/certmint_install_paths.cmake)
cm_install_paths("${CMAKE_INSTALL_PREFIX}")
cm_install_configure(${PROJECT_BINARY_DIR}/packaging)
set(CM_UNIT_FILE "${PROJECT_BINARY_DIR}/packaging/certmintd.service")

# The programs (those this build has).
if(TARGET certmintd)
  install(TARGETS certmintd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
endif()
foreach(t certmint certmint-bench)
  if(TARGET ${t})
    install(TARGETS ${t} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endforeach()

# The unit, certmint.cnf and env, for the prefix installed to.
install(CODE "
  set(CM_SOURCE_DIR \"${PROJECT_SOURCE_DIR}\")
  set(CM_BINARY_DIR \"${PROJECT_BINARY_DIR}\")
  set(CM_REL_SBINDIR \"${CM_REL_SBINDIR}\")
  set(CM_REL_SYSCONFDIR \"${CM_REL_SYSCONFDIR}\")
  set(CM_REL_LOCALSTATEDIR \"${CM_REL_LOCALSTATEDIR}\")
  set(CM_SYSTEMD_UNIT_DIR_USR \"${CM_SYSTEMD_UNIT_DIR_USR}\")
  set(CM_SOFTHSM2_MODULE_PATH \"${CM_SOFTHSM2_MODULE_PATH}\")
  include(\"${PROJECT_SOURCE_DIR}/cmake/certmint_install_files.cmake\")")
install(FILES ${PROJECT_SOURCE_DIR}/tools/monitoring/certmint.rules.yml
              ${PROJECT_SOURCE_DIR}/tools/monitoring/certmint-dashboard.json
        DESTINATION ${CMAKE_INSTALL_DATADIR}/certmint/monitoring)

# Documentation: the README, the copyright notice and the Debian changelog (gzip -9n, as
# Debian wants it; the date is the release's, so the file is reproducible).
set(CM_DEB_MAINTAINER "certmint developers <dev@certmint.invalid>" CACHE STRING
    "The Maintainer of the Debian package (NAME <EMAIL>), also in the changelog")
set(CM_DEB_RELEASE 1 CACHE STRING "The Debian revision of the package")
set(CM_DEB_VERSION "${PROJECT_VERSION}-${CM_DEB_RELEASE}")
set(CM_CHANGELOG_GZ "${PROJECT_BINARY_DIR}/packaging/changelog.Debian.gz")
configure_file(${PROJECT_SOURCE_DIR}/packaging/debian/changelog.in
               ${PROJECT_BINARY_DIR}/packaging/changelog.Debian @ONLY)
add_custom_command(OUTPUT ${CM_CHANGELOG_GZ}
  COMMAND sh -c "gzip -9nc \"$0\" > \"$1\"" ${PROJECT_BINARY_DIR}/packaging/changelog.Debian
          ${CM_CHANGELOG_GZ}
  DEPENDS ${PROJECT_BINARY_DIR}/packaging/changelog.Debian VERBATIM)
add_custom_target(cm_changelog ALL DEPENDS ${CM_CHANGELOG_GZ})
install(FILES ${PROJECT_SOURCE_DIR}/README.md ${PROJECT_SOURCE_DIR}/packaging/debian/copyright
              ${CM_CHANGELOG_GZ}
        DESTINATION ${CMAKE_INSTALL_DOCDIR})

include(${CMAKE_CURRENT_LIST_DIR}/certmint_man.cmake)
include(${CMAKE_CURRENT_LIST_DIR}/certmint_package.cmake)

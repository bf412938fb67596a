# Install-time part of cmake/certmint_install.cmake (run by install(CODE)): generates the
# systemd unit, certmint.cnf and env for the prefix being installed to and installs them
# (DESTDIR applies as for every install rule).
include(${CM_SOURCE_DIR}/cmake/certmint_install_paths.cmake)
cm_install_paths("${CMAKE_INSTALL_PREFIX}")
set(cm_gen "${CM_BINARY_DIR}/install-gen")
cm_install_configure(${cm_gen})
file(INSTALL ${cm_gen}/certmintd.service DESTINATION ${CM_SYSTEMD_UNIT_DIR}
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)
file(INSTALL ${cm_gen}/certmint.cnf ${cm_gen}/env DESTINATION ${CM_CONF_DIR}
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE GROUP_READ WORLD_READ)

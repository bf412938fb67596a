# cm_install_paths(PREFIX): sets CM_SBIN_DIR, CM_CONF_DIR, CM_STATE_DIR and
# CM_SYSTEMD_UNIT_DIR for an installation under PREFIX, following GNUInstallDirs: the /usr
# prefix puts configuration in /etc and state in /var, /opt/NAME in /etc/opt/NAME and
# /var/opt/NAME, any other prefix in PREFIX/etc and PREFIX/var. Used at configure time (the
# files in the build tree) and by cmake/certmint_install_files.cmake at install time, where
# the prefix may differ (cmake --install --prefix P; CPack installs with /usr).
#
# Inputs besides PREFIX: CM_REL_SBINDIR, CM_REL_SYSCONFDIR, CM_REL_LOCALSTATEDIR (the
# GNUInstallDirs values, relative or absolute) and CM_SYSTEMD_UNIT_DIR_USR (systemd's unit
# folder for the /usr prefix, from its pkg-config file).
function(cm_install_paths prefix)
  string(REGEX REPLACE "/+$" "" p "${prefix}")
  if(CM_REL_SBINDIR MATCHES "^/")
    set(sbin "${CM_REL_SBINDIR}")
  else()
    set(sbin "${p}/${CM_REL_SBINDIR}")
  endif()
  foreach(kind SYSCONFDIR LOCALSTATEDIR)
    set(rel "${CM_REL_${kind}}")
    if(rel MATCHES "^/")
      set(full_${kind} "${rel}")
    elseif(p STREQUAL "/usr" OR p STREQUAL "")
      set(full_${kind} "/${rel}")
    elseif(p MATCHES "^/opt/")
      set(full_${kind} "/${rel}${p}")
    else()
      set(full_${kind} "${p}/${rel}")
    endif()
  endforeach()
  if(p STREQUAL "/usr" AND CM_SYSTEMD_UNIT_DIR_USR)
    set(unit "${CM_SYSTEMD_UNIT_DIR_USR}")
  else()
    set(unit "${p}/lib/systemd/system")
  endif()
  set(CM_SBIN_DIR "${sbin}" PARENT_SCOPE)
  set(CM_CONF_DIR "${full_SYSCONFDIR}/certmint" PARENT_SCOPE)
  set(CM_STATE_DIR "${full_LOCALSTATEDIR}/lib/certmint" PARENT_SCOPE)
  set(CM_SYSTEMD_UNIT_DIR "${unit}" PARENT_SCOPE)
endfunction()

# cm_install_configure(OUT_DIR): writes certmintd.service, certmint.cnf and env for the paths
# cm_install_paths set into OUT_DIR. Needs CM_SOURCE_DIR and CM_SOFTHSM2_MODULE_PATH.
function(cm_install_configure out_dir)
  set(CMAKE_INSTALL_FULL_SBINDIR "${CM_SBIN_DIR}")
  configure_file(${CM_SOURCE_DIR}/tools/certmintd.service.in ${out_dir}/certmintd.service @ONLY)
  configure_file(${CM_SOURCE_DIR}/packaging/certmint.cnf.in ${out_dir}/certmint.cnf @ONLY)
  configure_file(${CM_SOURCE_DIR}/packaging/env.in ${out_dir}/env @ONLY)
endfunction()

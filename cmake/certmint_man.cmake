# Man pages from docs/man/NAME.SECTION.scd, written in scdoc (Debian: scdoc). Built into
# <build>/man/NAME.SECTION (for `man -l`) and NAME.SECTION.gz (gzip -9n, installed into
# MANDIR/manSECTION). CM_MAN_PAGES: AUTO builds them when scdoc is there and says so when it
# is not; ON requires scdoc (tools/package.sh uses ON); OFF skips them.
set(CM_MAN_PAGES AUTO CACHE STRING "Build the man pages with scdoc: AUTO, ON or OFF")
set_property(CACHE CM_MAN_PAGES PROPERTY STRINGS AUTO ON OFF)
find_program(CM_SCDOC scdoc)
set(CM_MAN_BUILT OFF)
if(CM_MAN_PAGES STREQUAL "OFF")
  message(STATUS "man pages: off (CM_MAN_PAGES=OFF)")
elseif(NOT CM_SCDOC)
  if(CM_MAN_PAGES STREQUAL "ON")
    message(FATAL_ERROR "scdoc not found, and CM_MAN_PAGES=ON needs it for the man pages: "
                        "apt-get install scdoc (or run tools/install-deps.sh)")
  endif()
  message(STATUS "man pages: scdoc not found (apt-get install scdoc), so they are neither "
                 "built nor installed; the docs tests are skipped")
else()
  set(CM_MAN_BUILT ON)
  file(GLOB cm_man_sources ${PROJECT_SOURCE_DIR}/docs/man/*.scd)
  set(cm_man_outputs "")
  foreach(src ${cm_man_sources})
    get_filename_component(page ${src} NAME_WLE) # certmint.cnf.5
    string(REGEX MATCH "[0-9]$" section ${page})
    set(out ${PROJECT_BINARY_DIR}/man/${page})
    add_custom_command(OUTPUT ${out} ${out}.gz
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/man
      COMMAND sh -c "\"$0\" < \"$1\" > \"$2\" && gzip -9nc \"$2\" > \"$2.gz\""
              ${CM_SCDOC} ${src} ${out}
      DEPENDS ${src} VERBATIM
      COMMENT "scdoc ${page}")
    list(APPEND cm_man_outputs ${out} ${out}.gz)
    install(FILES ${out}.gz DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endforeach()
  add_custom_target(man ALL DEPENDS ${cm_man_outputs})
endif()

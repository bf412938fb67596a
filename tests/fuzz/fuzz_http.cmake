if(TARGET cm_http)
  certmint_fuzz_target(http http cm_http)
endif()

# PKIMessage parse + round trip (engine/cmp).
if(TARGET cm_cmp)
  certmint_fuzz_target(cmp_msg cmp cm_cmp)
endif()

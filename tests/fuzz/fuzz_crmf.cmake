# fuzz_crmf: CertReqMessages and PKCS#10 parse + byte-exact round trip (engine/crmf).
if(TARGET cm_crmf)
  certmint_fuzz_target(crmf crmf cm_crmf)
endif()

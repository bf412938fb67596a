# crmf_bench: CRMF parse/marshal, key construction (fromdata vs d2i_PUBKEY), POPO verify.
if(TARGET cm_crmf)
  certmint_bench(crmf_bench SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/crmf_bench.c
                 LIBS cm_crmf OpenSSL::Crypto)
endif()

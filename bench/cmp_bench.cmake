# cmp_bench: PBM-protected ir path (parse, protection, POPO, ip marshal) vs OpenSSL's CMP
# structures and the bare crypto, in one run (bench/cmp_bench.c).
if(TARGET cm_cmp)
  certmint_bench(cmp_bench SOURCES cmp_bench.c LIBS cm_cmp cm_crmf cm_der cm_base OpenSSL::Crypto)
endif()

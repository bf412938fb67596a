# pbm_cost_bench: the CPU a MAC-protected request costs before its MAC is known to be good
# (PBM and PBMAC1 at several iteration counts; issue 14's default bounds come from it).
if(TARGET cm_cmp)
  certmint_bench(pbm_cost_bench SOURCES pbm_cost_bench.c LIBS cm_cmp cm_der cm_base
                 OpenSSL::Crypto)
endif()

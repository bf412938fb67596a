# ca_bench: certificate building with engine/ca vs OpenSSL's X509_* API (see ca_bench.c).
if(TARGET cm_ca)
  certmint_bench(ca_bench SOURCES ca_bench.c LIBS cm_ca OpenSSL::Crypto)
endif()

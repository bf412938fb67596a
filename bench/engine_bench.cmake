# engine_bench: N PBM-protected ir requests through engine/server in process (front end
# bypassed), against a throwaway SoftHSM token and SQLite store.
if(TARGET cm_server AND TARGET cm_testlib)
  certmint_bench(engine_bench SOURCES engine_bench.c LIBS cm_server cm_testlib OpenSSL::Crypto)
endif()

# hsm_bench: the hsm pool against OpenSSL in-process and a plain C_Sign loop on a throwaway
# SoftHSM2 token, then through p11shim at 2 ms per signature. Needs the test helpers
# (cm_testlib) for the token.
if(TARGET cm_hsm AND TARGET cm_testlib)
  certmint_bench(hsm_bench SOURCES hsm_bench.c
                 LIBS cm_hsm cm_testlib OpenSSL::Crypto PkgConfig::P11KIT Threads::Threads)
  # tests/support/p11shim is added before these files (by tests/ or by bench/CMakeLists.txt).
  target_compile_definitions(hsm_bench PRIVATE CM_P11SHIM_PATH="$<TARGET_FILE:p11shim>")
  add_dependencies(hsm_bench p11shim)
endif()

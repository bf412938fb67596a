# certmint-bench: the CMP-over-HTTP load generator (bench/certmint_bench*.c, sharing
# bench/certmint_bench.h) and its response checker, a small library the tests link (tests/bench).
if(TARGET cm_cmp)
  add_library(bench_check STATIC certmint_bench_check.c)
  target_include_directories(bench_check PUBLIC ${PROJECT_SOURCE_DIR})
  target_compile_options(bench_check PRIVATE ${CM_WARNINGS})
  target_link_libraries(bench_check PUBLIC cm_cmp cm_crmf cm_der cm_base OpenSSL::Crypto)
  if(TARGET cm_hsm AND TARGET cm_ca)
    certmint_bench(certmint-bench
                   SOURCES certmint_bench.c certmint_bench_prepare.c certmint_bench_msg.c
                           certmint_bench_run.c certmint_bench_verify.c certmint_bench_report.c
                           certmint_bench_limit.c certmint_bench_coap.c
                           certmint_bench_tls.c certmint_bench_nested.c
                   LIBS bench_check cm_hsm cm_ca cm_cmp cm_crmf cm_der cm_base OpenSSL::Crypto
                        OpenSSL::SSL Threads::Threads)
    target_compile_definitions(certmint-bench PRIVATE _GNU_SOURCE)
  endif()
endif()

# A smoke run of certmint-bench against a real certmintd (tests/integration/test_bench_smoke.sh).
# Included from tests/integration/CMakeLists.txt. bench/ is configured after tests/, so the
# certmint-bench target is looked up by name at generate time.
if(TARGET certmintd AND TARGET certmint AND CM_BUILD_BENCH AND TARGET cm_hsm AND TARGET cm_cmp)
  add_test(NAME integration_bench_smoke
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_bench_smoke.sh $<TARGET_FILE:certmintd>
                   $<TARGET_FILE:certmint> $<TARGET_FILE:certmint-bench>)
  set_tests_properties(integration_bench_smoke PROPERTIES TIMEOUT 300)
endif()
# Nested messages from an RA, driven by certmint-bench --flow nested (test_nested.sh).
if(TARGET certmintd AND TARGET certmint AND CM_BUILD_BENCH AND TARGET cm_hsm AND TARGET cm_cmp)
  add_test(NAME integration_nested
           COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/test_nested.sh $<TARGET_FILE:certmintd>
                   $<TARGET_FILE:certmint> $<TARGET_FILE:certmint-bench>)
  set_tests_properties(integration_nested PROPERTIES TIMEOUT 300)
endif()

# libmalloc_count.so: an LD_PRELOAD heap-call counter (bench/malloc_count.c) for allocation
# counts per request in certmintd (bench/malloc_count.sh runs the measurement). Not built under
# sanitizers, which interpose malloc themselves.
if(NOT CMAKE_C_FLAGS MATCHES "sanitize")
  add_library(malloc_count SHARED malloc_count.c)
  target_compile_options(malloc_count PRIVATE ${CM_WARNINGS} -fvisibility=hidden)
  set_target_properties(malloc_count PROPERTIES POSITION_INDEPENDENT_CODE ON)
endif()

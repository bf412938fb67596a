# store_bench: group-commit insert throughput (synchronous FULL/NORMAL, 1/4/16 submitters).
if(TARGET cm_store)
  certmint_bench(store_bench SOURCES store_bench.c LIBS cm_store Threads::Threads)
endif()

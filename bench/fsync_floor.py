#!/usr/bin/env python3
# bench/fsync_floor.py DIR [N] — the durable-write floor of the disk under DIR (issue 24): the
# median latency of writing 4 KiB and fdatasync'ing it, N times (default 200) into one file
# (cycling over 8 blocks, as the tail of a WAL is rewritten), as JSON on stdout:
# {"fdatasync_4k_ms": {"p50": ..., "p90": ..., "min": ...}, "samples": N}. A closed loop of C
# clients whose every answer waits for its commit's fdatasync cannot exceed C / p50 answers per
# second however fast the CPU is (group commit lets the C share one fdatasync).
import json
import os
import sys
import time

d = sys.argv[1]
n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
path = os.path.join(d, f".fsync-floor-{os.getpid()}")
fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
block = os.urandom(4096)
lat = []
try:
    for i in range(n + 5):
        t0 = time.perf_counter_ns()
        os.pwrite(fd, block, 4096 * (i % 8))
        os.fdatasync(fd)
        if i >= 5:  # the first calls allocate the blocks
            lat.append((time.perf_counter_ns() - t0) / 1e6)
finally:
    os.close(fd)
    os.unlink(path)
lat.sort()
print(json.dumps({"fdatasync_4k_ms": {"p50": lat[len(lat) // 2], "p90": lat[len(lat) * 9 // 10],
                                      "min": lat[0]}, "samples": n, "dir": d}))

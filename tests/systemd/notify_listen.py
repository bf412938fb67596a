#!/usr/bin/env python3
"""notify_listen.py SOCKET OUT: receives sd_notify datagrams on the Unix datagram socket SOCKET
(what systemd's NOTIFY_SOCKET is) until killed, appending each to OUT as
"<monotonic seconds> <message with newlines as |>", flushed at once. Prints "listening" on
stdout once the socket is bound."""
import os
import socket
import sys
import time

path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
os.chmod(path, 0o777)  # the daemon may run as another user
print("listening", flush=True)
with open(out, "a", encoding="utf-8") as f:
    while True:
        msg = s.recv(65536).decode("utf-8", "replace")
        f.write(f"{time.monotonic():.3f} {msg.strip().replace(chr(10), '|')}\n")
        f.flush()

# tests/support/free_port.sh: sourced by the shell tests.
# free_port prints a loopback TCP port that no socket is bound to right now, drawn from
# 10000-31999: below the kernel's ephemeral range (32768-60999 by default), so the load
# generators' own outgoing connections cannot take it between this check and the daemon's bind.
free_port() {
  python3 -c '
import random, socket
for _ in range(500):
    p = random.randrange(10000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
    except OSError:
        continue
    finally:
        s.close()
    print(p)
    break
else:
    raise SystemExit("free_port: no free loopback port found")
'
}

#!/usr/bin/env python3
"""tests/abuse/abuse.py: the attackers and probes of tests/abuse/run.sh (issue 23).

Python 3 standard library only. Every attacker runs until its --duration ends or it gets
SIGTERM, binds its sockets to --source (an address other than the legit load's), and prints one
JSON line of what it did on exit.

  churn      processes opening connections as fast as they can, each sending part of a request
             and closing (the lost-answer reproduction of issue 23)
  slow       N connections from one address that send a request head one byte a second and
             reconnect when closed (408 after header_timeout) or refused (503: after its
             Retry-After)
  garbage    N keep-alive connections posting random bodies as application/pkixcmp
  macflood   N connections posting one MAC-protected request with a wrong MAC (PBM or PBMAC1
             at the configured maximum iterations), again and again
  mkmac      turns a PKIMessage (openssl cmp -reqout) into that request: senderKID, a PBM or
             PBMAC1 protectionAlg with the given iteration count, and a protection that is not
             its MAC
  health     GETs /healthz every --interval; on exit prints how many failed and the longest gap
  cpu        the CPU a process used over --seconds, in % of one core
  certs      the number of certificates in a certmint SQLite store
"""
import argparse
import json
import os
import random
import selectors
import signal
import socket
import sqlite3
import sys
import threading
import time

IP_BIND_ADDRESS_NO_PORT = 24  # Linux <netinet/in.h>: pick the port at connect, not at bind

STOP = threading.Event()


def on_term(_sig, _frm):
    STOP.set()


def until(duration):
    """Deadline (monotonic) of a run of |duration| seconds (0: until SIGTERM)."""
    return time.monotonic() + duration if duration > 0 else float("inf")


def running(deadline):
    return not STOP.is_set() and time.monotonic() < deadline


def connect(host, port, source, timeout=5.0):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
    s.bind((source, 0))
    s.settimeout(timeout)
    s.connect((host, port))
    return s


def post(path, body, ctype="application/pkixcmp"):
    head = (f"POST {path} HTTP/1.1\r\nHost: ca\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    return head + body


def read_response(s):
    """Reads one HTTP response; returns (status, close) or (None, True) when the peer left."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None, True
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split()[1])
    except (IndexError, ValueError):
        return None, True
    length, close = 0, False
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
        elif name.strip().lower() == "connection" and value.strip().lower() == "close":
            close = True
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            return status, True
        rest += chunk
    return status, close


# --- churn -------------------------------------------------------------------------------------

def churn_worker(args, sources, out):
    deadline = until(args.duration)
    partial = (f"POST {args.path} HTTP/1.1\r\nHost: ca\r\nContent-Type: application/pkixcmp\r\n"
               f"Content-Length: 1500\r\n\r\n").encode() + os.urandom(200)
    opened = failed = 0
    i = 0
    while running(deadline):
        src = sources[i % len(sources)]
        i += 1
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src, 0))
            s.settimeout(2.0)
            s.connect((args.host, args.port))
            s.send(partial)
            s.close()  # FIN with part of a request in flight
            opened += 1
        except OSError:
            failed += 1
            try:
                s.close()
            except OSError:
                pass
            time.sleep(0.001)
    os.write(out, (json.dumps({"opened": opened, "failed": failed}) + "\n").encode())


def cmd_churn(args):
    sources = [s.strip() for s in args.source.split(",")]
    r, w = os.pipe()
    pids = []
    for _ in range(args.procs):
        pid = os.fork()
        if pid == 0:
            os.close(r)
            signal.signal(signal.SIGTERM, on_term)
            churn_worker(args, sources, w)
            os._exit(0)
        pids.append(pid)
    os.close(w)
    signal.signal(signal.SIGTERM, lambda *_: [os.kill(p, signal.SIGTERM) for p in pids])
    t0 = time.monotonic()
    for p in pids:
        while True:
            try:
                os.waitpid(p, 0)
                break
            except InterruptedError:
                continue
    secs = time.monotonic() - t0
    total = {"opened": 0, "failed": 0}
    with os.fdopen(r) as f:
        for line in f:
            d = json.loads(line)
            total["opened"] += d["opened"]
            total["failed"] += d["failed"]
    total["per_s"] = round(total["opened"] / secs) if secs > 0 else 0
    print(json.dumps({"attack": "churn", **total}))


# --- slow --------------------------------------------------------------------------------------

def cmd_slow(args):
    """Slow-header clients: each socket sends its request head one byte at a time."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    head = (f"POST {args.path} HTTP/1.1\r\nHost: ca\r\nContent-Type: application/pkixcmp\r\n"
            + "".join(f"X-Slow-{i}: {'a' * 20}\r\n" for i in range(200))).encode()
    sel = selectors.DefaultSelector()
    conns = {}  # fd -> [socket, bytes sent, next send time]
    waiting = []  # (time, slot): reconnect after a refusal or close
    stats = {"connected": 0, "refused": 0, "timed_out": 0, "closed": 0, "errors": 0, "max_open": 0}
    deadline = until(args.duration)

    def open_one():
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((args.source, 0))
            s.setblocking(False)
            err = s.connect_ex((args.host, args.port))
            if err not in (0, 115):  # EINPROGRESS
                s.close()
                stats["errors"] += 1
                return False
        except OSError:
            stats["errors"] += 1
            return False
        conns[s.fileno()] = [s, 0, time.monotonic() + random.uniform(0, 1.0)]
        sel.register(s, selectors.EVENT_READ)
        stats["connected"] += 1
        return True

    def drop(fd, delay):
        s = conns.pop(fd)[0]
        try:
            sel.unregister(s)
        except (KeyError, ValueError):
            pass
        s.close()
        waiting.append(time.monotonic() + delay)

    for _ in range(args.conns):
        if not open_one():
            waiting.append(time.monotonic() + 1.0)
    while running(deadline):
        now = time.monotonic()
        # Reconnect the ones whose wait is over.
        due = [t for t in waiting if t <= now]
        waiting[:] = [t for t in waiting if t > now]
        for _ in due:
            if not open_one():
                waiting.append(now + 1.0)
        stats["max_open"] = max(stats["max_open"], len(conns))
        for key, _ in sel.select(timeout=0.05):
            fd = key.fd
            if fd not in conns:
                continue
            try:
                data = conns[fd][0].recv(4096)
            except OSError:
                data = b""
            if data.startswith(b"HTTP/1.1 503"):
                stats["refused"] += 1
                drop(fd, 1.0)  # Retry-After: 1
            elif data.startswith(b"HTTP/1.1 408"):
                stats["timed_out"] += 1
                drop(fd, 0.0)  # reconnect at once: one slot per header_timeout
            else:
                stats["closed"] += 1
                drop(fd, 0.1)
        for fd, c in list(conns.items()):
            if c[2] <= now and c[1] < len(head):
                try:
                    c[0].send(head[c[1]:c[1] + 1])
                    c[1] += 1
                except BlockingIOError:
                    pass
                except OSError:
                    stats["closed"] += 1
                    drop(fd, 0.1)
                    continue
                c[2] = now + 1.0
    for c in conns.values():
        c[0].close()
    print(json.dumps({"attack": "slow", **stats}))


# --- garbage and macflood: keep posting ---------------------------------------------------------

def poster(args, body_of, stats, lock):
    deadline = until(args.duration)
    s = None
    while running(deadline):
        try:
            if s is None:
                s = connect(args.host, args.port, args.source)
            s.sendall(post(args.path, body_of()))
            status, close = read_response(s)
            with lock:
                stats["sent"] += 1
                if status is not None:
                    stats["answered"] += 1
                    stats["status"][str(status)] = stats["status"].get(str(status), 0) + 1
            if close or status is None:
                s.close()
                s = None
        except OSError:
            with lock:
                stats["errors"] += 1
            if s is not None:
                s.close()
            s = None
            time.sleep(0.01)
    if s is not None:
        s.close()


def run_posters(args, name, body_of):
    stats = {"sent": 0, "answered": 0, "errors": 0, "status": {}}
    lock = threading.Lock()
    threads = [threading.Thread(target=poster, args=(args, body_of, stats, lock), daemon=True)
               for _ in range(args.conns)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        for t in threads:
            t.join(0.2)
    secs = time.monotonic() - t0
    stats["per_s"] = round(stats["sent"] / secs) if secs > 0 else 0
    print(json.dumps({"attack": name, **stats}))


def cmd_garbage(args):
    run_posters(args, "garbage", lambda: os.urandom(random.randint(64, 2048)))


def cmd_macflood(args):
    with open(args.der, "rb") as f:
        der = f.read()
    run_posters(args, "macflood", lambda: der)


# --- mkmac: a DER editor just big enough for a PKIMessage header --------------------------------

def der_read(b, i):
    """The TLV at b[i]: (tag, content start, end)."""
    tag = b[i]
    n = b[i + 1]
    j = i + 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(b[j:j + k], "big")
        j += k
    return tag, j, j + n


def der(tag, content):
    n = len(content)
    if n < 0x80:
        ln = bytes([n])
    else:
        raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
        ln = bytes([0x80 | len(raw)]) + raw
    return bytes([tag]) + ln + content


def der_children(b):
    out, i = [], 0
    while i < len(b):
        _, _, end = der_read(b, i)
        out.append(b[i:end])
        i = end
    return out


def oid(dotted):
    parts = [int(x) for x in dotted.split(".")]
    body = bytes([40 * parts[0] + parts[1]])
    for p in parts[2:]:
        enc = [p & 0x7F]
        p >>= 7
        while p:
            enc.append(0x80 | (p & 0x7F))
            p >>= 7
        body += bytes(reversed(enc))
    return der(0x06, body)


def integer(v):
    raw = v.to_bytes((v.bit_length() + 8) // 8, "big")
    return der(0x02, raw)


def alg(o, params=None):
    return der(0x30, oid(o) + (params if params is not None else b""))


SHA256 = "2.16.840.1.101.3.4.2.1"
HMAC_SHA256 = "1.2.840.113549.2.9"
PBM = "1.2.840.113533.7.66.13"
PBMAC1 = "1.2.840.113549.1.5.14"
PBKDF2 = "1.2.840.113549.1.5.12"


def cmd_mkmac(args):
    with open(args.input, "rb") as f:
        msg = f.read()
    _, start, end = der_read(msg, 0)
    parts = der_children(msg[start:end])
    header, body = parts[0], parts[1]
    _, hs, he = der_read(header, 0)
    fields = der_children(header[hs:he])
    salt = os.urandom(16)
    if args.kind == "pbm":
        # PBMParameter ::= SEQUENCE { salt, owf, iterationCount, mac } (RFC 4210 §5.1.3.1)
        params = der(0x30, der(0x04, salt) + alg(SHA256) + integer(args.iterations) +
                     alg(HMAC_SHA256))
        palg = alg(PBM, params)
    else:
        # PBMAC1-params ::= SEQUENCE { keyDerivationFunc, messageAuthScheme } (RFC 8018 A.5),
        # PBKDF2-params ::= SEQUENCE { salt, iterationCount, keyLength, prf } (RFC 9481 §6.1.3)
        kdf = alg(PBKDF2, der(0x30, der(0x04, salt) + integer(args.iterations) + integer(32) +
                              alg(HMAC_SHA256, b"\x05\x00")))
        palg = alg(PBMAC1, der(0x30, kdf + alg(HMAC_SHA256, b"\x05\x00")))
    # The header's optional fields in order: [0] messageTime, [1] protectionAlg, [2] senderKID,
    # [3] recipKID, ...: replace [1] and [2], keep the rest.
    keep = [f for f in fields if f[0] not in (0xA1, 0xA2)]
    fixed = keep[:3]  # pvno, sender, recipient
    opt = keep[3:]
    opt.append(der(0xA1, palg))
    opt.append(der(0xA2, der(0x04, args.kid.encode())))
    opt.sort(key=lambda f: f[0])
    new_header = der(0x30, b"".join(fixed + opt))
    protection = der(0xA0, der(0x03, b"\x00" + os.urandom(32)))  # a MAC nobody computed
    out = der(0x30, new_header + body + protection)
    with open(args.output, "wb") as f:
        f.write(out)


# --- probes --------------------------------------------------------------------------------------

def cmd_health(args):
    deadline = until(args.duration)
    ok = failed = 0
    last_ok = time.monotonic()
    max_gap = 0.0
    req = b"GET /healthz HTTP/1.1\r\nHost: ca\r\nConnection: close\r\n\r\n"
    while running(deadline):
        t = time.monotonic()
        try:
            s = socket.create_connection((args.host, args.port), timeout=args.timeout)
            s.settimeout(args.timeout)
            s.sendall(req)
            status, _ = read_response(s)
            s.close()
            good = status == 200
        except OSError:
            good = False
        now = time.monotonic()
        if good:
            ok += 1
            max_gap = max(max_gap, now - last_ok)
            last_ok = now
        else:
            failed += 1
        time.sleep(max(0.0, args.interval - (now - t)))
    max_gap = max(max_gap, time.monotonic() - last_ok)
    print(json.dumps({"probe": "healthz", "ok": ok, "failed": failed,
                      "max_gap_s": round(max_gap, 3)}))


def proc_cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime


def cmd_cpu(args):
    hz = os.sysconf("SC_CLK_TCK")
    a = proc_cpu_ticks(args.pid)
    t0 = time.monotonic()
    time.sleep(args.seconds)
    b = proc_cpu_ticks(args.pid)
    secs = time.monotonic() - t0
    print(json.dumps({"probe": "cpu", "percent": round(100.0 * (b - a) / hz / secs, 1)}))


def cmd_certs(args):
    db = sqlite3.connect(f"file:{args.db}?mode=ro", uri=True, timeout=10)
    n = db.execute("SELECT COUNT(*) FROM cert").fetchone()[0]
    db.close()
    print(n)


def main():
    signal.signal(signal.SIGTERM, on_term)
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    def target(sp, conns):
        sp.add_argument("--host", default="127.0.0.1")
        sp.add_argument("--port", type=int, required=True)
        sp.add_argument("--source", default="127.0.0.3")
        sp.add_argument("--path", default="/.well-known/cmp/p/devices")
        sp.add_argument("--duration", type=float, default=0)
        sp.add_argument("--conns", type=int, default=conns)

    sp = sub.add_parser("churn")
    target(sp, 0)
    sp.add_argument("--procs", type=int, default=2)
    sp = sub.add_parser("slow")
    target(sp, 5000)
    sp = sub.add_parser("garbage")
    target(sp, 4)
    sp = sub.add_parser("macflood")
    target(sp, 4)
    sp.add_argument("--der", required=True)
    sp = sub.add_parser("mkmac")
    sp.add_argument("--input", required=True)
    sp.add_argument("--output", required=True)
    sp.add_argument("--kind", choices=("pbm", "pbmac1"), required=True)
    sp.add_argument("--iterations", type=int, required=True)
    sp.add_argument("--kid", required=True)
    sp = sub.add_parser("health")
    sp.add_argument("--host", default="127.0.0.1")
    sp.add_argument("--port", type=int, required=True)
    sp.add_argument("--interval", type=float, default=0.1)
    sp.add_argument("--timeout", type=float, default=1.0)
    sp.add_argument("--duration", type=float, default=0)
    sp = sub.add_parser("cpu")
    sp.add_argument("--pid", type=int, required=True)
    sp.add_argument("--seconds", type=float, default=5)
    sp = sub.add_parser("certs")
    sp.add_argument("--db", required=True)
    args = p.parse_args()
    {"churn": cmd_churn, "slow": cmd_slow, "garbage": cmd_garbage, "macflood": cmd_macflood,
     "mkmac": cmd_mkmac, "health": cmd_health, "cpu": cmd_cpu, "certs": cmd_certs}[args.cmd](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

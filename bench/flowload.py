#!/usr/bin/env python3
"""Bounded load generator: hold N concurrent TCP flows open through a SOCKS5 proxy.

Each flow connects to the proxy, asks for CONNECT to TARGET, sends a 16-byte ping and
waits for its echo (so the flow really crosses the tunnel), then stays open. When all are
open (or the time limit hits) it prints one JSON line with counts and timings, writes
"open" to --ready-file, waits --hold seconds, and closes everything. Every step has a
timeout; the whole run is bounded by --limit seconds.
"""

import argparse
import asyncio
import json
import resource
import socket
import struct
import sys
import time


async def one_flow(proxy_host, proxy_port, target_ip, target_port, timeout):
    r, w = await asyncio.wait_for(asyncio.open_connection(proxy_host, proxy_port), timeout)
    w.write(b"\x05\x01\x00")
    await asyncio.wait_for(r.readexactly(2), timeout)
    w.write(b"\x05\x01\x00\x01" + socket.inet_aton(target_ip) + struct.pack(">H", target_port))
    rep = await asyncio.wait_for(r.readexactly(10), timeout)
    if rep[1] != 0:
        w.close()
        raise RuntimeError(f"SOCKS reply {rep[1]}")
    w.write(b"kubelan-ping-123")
    echo = await asyncio.wait_for(r.readexactly(16), timeout)
    if echo != b"kubelan-ping-123":
        raise RuntimeError("bad echo")
    return w


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--proxy", default="127.0.0.1:1080")
    ap.add_argument("--target", required=True, help="IP:PORT of a TCP echo server")
    ap.add_argument("--flows", type=int, default=10000)
    ap.add_argument("--concurrency", type=int, default=200, help="flows being opened at once")
    ap.add_argument("--hold", type=float, default=5.0)
    ap.add_argument("--limit", type=float, default=120.0)
    ap.add_argument("--ready-file")
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if a.flows + 100 > hard:
        sys.exit(f"need {a.flows + 100} file descriptors, the hard limit is {hard}")
    ph, pp = a.proxy.rsplit(":", 1)
    th, tp = a.target.rsplit(":", 1)
    deadline = time.monotonic() + a.limit
    sem = asyncio.Semaphore(a.concurrency)
    writers, errors = [], {}

    async def guarded():
        async with sem:
            if time.monotonic() > deadline:
                return
            try:
                writers.append(await one_flow(ph, int(pp), th, int(tp), 10))
            except Exception as e:  # noqa: BLE001 - counted and reported
                k = type(e).__name__ + ":" + str(e)[:60]
                errors[k] = errors.get(k, 0) + 1

    t0 = time.monotonic()
    await asyncio.gather(*(guarded() for _ in range(a.flows)))
    opened = time.monotonic() - t0
    print(json.dumps({"requested": a.flows, "open": len(writers), "errors": errors,
                      "open_seconds": round(opened, 2)}), flush=True)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("open\n")
    await asyncio.sleep(min(a.hold, max(0.0, deadline - time.monotonic())))
    for w in writers:
        w.close()
    await asyncio.sleep(0.5)


asyncio.run(main())

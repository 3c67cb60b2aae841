#!/usr/bin/env python3
"""Prints a port on 127.0.0.1 that nothing is bound to now.

    free-port.py [tcp|udp]      (default tcp)

Drawn at random from 10000-19999: below the kernel's ephemeral range (net.ipv4.ip_local_port_range,
32768-60999 by default), which binds to port 0 and outgoing connections use, so no other process is
handed it by the kernel before the server meant for it binds it (PostgreSQL binds only after initdb,
seconds later). The tests' own picker (MeshTestSupport's freeLoopbackPort) draws from 20000 up, so
the two never meet.
"""
import random
import socket
import sys

kind = {"tcp": socket.SOCK_STREAM, "udp": socket.SOCK_DGRAM}.get(sys.argv[1] if len(sys.argv) > 1 else "tcp")
if kind is None:
    sys.exit("usage: free-port.py [tcp|udp]")
for _ in range(1000):
    port = random.randint(10000, 19999)
    s = socket.socket(socket.AF_INET, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit("free-port: no free port in 10000-19999 after 1000 tries")

#!/usr/bin/env python3
"""The live channel benchmark (docs/benchmarks.md, "Live channel"), run by scripts/bench-live.sh.

Against a running control plane (Gateway, ProvisionSvc, FanoutSvc, AllocatorSvc, nats-server,
PostgreSQL) with one tenant, one admin and OWNERS owners (tokens given as JSON on the command line):

1. registers one node over the bus (as NodeApplier does) and gives each owner one device;
2. opens PAGES live streams (GET /api/mesh/events), spread over the owners, and waits for each
   stream's first list;
3. idle: the CPU time of the listed processes over IDLE seconds with every page open and nothing
   happening (and the same span with no page open, for comparison);
4. burst: BURST devices created back to back; every page whose owner made them must list them all;
5. status: SAMPLES handshake reports published on the bus as the node publishes them, one device at
   a time; for each, the time until each page of the device's owner holds the new status;
6. polling, for comparison: the same pages reading GET /api/mesh/devices once a second.

Only the standard library: a small NATS client (PUB/SUB over TCP) and protobuf writer for the two
messages it sends, and asyncio for the HTTP streams.
"""
import argparse
import asyncio
import base64
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.parse
import uuid


# MARK: protobuf (the few fields used here)

def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_bytes(number, data):
    return varint(number << 3 | 2) + varint(len(data)) + data


def field_str(number, text):
    return field_bytes(number, text.encode())


def field_int(number, value):
    return varint(number << 3) + varint(value)


def fields(data):
    """Yields (number, wire type, value) of one message's top-level fields."""
    i = 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def read_varint(data, i):
    shift = result = 0
    while True:
        b = data[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


# MARK: NATS

class Nats:
    """Just enough of the NATS client protocol: publish, and one request at a time."""

    async def connect(self, url):
        u = urllib.parse.urlparse(url)
        self.reader, self.writer = await asyncio.open_connection(u.hostname, u.port or 4222)
        await self.reader.readline()   # INFO
        self.writer.write(b'CONNECT {"verbose":false,"pedantic":false,"headers":false,"name":"bench-live"}\r\nPING\r\n')
        await self.writer.drain()
        while (await self.reader.readline()).strip() != b"PONG":
            pass
        self.inbox = f"_INBOX.bench.{uuid.uuid4().hex}"
        self.writer.write(f"SUB {self.inbox} 1\r\n".encode())

    def publish(self, subject, payload, reply=None):
        head = f"PUB {subject} {reply + ' ' if reply else ''}{len(payload)}\r\n".encode()
        self.writer.write(head + payload + b"\r\n")

    async def request(self, subject, payload, timeout=30):
        self.publish(subject, payload, reply=self.inbox)
        await self.writer.drain()

        async def answer():
            while True:
                line = await self.reader.readline()
                if line.startswith(b"MSG"):
                    size = int(line.split()[-1])
                    body = await self.reader.readexactly(size + 2)
                    return body[:-2]
                if line.startswith(b"PING"):
                    self.writer.write(b"PONG\r\n")
        return await asyncio.wait_for(answer(), timeout)


# MARK: HTTP

async def http(base, method, path, token, body=None):
    u = urllib.parse.urlparse(base)
    reader, writer = await asyncio.open_connection(u.hostname, u.port)
    data = json.dumps(body).encode() if body is not None else b""
    writer.write((f"{method} {path} HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
                  f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n").encode() + data)
    await writer.drain()
    raw = await reader.read()
    writer.close()
    head, _, payload = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    return status, (json.loads(payload) if payload.strip().startswith(b"{") else None)


class Page:
    """One open page: its live stream and what it last knows of each device."""

    def __init__(self, owner):
        self.owner = owner
        self.devices = {}          # id -> device JSON
        self.first = asyncio.Event()
        self.events = 0
        self.waiters = []          # (predicate, future)
        self.task = None

    async def open(self, base, token):
        u = urllib.parse.urlparse(base)
        self.reader, self.writer = await asyncio.open_connection(u.hostname, u.port)
        self.writer.write((f"GET /api/mesh/events HTTP/1.1\r\nHost: {u.netloc}\r\nAccept: text/event-stream\r\n"
                           f"Authorization: Bearer {token}\r\n\r\n").encode())
        await self.writer.drain()
        status = await self.reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"live stream refused: {status!r}")
        while (await self.reader.readline()).strip():
            pass
        self.task = asyncio.ensure_future(self.read())

    async def read(self):
        # Chunked transfer encoding: size line, data, CRLF.
        buffer = b""
        try:
            while True:
                size = int((await self.reader.readline()).strip() or b"0", 16)
                if size == 0:
                    return
                buffer += await self.reader.readexactly(size)
                await self.reader.readexactly(2)
                while b"\n\n" in buffer:
                    block, buffer = buffer.split(b"\n\n", 1)
                    self.event(block.decode())
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            return

    def event(self, block):
        name, data = "message", []
        for line in block.split("\n"):
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
        if not data:
            return
        self.events += 1
        value = json.loads("\n".join(data))
        now = time.monotonic()
        if name == "devices":
            self.devices = {d["id"]: d for d in value["devices"]}
            self.first.set()
        elif name == "device" and value["id"] in self.devices:
            self.devices[value["id"]] = value
        for waiter in list(self.waiters):
            predicate, future = waiter
            if predicate(self) and not future.done():
                future.set_result(now)
                self.waiters.remove(waiter)

    def until(self, predicate):
        future = asyncio.get_running_loop().create_future()
        if predicate(self):
            future.set_result(time.monotonic())
        else:
            self.waiters.append((predicate, future))
        return future

    def close(self):
        if self.task:
            self.task.cancel()
        self.writer.close()


# MARK: CPU

def cpu_seconds(pids):
    """utime + stime of each process and its children that are alive (PostgreSQL's backends)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = {}
    for name, pid in pids.items():
        seen = 0.0
        for p in [pid] + children(pid):
            try:
                with open(f"/proc/{p}/stat") as f:
                    parts = f.read().rsplit(")", 1)[1].split()
                seen += (int(parts[11]) + int(parts[12])) / tick
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
        total[name] = seen
    return total


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


async def measure_cpu(pids, seconds):
    before, t0 = cpu_seconds(pids), time.monotonic()
    await asyncio.sleep(seconds)
    after, t1 = cpu_seconds(pids), time.monotonic()
    wall = t1 - t0
    return {name: 100 * (after[name] - before[name]) / wall for name in pids}


def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q / 100 * len(s) + 0.5)) - 1))]


# MARK: run

async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--nats", required=True)
    ap.add_argument("--tenant", required=True)
    ap.add_argument("--enroll-token", required=True)
    ap.add_argument("--tokens", required=True, help="JSON: {admin: token, owners: [token, ...]}")
    ap.add_argument("--pids", required=True, help="JSON: {name: pid}")
    ap.add_argument("--pages", type=int, default=1000)
    ap.add_argument("--idle", type=float, default=60)
    ap.add_argument("--burst", type=int, default=20)
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--poll-seconds", type=float, default=20)
    ap.add_argument("--lifetime", type=float, default=300, help="the gateway's MESH_GATEWAY_LIVE_MAX_SECONDS")
    a = ap.parse_args()
    tokens, pids = json.loads(a.tokens), {k: int(v) for k, v in json.loads(a.pids).items()}
    owners = tokens["owners"]
    out = {"machine": f"{os.cpu_count()} cores", "pages": a.pages}

    # The node, registered over the bus as NodeApplier registers.
    nats = Nats()
    await nats.connect(a.nats)
    req = (field_str(1, a.enroll_token) + field_str(2, "bench-node") + field_str(3, base64.b64encode(os.urandom(32)).decode())
           + field_str(4, "198.51.100.1:51820") + field_int(5, 51820))
    answer = await nats.request("mesh.v1.provision.node.register", req)
    node_id = None
    for number, _, value in fields(answer):
        if number == 1:
            node_id = next(v for n, _, v in fields(value) if n == 1).decode()
    if not node_id:
        raise SystemExit(f"bench-live: node registration failed: {answer!r}")

    # One device per owner; its public key from its config (wg pubkey).
    keys = {}
    for i, token in enumerate(owners):
        status, body = await http(a.gateway, "POST", "/api/mesh/devices", token, {"label": f"owner {i} phone", "type": "iphone"})
        if status != 201:
            raise SystemExit(f"bench-live: creating a device gave {status}: {body}")
        private = next(l.split("=", 1)[1].strip() for l in body["config"].splitlines() if l.startswith("PrivateKey"))
        keys[body["id"]] = (i, subprocess.run(["wg", "pubkey"], input=private, capture_output=True, text=True, check=True).stdout.strip())

    # Idle, with no page open (the baseline).
    out["loadavg_start"] = loadavg()
    base_cpu = await measure_cpu(pids, a.idle)

    # The pages.
    pages = [Page(i % len(owners)) for i in range(a.pages)]
    t0 = time.monotonic()
    cpu0 = cpu_seconds(pids)
    for start in range(0, len(pages), 100):
        await asyncio.gather(*(p.open(a.gateway, owners[p.owner]) for p in pages[start:start + 100]))
    await asyncio.wait_for(asyncio.gather(*(p.first.wait() for p in pages)), 120)
    out["open_seconds"] = round(time.monotonic() - t0, 2)
    cpu1 = cpu_seconds(pids)
    # Each stream is reopened once per live lifetime (300 s by default): that cost, spread over it.
    opening = sum(cpu1.values()) - sum(cpu0.values())
    out["open_cpu_ms_per_page"] = round(1000 * opening / a.pages, 2)
    out["reconnect_cpu_percent_of_one_core_at_lifetime"] = round(100 * opening / a.lifetime, 2)
    await asyncio.sleep(2)
    idle_cpu = await measure_cpu(pids, a.idle)
    out["idle_cpu_percent_of_one_core"] = {k: round(v, 2) for k, v in idle_cpu.items()}
    out["idle_cpu_total"] = round(sum(idle_cpu.values()), 2)
    out["baseline_cpu_percent_of_one_core"] = {k: round(v, 2) for k, v in base_cpu.items()}
    out["baseline_cpu_total"] = round(sum(base_cpu.values()), 2)
    out["idle_cost_of_pages"] = round(out["idle_cpu_total"] - out["baseline_cpu_total"], 2)
    out["loadavg_idle"] = loadavg()

    # A burst: owner 0 creates BURST devices back to back; each of owner 0's pages must list them all.
    mine = [p for p in pages if p.owner == 0]
    t0 = time.monotonic()
    created = []
    for i in range(a.burst):
        status, body = await http(a.gateway, "POST", "/api/mesh/devices", owners[0], {"label": f"burst {i}", "type": "laptop"})
        if status != 201:
            raise SystemExit(f"bench-live: burst creation gave {status}: {body}")
        created.append(body["id"])
    t_last = time.monotonic()
    want = set(created)
    done = await asyncio.wait_for(asyncio.gather(*(p.until(lambda p: want <= p.devices.keys()) for p in mine)), 120)
    out["burst"] = {"devices": a.burst, "pages": len(mine), "pages_with_all": sum(1 for p in mine if want <= p.devices.keys()),
                    "creations_ms": round(1000 * (t_last - t0), 1),
                    "every_page_complete_after_last_reply_ms": round(1000 * max(0.0, max(done) - t_last), 1)}

    # Status: one handshake report at a time, as the node publishes it; the time until every page
    # of that device's owner shows it.
    delays = []
    items = list(keys.items())
    for n in range(a.samples):
        device, (owner, key) = items[n % len(items)]
        handshake_ms = int(time.time() * 1000)
        watchers = [p for p in pages if p.owner == owner]
        futures = [p.until(lambda p, d=device, h=handshake_ms: p.devices.get(d, {}).get("online") is True
                           and p.devices[d].get("last_handshake_at") is not None
                           and iso_ms(p.devices[d]["last_handshake_at"]) >= h - 1) for p in watchers]
        peer = field_str(1, key) + field_str(2, f"203.0.113.{n % 250 + 1}:4{n % 1000:04d}") + field_int(3, handshake_ms)
        report = field_str(1, a.tenant) + field_str(2, node_id) + field_int(3, handshake_ms) + field_bytes(4, peer)
        sent = time.monotonic()
        nats.publish(f"mesh.v1.reports.{a.tenant}.{node_id}.handshake", report)
        await nats.writer.drain()
        arrived = await asyncio.wait_for(asyncio.gather(*futures), 30)
        delays.extend(1000 * (t - sent) for t in arrived)
        await asyncio.sleep(0.05)
    out["status"] = {"reports": a.samples, "page_updates": len(delays), "p50_ms": round(pct(delays, 50), 1),
                     "p99_ms": round(pct(delays, 99), 1), "max_ms": round(max(delays), 1)}
    out["loadavg_end"] = loadavg()
    for p in pages:
        p.close()

    # Polling, for comparison: the same number of pages, each reading its list once a second.
    if a.poll_seconds > 0:
        stop = time.monotonic() + a.poll_seconds + 4
        reads = [0]

        async def poller(i):
            u = urllib.parse.urlparse(a.gateway)
            reader, writer = await asyncio.open_connection(u.hostname, u.port)
            token = owners[i % len(owners)]
            await asyncio.sleep((i % 1000) / 1000)
            while time.monotonic() < stop:
                writer.write(f"GET /api/mesh/devices HTTP/1.1\r\nHost: {u.netloc}\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
                await writer.drain()
                length = 0
                while True:
                    line = await reader.readline()
                    if not line.strip():
                        break
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                reads[0] += 1
                await asyncio.sleep(1)
            writer.close()
        tasks = [asyncio.ensure_future(poller(i)) for i in range(a.pages)]
        await asyncio.sleep(3)
        r0 = reads[0]
        poll_cpu = await measure_cpu(pids, a.poll_seconds)
        rate = (reads[0] - r0) / a.poll_seconds
        await asyncio.gather(*tasks, return_exceptions=True)
        out["polling_cpu_percent_of_one_core"] = {k: round(v, 2) for k, v in poll_cpu.items()}
        out["polling_cpu_total"] = round(sum(poll_cpu.values()), 2)
        out["polling_reads_per_second"] = round(rate, 1)
    print(json.dumps(out, indent=1))


def iso_ms(text):
    from datetime import datetime
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


if __name__ == "__main__":
    asyncio.run(main())

#!/usr/bin/env python3
"""Replication benchmark: one node vs a three-node cluster, on this machine.

Starts the real `mneme` binary (MNEME_BIN, default target/release/mneme) as a single node,
then as three nodes on 127.0.0.1-3, and drives them over gRPC (grpc.aio, generated stubs
of the Python SDK): sequential write and read latency (p50/p99), concurrent write and read
throughput, writes and reads through a follower (forwarded; linearizable or stale), the
time until a new leader serves writes after the leader is SIGKILLed, and the time a node
that missed MNEME_CATCHUP_WRITES (default 100,000) writes needs to catch up.

    python3 benches/cluster.py [--quick]

Prints a table and writes target/bench-results/cluster.json. Needs `pip install
./clients/python`.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc

from mneme_client._generated import mneme_pb2 as pb
from mneme_client._generated import mneme_pb2_grpc as rpc

ROOT = Path(__file__).resolve().parent.parent
BIN = os.environ.get("MNEME_BIN", str(ROOT / "target" / "release" / "mneme"))
QUICK = "--quick" in sys.argv
SEQ = 200 if QUICK else 1000
SECONDS = 3 if QUICK else 10
CONCURRENCY = 16
CATCHUP = int(os.environ.get("MNEME_CATCHUP_WRITES", "5000" if QUICK else "100000"))
FAILOVERS = 2 if QUICK else 5


def pct(xs: list[float], p: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p))] * 1e3


class Node:
    def __init__(self, i: int, work: Path, cluster: bool, peers: str, secret: Path):
        self.i = i
        self.dir = work / f"node{i}"
        self.api = f"127.0.0.{i}:{17000 + i}"
        self.raft = f"127.0.0.{i}:{17100 + i}"
        self.cluster = cluster
        self.peers = peers
        self.secret = secret
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [BIN, "serve", "--listen", self.api, "--data-dir", str(self.dir)]
        if self.cluster:
            args += [
                "--node-id", str(self.i), "--cluster-listen", self.raft,
                "--cluster-secret-file", str(self.secret), "--peer", self.peers,
                "--snapshot-every", "5000",
            ]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env={**os.environ, "RUST_LOG": "error"},
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(b"mneme listening on"):
                break
        # Keep draining stdout so the node never blocks on it.
        out = self.proc.stdout
        threading.Thread(target=lambda: [None for _ in out], daemon=True).start()

    def kill(self) -> None:
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc:
            self.proc.terminate()
            self.proc.wait()
            self.proc = None


def status(node: Node) -> dict[str, int | str]:
    out = subprocess.run(
        [BIN, "cluster", "status", "--server", f"http://{node.api}"],
        capture_output=True, text=True, timeout=10,
    ).stdout
    m = re.search(r"node (\d+) \((\w+)\) term (\d+) leader (\d+)", out)
    n = re.search(r"log (\d+) committed (\d+) applied (\d+) snapshot (\d+)", out)
    if not m or not n:
        return {}
    return {
        "state": m.group(2), "leader": int(m.group(4)), "log": int(n.group(1)),
        "applied": int(n.group(3)), "snapshot": int(n.group(4)),
    }


def stub(node: Node) -> rpc.MemoryServiceStub:
    ch = grpc.aio.insecure_channel(node.api)
    return rpc.MemoryServiceStub(ch)


STALE = (("x-mneme-consistency", "stale"),)


async def measure(node: Node, label: str, out: dict[str, object], stale: bool = False) -> None:
    s = stub(node)
    agent = "bench-" + re.sub(r"[^A-Za-z0-9]+", "-", label)
    md = STALE if stale else ()
    for i in range(100):
        await s.Remember(pb.RememberRequest(agent_id=agent, content=f"warm {i}"))
    lat_w: list[float] = []
    for i in range(SEQ):
        t = time.perf_counter()
        await s.Remember(pb.RememberRequest(agent_id=agent, content=f"sequential fact {i} about the deploy"))
        lat_w.append(time.perf_counter() - t)
    lat_r: list[float] = []
    for i in range(SEQ):
        t = time.perf_counter()
        await s.Recall(pb.RecallRequest(agent_id=agent, query=f"fact {i} deploy", top_k=10), metadata=md)
        lat_r.append(time.perf_counter() - t)

    async def flood(write: bool) -> int:
        stop = time.perf_counter() + SECONDS
        n = 0

        async def worker(w: int) -> None:
            nonlocal n
            k = 0
            while time.perf_counter() < stop:
                if write:
                    await s.Remember(pb.RememberRequest(agent_id=agent, content=f"worker {w} fact {k}"))
                else:
                    await s.Recall(pb.RecallRequest(agent_id=agent, query=f"worker fact {k}", top_k=10), metadata=md)
                k += 1
                n += 1

        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        return n

    writes = await flood(True) / SECONDS
    reads = await flood(False) / SECONDS
    row = {
        "write_p50_ms": pct(lat_w, 0.5), "write_p99_ms": pct(lat_w, 0.99),
        "read_p50_ms": pct(lat_r, 0.5), "read_p99_ms": pct(lat_r, 0.99),
        "writes_per_s": writes, "reads_per_s": reads,
    }
    out[label] = row
    print(f"{label:34s} write p50 {row['write_p50_ms']:6.2f} p99 {row['write_p99_ms']:6.2f} ms | "
          f"read p50 {row['read_p50_ms']:6.2f} p99 {row['read_p99_ms']:6.2f} ms | "
          f"{writes:7.0f} writes/s {reads:7.0f} reads/s ({CONCURRENCY} clients)", flush=True)


def leader_of(nodes: list[Node]) -> Node:
    deadline = time.time() + 30
    while time.time() < deadline:
        for n in nodes:
            if n.proc is None:
                continue
            st = status(n)
            if st.get("state") == "Leader" and st.get("leader") == n.i:
                return n
        time.sleep(0.05)
    raise RuntimeError("no leader")


async def failover(nodes: list[Node], out: dict[str, object]) -> None:
    times = []
    for k in range(FAILOVERS):
        leader = leader_of(nodes)
        leader.kill()
        t0 = time.perf_counter()
        survivors = [n for n in nodes if n is not leader]
        done = False
        while not done:
            for n in survivors:
                try:
                    await stub(n).Remember(
                        pb.RememberRequest(agent_id="failover", content=f"probe {k}", request_id=f"probe-{k}"),
                        timeout=15,
                    )
                    done = True
                    break
                except grpc.aio.AioRpcError:
                    await asyncio.sleep(0.02)
        times.append(time.perf_counter() - t0)
        leader.start()
        time.sleep(1)
    out["failover_s"] = times
    print(f"failover (SIGKILL the leader -> a write acknowledged): {', '.join(f'{t:.2f}' for t in times)} s; "
          f"mean {statistics.mean(times):.2f} s", flush=True)


async def catchup(nodes: list[Node], out: dict[str, object]) -> None:
    leader = leader_of(nodes)
    lagging = next(n for n in nodes if n is not leader)
    lagging.stop()
    s = stub(leader)
    t0 = time.perf_counter()
    batch = 100
    for b in range(CATCHUP // batch):
        items = [pb.RememberRequest(content=f"missed memory {b * batch + i} of the catch-up run") for i in range(batch)]
        await s.RememberBatch(pb.RememberBatchRequest(agent_id="catchup", items=items, request_id=f"c{b}"))
    written = time.perf_counter() - t0
    target = status(leader)["log"]
    t1 = time.perf_counter()
    lagging.start()
    while True:
        st = status(lagging)
        if st and int(st["applied"]) >= int(target):
            break
        time.sleep(0.1)
    took = time.perf_counter() - t1
    out["catchup"] = {"writes": CATCHUP, "write_s": written, "catchup_s": took, "snapshot_index": st["snapshot"]}
    print(f"catch-up: {CATCHUP} writes ({CATCHUP // batch} batches) in {written:.1f} s with a node down; "
          f"it caught up in {took:.2f} s after restart (snapshot at index {st['snapshot']}, "
          f"log {target})", flush=True)


async def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="mneme-cluster-bench-"))
    secret = work / "secret"
    secret.write_text("benchmark-cluster-secret-0123456789\n")
    out: dict[str, object] = {"binary": BIN, "concurrency": CONCURRENCY, "seconds": SECONDS}
    try:
        single = Node(1, work / "single", False, "", secret)
        single.start()
        await measure(single, "1 node", out)
        single.stop()
        peers = ",".join(f"{i}=127.0.0.{i}:{17100 + i}/127.0.0.{i}:{17000 + i}" for i in (1, 2, 3))
        nodes = [Node(i, work / "cluster", True, peers, secret) for i in (1, 2, 3)]
        for n in nodes:
            n.start()
        leader = leader_of(nodes)
        follower = next(n for n in nodes if n is not leader)
        await measure(leader, "3 nodes, via the leader", out)
        await measure(follower, "3 nodes, via a follower", out)
        await measure(follower, "3 nodes, follower, stale reads", out, stale=True)
        await failover(nodes, out)
        await catchup(nodes, out)
        for n in nodes:
            n.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    dest = ROOT / "target" / "bench-results"
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "cluster.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    asyncio.run(main())

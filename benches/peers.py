#!/usr/bin/env python3
"""Peers measured on exactly the vectors and queries Mneme's benchmarks use (the raw
little-endian f32 files that `benches/load.rs` and the index bench dump), on this machine,
in the same run:

- hnswlib and usearch: raw in-process ANN indexes (the floor a database sits on), swept
  over ef so they can be compared with Mneme at equal recall;
- Chroma (PersistentClient, in-process): a product an agent developer might pick instead;
- SQLite + numpy, two recipes: "re-reads rows" — vectors as BLOBs in an SQLite table,
  every query reads the agent's rows and scores them with numpy (what many agent
  developers run today); and "cached" — the same table, but each agent's vectors are read
  into one numpy matrix once and every query is a matrix product (what a careful user
  would do);

Every number is single-query latency from a histogram of individual calls (p50/p99),
measured throughput (calls over the wall time of the query loop, one client),
recall@10 against exact ground truth computed here with numpy, and build or insert
throughput. hnswlib and usearch are timed per call from Python: each call carries the
binding's overhead, measured here as the time of the same call on a one-vector index
(`python_call_us`), so margins smaller than that are not claimed. Used by `benches/run.py`; runnable alone:

    python3 benches/peers.py DIR N [--agents A] [--only hnswlib,usearch,chroma,sqlite]
"""
import argparse
import json
import os
import resource
import shutil
import sqlite3
import tempfile
import time

import numpy as np

DIM = 384
K = 10
EFS = (16, 24, 32, 48, 64, 96, 128, 256)


def load(d, n):
    data = np.fromfile(f"{d}/data-{n}.f32", dtype="<f4").reshape(-1, DIM)
    queries = np.fromfile(f"{d}/queries-{n}.f32", dtype="<f4").reshape(-1, DIM)
    return data, queries


def exact_truth(data, queries, k=K):
    """Exact top-k ids by dot product (the vectors are unit length)."""
    out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), 256):
        scores = queries[s : s + 256] @ data.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        out[s : s + 256] = np.take_along_axis(top, order, axis=1)
    return out


def recall(found, truth):
    return float(np.mean([len(set(map(int, f)) & set(map(int, t))) / K for f, t in zip(found, truth)]))


def lat_summary(lat_us, wall_s):
    """Percentiles of per-call latencies, and the throughput measured over `wall_s`."""
    lat = np.asarray(lat_us)
    return {
        "p50_ms": float(np.percentile(lat, 50) / 1000),
        "p99_ms": float(np.percentile(lat, 99) / 1000),
        "calls_per_s": float(len(lat) / wall_s),
    }


def timed_queries(fn, queries):
    """Per-call latencies (µs), results, and the loop's wall time (s)."""
    lat, found = [], []
    t_loop = time.perf_counter()
    for q in queries:
        t0 = time.perf_counter_ns()
        found.append(fn(q))
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, found, time.perf_counter() - t_loop


def python_call_us(make_search, queries):
    """Median time of one search call on a one-vector index: the binding's own cost."""
    lat, _, _ = timed_queries(make_search, queries[:200])
    return float(np.median(lat))


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.path.getsize(os.path.join(root, f))
            except OSError:
                pass
    return total


def bench_hnswlib(data, queries, truth):
    import hnswlib

    n = len(data)
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=n, M=16, ef_construction=128)
    index.set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    index.add_items(data, np.arange(n))
    secs = time.perf_counter() - t0
    index.set_num_threads(1)
    sweep = []
    for ef in EFS:
        index.set_ef(ef)
        lat, found, wall = timed_queries(lambda q: index.knn_query(q, k=K)[0][0], queries)
        sweep.append({"ef": ef, "recall_at_10": recall(found, truth), **lat_summary(lat, wall)})
    tiny = hnswlib.Index(space="ip", dim=DIM)
    tiny.init_index(max_elements=1, M=16, ef_construction=128)
    tiny.add_items(data[:1], np.arange(1))
    tiny.set_num_threads(1)
    overhead = python_call_us(lambda q: tiny.knn_query(q, k=1)[0][0], queries)
    return {"system": "hnswlib", "version": "0.8.0", "build_s": secs, "inserts_per_s": n / secs, "sweep": sweep,
            "python_call_us": overhead}


def bench_usearch(data, queries, truth, dtype):
    import usearch
    from usearch.index import Index

    n = len(data)
    index = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
    t0 = time.perf_counter()
    index.add(np.arange(n), data, threads=os.cpu_count() or 1)
    secs = time.perf_counter() - t0
    sweep = []
    for ef in EFS:
        index.expansion_search = ef
        lat, found, wall = timed_queries(lambda q: index.search(q, K, threads=1).keys, queries)
        sweep.append({"ef": ef, "recall_at_10": recall(found, truth), **lat_summary(lat, wall)})
    tiny = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=16, expansion_add=128)
    tiny.add(np.arange(1), data[:1])
    overhead = python_call_us(lambda q: tiny.search(q, 1, threads=1).keys, queries)
    return {
        "system": f"usearch-{dtype}",
        "version": usearch.__version__,
        "build_s": secs,
        "inserts_per_s": n / secs,
        "sweep": sweep,
        "python_call_us": overhead,
    }


def agent_rows(n, agents, a):
    """Rows of agent `a` when memory i belongs to agent i % agents (as in load.rs)."""
    return np.arange(a, n, agents)


def truth_for(data, queries, agents):
    if agents == 1:
        return exact_truth(data, queries)
    n = len(data)
    out = []
    for k, q in enumerate(queries):
        rows = agent_rows(n, agents, k % agents)
        out.append(rows[exact_truth(data[rows], q[None, :])[0]])
    return np.array(out)


def bench_chroma(data, queries, truth, agents, workdir, ef_search=96):
    os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
    import chromadb

    n = len(data)
    path = os.path.join(workdir, "chroma")
    rss0 = rss_mib()
    client = chromadb.PersistentClient(path=path)
    meta = {"hnsw:space": "ip", "hnsw:M": 16, "hnsw:construction_ef": 128, "hnsw:search_ef": ef_search}
    cols = [client.create_collection(f"agent{a}", metadata=meta, embedding_function=None) for a in range(agents)]
    batch = min(5_000, client.get_max_batch_size())
    t0 = time.perf_counter()
    for a, col in enumerate(cols):
        rows = agent_rows(n, agents, a)
        for s in range(0, len(rows), batch):
            chunk = rows[s : s + batch]
            col.add(ids=[str(i) for i in chunk], embeddings=data[chunk])
    secs = time.perf_counter() - t0
    # Chroma's ids are strings; map back to rows for recall.
    lat, found = [], []
    t_loop = time.perf_counter()
    for k, q in enumerate(queries):
        col = cols[k % agents]
        t = time.perf_counter_ns()
        ids = col.query(query_embeddings=[q], n_results=K)["ids"][0]
        lat.append((time.perf_counter_ns() - t) / 1000.0)
        found.append([int(i) for i in ids])
    wall = time.perf_counter() - t_loop
    out = {
        "system": "chroma",
        "version": chromadb.__version__,
        "inserts_per_s": n / secs,
        "ef_search": ef_search,
        "recall_at_10": recall(found, truth),
        **lat_summary(lat, wall),
        "disk_bytes": dir_bytes(path),
        "rss_mib": rss_mib() - rss0,
    }
    del cols, client
    return out


def bench_sqlite(data, queries, truth, agents, workdir):
    n = len(data)
    path = os.path.join(workdir, "memories.sqlite")
    db = sqlite3.connect(path)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE memories (id INTEGER PRIMARY KEY, agent TEXT NOT NULL, embedding BLOB NOT NULL)")
    db.execute("CREATE INDEX by_agent ON memories(agent)")
    t0 = time.perf_counter()
    for s in range(0, n, 1_000):
        rows = [(i, f"agent{i % agents}", data[i].tobytes()) for i in range(s, min(n, s + 1_000))]
        db.executemany("INSERT INTO memories VALUES (?, ?, ?)", rows)
        db.commit()
    secs = time.perf_counter() - t0

    def read_agent(a):
        rows = db.execute("SELECT id, embedding FROM memories WHERE agent = ?", (f"agent{a}",)).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        m = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(-1, DIM)
        return ids, m

    def top(ids, m, q):
        scores = m @ q
        best = np.argpartition(-scores, K)[:K] if len(scores) > K else np.arange(len(scores))
        return ids[best[np.argsort(-scores[best])]]

    version = f"sqlite {sqlite3.sqlite_version}, numpy {np.__version__}"
    out = []
    # Re-reads rows: each query reads all of the agent's rows, so cap the count (a 1M run
    # must end today).
    rows_per_query = n // agents
    capped = queries[: max(50, min(len(queries), 20_000_000 // max(1, rows_per_query)))]
    lat, found, wall = timed_queries_indexed(lambda k, q: top(*read_agent(k % agents), q), capped)
    out.append({
        "system": "sqlite+numpy (re-reads rows per query)",
        "version": version,
        "inserts_per_s": n / secs,
        "recall_at_10": recall(found, truth[: len(capped)]),
        **lat_summary(lat, wall),
        "queries": len(capped),
        "disk_bytes": dir_bytes(workdir),
    })
    # Cached: every agent's matrix read once (timed apart), then matrix products only.
    t0 = time.perf_counter()
    cache = [read_agent(a) for a in range(agents)]
    cache_s = time.perf_counter() - t0
    lat, found, wall = timed_queries_indexed(lambda k, q: top(*cache[k % agents], q), queries)
    out.append({
        "system": "sqlite+numpy (vectors cached in numpy)",
        "version": version,
        "inserts_per_s": n / secs,
        "cache_load_s": cache_s,
        "recall_at_10": recall(found, truth),
        **lat_summary(lat, wall),
        "queries": len(queries),
        "disk_bytes": dir_bytes(workdir),
    })
    db.close()
    return out


def timed_queries_indexed(fn, queries):
    """Like `timed_queries`, for a function of (query number, query)."""
    lat, found = [], []
    t_loop = time.perf_counter()
    for k, q in enumerate(queries):
        t0 = time.perf_counter_ns()
        found.append(fn(k, q))
        lat.append((time.perf_counter_ns() - t0) / 1000.0)
    return lat, found, time.perf_counter() - t_loop


def run(d, n, agents=1, only=("hnswlib", "usearch", "chroma", "sqlite"), n_queries=1_000):
    data, queries = load(d, n)
    queries = queries[:n_queries]
    truth = truth_for(data, queries, agents)
    results = []
    work = tempfile.mkdtemp(prefix="mneme-peers-")
    try:
        if agents == 1 and "hnswlib" in only:
            results.append(bench_hnswlib(data, queries, truth))
        if agents == 1 and "usearch" in only:
            results.append(bench_usearch(data, queries, truth, "f32"))
            results.append(bench_usearch(data, queries, truth, "i8"))
        if "chroma" in only:
            results.append(bench_chroma(data, queries, truth, agents, work))
        if "sqlite" in only:
            results.extend(bench_sqlite(data, queries, truth, agents, work))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in results:
        r.update({"memories": n, "agents": agents})
    return results


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("n", type=int)
    p.add_argument("--agents", type=int, default=1)
    p.add_argument("--only", default="hnswlib,usearch,chroma,sqlite")
    p.add_argument("--queries", type=int, default=1_000)
    a = p.parse_args()
    print(json.dumps(run(a.dir, a.n, a.agents, a.only.split(","), a.queries), indent=1))


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
    main()

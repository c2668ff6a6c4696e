#!/usr/bin/env python3
"""Peer baselines for the index benchmark: hnswlib and usearch on the exact vectors,
queries and ground truth that `cargo bench -p mneme-index --bench index` dumps
(MNEME_BENCH_DUMP=dir). Same parameters as Mneme's HNSW (M 16, ef_construction 128),
single-query latency, recall@10 against the same exact ground truth.

    python3 benches/ann_peers.py /tmp/mneme-bench 10000 100000
"""
import sys
import time

import numpy as np

DIM = 384
K = 10


def load(d, n):
    data = np.fromfile(f"{d}/data-{n}.f32", dtype="<f4").reshape(-1, DIM)
    queries = np.fromfile(f"{d}/queries-{n}.f32", dtype="<f4").reshape(-1, DIM)
    truth = np.fromfile(f"{d}/truth-{n}.u32", dtype="<u4").reshape(-1, K)
    return data, queries, truth


def report(name, n, ef, lat_us, found, truth):
    rec = np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth)])
    p50, p99 = np.percentile(lat_us, [50, 99]) / 1000.0
    print(f"{name} ef {ef:>3}: recall@10 {rec:.4f}, p50 {p50:.3f} ms, p99 {p99:.3f} ms")


def bench_hnswlib(data, queries, truth):
    import hnswlib

    n = len(data)
    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=n, M=16, ef_construction=128)
    index.set_num_threads(2)
    t0 = time.perf_counter()
    index.add_items(data, np.arange(n))
    secs = time.perf_counter() - t0
    print(f"hnswlib {hnswlib.__version__ if hasattr(hnswlib, '__version__') else ''} build (2 threads): {secs:.1f} s, {n / secs:.0f} inserts/s")
    index.set_num_threads(1)
    for ef in (16, 32, 64, 128, 256):
        index.set_ef(ef)
        lat, found = [], []
        for q in queries:
            t0 = time.perf_counter_ns()
            labels, _ = index.knn_query(q, k=K)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
            found.append(labels[0])
        report("hnswlib", n, ef, np.array(lat), found, truth)


def bench_usearch(data, queries, truth):
    import usearch
    from usearch.index import Index

    n = len(data)
    index = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=128)
    t0 = time.perf_counter()
    index.add(np.arange(n), data, threads=2)
    secs = time.perf_counter() - t0
    print(f"usearch {usearch.__version__} build (2 threads): {secs:.1f} s, {n / secs:.0f} inserts/s")
    for ef in (16, 32, 64, 128, 256):
        index.expansion_search = ef
        lat, found = [], []
        for q in queries:
            t0 = time.perf_counter_ns()
            m = index.search(q, K, threads=1)
            lat.append((time.perf_counter_ns() - t0) / 1000.0)
            found.append(m.keys)
        report("usearch", n, ef, np.array(lat), found, truth)


def main():
    d = sys.argv[1]
    for n in map(int, sys.argv[2:]):
        data, queries, truth = load(d, n)
        print(f"\n## peers, {n} × {DIM}")
        for bench in (bench_hnswlib, bench_usearch):
            try:
                bench(data, queries, truth)
            except ImportError as e:
                print(f"{bench.__name__}: not installed ({e})")


if __name__ == "__main__":
    main()

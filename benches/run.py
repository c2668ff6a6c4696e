#!/usr/bin/env python3
"""Mneme's end-to-end benchmarks against peers — one command, tables and plots.

    python3 benches/run.py            # full run: writes docs/bench/ and BENCHMARKS.md
    python3 benches/run.py --smoke    # 10k vectors, seconds; writes target/bench-results/smoke/

What it runs, all on this machine and on the same vectors:
1. the index benchmark (`cargo bench -p mneme-index --bench index`): Mneme's native graph
   and hnsw_rs, swept over ef; hnswlib and usearch on the same vectors and queries;
2. the real `mneme` server over gRPC (`cargo bench --bench load`): one big agent per
   size, Recall-only with 1…16 concurrent clients and the mixed workload; many small
   agents; recall@10 against exact ground truth, server RSS, bytes on disk, restart;
3. Chroma and SQLite + numpy through their Python APIs on the same vectors and agents.

Each run records the machine (cores, load average) and refuses to record results when the
machine is busy (another process using more than a fifth of the CPU), unless --force, in
which case nothing is written into docs/. Speed is reported, never asserted; the smoke mode
only checks that every part ran and produced sane fields (so the harness cannot rot).
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benches"))
import peers  # noqa: E402

DIM = 384


def cpu_busy_fraction(seconds=3.0):
    """Share of all CPU time used by anything during `seconds` (from /proc/stat)."""

    def snap():
        with open("/proc/stat") as f:
            parts = [int(x) for x in f.readline().split()[1:]]
        idle = parts[3] + parts[4]
        return sum(parts), idle

    t1, i1 = snap()
    time.sleep(seconds)
    t2, i2 = snap()
    return 1.0 - (i2 - i1) / max(1, t2 - t1)


def machine():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    return {
        "cores": os.cpu_count(),
        "cpu": model,
        "loadavg": " ".join(load),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def sh(cmd, env=None, log=None):
    print("+", " ".join(cmd), flush=True)
    full_env = dict(os.environ, **(env or {}))
    out = subprocess.run(cmd, cwd=ROOT, env=full_env, capture_output=True, text=True)
    if log:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)} {env}\n{out.stdout}\n{out.stderr}\n")
    if out.returncode != 0:
        sys.stderr.write(out.stdout[-4000:] + out.stderr[-4000:])
        raise SystemExit(f"command failed ({out.returncode}): {' '.join(cmd)}")
    return out.stdout


def index_bench(sizes, out_dir, log, graphs="native,hnsw-rs", reuse=False):
    path = os.path.join(out_dir, f"index-{graphs}.json")
    if reuse and os.path.exists(path):
        print(f"reusing {path}")
        with open(path) as f:
            return json.load(f)
    sh(
        ["cargo", "bench", "-q", "-p", "mneme-index", "--bench", "index"],
        {"MNEME_BENCH_SIZES": ",".join(map(str, sizes)), "MNEME_BENCH_GRAPHS": graphs, "MNEME_BENCH_JSON": path,
         "MNEME_BENCH_DUMP": os.path.join(out_dir, "vectors")},
        log,
    )
    with open(path) as f:
        return json.load(f)


def load_bench(n, out_dir, log, agents=1, clients="1", seconds=5, mix="recall", dump=True, server_args="", reuse=False):
    path = os.path.join(out_dir, f"load-{n}-{agents}-{mix}.json")
    if reuse and os.path.exists(path):
        print(f"reusing {path}")
        with open(path) as f:
            return json.load(f)
    env = {
        "MNEME_LOAD_MEMORIES": str(n),
        "MNEME_LOAD_AGENTS": str(agents),
        "MNEME_LOAD_CLIENTS": clients,
        "MNEME_LOAD_SECONDS": str(seconds),
        "MNEME_LOAD_MIX": mix,
        "MNEME_LOAD_OUT": path,
        "MNEME_LOAD_SERVER_ARGS": server_args,
    }
    if dump:
        env["MNEME_LOAD_DUMP"] = os.path.join(out_dir, "vectors")
    sh(["cargo", "bench", "-q", "--bench", "load"], env, log)
    with open(path) as f:
        return json.load(f)


def run_peers(out_dir, n, reuse, agents=1, only=(), n_queries=1_000):
    """peers.run, its results kept in out_dir (reused with --reuse)."""
    path = os.path.join(out_dir, f"peers-{n}-{agents}-{'-'.join(only)}.json")
    if reuse and os.path.exists(path):
        print(f"reusing {path}")
        with open(path) as f:
            return json.load(f)
    print(f"+ peers {only} at {n} ({agents} agents)", flush=True)
    results = peers.run(os.path.join(out_dir, "vectors"), n, agents=agents, only=only, n_queries=n_queries)
    with open(path, "w") as f:
        json.dump(results, f)
    return results


def equal_recall_point(sweep, target):
    """The cheapest sweep point reaching `target` recall (or the best one, flagged)."""
    ok = [p for p in sweep if p["recall_at_10"] >= target]
    if ok:
        return min(ok, key=lambda p: p["p99_ms"]), True
    return max(sweep, key=lambda p: p["recall_at_10"]), False


def fmt_ms(x):
    return f"{x:.3f}"


def render(results):
    """Markdown tables from the results."""
    m = results["machine"]
    lines = [
        f"Machine: {m['cores']} cores ({m['cpu']}), load average {m['loadavg']} at start, {m['date']}.",
        f"Command: `{results['command']}`.",
        "",
    ]
    # 1. Index level, equal recall.
    lines += ["### Index level: p99 per query at equal recall (one core, in-process)", "",
              "Each system at the cheapest ef that reaches the target recall. queries/s is measured: calls over the "
              "wall time of one thread's query loop. hnswlib and usearch are called from Python: each call carries "
              "the binding's cost (the time of the same call on a one-vector index, listed below the table), so "
              "margins smaller than that are not claimed.", ""]
    lines += ["| data | target recall@10 | system | ef | recall@10 | p50 ms | p99 ms | queries/s (one core) | build inserts/s |",
              "|---|---|---|---|---|---|---|---|---|"]
    for size, block in results["index"].items():
        for target in (0.95, 0.99):
            for system, sweep, build, *_ in block["systems"]:
                p, reached = equal_recall_point(sweep, target)
                flag = "" if reached else " (target not reached)"
                lines.append(
                    f"| {size} | {target} | {system} | {p['ef']} | {p['recall_at_10']:.4f}{flag} | "
                    f"{fmt_ms(p['p50_ms'])} | {fmt_ms(p['p99_ms'])} | {p['calls_per_s']:.0f} | "
                    f"{build:.0f} |"
                )
    lines.append("")
    overheads = {x[0]: x[3] for block in results["index"].values() for x in block["systems"]
                 if len(x) > 3 and x[3]}
    if overheads:
        lines.append("Python call cost per query (one-vector index): " +
                     ", ".join(f"{s} {o:.1f} µs" for s, o in sorted(overheads.items())) + ".")
        lines.append("")
    # 2. End to end.
    lines += ["### End to end: one client, top-10 Recall per call", "",
              "Mneme over gRPC (real server, durable writes); Chroma and SQLite + numpy through their Python APIs "
              "in-process (no network hop). Each system at its default settings: recall differs (see its column), "
              "so this is not an equal-recall comparison; calls/s is measured over the query loop.", "",
              "| memories | agents | system | recall@10 | p50 ms | p99 ms | calls/s | inserts/s (durable batches) | disk MiB | RSS MiB |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for row in results["e2e"]:
        lines.append(
            f"| {row['memories']} | {row['agents']} | {row['system']} | {row['recall_at_10']:.4f} | "
            f"{fmt_ms(row['p50_ms'])} | {fmt_ms(row['p99_ms'])} | {row.get('calls_per_s', 0):.0f} | {row['inserts_per_s']:.0f} | "
            f"{row['disk_bytes'] / 2**20:.0f} | " + (f"{row['rss_mib']:.0f} |" if "rss_mib" in row else "— |")
        )
    lines.append("")
    wins = peer_wins(results["e2e"])
    lines += ["Where a peer wins:", ""] + [f"- {w}" for w in wins or ["nowhere in this run."]] + [""]
    lines += ["### Mneme's server path", "",
              "The transport is grpc.health.v1 Check on the same connection (tonic alone, none of Mneme's "
              "handler code). The floor is a Recall for an agent that holds nothing (request, authentication, admission, "
              "response: no search). After load: Recall from the moment a bulk load (batches of 1,000) was "
              "acknowledged, for 3 s, before anything settles; the index lag is the most vectors seen outside "
              "the graph meanwhile.", "",
              "| memories | agents | transport p50 / p99 ms | floor p50 / p99 ms | Stats p50 / p99 ms | Recall after load p50 / p99 ms (index lag) | Recall settled p50 / p99 ms |",
              "|---|---|---|---|---|---|---|"]
    for load in results["loads"]:
        if "empty_agent_recall" not in load:
            continue
        fl, st, al, s = load["empty_agent_recall"], load["stats_latency"], load["recall_after_load"], load["single_client_recall"]
        hc = load.get("health_check", {"p50_ms": float("nan"), "p99_ms": float("nan")})
        lines.append(
            f"| {load['memories']} | {load['agents']} | {fmt_ms(hc['p50_ms'])} / {fmt_ms(hc['p99_ms'])} | "
            f"{fmt_ms(fl['p50_ms'])} / {fmt_ms(fl['p99_ms'])} | "
            f"{fmt_ms(st['p50_ms'])} / {fmt_ms(st['p99_ms'])} | {fmt_ms(al['p50_ms'])} / {fmt_ms(al['p99_ms'])} "
            f"({al['index_lag_max']}) | {fmt_ms(s['p50_ms'])} / {fmt_ms(s['p99_ms'])} |"
        )
    lines.append("")
    # 3. Throughput vs clients.
    lines += ["### Mneme throughput vs concurrent clients (Recall only, gRPC)", "",
              "| memories | clients | calls/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
    for n, runs in results["clients"].items():
        for r in runs:
            op = r["ops"]["Recall"]
            lines.append(f"| {n} | {r['clients']} | {r['calls_per_s']:.0f} | {fmt_ms(op['p50_ms'])} | {fmt_ms(op['p99_ms'])} |")
    lines.append("")
    # 4. Mixed workload and restart.
    lines += ["### Mneme mixed workload (70 % Recall, 10 % InjectContext, 15 % Remember, 5 % RememberBatch of 100)", "",
              "| memories | clients | op | calls/s | p50 ms | p95 ms | p99 ms | max ms |", "|---|---|---|---|---|---|---|---|"]
    for n, load in results["mixed"].items():
        for r in load["runs"]:
            for op, s in r["ops"].items():
                lines.append(
                    f"| {n} | {r['clients']} | {op} | {s['calls_per_s']:.0f} | {fmt_ms(s['p50_ms'])} | "
                    f"{fmt_ms(s['p95_ms'])} | {fmt_ms(s['p99_ms'])} | {fmt_ms(s['max_ms'])} |"
                )
    lines.append("")
    lines += ["### Mneme restart (seconds)", "", "| memories | agents | cold start | after SIGKILL: serving / settled | after SIGTERM: serving / settled |",
              "|---|---|---|---|---|"]
    for load in results["loads"]:
        rs = load["restart"]
        lines.append(
            f"| {load['memories']} | {load['agents']} | {load['cold_start_s']:.2f} | "
            f"{rs['after_sigkill']['to_serving_s']:.2f} / {rs['after_sigkill']['to_settled_s']:.2f} | "
            f"{rs['after_sigterm']['to_serving_s']:.2f} / {rs['after_sigterm']['to_settled_s']:.2f} |"
        )
    lines.append("")
    # 5. Goals.
    lines += ["### Against the goals", ""]
    for goal in results["goals"]:
        lines.append(f"- {goal}")
    lines.append("")
    return "\n".join(lines)


def plots(results, out_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    # Recall vs p99, index level, largest size measured.
    for size, block in results["index"].items():
        fig, ax = plt.subplots(figsize=(6.4, 4.2))
        for system, sweep, *_ in block["systems"]:
            ax.plot([p["recall_at_10"] for p in sweep], [p["p99_ms"] for p in sweep], marker="o", ms=3, label=system)
        ax.set_xlabel("recall@10")
        ax.set_ylabel("p99 latency per query (ms, one core)")
        ax.set_yscale("log")
        ax.set_title(f"Recall vs p99, {size}")
        ax.grid(alpha=0.3)
        ax.legend()
        name = f"recall-vs-p99-{size.split(' ')[0].replace(',', '')}.svg"
        fig.tight_layout()
        fig.savefig(os.path.join(out_dir, name))
        plt.close(fig)
        written.append(name)
    # Throughput vs clients.
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for n, runs in results["clients"].items():
        ax.plot([r["clients"] for r in runs], [r["calls_per_s"] for r in runs], marker="o", label=f"{n} memories")
    ax.set_xlabel("concurrent gRPC clients")
    ax.set_ylabel("Recall calls/s")
    ax.set_xscale("log", base=2)
    ax.set_title(f"Mneme throughput vs clients ({results['machine']['cores']} cores)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "throughput-vs-clients.svg"))
    plt.close(fig)
    written.append("throughput-vs-clients.svg")
    # Latency vs collection size, one big agent.
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    by_system = {}
    for row in results["e2e"]:
        if row["agents"] == 1:
            by_system.setdefault(row["system"], []).append((row["memories"], row["p99_ms"]))
    for system, pts in by_system.items():
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=system)
    ax.set_xlabel("memories in the agent")
    ax.set_ylabel("p99 Recall latency (ms)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_title("Latency vs collection size (one client, top-10)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "latency-vs-size.svg"))
    plt.close(fig)
    written.append("latency-vs-size.svg")
    return written


def peer_wins(e2e):
    """Where a peer's p50 or p99 beats Mneme's on the same data (one line each)."""
    out = []
    mine = {(r["memories"], r["agents"]): r for r in e2e if r["system"] == "mneme (gRPC)"}
    for r in e2e:
        m = mine.get((r["memories"], r["agents"]))
        if m is None or r is m:
            continue
        for q in ("p50_ms", "p99_ms"):
            if r[q] < m[q]:
                out.append(
                    f"{r['memories']:,} memories, {r['agents']} agent(s): {r['system']} {q[:3]} "
                    f"{r[q]:.3f} ms against Mneme's {m[q]:.3f} ms (recall@10 {r['recall_at_10']:.4f} "
                    f"against {m['recall_at_10']:.4f}; in-process, no network hop)."
                )
    return out


def mneme_e2e_row(load):
    s = load["single_client_recall"]
    return {
        "system": "mneme (gRPC)",
        "memories": load["memories"],
        "agents": load["agents"],
        "recall_at_10": load["recall_at_10"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "calls_per_s": s["calls_per_s"],
        "inserts_per_s": load["load_memories_per_s"],
        "disk_bytes": load["disk_bytes"],
        "rss_mib": load["server_rss_mib_loaded"],
    }


def goals(results):
    out = []
    big = {r["memories"]: r for r in results["e2e"] if r["system"] == "mneme (gRPC)" and r["agents"] == 1}
    for n, limit in ((100_000, 0.5), (1_000_000, 1.0)):
        r = big.get(n)
        if r is None:
            out.append(f"gRPC Recall p99 ≤ {limit} ms at {n:,}: not measured in this run.")
            continue
        ok = r["p99_ms"] <= limit and r["recall_at_10"] >= 0.95
        out.append(
            f"gRPC Recall p99 ≤ {limit} ms at {n:,} with recall@10 ≥ 0.95: {'met' if ok else 'NOT met'} "
            f"(p99 {r['p99_ms']:.3f} ms, recall {r['recall_at_10']:.4f})."
        )
    for load in results["loads"]:
        if "recall_after_load" not in load:
            continue
        n, agents = load["memories"], load["agents"]
        after, settled = load["recall_after_load"]["p99_ms"], load["single_client_recall"]["p99_ms"]
        out.append(
            f"Recall p99 right after a bulk load ≤ 2× settled ({n:,} memories, {agents} agent(s)): "
            f"{'met' if after <= 2 * settled else 'NOT met'} ({after:.3f} ms against {settled:.3f} ms settled)."
        )
        stats = load["stats_latency"]["p99_ms"]
        out.append(
            f"Stats of a {n // agents:,}-memory agent ≤ 0.5 ms: {'met' if stats <= 0.5 else 'NOT met'} (p99 {stats:.3f} ms over gRPC)."
        )
    runs = results["clients"].get("100000", [])
    sixteen = [r for r in runs if r["clients"] == 16]
    if sixteen:
        rate = sixteen[0]["calls_per_s"]
        out.append(
            f"Recall calls/s with 16 clients at 100,000 ≥ 2× 4,962 (issue #17's baseline): "
            f"{'met' if rate >= 2 * 4_962 else 'NOT met'} ({rate:,.0f}/s; client and server share the 2 cores)."
        )
    fastest = max((l["load_memories_per_s"] for l in results["loads"]), default=0)
    out.append(f"Durable remember ≥ 20k/s batched: {'met' if fastest >= 20_000 else 'NOT met'} ({fastest:,.0f}/s over gRPC, batches of 1,000).")
    small = [r for r in results["e2e"] if r["system"] == "mneme (gRPC)" and r["agents"] > 1]
    for r in small:
        out.append(
            f"Small-agent exact recall p99 ≤ 0.3 ms ({r['agents']} agents × {r['memories'] // r['agents']}): "
            f"{'met' if r['p99_ms'] <= 0.3 else 'NOT met'} (p99 {r['p99_ms']:.3f} ms over gRPC, recall {r['recall_at_10']:.4f})."
        )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="10k vectors, a few seconds per part; results stay in target/")
    ap.add_argument("--sizes", default="10000,100000,1000000", help="one-agent sizes (full run)")
    ap.add_argument("--agents", default="1000x1000", help="many small agents: AxN (full run)")
    ap.add_argument("--reuse-index", action="store_true", help="reuse this machine's last index-level results (and dumped vectors)")
    ap.add_argument("--rerender", action="store_true", help="only redo the tables, plots and BENCHMARKS.md section from the last full results.json")
    ap.add_argument("--reuse", action="store_true", help="reuse every part already measured in target/bench-results (resume an interrupted run)")
    ap.add_argument("--force", action="store_true", help="run on a busy machine (results are not written into docs/)")
    args = ap.parse_args()

    if args.rerender:
        out_dir = os.path.join(ROOT, "target", "bench-results", "full")
        with open(os.path.join(out_dir, "results.json")) as f:
            results = json.load(f)
        publish(results, out_dir, record=True)
        return
    smoke = args.smoke
    sizes = [10_000] if smoke else [int(s) for s in args.sizes.split(",")]
    n_agents, per_agent = (10, 1_000) if smoke else map(int, args.agents.split("x"))
    seconds = 2 if smoke else 8
    clients = "1,4" if smoke else "1,2,4,8,16"
    n_queries = 200 if smoke else 1_000
    record = not smoke and not args.force
    out_dir = os.path.join(ROOT, "target", "bench-results", "smoke" if smoke else "full")
    os.makedirs(out_dir, exist_ok=True)
    log = os.path.join(out_dir, "log.txt")
    open(log, "w").close()

    m = machine()
    busy = cpu_busy_fraction()
    m["busy_fraction_before"] = round(busy, 3)
    print(f"machine: {m}")
    if busy > 0.2 and not smoke:
        msg = f"the machine is busy ({busy:.0%} of the CPU in use before starting)"
        if not args.force:
            raise SystemExit(f"refusing to record: {msg}; wait, or pass --force (results then stay out of docs/)")
        print(f"warning: {msg}; results will not be recorded in docs/")
        record = False

    t_start = time.time()
    results = {"machine": m, "command": "python3 benches/run.py" + (" --smoke" if smoke else ""), "index": {}, "e2e": [],
               "clients": {}, "mixed": {}, "loads": []}
    # 1. Index level with raw-index peers.
    # hnsw_rs builds ~1,700 points/s: above 100k it would take most of the run.
    reuse = args.reuse
    rows = index_bench(sizes, out_dir, log, graphs="native", reuse=reuse or args.reuse_index)
    small = [n for n in sizes if n <= 100_000]
    if small:
        rows += index_bench(small, out_dir, log, graphs="hnsw-rs", reuse=reuse or args.reuse_index)
    for n in sizes:
        systems = []
        for graph in ("native", "hnsw-rs"):
            sweep = [r for r in rows if r["kind"] == "sweep" and r["graph"] == graph and r["n"] == n]
            build = [r for r in rows if r["kind"] == "build" and r["graph"] == graph and r["n"] == n]
            if sweep and build:
                systems.append((f"mneme {graph}", sweep, build[0]["inserts_per_s"], None))
        for peer in run_peers(out_dir, n, reuse, only=("hnswlib", "usearch"), n_queries=n_queries):
            systems.append((peer["system"], peer["sweep"], peer["inserts_per_s"], peer.get("python_call_us")))
        results["index"][f"{n:,} × {DIM}"] = {"systems": systems}
    # 2. Mneme end to end, one big agent per size, then the product peers.
    for n in sizes:
        load = load_bench(n, out_dir, log, clients=clients, seconds=seconds, mix="recall", reuse=reuse)
        results["loads"].append(load)
        results["clients"][str(n)] = load["runs"]
        results["e2e"].append(mneme_e2e_row(load))
        mixed = load_bench(n, out_dir, log, clients="8", seconds=seconds, mix="mixed", dump=False, reuse=reuse)
        results["mixed"][str(n)] = mixed
        for peer in run_peers(out_dir, n, reuse, only=("chroma", "sqlite"), n_queries=n_queries):
            results["e2e"].append(peer)
    # 3. Many small agents.
    n = n_agents * per_agent
    load = load_bench(n, out_dir, log, agents=n_agents, clients="8", seconds=seconds, mix="recall", reuse=reuse)
    results["loads"].append(load)
    results["e2e"].append(mneme_e2e_row(load))
    for peer in run_peers(out_dir, n, reuse, agents=n_agents, only=("chroma", "sqlite"), n_queries=n_queries):
        results["e2e"].append(peer)
    # 4. Recall quality on the evaluation sets built from packaged public data (the
    # release binary the load benchmark built; MiniLM needs `--features minilm`, run
    # benches/recall_quality.py --minilm DIR for it).
    quality_path = os.path.join(out_dir, "recall-quality.json")
    # Without MiniLM even when MNEME_MINILM_DIR is set (CI sets it for the tests): the
    # release binary the load benchmark built has no `minilm` feature.
    quality = [sys.executable, "benches/recall_quality.py", "--out", quality_path, "--minilm", ""]
    if smoke:
        quality += ["--sets", "chatterbot", "--max-questions", "40"]
    sh(quality, None, log)
    with open(quality_path) as f:
        results["recall_quality"] = json.load(f)
    results["goals"] = goals(results)
    results["seconds"] = time.time() - t_start

    # Sanity (the smoke test's assertions): every part produced plausible numbers.
    for row in results["e2e"]:
        assert 0.0 <= row["recall_at_10"] <= 1.0 and row["p99_ms"] > 0, row
    for row in results["e2e"]:
        if row["system"].startswith("mneme"):
            assert row["recall_at_10"] >= 0.9, f"Mneme recall collapsed: {row}"

    for row in results["recall_quality"]:
        for name, r in row["rankings"].items():
            assert 0.0 <= r["r10"] <= 1.0, (name, r)
        assert row["rankings"]["Mneme default"]["r10"] > 0.0, row

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f, indent=1)
    publish(results, out_dir, record)


def publish(results, out_dir, record):
    """Markdown and plots next to the results; with `record`, into docs/ and BENCHMARKS.md."""
    md = render(results)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(md)
    written = plots(results, out_dir)
    print(md)
    print(f"took {results['seconds']:.0f} s; results in {out_dir}")
    if record:
        docs = os.path.join(ROOT, "docs", "bench")
        os.makedirs(docs, exist_ok=True)
        for name in ["results.json", "results.md", *written]:
            with open(os.path.join(out_dir, name), "rb") as src, open(os.path.join(docs, name), "wb") as dst:
                dst.write(src.read())
        bench_md = os.path.join(ROOT, "BENCHMARKS.md")
        with open(bench_md) as f:
            text = f.read()
        begin, end = "<!-- e2e:begin -->", "<!-- e2e:end -->"
        images = "\n".join(f"![{w}](docs/bench/{w})" for w in written)
        section = f"{begin}\n{md}\n{images}\n{end}"
        if begin in text and end in text:
            text = text[: text.index(begin)] + section + text[text.index(end) + len(end):]
        else:
            text += f"\n## End-to-end against peers (`python3 benches/run.py`)\n\n{section}\n"
        with open(bench_md, "w") as f:
            f.write(text)
        print("recorded in docs/bench/ and BENCHMARKS.md")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""Recall quality of a real `mneme serve`, on evaluation sets built from public data that
packages here ship (never a hand-written set):

- manpages: Debian's `manpages-dev` package (the Linux man-pages project, sections 2 and 3).
  Each page's first DESCRIPTION paragraphs (up to 3) are memories; the page's one-line NAME
  summary ("open and possibly create a file") is the question; its paragraphs are the
  evidence. Pages with an already-seen summary or paragraph are skipped.
- chatterbot: the English conversations of PyPI's `chatterbot-corpus` 1.3.3 (BSD-3). Every
  reply is a memory; each conversation that opens with a question is a question whose
  evidence is that conversation's replies.

Questions alternate between a fit half (even positions; calibration is fitted on it) and a
held-out half (odd; every number reported is on it).

Rankings compared, all on the same memories: BM25 alone (computed here, in Python), the
embedder's cosine alone (Mneme with lexical_weight 0: fresh memories, so confidence orders as
cosine), their reciprocal-rank fusion (k = 60), and Mneme's hybrid confidence at several
lexical weights. Then: calibration (reliability curve, expected calibration error, and how
well confidence vs raw cosine separates evidence from the rest within the top 10, as ROC AUC),
and feedback replay (the questions asked in order; the evidence in each top 10 is marked used;
R@10 must not drop below the same ranking without frequency).

    python3 benches/recall_quality.py [--binary target/release/mneme] [--minilm DIR] [--fit]

Writes target/bench-results/recall-quality.json and prints markdown tables.
"""

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "target" / "eval-data"
TOP = 10
WEIGHTS = [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0]
# The default lexical weight of each embedder family (mneme_engine::scoring_of).
FAMILY_WEIGHT = {"built-in static (default, centered)": 1.0,
                 "built-in static as distributed": 1.0, "all-MiniLM-L6-v2": 0.5}


# ---------------------------------------------------------------------------------- data

def roff_text(s):
    s = re.sub(r"\\f[BIRPC]|\\f\(..|\\f\[[^]]*\]", "", s)
    for a, b in [("\\-", "-"), ("\\(em", "—"), ("\\(en", "–"), ("\\ ", " "), ("\\&", ""),
                 ("\\e", "\\"), ("\\(aq", "'"), ("\\(dq", '"'), ("\\(lq", '"'), ("\\(rq", '"')]:
        s = s.replace(a, b)
    return re.sub(r"\\\*\(..|\\\*.|\\\(..|\\.", "", s)


def roff_args(line):
    return [a or b for a, b in re.findall(r'"([^"]*)"|(\S+)', line)][1:]


def man_page(path):
    try:
        text = gzip.open(path, "rt", errors="replace").read()
    except OSError:
        return None
    section, summary, paras, cur = None, None, [], []
    breaks = (".PP", ".P", ".LP", ".TP", ".IP", ".SS", ".in", ".RS", ".RE", ".nf", ".fi", ".EX", ".EE")
    for line in text.splitlines():
        if line.startswith(".SH"):
            if section == "DESCRIPTION" and cur:
                paras.append(" ".join(cur))
                cur = []
            section = " ".join(roff_args(line)).strip().upper()
            continue
        if section == "NAME" and summary is None and not line.startswith(".") and "\\-" in line:
            summary = roff_text(line.split("\\-", 1)[1]).strip()
        if section != "DESCRIPTION":
            continue
        if line.startswith(breaks):
            if cur:
                paras.append(" ".join(cur))
                cur = []
        elif re.match(r"\.(BR|RB|IR|RI|BI|IB)\b", line):
            cur.append("".join(roff_args(line)))
        elif re.match(r"\.(B|I)\b", line):
            cur.append(" ".join(roff_args(line)))
        elif not line.startswith((".", "'")):
            cur.append(line)
    if cur and section == "DESCRIPTION":
        paras.append(" ".join(cur))
    paras = [re.sub(r"\s+", " ", roff_text(p)).strip() for p in paras]
    paras = [p[:600] for p in paras if len(p.split()) >= 6][:3]
    if not summary or not paras:
        return None
    return summary, paras


def manpages_set():
    root = DATA / "manpages-dev"
    if not root.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run(["apt-get", "download", "manpages-dev"], cwd=DATA, check=True,
                       stdout=subprocess.DEVNULL)
        deb = sorted(DATA.glob("manpages-dev_*.deb"))[-1]
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    debs = sorted(DATA.glob("manpages-dev_*.deb"))
    memories, questions, seen_q, seen_p = [], [], set(), set()
    for path in sorted(glob.glob(str(root / "usr/share/man/man[23]/*.gz"))):
        page = man_page(path)
        if page is None:
            continue
        summary, paras = page
        paras = [p for p in paras if p not in seen_p]
        if summary in seen_q or not paras:
            continue
        seen_q.add(summary)
        seen_p.update(paras)
        ids = list(range(len(memories), len(memories) + len(paras)))
        memories += paras
        questions.append((summary, ids))
    return {"name": "manpages", "source": debs[-1].name if debs else "manpages-dev",
            "memories": memories, "questions": questions}


def chatterbot_set():
    import yaml

    wheel = DATA / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
    if not wheel.exists():
        DATA.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                        "chatterbot-corpus==1.3.3", "-d", str(DATA)], check=True)
    memories, questions, index, seen_q = [], [], {}, set()
    with zipfile.ZipFile(wheel) as z:
        names = sorted(n for n in z.namelist() if "/data/english/" in n and n.endswith(".yml"))
        for name in names:
            doc = yaml.safe_load(z.read(name)) or {}
            for conv in doc.get("conversations") or []:
                turns = [str(t).strip() for t in conv if t is not None and str(t).strip()]
                if len(turns) < 2:
                    continue
                ids = []
                for reply in turns[1:]:
                    if reply not in index:
                        index[reply] = len(memories)
                        memories.append(reply)
                    ids.append(index[reply])
                q = turns[0]
                if q.endswith("?") and q.lower() not in seen_q:
                    seen_q.add(q.lower())
                    questions.append((q, sorted(set(ids))))
    return {"name": "chatterbot", "source": "chatterbot-corpus 1.3.3 (PyPI), English",
            "memories": memories, "questions": questions}


# ------------------------------------------------------------------------------- BM25

STOP = set("a about am an and any are as at be been but by can could did do does for from had "
           "has have he her him his how i if in into is it its me my no not of on or our she "
           "should so such than that the their them then there these they this to us was we "
           "were what when where which who why will with would you your".split())


def words(text):
    return [w for w in re.findall(r"\w+", text.lower()) if w not in STOP]


class Bm25:
    def __init__(self, docs, k1=1.2, b=0.75):
        self.docs = [collections.Counter(words(d)) for d in docs]
        self.lens = [sum(c.values()) for c in self.docs]
        self.avg = max(1e-9, sum(self.lens) / max(1, len(self.lens)))
        self.df = collections.Counter(t for c in self.docs for t in c)
        self.post = collections.defaultdict(list)
        for i, c in enumerate(self.docs):
            for t, n in c.items():
                self.post[t].append((i, n))
        self.k1, self.b, self.n = k1, b, len(docs)

    def top(self, query, k):
        scores = collections.defaultdict(float)
        for t in set(words(query)):
            if t not in self.df:
                continue
            idf = math.log(1 + (self.n - self.df[t] + 0.5) / (self.df[t] + 0.5))
            for i, tf in self.post[t]:
                norm = 1 - self.b + self.b * self.lens[i] / self.avg
                scores[i] += idf * tf * (self.k1 + 1) / (tf + self.k1 * norm)
        return [i for i, _ in sorted(scores.items(), key=lambda x: (-x[1], x[0]))[:k]]


# ------------------------------------------------------------------------------- server

class Client:
    def __init__(self, address):
        import grpc
        from mneme_client._generated import mneme_pb2, mneme_pb2_grpc

        self.pb = mneme_pb2
        self.channel = grpc.insecure_channel(address)
        self.memory = mneme_pb2_grpc.MemoryServiceStub(self.channel)
        self.admin = mneme_pb2_grpc.AdminServiceStub(self.channel)

    def load(self, agent, texts):
        """Stores `texts`; returns their ids in order (None for a text the embedder gives
        no vector, e.g. only emoji: the server refuses it, the set drops it)."""
        import grpc

        pb, ids = self.pb, []
        for start in range(0, len(texts), 100):
            chunk = list(range(start, min(start + 100, len(texts))))
            while True:
                items = [pb.RememberRequest(content=texts[i], memory_type=pb.MEMORY_TYPE_SEMANTIC)
                         for i in chunk]
                try:
                    r = self.memory.RememberBatch(pb.RememberBatchRequest(agent_id=agent, items=items))
                    break
                except grpc.RpcError as e:
                    bad = re.match(r"items\[(\d+)\]\.vector: vector is all zeros", e.details() or "")
                    if not bad:
                        raise
                    chunk.pop(int(bad.group(1)))
            got = dict(zip(chunk, (x.memory.id for x in r.results)))
            ids += [got.get(i) for i in range(start, min(start + 100, len(texts)))]
        return ids

    def configure(self, agent, lexical_weight=None, embedder=""):
        """Sets the embedder and/or the lexical weight (other scoring at the defaults)."""
        pb = self.pb
        request = pb.ConfigureAgentRequest(agent_id=agent, embedder=embedder)
        if lexical_weight is not None:
            request.scoring.CopyFrom(pb.ScoringParameters(
                frequency_saturation=5.0, access_half_life_days=30.0, recency_weight=0.5,
                frequency_weight=0.2, importance_weight=0.3, context_shift=0.1,
                lexical_weight=lexical_weight))
        self.admin.ConfigureAgent(request, timeout=600)

    def recall(self, agent, query, k=TOP, mark_used=False):
        r = self.memory.Recall(self.pb.RecallRequest(agent_id=agent, query=query, top_k=k,
                                                     mark_used=mark_used))
        return [(m.memory.id, m.similarity, m.confidence, m.scores.lexical) for m in r.memories]

    def mark_used(self, agent, ids):
        if ids:
            self.memory.MarkUsed(self.pb.MarkUsedRequest(agent_id=agent, ids=ids))


# ------------------------------------------------------------------------------ metrics

def recall_at(ranked, relevant, k=TOP):
    return len(set(ranked[:k]) & relevant) / min(len(relevant), k)


def summarize(rankings, rel):
    r10 = [recall_at(r, s) for r, s in zip(rankings, rel)]
    hit1 = [bool(r) and r[0] in s for r, s in zip(rankings, rel)]
    return {"r10": round(float(np.mean(r10)), 4), "hit1": round(float(np.mean(hit1)), 4)}


def rrf(*lists, k=60):
    score = collections.defaultdict(float)
    for lst in lists:
        for rank, x in enumerate(lst):
            score[x] += 1.0 / (k + rank + 1)
    return [x for x, _ in sorted(score.items(), key=lambda kv: -kv[1])]


def ece(conf, label, bins=10):
    conf, label = np.asarray(conf), np.asarray(label, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    total, curve = 0.0, []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf >= lo) & ((conf < hi) if hi < 1 else (conf <= hi))
        if m.sum() == 0:
            continue
        gap = abs(conf[m].mean() - label[m].mean())
        total += m.sum() / len(conf) * gap
        curve.append({"bin": f"{lo:.1f}–{hi:.1f}", "n": int(m.sum()),
                      "confidence": round(float(conf[m].mean()), 3),
                      "relevant": round(float(label[m].mean()), 3)})
    return round(float(total), 4), curve


def auc(score, label):
    score, label = np.asarray(score, dtype=float), np.asarray(label, dtype=bool)
    pos, neg = score[label], score[~label]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    return round(float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg))), 4)


def auc_difference_ci(rankings, rel, rounds=2000, seed=7):
    """95 % interval of AUC(confidence) − AUC(cosine) over the top-10 rows, by a paired
    bootstrap over questions (a question's rows stay together)."""
    per_q = [([h[2] for h in r], [h[1] for h in r], [h[0] in s for h in r])
             for r, s in zip(rankings, rel)]
    rng = np.random.default_rng(seed)
    diffs = []
    for _ in range(rounds):
        pick = rng.integers(0, len(per_q), len(per_q))
        conf = [c for i in pick for c in per_q[i][0]]
        cos = [c for i in pick for c in per_q[i][1]]
        lab = [y for i in pick for y in per_q[i][2]]
        d = auc(conf, lab) - auc(cos, lab)
        if d == d:
            diffs.append(d)
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return [round(float(lo), 4), round(float(hi), 4)]


def fit_logistic(x, y):
    """Unweighted logistic regression of y on x by Newton's method: (center, slope)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    a, b = 1.0, 0.0
    for _ in range(100):
        p = 1 / (1 + np.exp(-(a * x + b)))
        ga, gb = ((p - y) * x).sum() + 1e-4 * a, (p - y).sum()
        w = p * (1 - p)
        haa, hab, hbb = (w * x * x).sum() + 1e-4, (w * x).sum(), w.sum()
        det = haa * hbb - hab * hab
        da, db = (hbb * ga - hab * gb) / det, (haa * gb - hab * ga) / det
        a, b = a - da, b - db
        if abs(da) < 1e-9 and abs(db) < 1e-9:
            break
    return -b / a, a


# --------------------------------------------------------------------------------- runs

def evaluate(client, data, embedder_label, embedder_id, log):
    name = data["name"]
    agent = f"eval-{name}"
    ids = client.load(agent, data["memories"])
    if embedder_id:
        client.configure(agent, embedder=embedder_id)
    questions = data["questions"]
    held = [(q, {ids[i] for i in rel} - {None}) for j, (q, rel) in enumerate(questions) if j % 2 == 1]
    fit = [(q, {ids[i] for i in rel} - {None}) for j, (q, rel) in enumerate(questions) if j % 2 == 0]
    held = [(q, s) for q, s in held if s]
    fit = [(q, s) for q, s in fit if s]
    rel = [s for _, s in held]
    bm25 = Bm25(data["memories"])
    bm25_rank = [[ids[i] for i in bm25.top(q, 60) if ids[i] is not None][:50] for q, _ in held]
    out = {"set": name, "embedder": embedder_label, "memories": len(set(ids) - {None}),
           "questions": len(held), "rankings": {}}
    out["rankings"]["BM25 alone"] = summarize(bm25_rank, rel)
    by_weight = {}
    for w in WEIGHTS:
        client.configure(agent, lexical_weight=w)
        k = 50 if w == 0.0 else TOP
        by_weight[w] = [client.recall(agent, q, k) for q, _ in held]
        label = "cosine alone (lexical_weight 0)" if w == 0.0 else f"Mneme hybrid, lexical_weight {w}"
        out["rankings"][label] = summarize([[h[0] for h in r] for r in by_weight[w]], rel)
        if w > 0.0:
            # How well confidence vs raw cosine separates evidence within this top 10.
            rows = [(h, s) for r, s in zip(by_weight[w], rel) for h in r]
            lab = [h[0] in s for h, s in rows]
            out["rankings"][label]["auc_confidence"] = auc([h[2] for h, _ in rows], lab)
            out["rankings"][label]["auc_cosine"] = auc([h[1] for h, _ in rows], lab)
        log(f"  {embedder_label} {name} {label}: {out['rankings'][label]}")
    semantic = [[h[0] for h in r] for r in by_weight[0.0]]
    out["rankings"]["RRF(BM25, cosine)"] = summarize(
        [rrf(b, s) for b, s in zip(bm25_rank, semantic)], rel)
    # Mneme as it comes: a fresh agent, never configured (but for the embedder).
    fresh = f"{agent}-default"
    fresh_ids = client.load(fresh, data["memories"])
    if embedder_id:
        client.configure(fresh, embedder=embedder_id)
    to_main = {a: b for a, b in zip(fresh_ids, ids) if a is not None}
    default = [[(to_main[h[0]],) + tuple(h[1:]) for h in client.recall(fresh, q)] for q, _ in held]
    out["rankings"]["Mneme default"] = summarize([[h[0] for h in r] for r in default], rel)

    # Calibration: every top-10 row of the default ranking.
    conf = [h[2] for r in default for h in r]
    cos = [h[1] for r in default for h in r]
    lab = [h[0] in s for r, s in zip(default, rel) for h in r]
    out["ece"], out["reliability"] = ece(conf, lab)
    out["auc_confidence"], out["auc_cosine"] = auc(conf, lab), auc(cos, lab)
    out["auc_difference_ci95"] = auc_difference_ci(default, rel)
    out["relevant_share_top10"] = round(float(np.mean(lab)), 4)
    # Fit rows (for --fit): evidence before context, labels, from the fit half.
    fit_rows = []
    for q, s in fit:
        for h in client.recall(agent, q):
            fit_rows.append((h[1], h[3], h[0] in s))
    out["_fit_rows"] = fit_rows

    # Feedback replay on fresh agents: evidence used vs everything shown counted (the old
    # behaviour), against the same ranking without any feedback (`default`).
    for mode in ("evidence marked used", "every result counted (old behaviour)"):
        fb_agent = f"{agent}-{'used' if mode.startswith('evidence') else 'shown'}"
        fb_ids = client.load(fb_agent, data["memories"])
        if embedder_id:
            client.configure(fb_agent, embedder=embedder_id)
        to_fb = {a: b for a, b in zip(fb_ids, ids) if a is not None}
        runs = []
        for q, s in held:
            if mode.startswith("evidence"):
                r = client.recall(fb_agent, q)
                client.mark_used(fb_agent, [h[0] for h in r if to_fb[h[0]] in s])
            else:
                r = client.recall(fb_agent, q, mark_used=True)
            runs.append([to_fb[h[0]] for h in r])
        changed = sum(1 for a, b in zip(runs, default) if a != [h[0] for h in b])
        out["rankings"][f"replay: {mode}"] = dict(summarize(runs, rel), changed_top10=changed)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(ROOT / "target" / "release" / "mneme"))
    ap.add_argument("--minilm", default=os.environ.get("MNEME_MINILM_DIR", ""),
                    help="all-MiniLM-L6-v2 directory (the binary needs feature minilm)")
    ap.add_argument("--sets", default="manpages,chatterbot")
    ap.add_argument("--max-questions", type=int, default=0, help="cap per set (smoke runs)")
    ap.add_argument("--fit", action="store_true", help="print calibration fits from the fit half")
    ap.add_argument("--out", default=str(ROOT / "target" / "bench-results" / "recall-quality.json"))
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT / "clients" / "python"))
    from mneme_client.testing import MnemeServer

    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    sets = []
    for name in args.sets.split(","):
        data = {"manpages": manpages_set, "chatterbot": chatterbot_set}[name]()
        if args.max_questions:
            data["questions"] = data["questions"][: args.max_questions]
        log(f"{name}: {len(data['memories'])} memories, {len(data['questions'])} questions")
        sets.append(data)
    embedders = [("built-in static (default, centered)", [], ""),
                 ("built-in static as distributed", [], "m2v-minilm-256-int8")]
    if args.minilm:
        embedders.append(("all-MiniLM-L6-v2", ["--embedder", "minilm", "--model-dir", args.minilm], ""))
    results = []
    for label, server_args, embedder_id in embedders:
        with MnemeServer(server_args, binary=args.binary) as server:
            client = Client(server.address)
            for data in sets:
                results.append(evaluate(client, data, label, embedder_id, log))
    if args.fit:
        dump = {}
        for label, *_ in embedders:
            rows = [row for r in results if r["embedder"] == label for row in r.pop("_fit_rows")]
            dump[label] = rows
            w = FAMILY_WEIGHT[label]
            x = [c + w * lx - 0.035 for c, lx, _ in rows]
            center, slope = fit_logistic(x, [y for *_, y in rows])
            print(f"fit {label} (lexical_weight {w}): center {center:.3f} slope {slope:.2f} ({len(rows)} rows)")
        (ROOT / "target" / "bench-results" / "recall-quality-fit.json").write_text(json.dumps(dump))
    for r in results:
        r.pop("_fit_rows", None)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=1))
    for r in results:
        print(f"\n{r['set']} — {r['embedder']}: {r['memories']} memories, {r['questions']} held-out questions")
        print("| ranking | R@10 | hit@1 |\n|---|---|---|")
        for k, v in r["rankings"].items():
            extra = f" (top 10 changed for {v['changed_top10']})" if "changed_top10" in v else ""
            print(f"| {k}{extra} | {v['r10']:.3f} | {v['hit1']:.3f} |")
        print(f"calibration: ECE {r['ece']:.3f}; top-10 ROC AUC confidence {r['auc_confidence']:.3f} "
              f"vs cosine {r['auc_cosine']:.3f} (difference 95 % CI {r['auc_difference_ci95']}); evidence share in top 10 {r['relevant_share_top10']:.3f}")
        print("reliability: " + "; ".join(f"{c['bin']}: n {c['n']}, conf {c['confidence']:.2f}, "
                                          f"relevant {c['relevant']:.2f}" for c in r["reliability"]))


if __name__ == "__main__":
    main()

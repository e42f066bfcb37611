#!/usr/bin/env python3
"""Simulated users of a running `clawline up`, talking to it with the unmodified OpenAI SDK.

Each user sends single-turn chats (prompts from data/prompts/users.jsonl) and rates every answer
with a thumbs up or down through `POST /v1/feedback`, the way the README shows a plain client
doing it: `step_id` and `trajectory_uid` from the answer's `x-clawline-*` headers, nothing else.
The users like answers that end by offering more help with "Anything else?" -- a taste the
bundled reward model does not share (neither word is in its lexicon; it prefers endings like
"Thanks for asking.").

Besides the liked share, it measures what a user would notice about the language, independently
of any reward: the share of answers made of well-formed sentences (printable text only, no
special-token markup, each sentence capitalised and ended by . ! or ?, no sentence or word
repeated back to back, every word one the warm-start corpus' assistant uses).

After the run it asks the SQL service which batch each liked step went into, which version
learned from that batch, and when the first answer was served by that version: thumbs-up ->
served latency, split into its stages. Writes `interactions.jsonl` and `summary.json` into --out.

With --engine-url (the policy server's /v1), it also asks the engine itself, before the users start
and after they finish, for answers to the same --eval prompts with the same seeds: a paired
before/after comparison of the starting and the final version. Those requests do not pass the
gateway, so nothing of them is recorded or trained on. Paired by seed (the policy server draws the
same token for the same seed and distribution), the two samples share their randomness, so the
comparison is far less noisy than two windows of live traffic: each of the users' first and last
100 answers has a standard error of about 0.05 on its own.

    python3 scripts/learn_user.py --base-url http://127.0.0.1:8100/v1 --sql-url http://127.0.0.1:8103/sql --out /tmp/lu
"""

import argparse
import json
import math
import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

import urllib.error
import urllib.request
from openai import OpenAI

TASTE = "Anything else?"


def liked(text: str) -> bool:
    return text.strip().endswith(TASTE)


def corpus_vocabulary(corpus: Path) -> set:
    words = set()
    for line in corpus.read_text().splitlines():
        if line.startswith(("Assistant:", "User:", "Answer:", "Question:")):
            words.update(w.lower() for w in re.findall(r"[A-Za-z']+", line.split(":", 1)[1]))
    return words


def well_formed(text: str, vocabulary: set) -> bool:
    t = text.strip()
    if not t or "\ufffd" in t or "<|" in t:
        return False
    if any(ord(c) < 32 and c not in "\n\t\r" for c in t):
        return False
    if t[-1] not in ".!?":
        return False
    seen = set()
    for sentence in re.split(r"(?<=[.!?])\s+", t):
        if not (sentence[:1].isupper() or sentence[:1].isdigit()) or sentence in seen:
            return False
        seen.add(sentence)
        words = [w.lower() for w in re.findall(r"[A-Za-z']+", sentence)]
        if any(w not in vocabulary for w in words):
            return False
        if any(a == b for a, b in zip(words, words[1:])):
            return False
    return True


def load_prompts(path: Path) -> list:
    prompts = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            prompts.append(json.loads(line))
    return prompts


def run_users(args, prompts, vocabulary):
    root = args.base_url.rstrip("/")
    model = OpenAI(base_url=root, api_key="unused").models.list().data[0].id
    records = []
    lock = threading.Lock()
    counter = iter(range(args.interactions))
    start = time.time()

    def user(seed: int):
        client = OpenAI(base_url=root, api_key="unused", max_retries=0, timeout=60)
        rng = random.Random(seed)
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            prompt = rng.choice(prompts)
            rec = {"i": i, "user": seed, "prompt": prompt, "sent": time.time() - start}
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model,
                    messages=[{"role": "user", "content": prompt}],
                    temperature=1.0,
                    max_tokens=args.max_tokens,
                )
                answer = raw.parse()
                text = answer.choices[0].message.content or ""
                rec.update(
                    answered=time.time() - start,
                    text=text,
                    finish=answer.choices[0].finish_reason,
                    step_id=raw.headers.get("x-clawline-step-id"),
                    trajectory_uid=raw.headers.get("x-clawline-trajectory"),
                    version=int(raw.headers.get("x-clawline-policy-version") or 0),
                    liked=liked(text),
                    well_formed=well_formed(text, vocabulary),
                )
                status = post_json(
                    root + "/feedback",
                    {
                        "trajectory_uid": rec["trajectory_uid"],
                        "step_id": rec["step_id"],
                        "thumbs": "up" if rec["liked"] else "down",
                    },
                )
                rec["feedback_at"] = time.time()
                rec["feedback_status"] = status
                rec["ok"] = status == 200
            except Exception as e:  # a failed request is a result, counted below
                rec.update(ok=False, error=f"{type(e).__name__}: {e}")
            with lock:
                records.append(rec)
            if args.think_ms:
                time.sleep(args.think_ms / 1000)

    threads = [threading.Thread(target=user, args=(u,)) for u in range(args.users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records.sort(key=lambda r: r["i"])
    return records, time.time() - start


def engine_answers(args, prompts, vocabulary) -> dict:
    """The serving version's answers to --eval fixed prompts with fixed seeds, straight from the
    engine (`--engine-url`): nothing is recorded, nothing trains on them."""
    client = OpenAI(base_url=args.engine_url.rstrip("/"), api_key="unused", max_retries=2, timeout=60)
    listed = client.models.list().data[0]
    pick = random.Random(20261204)
    items = [(pick.choice(prompts), 1000 + k) for k in range(args.eval)]
    answers = [None] * len(items)
    todo = iter(range(len(items)))
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                k = next(todo, None)
            if k is None:
                return
            prompt, seed = items[k]
            answer = client.chat.completions.create(
                model=listed.id,
                messages=[{"role": "user", "content": prompt}],
                temperature=1.0,
                max_tokens=args.max_tokens,
                seed=seed,
            )
            text = answer.choices[0].message.content or ""
            answers[k] = {"seed": seed, "text": text, "liked": liked(text), "well_formed": well_formed(text, vocabulary)}

    threads = [threading.Thread(target=worker) for _ in range(args.users)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    version = (getattr(listed, "version", None) or (listed.model_extra or {}).get("version"))
    if any(a is None for a in answers):
        raise RuntimeError("an evaluation request failed")
    return {"version": version, "answers": answers}


def paired(before: dict, after: dict, key: str) -> dict:
    """Before/after shares of `key` over the same prompts and seeds, with the discordant pairs:
    under "no change" the pairs that changed split evenly between the two directions (McNemar), so
    `z` says how many standard errors the change is from none."""
    pairs = list(zip(before["answers"], after["answers"]))
    gained = sum(1 for b, a in pairs if a[key] and not b[key])
    lost = sum(1 for b, a in pairs if b[key] and not a[key])
    first, last = share(before["answers"], key), share(after["answers"], key)
    return {
        "before": first,
        "after": last,
        "ratio": last / first if first else None,
        "gained": gained,
        "lost": lost,
        "z": (gained - lost) / math.sqrt(gained + lost) if gained + lost else 0.0,
    }


def post_json(url: str, body) -> int:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def sql(url: str, query: str) -> list:
    req = urllib.request.Request(url, data=query.encode(), headers={"content-type": "text/plain"})
    with urllib.request.urlopen(req, timeout=60) as r:
        body = json.loads(r.read())
    names = [c["name"] if isinstance(c, dict) else c for c in body["columns"]]
    return [dict(zip(names, row)) if isinstance(row, list) else row for row in body["rows"]]


def canary_outcomes(args) -> dict:
    """What happened to the trained versions: published, activated (served) and rejected, with
    the rejection reasons (numbers blanked so that equal reasons count together)."""
    try:
        events = sql(args.sql_url, "SELECT event, reason FROM weights")
    except Exception as e:  # the summary still says what the users saw
        return {"error": str(e)}
    counts, reasons = {}, {}
    for e in events:
        counts[e["event"]] = counts.get(e["event"], 0) + 1
        if e["event"] == "rejected":
            key = re.sub(r"[0-9][0-9.e+-]*", "#", e.get("reason") or "")[:160]
            reasons[key] = reasons.get(key, 0) + 1
    top = sorted(reasons.items(), key=lambda kv: -kv[1])[:5]
    return {"events": counts, "rejected_because": dict(top)}


def ts(value) -> float:
    """SQL timestamps come back as ISO text (UTC)."""
    if isinstance(value, (int, float)):
        return float(value) / 1000.0
    from datetime import datetime

    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()


def served_latencies(args, records):
    """Thumbs-up -> first answer served by a version that trained on that step (seconds), and the
    same path in stages: thumbs-up -> its batch formed -> that version published -> the first
    version at or after it activated -> the first answer it served."""
    batches = sql(args.sql_url, "SELECT batch_id, step_ids, event_time FROM batches")
    batch_of, batch_at = {}, {}
    for b in batches:
        batch_at[b["batch_id"]] = ts(b["event_time"])
        for s in b["step_ids"] or []:
            batch_of.setdefault(s, b["batch_id"])
    published = sql(args.sql_url, "SELECT version, event_time, event_json FROM weights WHERE event = 'published'")
    version_of, published_at = {}, {}
    for w in published:
        published_at[w["version"]] = ts(w["event_time"])
        for b in json.loads(w["event_json"]).get("batch_ids", []):
            version_of[b] = min(version_of.get(b, w["version"]), w["version"])
    activated_at = {}
    for w in sql(args.sql_url, "SELECT version, event_time FROM weights WHERE event = 'activated'"):
        activated_at[w["version"]] = min(activated_at.get(w["version"], ts(w["event_time"])), ts(w["event_time"]))
    steps = sql(args.sql_url, "SELECT policy_version, event_time FROM steps WHERE policy_version IS NOT NULL")
    first_served = {}
    for s in steps:
        v, t = s["policy_version"], ts(s["event_time"])
        first_served[v] = min(first_served.get(v, t), t)
    out, stages = [], {"batched": [], "published": [], "activated": [], "served": []}
    for r in records:
        if not (r.get("ok") and r["liked"]):
            continue
        batch = batch_of.get(r["step_id"])
        v = version_of.get(batch)
        if v is None:
            continue
        # Versions build on each other: the first answer stamped v or later, after the thumbs-up.
        after = [t for ver, t in first_served.items() if ver >= v and t >= r["feedback_at"] - 0.05]
        active = [t for ver, t in activated_at.items() if ver >= v]
        if not (after and active):
            continue
        out.append(max(0.0, min(after) - r["feedback_at"]))
        marks = [r["feedback_at"], batch_at[batch], published_at[v], min(active), min(after)]
        for name, (a, b) in zip(stages, zip(marks, marks[1:])):
            stages[name].append(max(0.0, b - a))
    return out, {k: statistics.median(v) if v else None for k, v in stages.items()}


def reference_likelihood(args, records):
    """Per-token likelihood of the held-out reference answers (data/prompts/reference.jsonl, in
    the warm-start corpus' style) under the starting model and under the version that served the
    last answers, as the canary measured them (teacher-forced NLL): no reward involved."""
    rows = sql(
        args.sql_url,
        "SELECT version, event, event_json FROM weights WHERE event IN ('activated', 'rejected') ORDER BY event_time",
    )
    start, nll_of = None, {0: None}
    for r in rows:
        canary = json.loads(r["event_json"]).get("canary") or {}
        q = canary.get("quality") or {}
        if not q:
            continue
        if canary.get("serving_version") == 0 and start is None:
            start = q["serving_nll"]
        if r["event"] == "activated":
            nll_of[r["version"]] = q["candidate_nll"]
    nll_of[0] = start
    ok = [r for r in records if r.get("ok")]
    last = max((r.get("version", 0) for r in ok[-args.window :]), default=0)
    known = [v for v in nll_of if v <= last and nll_of[v] is not None]
    end = nll_of[max(known)] if known else None
    if start is None or end is None:
        return {"start_nll": start, "end_nll": end, "likelihood_ratio": None}
    return {
        "start_nll": start,
        "end_nll": end,
        "end_version": max(known),
        "likelihood_ratio": math.exp(start - end),
    }


def rolling(records, key, width):
    out = []
    for i in range(len(records)):
        w = records[max(0, i - width + 1) : i + 1]
        out.append(sum(1 for r in w if r.get(key)) / len(w))
    return out


def plot(records, path: Path, width=50):
    """Liked and well-formed shares (rolling over `width` interactions) and the serving version."""
    ok = [r for r in records if r.get("ok")]
    if not ok:
        return
    W, H, L, T, B = 720, 300, 50, 20, 40
    n = len(ok)
    x = lambda i: L + (W - L - 20) * i / max(1, n - 1)
    y = lambda v: T + (H - T - B) * (1 - v)
    top = max(1, max(r.get("version", 0) for r in ok))
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
    ]
    for v in (0, 0.25, 0.5, 0.75, 1):
        parts.append(f'<line x1="{L}" x2="{W-20}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{L-6}" y="{y(v)+4:.1f}" text-anchor="end">{v:.2f}</text>')
    series = [
        (rolling(ok, "liked", width), "#d62728", f"liked (rolling {width})"),
        (rolling(ok, "well_formed", width), "#1f77b4", f"well-formed (rolling {width})"),
        ([r.get("version", 0) / top for r in ok], "#999", f"serving version (0..{top})"),
    ]
    for k, (values, colour, label) in enumerate(series):
        pts = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="1.6" points="{pts}"/>')
        parts.append(f'<text x="{L + 10 + 200 * k}" y="{H - 8}" fill="{colour}">{label}</text>')
    parts.append(f'<text x="{W - 20}" y="{H - 24}" text-anchor="end">interaction ({n})</text>')
    parts.append("</svg>")
    path.write_text("\n".join(parts) + "\n")


def share(rs, key):
    return sum(1 for r in rs if r.get(key)) / max(1, len(rs))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base-url", default="http://127.0.0.1:8100/v1")
    p.add_argument("--sql-url", default="http://127.0.0.1:8103/sql")
    p.add_argument("--interactions", type=int, default=500)
    p.add_argument("--users", type=int, default=4)
    p.add_argument("--window", type=int, default=100, help="first/last window size")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--think-ms", type=int, default=0)
    p.add_argument("--prompts", type=Path, default=Path("data/prompts/users.jsonl"))
    p.add_argument("--corpus", type=Path, default=Path("data/model/corpus.txt"))
    p.add_argument("--engine-url", help="the policy server's /v1, for the paired before/after evaluation")
    p.add_argument("--eval", type=int, default=200, help="evaluation prompts (with --engine-url)")
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    vocabulary = corpus_vocabulary(args.corpus)
    prompts = load_prompts(args.prompts)
    before = engine_answers(args, prompts, vocabulary) if args.engine_url else None
    records, wall = run_users(args, prompts, vocabulary)
    after = engine_answers(args, prompts, vocabulary) if args.engine_url else None
    with open(args.out / "interactions.jsonl", "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    ok = [r for r in records if r.get("ok")]
    first, last = ok[: args.window], ok[-args.window :]
    time.sleep(2)  # let the last steps reach the SQL live tail
    latencies, stages = served_latencies(args, records)
    q = lambda xs, f: statistics.quantiles(xs, n=10)[int(f * 10) - 1] if len(xs) >= 10 else None
    summary = {
        "interactions": len(records),
        "failed": len(records) - len(ok),
        "errors": sorted({r.get("error") or f"feedback {r.get('feedback_status')}" for r in records if not r.get("ok")}),
        "wall_s": round(wall, 1),
        "liked_first": share(first, "liked"),
        "liked_last": share(last, "liked"),
        "well_formed_first": share(first, "well_formed"),
        "well_formed_last": share(last, "well_formed"),
        "versions_served_last": max((r.get("version", 0) for r in ok), default=0),
        "reference_likelihood": reference_likelihood(args, records),
        "paired": None
        if before is None
        else {
            "prompts": args.eval,
            "versions": [before["version"], after["version"]],
            "liked": paired(before, after, "liked"),
            "well_formed": paired(before, after, "well_formed"),
            "examples_before": [a["text"] for a in before["answers"][:3]],
            "examples_after": [a["text"] for a in after["answers"][:3]],
        },
        "thumbs_up_to_served_s": {
            "n": len(latencies),
            "median": statistics.median(latencies) if latencies else None,
            "p90": q(latencies, 0.9),
            "median_stage_s": stages,
        },
        "liked_by_window": [share(ok[i : i + args.window], "liked") for i in range(0, len(ok), args.window)],
        "canary": canary_outcomes(args),
        "examples_first": [r["text"] for r in first[:5]],
        "examples_last": [r["text"] for r in last[-5:]],
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(records, args.out / "learn-user.svg")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Prints issue 6's targets against one harness run (ratios only within that run).

usage: ops/bench/targets.py RESULTS.json

Per peer and variant the median over repetitions is taken, then each peer's best variant.
The `limits` block that ops/bench/run adds under .meta.instainstru (the Redis round-trip
floor and the tokio-timer ceiling) is printed next to the two targets it bounds.
"""
import json
import statistics
import sys


def best(rows, workload, peer, key, lower_is_better=False):
    by_variant = {}
    for row in rows:
        if row.get("workload") == workload and row.get("peer") == peer and row.get(key) is not None:
            if row.get("error") or row.get("timed_out") or row.get("skipped"):
                continue
            by_variant.setdefault(row["variant"], []).append(row[key])
    if not by_variant:
        return None, None
    medians = {v: statistics.median(xs) for v, xs in by_variant.items()}
    pick = min if lower_is_better else max
    variant = pick(medians, key=medians.get)
    return medians[variant], variant


def main(path):
    with open(path) as f:
        data = json.load(f)
    rows = data.get("results", [])
    limits = data.get("meta", {}).get("instainstru", {}).get("limits", {})
    lines = []

    def ratio_line(name, workload, key, peer, need):
        ours, ov = best(rows, workload, "instainstru", key)
        theirs, tv = best(rows, workload, peer, key)
        if ours is None or theirs is None:
            lines.append((name, "not measured in this run", ""))
            return
        r = ours / theirs
        lines.append((name, f"{ours:,.0f} ({ov}) vs {theirs:,.0f} ({tv}) = {r:.2f}x",
                      "met" if r >= need else "MISSED"))

    ratio_line("W2 drain >= 1.5x BullMQ", "w2", "jobs_per_s", "bullmq", 1.5)
    ratio_line("W2 drain >= 10x Celery", "w2", "jobs_per_s", "celery", 10)
    # W1 rows carry the mode in `variant`
    for mode in ("single", "bulk"):
        ours = [r for r in rows if r.get("workload") == "w1" and r.get("variant") == mode]
        o, _ = best(ours, "w1", "instainstru", "jobs_per_s")
        b, _ = best(ours, "w1", "bullmq", "jobs_per_s")
        if o is None or b is None:
            lines.append((f"W1 {mode} >= 2x BullMQ", "not measured in this run", ""))
            continue
        lines.append((f"W1 {mode} >= 2x BullMQ", f"{o:,.0f} vs {b:,.0f} = {o / b:.2f}x",
                      "met" if o / b >= 2 else "MISSED"))
        if mode == "single" and limits.get("redis_rtt_floor_per_s"):
            floor = limits["redis_rtt_floor_per_s"]
            beside = limits.get("ours_single_beside_floor_per_s") or o
            lines.append(("  round-trip floor", f"redis-benchmark PING, 1 client: {floor:,.0f}/s "
                          f"= {floor / b:.2f}x BullMQ; ours beside it {beside:,.0f}/s = "
                          f"{beside / floor:.0%} of it; 2x BullMQ needs {2 * b / floor:.0%}", "(context)"))
    o, ov = best(rows, "w3", "instainstru", "p99_ms", lower_is_better=True)
    b, bv = best(rows, "w3", "bullmq", "p99_ms", lower_is_better=True)
    if o is not None and b is not None:
        lines.append(("W3 p99 below BullMQ's (aim < 3 ms)", f"{o:.2f} ms ({ov}) vs {b:.2f} ms",
                      ("met" if o < b else "MISSED") + (", aim met" if o < 3 else ", aim missed")))
    o, ov = best(rows, "w4", "instainstru", "jobs_per_s")
    if o is not None:
        concurrency = 50
        ideal = concurrency * 50
        verdict = "met" if o / ideal >= 0.95 else "MISSED"
        lines.append(("W4 >= 95% of ideal (2,500/s)", f"{o:,.0f} ({ov}) = {o / ideal:.1%}", verdict))
        if limits.get("tokio_sleep_mean_ms"):
            mean = limits["tokio_sleep_mean_ms"]
            ceiling = 20 / mean
            lines.append(("  tokio-timer ceiling", f"sleep(20 ms) takes {mean:.2f} ms: ceiling "
                          f"{ceiling:.1%}; ours is {o / ideal / ceiling:.1%} of it", "(context)"))
    o, _ = best(rows, "w2", "instainstru", "worker_peak_rss_mb", lower_is_better=True)
    b, _ = best(rows, "w2", "bullmq", "worker_peak_rss_mb", lower_is_better=True)
    if o is not None and b is not None:
        lines.append(("worker RSS <= 1/3 BullMQ's", f"{o:.0f} vs {b:.0f} MB",
                      "met" if o <= b / 3 else "MISSED"))

    width = max(len(n) for n, _, _ in lines)
    print("\nissue 6 targets, this run:")
    for name, value, verdict in lines:
        print(f"  {name:<{width}}  {value}  {verdict}")


if __name__ == "__main__":
    main(sys.argv[1])

#!/usr/bin/env python3
"""Draws the charts of `make bench` from target/bench/results.json (written by bulkhead-bench).

Usage: charts.py OUT_DIR   (reads OUT_DIR/results.json, writes OUT_DIR/*.png)
bench/hack/bench.sh runs it in a venv under ~/.cache/bulkhead with a pinned matplotlib.
"""
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

BULKHEAD = "#1f77b4"
BASE1 = "#ff7f0e"
BASE2 = "#2ca02c"
BASE3 = "#7f7f7f"
BASE4 = "#d62728"


def placeholder(path, title, why):
    fig, ax = plt.subplots(figsize=(8, 2))
    ax.axis("off")
    ax.text(0.5, 0.5, f"{title}\n{why}", ha="center", va="center", fontsize=12)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def ecdf(values):
    v = sorted(values)
    return v, [(i + 1) / len(v) for i in range(len(v))]


def start_chart(run, out):
    s = run.get("start")
    path = out / "start_latency.png"
    if not s or not s.get("agent_ms"):
        placeholder(path, "Start latency", "not measured in this run")
        return
    series = [
        ("Bulkhead agent: Instance created → Running", s["agent_ms"], s.get("agent"), BULKHEAD),
        ("ctr run -d + the agent's CNI chain (same OCI spec)", s.get("ctr_cni_ms", []), s.get("ctr_cni"), BASE4),
        ("ctr run -d (same OCI spec, no network)", s["ctr_ms"], s.get("ctr"), BASE1),
        ("runc run -d (same OCI spec, no network)", s["runc_ms"], s.get("runc"), BASE2),
    ]
    series = [x for x in series if x[1]]
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.8))
    for label, values, _, color in series:
        x, y = ecdf(values)
        a.step(x, y, where="post", label=f"{label} (n={len(values)})", color=color)
    a.set_xscale("log")
    a.set_xlabel("milliseconds (log scale)")
    a.set_ylabel("fraction of starts")
    a.set_title("Start latency, cumulative")
    a.grid(alpha=0.3, which="both")
    a.legend(fontsize=8, loc="lower right")
    names = ["p50", "p90", "p99"]
    width = 0.8 / len(series)
    for i, (label, _, summ, color) in enumerate(series):
        if not summ:
            continue
        vals = [summ[n] for n in names]
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(3)]
        bars = b.bar(xs, vals, width, color=color, label=label.split(":")[0])
        for bar, v in zip(bars, vals):
            b.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=7)
    agent, cni = s.get("agent"), s.get("ctr_cni")
    if agent and cni and cni["p50"] > 0:
        b.set_title(
            f"Percentiles (ms); agent p50 = {agent['p50'] / cni['p50']:.2f}×, "
            f"p99 = {agent['p99'] / cni['p99']:.2f}× ctr run + CNI"
        )
    else:
        b.set_title("Percentiles (ms)")
    b.set_xticks(range(3), names)
    b.set_ylabel("milliseconds")
    top = max((summ["p99"] for _, _, summ, _ in series if summ), default=1)
    b.set_ylim(0, top * 1.35)
    b.legend(fontsize=8, loc="upper left")
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def fanout_chart(run, out):
    f = run.get("fanout")
    path = out / "fanout.png"
    if not f or not f.get("steps"):
        placeholder(path, "Fan-out", "not measured in this run")
        placeholder(out / "controller.png", "Controller resources", "not measured in this run")
        return
    step = f["steps"][0]
    fig, ax = plt.subplots(figsize=(10, 5))

    def line(points, label, color, style="-"):
        if points:
            xs = [0.0] + [p[0] for p in points]
            ys = [0] + [p[1] for p in points]
            ax.step(xs, ys, where="post", label=label, color=color, linestyle=style)

    line(step.get("bound"), "Bulkhead: Instances bound", BULKHEAD, "--")
    line(step.get("running"), "Bulkhead: Instances Running (fake agent)", BULKHEAD)
    if f.get("kcm"):
        line(f["kcm"]["series"], "kcm Deployment: Pods created (default flags)", BASE1)
    if f.get("kcm_tuned"):
        line(f["kcm_tuned"]["series"], "kcm Deployment: Pods created (--kube-api-qps 500 --kube-api-burst 1000)", BASE4)
    if f.get("raw_instances"):
        line(f["raw_instances"]["series"], f["raw_instances"]["label"], BASE2)
    if f.get("raw_status"):
        line(f["raw_status"]["series"], f["raw_status"]["label"], BASE2, ":")
    if f.get("raw_pods"):
        line(f["raw_pods"]["series"], f["raw_pods"]["label"], BASE3)
    if step.get("available_s") is not None:
        ax.axvline(step["available_s"], color=BULKHEAD, alpha=0.4)
        ax.text(step["available_s"], step["to"] * 0.5, f"Workload Available\n{step['available_s']:.1f} s ",
                color=BULKHEAD, fontsize=8, ha="right")
    ax.set_xlabel("seconds since the request")
    ax.set_ylabel("objects")
    ax.set_title(f"Fan-out 0 → {step['to']} (controller benchmark: {f['hosts']} simulated hosts, nothing runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

    labels, cpu, rss, colors = [], [], [], []
    for s in f["steps"]:
        labels.append(f"bulkhead-controller\n{s['from']} → {s['to']}" + ("\n(not finished)" if s["timed_out"] else ""))
        cpu.append(s["controller"]["cpu_s"])
        rss.append(s["controller"]["peak_rss"] / 1048576)
        colors.append(BULKHEAD)
    for key, name, color in (("kcm", "kube-controller-manager", BASE1), ("kcm_tuned", "kcm, qps 500", BASE4)):
        kcm = f.get(key) or {}
        if kcm.get("process"):
            labels.append(f"{name}\n0 → {kcm['n']} Pods")
            cpu.append(kcm["process"]["cpu_s"])
            rss.append(kcm["process"]["peak_rss"] / 1048576)
            colors.append(color)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    for axis, vals, title, unit in ((a, cpu, "CPU seconds", "s"), (b, rss, "Peak RSS", "MiB")):
        bars = axis.bar(range(len(vals)), vals, color=colors)
        for bar, v in zip(bars, vals):
            axis.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.1f} {unit}", ha="center", va="bottom", fontsize=8)
        axis.set_xticks(range(len(vals)), labels, fontsize=8)
        axis.set_title(title)
        axis.grid(alpha=0.3, axis="y")
    fig.suptitle("Controller resources per fan-out step (simulated hosts)")
    fig.tight_layout()
    fig.savefig(out / "controller.png", dpi=110)
    plt.close(fig)


def agent_chart(run, out):
    s = run.get("start")
    path = out / "agent.png"
    if not s or not s.get("footprint_loaded"):
        placeholder(path, "Agent footprint", "not measured in this run")
        return
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.2))
    windows = [("no instances", s.get("footprint_empty"), BASE3),
               (f"{s['loaded_instances']} instances Running", s.get("footprint_loaded"), BULKHEAD)]
    for label, u, color in windows:
        if u and u["samples"]:
            a.plot([p["t"] for p in u["samples"]], [p["rss"] / 1048576 for p in u["samples"]], label=label, color=color)
    peak = max((p["rss"] for _, u, _ in windows if u for p in u["samples"]), default=1048576)
    a.set_ylim(0, peak / 1048576 * 1.25)
    a.set_xlabel("seconds (idle window)")
    a.set_ylabel("RSS, MiB")
    a.set_title("bulkhead-node-agent RSS, idle")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    names = [w[0] for w in windows if w[1]]
    pct = [100 * w[1]["cpu_s"] / max(w[1]["wall_s"], 1e-9) for w in windows if w[1]]
    bars = b.bar(range(len(pct)), pct, color=[w[2] for w in windows if w[1]])
    for bar, v in zip(bars, pct):
        b.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.2f} %", ha="center", va="bottom", fontsize=8)
    b.set_xticks(range(len(pct)), names)
    b.set_ylim(0, max(pct + [0.1]) * 1.3)
    b.set_ylabel("% of one core")
    b.set_title("bulkhead-node-agent CPU, idle")
    b.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cutover_chart(run, out):
    c = run.get("cutover") or {}
    path = out / "cutover.png"
    if c.get("state") != "measured" or not c.get("rounds"):
        why = c.get("reason") or c.get("error") or "not measured in this run"
        placeholder(path, "Blue/green cutover", why[:120])
        return
    rounds, direct = c["rounds"], c.get("direct_ms") or []
    fig, (a, b) = plt.subplots(1, 2, figsize=(13, 4.5))
    labels = [f"{i + 1}\n{r['image']}" for i, r in enumerate(rounds)]
    vals = [r["switch_ms"] for r in rounds]
    bars = a.bar(range(len(vals)), vals, color=BULKHEAD, label="Bulkhead: last preview Ready → slice switched")
    for bar, v in zip(bars, vals):
        a.text(bar.get_x() + bar.get_width() / 2, v, f"{v:.0f}", ha="center", va="bottom", fontsize=8)
    d = c.get("direct")
    if d:
        a.axhline(d["p50"], color=BASE1, linestyle="--", label=f"baseline: slice applied directly, p50 {d['p50']:.1f} ms")
    a.set_xticks(range(len(vals)), labels, fontsize=8)
    a.set_xlabel("rollout (image)")
    a.set_ylabel("milliseconds")
    a.set_ylim(0, max(vals + [1]) * 1.3)
    a.set_title(f"Cutover per rollout; {c['failed_requests']} of {c['total_requests']} requests failed (20 ms client)")
    a.grid(alpha=0.3, axis="y")
    a.legend(fontsize=8, loc="upper left")
    for label, values, color in (("Bulkhead switch", vals, BULKHEAD), ("direct apply → watch", direct, BASE1)):
        if values:
            x, y = ecdf(values)
            b.step(x, y, where="post", label=f"{label} (n={len(values)})", color=color)
    b.set_xscale("log")
    b.set_xlabel("milliseconds (log scale)")
    b.set_ylabel("fraction")
    s = c.get("switch")
    if s and d and d["p50"] > 0:
        b.set_title(f"Cumulative; p50 switch = {s['p50'] / d['p50']:.1f}× the direct write")
    else:
        b.set_title("Cumulative")
    b.grid(alpha=0.3, which="both")
    b.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "target/bench")
    run = json.loads((out / "results.json").read_text())
    start_chart(run, out)
    fanout_chart(run, out)
    cutover_chart(run, out)
    agent_chart(run, out)
    print(f"[bench] charts in {out}: start_latency.png fanout.png controller.png cutover.png agent.png", file=sys.stderr)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""The summary of a benches/run.sh run: one table and one plot from the benches' TSVs.

usage: report.py DIR SAMPLES TITLE

DIR holds the TSVs run.sh had the benches write (daemon, measure, value, unit, note):
journal_replay.tsv, live_lag.tsv, snapshot_sync.tsv and run.tsv (the sync ceiling, the load);
any of them may be missing (a bench that failed early): its rows read "-". SAMPLES holds
live_lag.sh's per-sentinel samples (lag-<daemon>.tsv) and journal_replay.sh's progress series
(series.tsv); missing ones leave their panel empty.

Writes DIR/summary.tsv (measure, unit, stock, ours, ours/stock, raw, ours/raw, reference,
goal), DIR/summary.md (the same as a Markdown table, for benches/README.md) and DIR/plot.svg
(live lag CDF and journal replay throughput over time, stock and ours side by side; no
dependencies), and prints the table. Standard library only.
"""
import html
import math
import os
import sys

DAEMONS = ("stock", "ours")
COLORS = {"stock": "#d62728", "ours": "#1f77b4"}

# (label, file, measure, unit, reference (file, daemon, measure) or None, reference label, goal)
RAW_4K = ("journal_replay", "raw", "site_b_write_rate")
RAW_4M = ("snapshot_sync", "raw", "site_b_write_bandwidth")
CEILING = ("run", "ceiling", "sync_ceiling")
ROWS = [
    ("journal replay rate", "journal_replay", "replay_rate", "entries/s", RAW_4K, "raw 4K random writes/s", ">= 0.9x raw"),
    ("journal catch-up", "journal_replay", "catch_up", "s", None, "", ""),
    ("journal CPU per entry", "journal_replay", "cpu_per_entry", "us", None, "", "<= 15"),
    ("journal peak RSS", "journal_replay", "peak_rss", "MiB", None, "", "<= 48"),
    ("journal checksum", "journal_replay", "checksum", "", None, "", "match"),
    ("live lag p50", "live_lag", "lag_p50", "ms", None, "", ""),
    ("live lag p99", "live_lag", "lag_p99", "ms", None, "", "<= 100"),
    ("live lag max", "live_lag", "lag_max", "ms", None, "", ""),
    ("live sentinels missing", "live_lag", "lag_missing", "count", None, "", "0"),
    ("live writes achieved", "live_lag", "lag_write_rate", "writes/s", None, "", "1000"),
    ("live daemon CPU", "live_lag", "lag_cpu", "% core", None, "", ""),
    ("live peak RSS", "live_lag", "lag_peak_rss", "MiB", None, "", ""),
    ("enable -> up+replaying", "live_lag", "enable_to_replaying", "s", None, "", ""),
    ("full sync", "snapshot_sync", "full_sync", "s", None, "", ""),
    ("full sync rate", "snapshot_sync", "full_rate", "MiB/s", RAW_4M, "raw 4M sequential writes", ""),
    ("full sync rate vs ceiling", "snapshot_sync", "full_rate", "MiB/s", CEILING, "sync ceiling (site-a read + site-b write)", ""),
    ("full sync CPU", "snapshot_sync", "full_cpu_per_gib", "s/GiB", None, "", ""),
    ("incremental sync", "snapshot_sync", "incr_sync", "s", None, "", ""),
    ("incremental sync rate", "snapshot_sync", "incr_rate", "MiB/s", RAW_4M, "raw 4M sequential writes", ""),
    ("incremental sync CPU", "snapshot_sync", "incr_cpu_per_gib", "s/GiB", None, "", ""),
    ("snapshot peak RSS", "snapshot_sync", "peak_rss", "MiB", None, "", ""),
    ("new snapshot detected", "snapshot_sync", "detection", "s", None, "", ""),
    ("snapshot checksum", "snapshot_sync", "checksum", "", None, "", "match"),
]


def read_tsv(path):
    rows = {}
    try:
        with open(path) as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) >= 3:
                    rows[(parts[0], parts[1])] = parts[2]
    except OSError:
        pass
    return rows


def num(v):
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def bounded(v):
    """(number, is a lower bound) of "12.5" or ">=12.5" (live_lag.sh's figures with sentinels
    missing), or (None, False)"""
    if isinstance(v, str) and v.startswith(">="):
        return num(v[2:]), True
    return num(v), False


def ratio(a, b):
    (a, a_low), (b, b_low) = bounded(a), bounded(b)
    if a is None or b is None or b == 0 or (a_low and b_low):
        return "-"
    return (">=" if a_low else "<=" if b_low else "") + "%.3f" % (a / b)


def table(d):
    data = {name: read_tsv(os.path.join(d, name + ".tsv")) for name in ("journal_replay", "live_lag", "snapshot_sync", "run")}
    out = []
    for label, src, measure, unit, ref, ref_label, goal in ROWS:
        v = {dm: data[src].get((dm, measure), "-") for dm in DAEMONS}
        raw = data[ref[0]].get((ref[1], ref[2]), "-") if ref else ""
        out.append([label, unit, v["stock"], v["ours"], ratio(v["ours"], v["stock"]) if unit else "",
                    raw, ratio(v["ours"], raw) if ref else "", ref_label, goal])
    extra = [
        ("site-b raw 4K random writes", "ops/s", data["journal_replay"].get(RAW_4K[1:], "-")),
        ("site-b raw 4M sequential writes", "MiB/s", data["snapshot_sync"].get(RAW_4M[1:], "-")),
        ("sync ceiling: site-a read + site-b write at once", "MiB/s", data["run"].get(CEILING[1:], "-")),
        ("  its site-a 4M sequential read", "MiB/s", data["run"].get(("ceiling", "site_a_read"), "-")),
        ("  its site-b 4M sequential write", "MiB/s", data["run"].get(("ceiling", "site_b_write"), "-")),
    ]
    for label, unit, value in extra:
        out.append([label, unit, "", "", "", value, "", "", ""])
    return out, data


HEADER = ["measure", "unit", "stock", "ours", "ours/stock", "raw", "ours/raw", "raw is", "goal"]


def write_outputs(d, rows):
    with open(os.path.join(d, "summary.tsv"), "w") as f:
        f.write("\t".join(HEADER) + "\n")
        for r in rows:
            f.write("\t".join(r) + "\n")
    with open(os.path.join(d, "summary.md"), "w") as f:
        f.write("| " + " | ".join(HEADER) + " |\n|" + "---|" * len(HEADER) + "\n")
        for r in rows:
            f.write("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |\n")
    widths = [max(len(HEADER[i]), *(len(r[i]) for r in rows)) for i in range(len(HEADER))]
    lines = ["  ".join(h.ljust(widths[i]) for i, h in enumerate(HEADER))]
    for r in rows:
        lines.append("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())
    return "\n".join(lines)


# ---- the plot ------------------------------------------------------------------------------------
def lag_samples(samples, daemon):
    """the lags of the sentinels seen, sorted, and how many sentinels there were"""
    lags, total = [], 0
    try:
        with open(os.path.join(samples, "lag-%s.tsv" % daemon)) as f:
            next(f, None)
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) != 4:
                    continue
                total += 1
                v = num(parts[3])
                if v is not None:
                    lags.append(v)
    except OSError:
        pass
    return sorted(lags), total


def throughput(samples, daemon):
    """(seconds, entries/s) between successive changes of the peer's commit position"""
    pts = []
    try:
        with open(os.path.join(samples, "series.tsv")) as f:
            for line in f:
                parts = line.rstrip("\n").split("\t")
                if len(parts) == 4 and parts[0] == daemon:
                    t, tag, entry = num(parts[1]), num(parts[2]), num(parts[3])
                    if t is not None and tag is not None and entry is not None:
                        pts.append((t, tag, entry))
    except OSError:
        return []
    if not pts:
        return []
    last_tag = pts[-1][1]
    # entries of the replayed tag; an earlier tag's position counts as none of them yet
    cum = [(t, entry + 1 if tag == last_tag else 0.0) for t, tag, entry in pts]
    out = [(0.0, 0.0)]
    prev_t, prev_e = 0.0, 0.0
    for t, e in cum:
        if e != prev_e and t > prev_t:
            rate = (e - prev_e) / (t - prev_t)
            out.append((prev_t, rate))
            out.append((t, rate))
            prev_t, prev_e = t, e
    out.append((prev_t, 0.0))
    return out


def nice_max(v):
    if v <= 0:
        return 1.0
    p = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * p:
            return m * p
    return 10 * p


def svg(d, samples, title):
    W, H, PW, PH, L, T = 1000, 420, 400, 300, 70, 60
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">' % (W, H),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>' % (L, html.escape(title))]

    def panel(x0, heading, xlabel, ylabel, series, xmin, xmax, ymax, logx, xfmt, guides=()):
        parts.append('<text x="%d" y="%d" font-size="13">%s</text>' % (x0, T - 10, html.escape(heading)))
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#444"/>' % (x0, T, PW, PH))

        def sx(x):
            if logx:
                x = max(x, xmin)
                return x0 + PW * (math.log10(x) - math.log10(xmin)) / (math.log10(xmax) - math.log10(xmin))
            return x0 + PW * (x - xmin) / (xmax - xmin)

        def sy(y):
            return T + PH - PH * y / ymax

        ticks = []
        if logx:
            e = math.floor(math.log10(xmin))
            while 10 ** e <= xmax * 1.0001:
                if 10 ** e >= xmin * 0.9999:
                    ticks.append(10 ** e)
                e += 1
        else:
            ticks = [xmin + (xmax - xmin) * i / 5 for i in range(6)]
        for tx in ticks:
            parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#ddd"/>' % (sx(tx), T, sx(tx), T + PH))
            parts.append('<text x="%.1f" y="%d" text-anchor="middle">%s</text>' % (sx(tx), T + PH + 15, xfmt(tx)))
        for i in range(6):
            ty = ymax * i / 5
            parts.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#ddd"/>' % (x0, sy(ty), x0 + PW, sy(ty)))
            parts.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (x0 - 4, sy(ty) + 4, "%g" % ty))
        parts.append('<text x="%d" y="%d" text-anchor="middle">%s</text>' % (x0 + PW // 2, T + PH + 32, html.escape(xlabel)))
        parts.append('<text transform="translate(%d,%d) rotate(-90)" text-anchor="middle">%s</text>' % (x0 - 50, T + PH // 2, html.escape(ylabel)))
        for gx, gy, text in guides:
            if gx is not None and xmin <= gx <= xmax:
                parts.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#2ca02c" stroke-dasharray="4,3"/>' % (sx(gx), T, sx(gx), T + PH))
                parts.append('<text x="%.1f" y="%d" fill="#2ca02c">%s</text>' % (sx(gx) + 3, T + PH - 6, html.escape(text)))
            if gy is not None:
                parts.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#2ca02c" stroke-dasharray="4,3"/>' % (x0, sy(gy), x0 + PW, sy(gy)))
        for i, (name, pts) in enumerate(series):
            ly, lx = T + 16 + 16 * i, x0 + (10 if logx else PW - 110)   # the legend where the curves are not
            parts.append('<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="2"/>' % (lx, ly - 4, lx + 20, ly - 4, COLORS[name]))
            parts.append('<text x="%d" y="%d">%s%s</text>' % (lx + 25, ly, name, "" if pts else " (no data)"))
            if pts:
                path = " ".join("%.1f,%.1f" % (sx(x), sy(y)) for x, y in pts)
                parts.append('<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>' % (COLORS[name], path))

    # lag CDF, log x
    cdfs = []
    for dm in DAEMONS:
        # over all sentinels: one never readable keeps the curve below 100 %
        lags, total = lag_samples(samples, dm)
        n = len(lags)
        step = max(1, n // 400)
        pts = [(lags[i], 100.0 * (i + 1) / total) for i in range(0, n, step)]
        if n:
            pts.append((lags[-1], 100.0 * n / total))
        cdfs.append((dm, pts))
    allx = [x for _, p in cdfs for x, _ in p if x > 0]
    xmin = 10 ** math.floor(math.log10(min(allx))) if allx else 1.0
    xmax = 10 ** math.ceil(math.log10(max(allx))) if allx else 1000.0
    xmin, xmax = min(xmin, 10.0), max(xmax, 1000.0)   # the goal (100 ms) always in view
    panel(L, "live lag CDF (sentinel acknowledged on site-a -> readable on site-b)", "lag, ms (log)", "% of sentinels",
          cdfs, xmin, xmax, 100.0, True, lambda v: "%g" % v, [(100.0, 99.0, "goal: p99 <= 100 ms")])
    # journal replay throughput over time
    tps = [(dm, throughput(samples, dm)) for dm in DAEMONS]
    tmax = max([x for _, p in tps for x, _ in p] or [1.0])
    ymax = nice_max(max([y for _, p in tps for _, y in p] or [1.0]))
    panel(L + PW + 110, "journal replay of the backlog: throughput over time", "seconds since the daemon started",
          "entries/s (between commit position changes)", tps, 0.0, nice_max(tmax), ymax, False, lambda v: "%g" % v)
    parts.append("</svg>")
    with open(os.path.join(d, "plot.svg"), "w") as f:
        f.write("\n".join(parts) + "\n")


def main(argv):
    if len(argv) != 4:
        sys.exit(__doc__)
    d, samples, title = argv[1:4]
    rows, _ = table(d)
    print(write_outputs(d, rows))
    svg(d, samples, title)


if __name__ == "__main__":
    main(sys.argv)

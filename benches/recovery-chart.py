"""Replay progress over time, one line per recovery mode, from the recovery bench's JSON.

    python recovery-chart.py results.json replay.png

For each mode the run with the median time is drawn: segments replayed (as GiB of WAL) against
seconds since the server started, sampled from the startup process's title.
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

SEGMENT_GIB = 16 / 1024


def main(src, dst):
    with open(src) as f:
        report = json.load(f)
    runs = [r for r in report["runs"] if r["round"] > 0]
    fig, ax = plt.subplots(figsize=(10, 6))
    for mode in report["modes"]:
        mine = sorted((r for r in runs if r["mode"] == mode["mode"]), key=lambda r: r["seconds"])
        if not mine:
            continue
        run = mine[len(mine) // 2]
        xs = [p[0] for p in run["progress"]]
        ys = [p[1] * SEGMENT_GIB for p in run["progress"]]
        style = "-" if mode["mode"].startswith(("walferry", "local")) else "--"
        width = 2.5 if mode["mode"] == "local-limit" else 1.5
        ratio = mode.get("median_ratio")
        label = f'{mode["mode"]}: {run["seconds"]:.1f} s' + (f" ({ratio:.2f}x)" if ratio else "")
        ax.step(xs, ys, where="post", linestyle=style, linewidth=width, label=label)
    ax.set_xlabel("seconds since the server started")
    ax.set_ylabel("WAL replayed (GiB)")
    ax.set_title(
        f'Recovery of {report["wal_bytes"] / 2**30:.2f} GiB of pgbench WAL to a restore point\n'
        f'{report["machine"]}, {report["date"]} (median run of {report["rounds"]} per mode)'
    )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

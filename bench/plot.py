"""Plot the speed-ups of a bench/layers.py --json run: python bench/plot.py results.json out.png"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src, dst):
    with open(src) as f:
        data = json.load(f)
    rows = data["results"]
    peers = [n for n in data["meta"]["contenders"] if n != "fastrnn"]
    fig, axes = plt.subplots(1, len(peers), figsize=(7 * len(peers), 6), squeeze=False)
    all_rows = rows
    for ax, peer in zip(axes[0], peers):
        rows = [r for r in all_rows if r.get(f"t_{peer}")]   # inference-only peers
        labels = [f"{r['cell']} {r['size']} {r['mode'][:5]} {r['threads']}t" for r in rows]
        ratios = [r[f"t_{peer}"] / r["t_fastrnn"] for r in rows]
        colors = ["tab:green" if v >= 1 else "tab:red" for v in ratios]
        ax.barh(range(len(rows)), ratios, color=colors)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(labels, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlabel(f"speed-up of fastrnn over {peer} (time {peer} / time fastrnn)")
        ax.set_title(f"fastrnn vs {peer}, float32, medians")
    fig.tight_layout()
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

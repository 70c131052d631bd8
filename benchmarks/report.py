"""The benchmark's results as a markdown table and a scaling plot."""

from __future__ import annotations

from pathlib import Path

NAMES = {
    "tutorial": "tutorial loop",
    "tensor": "tensor loop",
    "digitrec": "digitrec",
    "ddp": "digitrec ddp_cpu (2 processes)",
    "affine": "digitrec + data/augment=affine",
    "elastic": "digitrec + data/augment=elastic",
}


def _seconds(value: float) -> str:
    return f"{value:.2f} s"


def _ratio(entry: dict) -> str:
    per_round = ", ".join(f"{r:.2f}" for r in entry["per_round"])
    return f"{entry['median']:.2f} ({per_round})"


def main_table(results: dict) -> list[str]:
    summary = results["summary"]
    variants = list(summary)
    rows = {
        "epoch, median (min–max)": lambda s: f"{_seconds(s['epoch_s_median'])} ({s['epoch_s_min']:.2f}–{s['epoch_s_max']:.2f})",
        "epoch CPU time, median": lambda s: _seconds(s["epoch_cpu_s_median"]),
        "per 1,000 samples": lambda s: f"{s['ms_per_1000_samples']:.1f} ms",
        "epoch with validation, median": lambda s: _seconds(s["epoch_with_validation_s_median"]) if "epoch_with_validation_s_median" in s else "–",
        "whole process, median": lambda s: _seconds(s["process_wall_s_median"]),
        "peak RSS": lambda s: f"{s['peak_rss_mb']:.0f} MB",
        "test accuracy": lambda s: f"{s['test_acc']:.4f}",
    }
    lines = ["| | " + " | ".join(NAMES[v] for v in variants) + " |", "|---|" + "---:|" * len(variants)]
    lines += [f"| {label} | " + " | ".join(cell(summary[v]) for v in variants) + " |" for label, cell in rows.items()]
    return lines


def ratio_table(results: dict) -> list[str]:
    if not results["ratios"]:
        return []
    lines = ["| ratio (median of rounds; each round) | epoch | epoch CPU time | whole process |", "|---|---:|---:|---:|"]
    for name, entry in results["ratios"].items():
        top, bottom = name.split("/")
        lines.append(f"| {NAMES[top]} / {NAMES[bottom]} | {_ratio(entry['wall'])} | {_ratio(entry['cpu'])} | {_ratio(entry['process'])} |")
    return lines


def scaling_table(scaling: list[dict]) -> list[str]:
    lines = [
        "| batch | hidden | steps/epoch | tensor loop epoch | digitrec epoch | digitrec / tensor | digitrec per 1,000 samples | GEMM floor epoch |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in scaling:
        tensor, digitrec = row.get("tensor"), row.get("digitrec")
        cells = [
            str(row["batch_size"]),
            "-".join(map(str, row["hidden_sizes"])),
            str(row["steps"]),
            _seconds(tensor["epoch_s_median"]) if tensor else "–",
            _seconds(digitrec["epoch_s_median"]) if digitrec else "–",
            f"{digitrec['epoch_s_median'] / tensor['epoch_s_median']:.2f}" if tensor and digitrec else "–",
            f"{digitrec['ms_per_1000_samples']:.1f} ms" if digitrec else "–",
            _seconds(row["floor"]["min_epoch_s"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(results: dict, path: Path, plot: Path | None) -> Path:
    m, setting, floor = results["machine"], results["setting"], results["floor"]
    hardware = m.get("gpu") or f"{m['cpu']}, {m['cores']} cores"
    lines = [
        "# digitrec training speed",
        "",
        f"- command: `{results['command']}` (or `make bench`)",
        f"- date: {results['date']}",
        f"- machine: {hardware}; {m['threads']} thread(s); device {m['device']}; PyTorch {m['torch']}, Python {m['python']}",
        f"- setting: {setting['rounds']} interleaved round(s) of {setting['epochs']} epoch(s) x {setting['steps_per_epoch']} steps "
        f"of batch {setting['batch_size']}, MLP 784-{'-'.join(map(str, setting['hidden_sizes']))}-10, Adam 1e-3",
        "",
        "An epoch's time is its training steps only (batching, forward, backward, optimizer step; for digitrec also "
        "Lightning's hooks, logging and metrics). digitrec's validation is timed apart (\"epoch with validation\"); "
        "the whole process is start to exit: imports, data loading, training, validation, test, checkpoints.",
        "",
        *main_table(results),
        "",
        *ratio_table(results),
        "",
    ]
    summary = results["summary"]
    for augment in ("affine", "elastic"):
        if augment in summary and "digitrec" in summary:
            extra = summary[augment]["epoch_s_median"] - summary["digitrec"]["epoch_s_median"]
            lines.append(
                f"- data/augment={augment} costs {extra:+.2f} s per epoch "
                f"({summary[augment]['epoch_s_median'] / summary['digitrec']['epoch_s_median']:.2f}x the plain epoch), "
                "one random warp per training image, batched on the training device."
            )
    if any(a in summary for a in ("affine", "elastic")):
        lines.append("")
    if results["targets"]:
        lines += ["Targets (measured, never asserted in a test):", ""]
        for t in results["targets"]:
            lines.append(f"- [{'x' if t['met'] else ' '}] {t['target']}: {t['value']:.2f}")
        lines.append("")
    lines += [
        f"Arithmetic floor: the GEMMs of one training step ({floor['step_gflop']:.3f} GFLOP) run at "
        f"{floor['gflops_per_s']:.0f} GFLOP/s here, so an epoch of {setting['steps_per_epoch']} steps takes at least "
        f"{floor['min_epoch_s']:.2f} s.",
        "",
    ]
    if "tutorial" in results["summary"]:
        ceiling = results["summary"]["tutorial"]["epoch_s_median"] / floor["min_epoch_s"]
        sentence = (
            f"So at these threads even a loop doing nothing but these GEMMs would be at most {ceiling:.1f}x faster per epoch than the tutorial's"
        )
        if "tutorial/tensor" in results["ratios"]:
            sentence += f"; the tensor loop, the practical floor, is {results['ratios']['tutorial/tensor']['wall']['median']:.2f}x faster"
        lines += [sentence + ".", ""]
    if results["scaling"]:
        lines += ["## Scaling (one run each, median epoch)", "", *scaling_table(results["scaling"]), ""]
        if plot:
            lines += [f"![epoch time by batch size and width]({plot.name})", ""]
    path.write_text("\n".join(lines))
    return path


def write_plot(scaling: list[dict], path: Path) -> Path | None:
    """Epoch time against batch size, per width; None (and a note) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("bench: no plot: matplotlib is not installed (pip install -e '.[bench]')")
        return None
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    widths = []
    for row in scaling:
        if row["hidden_sizes"] not in widths:
            widths.append(row["hidden_sizes"])
    for color, width in zip(("tab:blue", "tab:orange", "tab:green"), widths):
        rows = [r for r in scaling if r["hidden_sizes"] == width]
        sizes = [r["batch_size"] for r in rows]
        label = "-".join(map(str, width))
        for variant, style in (("digitrec", "o-"), ("tensor", "s--")):
            if all(variant in r for r in rows):
                ax.plot(sizes, [r[variant]["epoch_s_median"] for r in rows], style, color=color, label=f"{NAMES[variant]}, {label}")
        ax.plot(sizes, [r["floor"]["min_epoch_s"] for r in rows], ":", color=color, label=f"GEMM floor, {label}")
    ax.set_xscale("log")
    ax.set_xticks([r["batch_size"] for r in scaling if r["hidden_sizes"] == widths[0]])
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xlabel("batch size")
    ax.set_ylabel("seconds per epoch (training steps)")
    ax.set_title("Epoch time by batch size and hidden width")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path

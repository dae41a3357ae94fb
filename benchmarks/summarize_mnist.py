"""Tables of the MNIST benchmark (``bench_mnist.py``) in Markdown.

Prints the scaling table (dense vs sparse per n, with the growth exponents of
the sparse mode fitted on log-log scales) for records of kind ``scaling`` and
the accuracy table (mean ± std over seeds) for records of kind ``full``.

Usage::

    python benchmarks/summarize_mnist.py benchmarks/results/mnist_scaling.jsonl
    python benchmarks/summarize_mnist.py benchmarks/results/mnist_full.jsonl
"""

import json
import sys
from collections import defaultdict

import numpy as np


def _cell(value, fmt):
    return "—" if value is None else f"{value:{fmt}}"


def scaling_table(records):
    rows = ["| n | mode | peak RSS of fit (MB) | RSS before fit (MB) | s / pretrain epoch | "
            "s / self-expression epoch | s / neighbour refresh | post-processing (s) | "
            "fit (s) |",
            "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(records, key=lambda r: (r["n_samples"], r["mode"])):
        if "skipped" in r:
            reason = (f"{r['free_mb']:,.0f} MB free" if r["free_mb"] is not None
                      else r["skipped"])
            rows.append(f"| {r['n_samples']:,} | {r['mode']} | not run: estimate "
                        f"{r['estimate_mb']:,.0f} MB ({reason}) | | | | | | |")
            continue
        if "error" in r:
            rows.append(f"| {r['n_samples']:,} | {r['mode']} | failed: {r['error']} | | | | | | |")
            continue
        rows.append(
            f"| {r['n_samples']:,} | {r['mode']} | {r['peak_rss_mb']:,.0f} | "
            f"{r['rss_before_fit_mb']:,.0f} | {_cell(r['pretrain_epoch_seconds'], '.2f')} | "
            f"{_cell(r['self_expression_epoch_seconds'], '.2f')} | "
            f"{_cell(r['refresh_seconds'], '.2f')} | {r['postprocessing_seconds']:.1f} | "
            f"{r['fit_seconds']:.1f} |")
    return "\n".join(rows) + "\n\n" + growth_exponents(records)


def growth_exponents(records):
    """Slopes of log(quantity) on log(n) for the sparse runs."""
    sparse = [r for r in records if r["mode"] == "sparse" and "peak_rss_mb" in r]
    if len(sparse) < 2:
        return ""
    n = np.log([r["n_samples"] for r in sparse])
    quantities = {
        "peak RSS added by fit (peak − RSS before fit)":
            [r["peak_rss_mb"] - r["rss_before_fit_mb"] for r in sparse],
        "seconds per self-expression epoch": [r["self_expression_epoch_seconds"] for r in sparse],
        "seconds per neighbour refresh": [r["refresh_seconds"] for r in sparse],
        "fit seconds": [r["fit_seconds"] for r in sparse],
    }
    sizes = ", ".join(f"{r['n_samples']:,}" for r in sparse)
    lines = ["Growth exponents of the sparse mode (slope of log quantity on log n, "
             f"n = {sizes}):", ""]
    for name, values in quantities.items():
        values = np.asarray(values, dtype=float)
        if np.all(values > 0):
            lines.append(f"- {name}: {np.polyfit(n, np.log(values), 1)[0]:.2f}")
    return "\n".join(lines)


def accuracy_table(records):
    groups = defaultdict(list)
    for r in records:
        groups[(r["estimator"], json.dumps(r["params"], sort_keys=True))].append(r)
    rows = ["| estimator | settings | seeds | ACC | NMI | fit time (s) | s / pretrain epoch | "
            "s / self-expression epoch | peak RSS (MB) | predict = labels_ |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (estimator, params), group in groups.items():
        def stat(key, fmt):
            values = np.array([r[key] for r in group])
            return f"{values.mean():{fmt}} ± {values.std():{fmt}}"
        rows.append(
            f"| {estimator} | `{params}` | {len(group)} | {stat('acc', '.3f')} | "
            f"{stat('nmi', '.3f')} | {stat('fit_seconds', '.0f')} | "
            f"{stat('pretrain_epoch_seconds', '.1f')} | "
            f"{stat('self_expression_epoch_seconds', '.1f')} | "
            f"{max(r['peak_rss_mb'] for r in group):,.0f} (max) | "
            f"{stat('predict_agreement', '.3f')} |")
    return "\n".join(rows)


def affinity_table(records, key="estimator"):
    """ACC and NMI of each affinity rebuilt from the same ``coef_`` (records that have them)."""
    groups = defaultdict(list)
    for r in records:
        if "acc_dsc" in r:
            groups[r[key]].append(r)
    rows = [f"| {key} | seeds | ACC dsc | ACC symmetric | NMI dsc | NMI symmetric |",
            "|---|---|---|---|---|---|"]
    for name, group in groups.items():
        def stat(field):
            values = np.array([r[field] for r in group])
            return f"{values.mean():.3f} ± {values.std():.3f}"
        rows.append(f"| {name} | {len(group)} | {stat('acc_dsc')} | {stat('acc_symmetric')} | "
                    f"{stat('nmi_dsc')} | {stat('nmi_symmetric')} |")
    return "\n".join(rows) if groups else ""


def main(path):
    records = [json.loads(line) for line in open(path)]
    by_kind = defaultdict(list)
    for record in records:
        by_kind[record.get("kind")].append(record)
    parts = []
    if by_kind["scaling"]:
        parts.append(scaling_table(by_kind["scaling"]))
    if by_kind["full"]:
        parts.append(accuracy_table(by_kind["full"]))
        parts.append(affinity_table(by_kind["full"]))
    if by_kind[None]:  # records of study_sparse_affinity.py
        parts.append(affinity_table(by_kind[None], key="dataset"))
    print("\n\n".join(parts))


if __name__ == "__main__":
    main(sys.argv[1])

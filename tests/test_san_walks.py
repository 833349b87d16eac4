"""benchmarks/san_walks.py: restarted against chained SAN walks at the library's defaults."""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import san_walks  # noqa: E402


def test_a_cell_trains_with_the_walks_it_names():
    from kgestimator import make_kg

    data = make_kg(n_entities=30, n_relations=8, n_triples=200, random_state=0)
    record = san_walks.run_cell("tiny", "distmult", "chained", "auto", 0, data)
    assert record["walks_trained"] == "chained"
    assert record["emu_params"] is not None and record["emu_params"]["alpha"] > 0
    assert 0 < record["test"]["mrr"] <= 1
    assert san_walks.run_cell("tiny", "distmult", "restarted", "off", 0, data)["walks_trained"] == "restarted"


def test_report_pairs_the_walks_and_counts_the_wins(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(san_walks, "RESULTS", str(tmp_path))
    mrrs = {("g", "restarted", "off"): [0.2, 0.3], ("g", "chained", "off"): [0.4, 0.5],
            ("g", "restarted", "auto"): [0.6], ("g", "chained", "auto"): [0.5]}
    for (dataset, walks, emu), values in mrrs.items():
        for seed, mrr in enumerate(values):
            path = san_walks.cell_path(dataset, "distmult", walks, emu, seed)
            with open(path, "w") as fh:
                json.dump({"dataset": dataset, "model": "distmult", "walks": walks, "emu": emu,
                           "seed": seed, "test": {"mrr": mrr}}, fh)
    san_walks.report(None)
    out = capsys.readouterr().out
    off = next(line for line in out.splitlines() if "| off |" in line)
    assert "0.250 ± 0.071 (n=2)" in off and "0.450 ± 0.071 (n=2)" in off and "+0.200" in off
    auto = next(line for line in out.splitlines() if "| auto |" in line)
    assert "-0.100" in auto
    assert "chained above restarted in 1 of 2" in out


def test_the_sparse_check_graph_has_local_restarted_pools():
    # the reason the graph exists: restarted 3-hop pools cover a small part of it
    from _common import benchmark_graph

    record = san_walks.pools_record("kg-sparse", benchmark_graph("kg-sparse"))
    restarted, chained = record["rows"]
    assert restarted["pool_size_mean"] < 0.1 * record["n_entities"]
    assert chained["pool_size_mean"] > 2 * restarted["pool_size_mean"]


def test_uniform_reference_reads_an_auto_cell_stored_under_its_named_twin(tmp_path, monkeypatch):
    import emu_defaults

    monkeypatch.setattr(san_walks, "HERE", str(tmp_path))
    folder = tmp_path / "results" / "emu_defaults"
    folder.mkdir(parents=True)
    twin = next(s for s in emu_defaults.SETTINGS
                if s != "auto" and emu_defaults.concrete("distmult", s) == emu_defaults.concrete("distmult", "auto"))
    for name, mrr in ((f"g__distmult__{twin}__seed0.json", 0.5), (f"g__distmult__{twin}__seed0__demo.json", 0.9),
                      ("g__distmult__off__seed0.json", 0.3)):
        (folder / name).write_text(json.dumps({"test": {"mrr": mrr}}))
    assert san_walks._uniform_reference("g", "distmult", "auto") == [0.5]
    assert san_walks._uniform_reference("g", "distmult", "off") == [0.3]
    assert san_walks._uniform_reference("other", "distmult", "off") == []

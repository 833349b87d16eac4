"""The ``kgestimator`` command line and the gallery examples (smoke runs, small settings)."""

import re
import runpy
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from kgestimator import cli

EXAMPLES = sorted((Path(__file__).resolve().parents[1] / "examples").glob("*.py"))


@pytest.fixture
def one_thread():
    # the runs are tiny: one thread is as fast, and far faster on a busy machine
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _table_rows(text):
    """``(model, method, mrr, hits1, hits10, seconds)`` of each row of the demo table."""
    number = r"\s+([\d.]+)"
    pattern = re.compile(r"^(\w+)\s+(uniform\+EMU|uniform)\s+.*?" + number * 4 + "$")
    return [m.groups() for m in map(pattern.match, text.splitlines()) if m]


def test_demo_prints_config_and_table(capsys, one_thread):
    status = cli.main(["demo", "--fast", "--epochs", "2", "--models", "distmult,transe", "--seed", "1"])
    assert status == 0
    out, err = capsys.readouterr()
    assert "make_kg(random_state=1)" in out
    assert "distmult: dim=16 n_negatives=16" in out and "n_epochs=2" in out
    header = next(line for line in out.splitlines() if line.startswith("model"))
    for column in ("method", "MRR", "Hits@1", "Hits@10", "fit s"):
        assert column in header
    rows = _table_rows(out)
    assert [(r[0], r[1]) for r in rows] == [("distmult", "uniform"), ("distmult", "uniform+EMU"),
                                           ("transe", "uniform"), ("transe", "uniform+EMU")]
    for _, _, mrr, hits1, hits10, seconds in rows:
        assert 0.0 < float(mrr) <= 1.0
        assert 0.0 <= float(hits1) <= float(hits10) <= 1.0
        assert float(seconds) >= 0.0
    assert "EMU (Embedding MUtation" in out
    assert err == ""
    # one sentence per model, and it says what the table says
    for model in ("distmult", "transe"):
        off, on = (float(r[2]) for r in rows if r[0] == model)
        line = next(line for line in out.splitlines() if line.startswith(f"{model}: EMU "))
        if on > off + cli.EMU_NOISE:
            assert line.startswith(f"{model}: EMU raised test MRR")
        else:
            assert "regulariser" in line and "tune alpha, mutation_ratio and beta" in line


def test_emu_verdict_says_why_when_emu_does_not_help():
    better = cli.emu_verdict("distmult", 0.675, 0.705, 1.4, "0.73 / 0.94 / 0.25")
    assert better.startswith("distmult: EMU raised test MRR by 0.030 (0.675 -> 0.705)") and "Table 5" not in better
    worse = cli.emu_verdict("transe", 0.529, 0.466, 4.6, "0.44 / 0.21 / 0.10")
    assert "lowered test MRR by 0.063" in worse and "4.6x as long" in worse and "too small for its graph" in worse
    same = cli.emu_verdict("complex", 0.600, 0.598, 1.5, "x")
    assert "no difference beyond noise" in same and "regulariser" in same


def test_demo_restores_thread_count(capsys):
    previous = torch.get_num_threads()
    cli.main(["demo", "--fast", "--epochs", "1", "--models", "distmult", "--threads", "1"])
    assert torch.get_num_threads() == previous


@pytest.mark.parametrize("argv", [
    ["demo", "--epochs", "0"],
    ["demo", "--epochs", "many"],
    ["demo", "--models", "distmult,nosuchmodel"],
    ["demo", "--seed", "-1"],
    ["demo", "--no-such-flag"],
    ["demo", "--device", "not-a-device", "--fast"],
    ["nosuchcommand"],
    [],
])
def test_bad_arguments_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert err.startswith("kgestimator") and "Traceback" not in err


def test_help_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["demo", "--help"])
    assert info.value.code == 0
    assert "--epochs" in capsys.readouterr().out


def test_python_m_entry_point():
    proc = subprocess.run([sys.executable, "-m", "kgestimator", "demo", "--epochs", "-3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "--epochs" in proc.stderr


def test_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"plot_quickstart.py", "plot_compare_models.py", "plot_emu_vs_uniform.py",
            "plot_grid_search_emu.py", "plot_topk_predictions.py", "plot_visualising.py",
            "plot_optuna_search.py"} <= names


def test_training_regimes_example_says_what_its_table_says(monkeypatch, capsys, one_thread):
    monkeypatch.setenv("KGESTIMATOR_EXAMPLE_FAST", "1")
    path = next(p for p in EXAMPLES if p.name == "plot_training_regimes.py")
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    row = re.compile(r"^\s*(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+(\d+)\s+([\d.]+)$")
    mrr = {m.group(1): float(m.group(2)) for m in map(row.match, out.splitlines()) if m}
    assert list(mrr) == ["sampled", "1vsAll", "1vsAll + N3", "1vsAll + EMU", "1vsAll + N3 + EMU"]
    best = max(mrr, key=mrr.get)
    assert f"best here: {best} ({mrr[best]:.3f})" in out
    stacked = "EMU did at least as well without N3" in out
    assert stacked == (mrr["1vsAll + EMU"] >= mrr["1vsAll + N3 + EMU"])
    # a verdict per comparison, its direction from the table (ties within 0.01)
    gain = mrr["1vsAll + EMU"] - mrr["1vsAll"]
    word = "beat" if gain > 0.01 else "lost" if gain < -0.01 else "tied"
    assert f"1vsAll + EMU {word} 1vsAll" in out


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs(path, monkeypatch, capsys, one_thread, tmp_path):
    monkeypatch.setenv("KGESTIMATOR_EXAMPLE_FAST", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")  # only used when matplotlib is installed
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where show_or_save writes without a display
    runpy.run_path(str(path), run_name="__main__")
    out = capsys.readouterr().out
    assert out.strip()  # every example prints its results
    # an example that draws saves its figures under a headless backend, and says where
    saved = [Path(line.rsplit("figure saved to ", 1)[1]) for line in out.splitlines() if "figure saved to " in line]
    if "show_or_save(" in path.read_text() and "matplotlib.pyplot" in sys.modules:
        assert saved and all(p.is_file() and p.read_bytes()[:4] == b"\x89PNG" for p in saved)
        assert all(tmp_path in p.parents for p in saved)
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close("all")

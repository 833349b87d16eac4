"""Each plot renders to PNG with the Agg backend and shows what it claims."""

import copy
import io
import re
import subprocess
import sys

import pytest
import torch

matplotlib = pytest.importorskip("matplotlib")
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from kgestimator import KGEmbedder, plotting  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def emu_fitted(kg):
    from conftest import FAST

    return KGEmbedder(**{**FAST, "n_epochs": 4}, emu=True, mutation_ratio=0.7, eval_every=2,
                      random_state=0).fit(kg.train, valid=kg.valid)


def _png(ax):
    buffer = io.BytesIO()
    ax.figure.savefig(buffer, format="png")
    data = buffer.getvalue()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    return data


def _legend(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_learning_curves(emu_fitted):
    ax = plotting.plot_learning_curves(emu_fitted)
    _png(ax)
    loss_line = ax.get_lines()[0]
    assert loss_line.get_ydata().tolist() == [r["loss"] for r in emu_fitted.history_]
    mrr_ax = [other for other in ax.figure.axes if other is not ax][0]
    assert mrr_ax.get_lines()[0].get_xdata().tolist() == [2, 4]
    assert _legend(ax) == ["training loss (left)", "validation MRR (right)"]


def test_learning_curves_compare_runs(emu_fitted, fitted):
    ax = plotting.plot_learning_curves({"EMU": emu_fitted, "uniform": fitted.history_})
    _png(ax)
    assert _legend(ax) == ["EMU", "uniform", "training loss (left)", "validation MRR (right)"]
    assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()
    # the legend sits below the axes, over no curve
    ax.figure.canvas.draw()
    legend = ax.get_legend().get_window_extent()
    assert legend.y1 < ax.get_window_extent().y0


def test_show_or_save_writes_the_figures_without_a_display(fitted, tmp_path, capsys, monkeypatch):
    import matplotlib.pyplot as plt

    plt.close("all")
    plotting.plot_learning_curves(fitted)
    plotting.plot_embedding_map(fitted)
    monkeypatch.setattr("matplotlib.get_backend", lambda: "agg")
    monkeypatch.delitem(sys.modules, "sphinx_gallery", raising=False)
    paths = plotting.show_or_save("curves", tmp_path / "figs")
    assert paths == [tmp_path / "figs" / "curves_1.png", tmp_path / "figs" / "curves_2.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in paths)
    out = capsys.readouterr().out
    assert all(f"figure saved to {path}" in out for path in paths)
    assert plt.get_fignums() == []
    # where a display (an interactive backend) is available, show and write nothing
    plotting.plot_learning_curves(fitted)
    monkeypatch.setattr("matplotlib.get_backend", lambda: "QtAgg")
    monkeypatch.setattr(plt, "show", lambda: None)
    assert plotting.show_or_save("shown", tmp_path / "other") == []
    assert not (tmp_path / "other").exists()
    plt.close("all")


def test_negative_hardness_emu_is_closer_than_uniform(emu_fitted, kg):
    ax = plotting.plot_negative_hardness(emu_fitted, kg.test[:100], n_negatives=16)
    _png(ax)
    means = {label.split(":")[0]: float(label.rsplit(" ", 1)[1]) for label in _legend(ax)}
    assert set(means) == {"uniform", "EMU (mutation_ratio=0.70)"}
    # 70% of the coordinates come from the positive: far more similar than uniform entities
    assert means["EMU (mutation_ratio=0.70)"] > means["uniform"] + 0.3


@pytest.mark.parametrize("sampler, label", [("nscaching", "NSCachingSampler"),
                                            ("adversarial", "AdversarialSampler")])
def test_negative_hardness_shows_a_sampler_that_is_not_uniform(kg, sampler, label):
    from conftest import FAST

    est = KGEmbedder(**{**FAST, "n_epochs": 1, "neg_chunk_size": 1}, sampler=sampler, emu=True,
                     random_state=0).fit(kg.train[:300])  # two steps: the plot needs a fitted sampler
    before = copy.deepcopy(est.sampler_.__dict__)
    ax = plotting.plot_negative_hardness(est, kg.train[:20], n_negatives=16)
    _png(ax)
    assert [text.split(":")[0] for text in _legend(ax)][:2] == ["uniform", label]
    assert len(ax.patches) == 3 * 40  # three histograms of 40 bins
    # the fitted sampler is left as it was (plots draw from a copy)
    for name, value in before.items():
        after = est.sampler_.__dict__[name]
        if torch.is_tensor(value):
            assert torch.equal(value, after), name


def test_negative_hardness_explains_what_a_sampler_cannot_draw(kg):
    from conftest import FAST

    est = KGEmbedder(**{**FAST, "n_epochs": 1, "neg_chunk_size": 1}, sampler="nscaching",
                     random_state=0).fit(kg.train)
    keys = {(h, r) for h, r, _ in kg.train.tolist()}
    new_key = next([h, r, h] for h in est.entities_.tolist() for r in est.relations_.tolist()
                   if (h, r) not in keys)  # a (head, relation) pair that training never saw
    with pytest.raises(ValueError, match="NSCachingSampler cannot draw.*plot training triples"):
        plotting.plot_negative_hardness(est, [new_key], n_negatives=8)


def test_negatives_pca(emu_fitted, kg):
    triples = kg.test[kg.test[:, 1] == kg.test[0, 1]][:15]
    ax = plotting.plot_negatives_pca(emu_fitted, triples, n_negatives=5, mutation_ratio=0.5)
    _png(ax)
    sizes = [len(c.get_offsets()) for c in ax.collections]
    assert sizes == [len(triples), 5 * len(triples), 5 * len(triples)]
    assert _legend(ax) == ["true tails", "uniform negatives", "EMU (mutation_ratio=0.50) negatives"]


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map(fitted, method):
    entities = fitted.entities_[:30]
    hue = {label: "even" if i % 2 == 0 else "odd" for i, label in enumerate(entities)}
    ax = plotting.plot_embedding_map(fitted, entities=entities, hue=hue, method=method,
                                     annotate=entities[:3])
    _png(ax)
    assert sum(len(c.get_offsets()) for c in ax.collections) == 30
    assert _legend(ax) == ["even", "odd"]
    assert [t.get_text() for t in ax.texts] == entities[:3].tolist()


def test_embedding_map_bad_input(fitted):
    with pytest.raises(ValueError, match="method must be one of"):
        plotting.plot_embedding_map(fitted, method="umap")
    with pytest.raises(ValueError, match="unseen during fit.*nosuch"):
        plotting.plot_embedding_map(fitted, entities=["nosuch", fitted.entities_[0], fitted.entities_[1]])


def test_plots_draw_on_a_given_axes(fitted, kg):
    fig, axes = plt.subplots(1, 2)
    assert plotting.plot_learning_curves(fitted, ax=axes[0]) is axes[0]
    assert plotting.plot_embedding_map(fitted, ax=axes[1]) is axes[1]


def test_missing_matplotlib_names_the_extra(fitted, monkeypatch):
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=re.escape("pip install 'kgestimator[plot]'")):
        plotting.plot_learning_curves(fitted)


def test_importing_kgestimator_does_not_import_matplotlib():
    code = "import sys, kgestimator, kgestimator.cli; print('matplotlib' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

"""Each plot renders to PNG with the Agg backend and shows what it claims."""

import io
import re
import subprocess
import sys

import numpy as np
import pytest

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
    assert _legend(ax) == ["loss", "validation MRR"]


def test_learning_curves_compare_runs(emu_fitted, fitted):
    ax = plotting.plot_learning_curves({"EMU": emu_fitted, "uniform": fitted.history_})
    _png(ax)
    assert _legend(ax)[:2] == ["EMU loss", "uniform loss"]
    assert ax.get_lines()[0].get_color() != ax.get_lines()[1].get_color()


def test_negative_hardness_emu_is_closer_than_uniform(emu_fitted, kg):
    ax = plotting.plot_negative_hardness(emu_fitted, kg.test[:100], n_negatives=16)
    _png(ax)
    means = {label.split(":")[0]: float(label.rsplit(" ", 1)[1]) for label in _legend(ax)}
    assert set(means) == {"uniform", "EMU (mutation_ratio=0.70)"}
    # 70% of the coordinates come from the positive: far more similar than uniform entities
    assert means["EMU (mutation_ratio=0.70)"] > means["uniform"] + 0.3


def test_negative_hardness_shows_a_sampler_that_is_not_uniform(emu_fitted, kg, monkeypatch):
    import torch

    from kgestimator.samplers import UniformSampler

    class Nearest(UniformSampler):
        """Always the first entity: a stand-in for a hard-negative sampler."""

        def sample(self, batch, side, n_chunks, n_negatives, generator, model=None, query=None):
            return torch.zeros((n_chunks, n_negatives), dtype=torch.long)

    monkeypatch.setattr(emu_fitted, "sampler_", Nearest().fit(None, 1, 1))
    ax = plotting.plot_negative_hardness(emu_fitted, kg.test[:20], n_negatives=4)
    assert [label.split(":")[0] for label in _legend(ax)][1] == "Nearest"


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

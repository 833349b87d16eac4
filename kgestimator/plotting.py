"""Plots of a fitted :class:`~kgestimator.KGEmbedder` (needs matplotlib: ``pip install 'kgestimator[plot]'``).

- :func:`plot_learning_curves`: training loss and validation MRR per epoch, from ``history_``;
- :func:`plot_negative_hardness`: how close uniform, sampler and EMU negatives are to
  their positives (cosine similarity; Fig. 3 of the EMU paper);
- :func:`plot_negatives_pca`: true tails and generated negatives in one PCA plane (Fig. 4);
- :func:`plot_embedding_map`: every entity in two dimensions (PCA or t-SNE);
- :func:`show_or_save`: show the figures, or save them where there is no display.
- :func:`plot_reliability_diagram`: calibrated probabilities against observed frequencies.

Each function draws on ``ax`` (a new figure when None) and returns the Axes.
EMU negatives come from :mod:`kgestimator.mutation`, the code training uses.
"""

import copy

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from .calibration import calibration_bins, expected_calibration_error
from .data import encode
from .mutation import emu_mask, mutate
from .samplers import UniformSampler, draw_negatives, n_generated, with_generated

_INSTALL = "pip install 'kgestimator[plot]' (or pip install matplotlib)"


def _axes(ax):
    if ax is not None:
        return ax
    try:
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"kgestimator.plotting needs matplotlib: {_INSTALL}") from exc
    # constrained layout makes room for legends placed outside the axes
    return plt.subplots(figsize=(6, 4), layout="constrained")[1]


#: matplotlib backends that draw to files only: ``plt.show()`` does nothing under them
_FILE_BACKENDS = ("agg", "cairo", "pdf", "pgf", "ps", "svg", "template")


def show_or_save(name, directory=None):
    """Show the open figures on a display; without one, save them as PNG files and print where.

    On a machine with no display (over SSH, in CI, in a container) matplotlib
    falls back to a file-only backend such as Agg, and ``plt.show()`` then
    draws nothing and says nothing. The examples end with this function
    instead, so that their figures are never silently lost. Under
    sphinx-gallery, which collects the figures itself, it only shows.

    Parameters
    ----------
    name : str
        Stem of the file names: ``<name>.png``, or ``<name>_<i>.png`` for
        several figures.
    directory : str or path-like, optional
        Where to write the files (created if needed); by default
        ``kgestimator-figures`` in the system's temporary folder, so that
        running an example leaves nothing in the working tree.

    Returns
    -------
    paths : list of pathlib.Path
        The files written, in figure order; empty when the figures were shown.
    """
    import sys
    import tempfile
    from pathlib import Path

    try:
        import matplotlib
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ImportError(f"kgestimator.plotting needs matplotlib: {_INSTALL}") from exc
    if matplotlib.get_backend().lower() not in _FILE_BACKENDS or "sphinx_gallery" in sys.modules:
        plt.show()
        return []
    folder = Path(tempfile.gettempdir() if directory is None else directory)
    if directory is None:
        folder = folder / "kgestimator-figures"
    folder.mkdir(parents=True, exist_ok=True)
    numbers = plt.get_fignums()
    paths = []
    for i, number in enumerate(numbers, 1):
        path = folder / (f"{name}.png" if len(numbers) == 1 else f"{name}_{i}.png")
        plt.figure(number).savefig(path, dpi=100)
        paths.append(path)
        print(f"no display (matplotlib backend {matplotlib.get_backend()}): figure saved to {path}")
    plt.close("all")
    return paths


# ---------------------------------------------------------------------- learning curves
def _histories(estimators):
    """``{name: history}`` from an estimator, a history list, or a dict of either."""
    if not isinstance(estimators, dict):
        estimators = {"": estimators}
    out = {}
    for name, est in estimators.items():
        if isinstance(est, list):
            out[name] = est
        else:
            check_is_fitted(est)
            out[name] = est.history_
    return out


def plot_learning_curves(estimators, ax=None):
    """Training loss per epoch, and the validation MRR where it was evaluated.

    Parameters
    ----------
    estimators : KGEmbedder, list of dict, or dict
        A fitted estimator, its ``history_``, or ``{name: estimator or history}``
        to compare several runs (one colour each).
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
        The loss axis (left); the validation MRR, when any was recorded (fit
        with ``valid`` or ``early_stopping``), is on a twin axis on the right.
    """
    ax = _axes(ax)  # first: it names the extra when matplotlib is missing
    from matplotlib.lines import Line2D

    histories = _histories(estimators)
    mrr_ax = None
    for i, (name, history) in enumerate(histories.items()):
        colour = f"C{i % 10}"
        epochs = [r["epoch"] for r in history]
        ax.plot(epochs, [r["loss"] for r in history], color=colour, label=name or "loss")
        points = [(r["epoch"], r["valid_mrr"]) for r in history if "valid_mrr" in r]
        if points:
            mrr_ax = mrr_ax or ax.twinx()
            mrr_ax.plot(*zip(*points), color=colour, linestyle="--", marker="o", label=name or "validation MRR")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    if mrr_ax is not None:
        mrr_ax.set_ylabel("filtered validation MRR")
    # one entry per run (its colour) and one per quantity (its line style), below the axes
    # where they hide no curve: five runs make 7 entries instead of 10 over the plot
    named = [name for name in histories if name]
    key = "grey" if named else "C0"
    handles = [Line2D([], [], color=f"C{i % 10}", label=name) for i, name in enumerate(histories) if name]
    handles.append(Line2D([], [], color=key, label="training loss" + (" (left)" if mrr_ax else "")))
    if mrr_ax is not None:
        handles.append(Line2D([], [], color=key, linestyle="--", marker="o", label="validation MRR (right)"))
    ax.legend(handles=handles, fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16),
              ncol=min(len(handles), 4), frameon=False)
    return ax


# ---------------------------------------------------------------------- negatives
def _draws_uniform_ids(sampler):
    return type(sampler).sample is UniformSampler.sample and not hasattr(sampler, "generate")


def _negatives(est, X, n_negatives, mutation_ratio, random_state):
    """Positives' tail embeddings and the tail negatives of each kind, as tensors.

    Returns ``(positives (n, d), {name: negatives (n, N, d)})``: ``uniform``,
    the fitted sampler's own (unless it draws uniform ids, as ``'uniform'`` and
    ``'bernoulli'`` do), and ``EMU``: the uniform negatives with a fraction
    ``mutation_ratio`` of their coordinates copied from the positive.
    """
    check_is_fitted(est)
    if mutation_ratio is None:
        mutation_ratio = est.emu_params_["mutation_ratio"]
    model, device = est.model_, est.device_
    ids = est._encode_strict(X, 3)
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    gen = torch.Generator(device=device).manual_seed(seed)
    n, n_ent = ids.shape[0], len(est.entities_)
    with torch.no_grad():
        pos = model.entities(ids[:, 2])
        uniform = model.entities(torch.randint(n_ent, (n, n_negatives), generator=gen, device=device))
        kinds = {"uniform": uniform}
        if not _draws_uniform_ids(est.sampler_):
            # drawn as in training (ids, then generated embeddings for DANS), from a
            # copy so that plotting never changes the fitted sampler's state
            sampler = copy.deepcopy(est.sampler_)
            name = type(sampler).__name__
            n_gen = n_generated(sampler)
            if n_negatives <= n_gen:
                raise ValueError(f"n_negatives must exceed the {n_gen} negatives that {name} "
                                 f"generates per positive; got {n_negatives}.")
            anchor = model.entities(ids[:, :1])
            query = model.query(anchor, model.relations(ids[:, 1:2]), "tail")
            try:
                drawn, fake = draw_negatives(model, sampler, ids, "tail", n, n_negatives, gen, anchor, query,
                                             train=False)
            except ValueError as exc:  # NSCaching keeps caches for training triples only
                raise ValueError(f"{name} cannot draw negatives for these triples ({exc}); "
                                 "plot training triples instead.") from exc
            kinds[name] = with_generated(model.entities(drawn), fake)
        mask = emu_mask(uniform.shape, mutation_ratio, gen, device)
        kinds[f"EMU (mutation_ratio={mutation_ratio:.2f})"] = mutate(pos.unsqueeze(1), uniform, mask)[:, 0]
    return pos, kinds


def plot_negative_hardness(est, X, n_negatives=64, mutation_ratio=None, bins=40, random_state=0,
                           ax=None):
    """Histograms of the cosine similarity between positives and their negatives (EMU paper, Fig. 3).

    For the tail of every triple of ``X``, ``n_negatives`` negatives of each
    kind: uniform entities; those of the estimator's sampler, when it draws
    something other than uniform ids; and EMU negatives, the uniform ones with
    a fraction ``mutation_ratio`` of their coordinates taken from the positive.
    Harder negatives sit closer to their positive (further right).

    Parameters
    ----------
    est : fitted KGEmbedder
    X : array-like of shape (n_triples, 3)
        Positive triples, e.g. a few hundred training triples (samplers with a
        state per training triple, such as NSCaching, only draw for those).
    n_negatives : int, default=64
    mutation_ratio : float, optional
        Defaults to the estimator's resolved ``emu_params_['mutation_ratio']``.
    bins : int, default=40
    random_state : int, RandomState instance or None, default=0
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
        The legend gives each kind's mean similarity.
    """
    ax = _axes(ax)
    pos, kinds = _negatives(est, X, n_negatives, mutation_ratio, random_state)
    edges = np.linspace(-1.0, 1.0, bins + 1)
    for name, neg in kinds.items():
        sim = F.cosine_similarity(pos.unsqueeze(1), neg, dim=-1).cpu().numpy().ravel()
        ax.hist(sim, bins=edges, density=True, alpha=0.5, label=f"{name}: mean {sim.mean():.2f}")
    ax.set_xlabel("cosine similarity to the positive")
    ax.set_ylabel("density")
    ax.set_title("Negative hardness")
    ax.legend(fontsize="small")
    return ax


def plot_negatives_pca(est, X, n_negatives=10, mutation_ratio=None, random_state=0, ax=None):
    """True tails and generated negatives projected on their first two principal components (Fig. 4).

    Parameters
    ----------
    est : fitted KGEmbedder
    X : array-like of shape (n_triples, 3)
        Positive triples, e.g. the test triples of one relation or one query.
    n_negatives : int, default=10
        Negatives of each kind per positive (see :func:`plot_negative_hardness`).
    mutation_ratio : float, optional
    random_state : int, RandomState instance or None, default=0
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
        One scatter per kind: the true tails first, then each kind of negative.
    """
    from sklearn.decomposition import PCA

    ax = _axes(ax)
    pos, kinds = _negatives(est, X, n_negatives, mutation_ratio, random_state)
    groups = {"true tails": pos.cpu().numpy()}
    groups.update({f"{name} negatives": neg.reshape(-1, neg.shape[-1]).cpu().numpy()
                   for name, neg in kinds.items()})
    points = PCA(n_components=2, random_state=0).fit_transform(np.concatenate(list(groups.values())))
    start = 0
    for (name, group), marker in zip(groups.items(), "*o^sDv"):
        xy = points[start:start + len(group)]
        start += len(group)
        first = name == "true tails"
        ax.scatter(xy[:, 0], xy[:, 1], s=90 if first else 12, marker=marker, alpha=1.0 if first else 0.5,
                   zorder=3 if first else 2, label=name, edgecolors="black" if first else "none")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("True tails and negatives (PCA)")
    ax.legend(fontsize="small")
    return ax


# ---------------------------------------------------------------------- embedding map
def _pca(table, random_state):
    from sklearn.decomposition import PCA

    return PCA(n_components=2, random_state=random_state).fit_transform(table)


def _tsne(table, random_state):
    from sklearn.manifold import TSNE

    perplexity = min(30.0, max(1.0, (len(table) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=random_state).fit_transform(table)


#: method name -> function(table (n, d), random_state) -> (n, 2)
PROJECTIONS = {"pca": _pca, "tsne": _tsne}


def plot_embedding_map(est, entities=None, hue=None, method="pca", annotate=False, random_state=0,
                       ax=None):
    """Entity embeddings in two dimensions.

    Parameters
    ----------
    est : fitted KGEmbedder
    entities : array-like of labels, optional
        The entities to show (default: all). The projection is fitted on them.
    hue : dict or array-like, optional
        A group per entity (``{label: group}`` or one value per shown entity),
        e.g. a type; each group gets a colour and a legend entry.
    method : {'pca', 'tsne'}, default='pca'
        Projection: PCA, or t-SNE (scikit-learn's; slower, local structure).
    annotate : bool or array-like of labels, default=False
        Write the labels of all shown entities (True) or of the ones given.
    random_state : int, default=0
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    check_is_fitted(est)
    if method not in PROJECTIONS:
        raise ValueError(f"method must be one of {sorted(PROJECTIONS)}; got {method!r}.")
    labels = est.entities_ if entities is None else np.asarray(entities)
    ids, known = encode(labels, est.entities_)
    if not known.all():
        raise ValueError(f"entities unseen during fit: {labels[~known][:5].tolist()}.")
    with torch.no_grad():
        table = est.model_.entities(torch.as_tensor(ids, device=est.device_)).cpu().numpy()
    if len(table) < 3:
        raise ValueError(f"an embedding map needs at least 3 entities; got {len(table)}.")
    xy = PROJECTIONS[method](table, random_state)
    ax = _axes(ax)
    if hue is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=12)
    else:
        groups = np.asarray([hue.get(label) for label in labels.tolist()] if isinstance(hue, dict) else hue,
                            dtype=object)
        if len(groups) != len(labels):
            raise ValueError(f"hue has {len(groups)} values for {len(labels)} entities.")
        for group in sorted(set(groups.tolist()), key=str):
            keep = np.array([g == group for g in groups])
            ax.scatter(xy[keep, 0], xy[keep, 1], s=12, label=str(group))
        ax.legend(fontsize="small", markerscale=1.5)
    if annotate is not False:
        wanted = set(labels.tolist()) if annotate is True else set(np.asarray(annotate).tolist())
        for (x, y), label in zip(xy, labels.tolist()):
            if label in wanted:
                ax.annotate(str(label), (x, y), fontsize="x-small", alpha=0.8)
    ax.set_title(f"Entity embeddings ({method.upper() if method == 'pca' else 't-SNE'}, "
                 f"{est.model})")
    ax.set_xticks([])
    ax.set_yticks([])
    return ax


# ---------------------------------------------------------------------- reliability
def plot_reliability_diagram(y_true, probabilities, n_bins=10, ax=None):
    """Reliability diagram: the fraction of true triples against the mean predicted probability, per bin.

    A calibrated model follows the diagonal; the legend gives each curve's
    expected calibration error (:func:`kgestimator.calibration.expected_calibration_error`).

    Parameters
    ----------
    y_true : array-like of shape (n,)
        1 for true triples, 0 for negatives (e.g. from
        :func:`kgestimator.calibration.labelled_triples`).
    probabilities : array-like of shape (n,) or dict
        Predicted probabilities, or ``{name: probabilities}`` for several curves
        (before and after :meth:`~kgestimator.KGEmbedder.calibrate`, say).
    n_bins : int, default=10
        Equal-width bins of ``[0, 1]``; empty bins are left out.
    ax : matplotlib Axes, optional

    Returns
    -------
    ax : matplotlib Axes
    """
    ax = _axes(ax)
    curves = probabilities if isinstance(probabilities, dict) else {"": probabilities}
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for name, proba in curves.items():
        conf, acc, count = calibration_bins(y_true, proba, n_bins)
        seen = count > 0
        ece = expected_calibration_error(y_true, proba, n_bins)
        label = f"{name + ': ' if name else ''}ECE {ece:.3f}"
        ax.plot(conf[seen], acc[seen], marker="o", label=label)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability")
    ax.set_ylabel("fraction of true triples")
    ax.set_title("reliability diagram")
    ax.legend(loc="upper left", fontsize="small")
    return ax

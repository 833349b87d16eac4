"""Embeddings as features: the fitted tables, per-triple features, and a scikit-learn transformer.

:class:`EntityEmbeddingTransformer` turns columns of entity labels into their
embedding vectors, so a knowledge-graph embedding can sit in a ``Pipeline`` or
a ``ColumnTransformer`` next to ordinary features.

Leakage
-------
When the target of the downstream task is itself a fact of the graph (the
country's bloc as a ``member_of`` triple, a drug's side effect as a
``causes`` triple), an embedding trained on that graph encodes the answer, and
cross-validated scores are inflated: the test rows' answers were in the
embedder's training data. The transformer guards against it in three ways:

* ``exclude_relations``: relations dropped from ``graph`` before training (the
  target relation of a task whose target is "does ``r`` hold");
* with an entity-valued target ``y``, ``fit`` drops, as whole relations,
  every relation that links a row's entity to its target label in either
  direction (whole relations, because the rows of a later test fold are not
  known at ``fit``); ``dropped_relations_`` lists them;
* ``cv``: ``fit_transform`` (what a ``Pipeline`` calls on its training rows)
  cross-fits: the rows are split into folds, and each fold's features come
  from an embedder trained on the graph without the target facts of that
  fold's entities (the other entities keep theirs, so the target relation still
  shapes the embedding space), the way ``TargetEncoder`` cross-fits.
  ``transform`` then uses the embedder fitted on the graph without them.

A prefit embedder (``prefit=True``) is used as it is: it is the caller's job
that it never saw the target facts.
"""

import numbers

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils.validation import _check_feature_names_in, check_is_fitted

from . import data as kgdata
from ._utils import check_choice, to_numpy, warn_at_caller
from .models import is_path_based

__all__ = ["EntityEmbeddingTransformer"]


HANDLE_UNKNOWN = ("error", "zeros", "neighbours")


# ---------------------------------------------------------------------- tables
def entity_table(est):
    """The entity embeddings of a fitted estimator as a float32 ndarray (a copy, on the CPU)."""
    check_is_fitted(est)
    if is_path_based(est.model_):
        raise AttributeError(
            "model='nbfnet' has no entity embeddings: NBFNet computes a node's representation anew for "
            "every query by message passing; use transform(triples) of another model, or "
            "score_samples for NBFNet's scores.")
    return to_numpy(est.model_.entity).copy()


def relation_table(est):
    """The relation embeddings of a fitted estimator (NBFNet: its relation query vectors)."""
    check_is_fitted(est)
    m = est.model_
    if is_path_based(m):
        return to_numpy(m.query.weight[:m.n_relations]).copy()
    return to_numpy(m.relation).copy()


def triple_features(est, X):
    """``[head embedding | relation embedding | tail embedding | score]`` per triple (float64)."""
    check_is_fitted(est)
    if is_path_based(est.model_):
        raise ValueError("transform needs entity embeddings, which model='nbfnet' does not have "
                         "(score_samples gives its triple scores).")
    ids = est._encode_strict(X, 3).cpu().numpy()
    ent, rel = entity_table(est), relation_table(est)
    score = est.score_samples(X)
    return np.hstack([ent[ids[:, 0]], rel[ids[:, 1]], ent[ids[:, 2]], score[:, None]]).astype(np.float64)


def triple_feature_names(est):
    """Column names of :func:`triple_features`."""
    ne, nr = est.model_.entity.shape[1], est.model_.relation.shape[1]
    return np.array([f"head{j}" for j in range(ne)] + [f"relation{j}" for j in range(nr)]
                    + [f"tail{j}" for j in range(ne)] + ["score"], dtype=object)


# ---------------------------------------------------------------------- transformer
def _label_columns(X):
    """``(2-D object ndarray of labels, column names or None)``; refuses NaN, inf, empty and 1-D input."""
    names = None
    if hasattr(X, "columns") and hasattr(X, "iloc"):
        names = np.asarray([str(c) for c in X.columns], dtype=object)
        X = X.to_numpy(dtype=object)
    elif hasattr(X, "toarray") or type(X).__module__.startswith("scipy.sparse"):
        raise TypeError("EntityEmbeddingTransformer takes entity labels; a sparse matrix holds none. "
                        "Pass a dense array or a DataFrame.")
    X = np.asarray(X, dtype=object)
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D array of entity labels (one column per entity feature); got "
                         f"shape {X.shape}. Reshape your data: a single column with X.reshape(-1, 1).")
    # the wording of scikit-learn's own validation, which its estimator checks look for
    if X.shape[0] == 0:
        raise ValueError(f"Found array with 0 sample(s) (shape={X.shape}) while a minimum of 1 is required.")
    if X.shape[1] == 0:
        raise ValueError(f"Found array with 0 feature(s) (shape={X.shape}) while a minimum of 1 is required.")
    for value in X.flat:
        if isinstance(value, (complex, np.complexfloating)):
            raise ValueError("Complex data not supported: entity labels are strings or integers.")
        if kgdata._is_missing(value) or (isinstance(value, numbers.Real) and not np.isfinite(value)):
            raise ValueError(f"X contains a missing label, NaN or inf ({value!r}); entity labels must be "
                             "strings or finite numbers. Impute or drop those rows first.")
    return X, names


def _encode_column(values, vocabulary):
    """``(ids, known)`` of a column of labels, matching ints and their decimal strings like ``fit`` does."""
    values = np.asarray(values, dtype=object)
    ints = np.array([isinstance(v, numbers.Integral) or (isinstance(v, float) and float(v).is_integer())
                     for v in values])
    labels = np.array([str(int(v)) if i else str(v) for v, i in zip(values, ints)])
    return kgdata.encode(labels, vocabulary)


class EntityEmbeddingTransformer(TransformerMixin, BaseEstimator):
    """Replace columns of entity labels by the entities' embedding vectors.

    Each input column holds entity labels (a head column, a tail column, ...);
    each becomes ``width`` output columns, where ``width`` is the entity
    embedding width of the model (``dim``, or ``2 * dim`` for ComplEx, RotatE
    and HAKE; see ``KGEmbedder.entity_embeddings_``). Read the module
    docstring on leakage before fitting on a graph that holds the target.

    Parameters
    ----------
    embedder : KGEmbedder
        With ``prefit=True``, a fitted estimator used as it is (never refitted;
        ``clone`` keeps it, so the transformer can go into a ``Pipeline``
        under ``cross_val_score``). Otherwise the estimator to clone and fit on
        ``graph``. (Defaults to None only for scikit-learn's conventions; ``fit``
        needs one.)
    graph : array-like of shape (n_triples, 3) or None, default=None
        The triples to train on (``prefit=False``, required). With
        ``handle_unknown='neighbours'``, also where the neighbours of entities
        unknown to the embedder are looked up (so a prefit embedder can be
        given triples about new entities here). Triples of excluded relations
        are used for neither.
    prefit : bool, default=False
        Whether ``embedder`` is already fitted.
    handle_unknown : {'error', 'zeros', 'neighbours'}, default='error'
        A label the embedder does not know: a ValueError naming it, a row of
        zeros, or the mean embedding of its known neighbours in ``graph``
        (zeros when it has none).
    exclude_relations : list of labels or None, default=None
        Relations dropped from ``graph`` before training.
    cv : int, cross-validation generator or None, default=None
        Folds of the cross-fitting in ``fit_transform`` (needs ``prefit=False``
        and a target ``y`` of entity labels, or ``exclude_relations``): each
        fold's rows are transformed by an embedder that did not see the target
        facts of their entities. None: no cross-fitting.

    Attributes
    ----------
    embedder_ : KGEmbedder
        The fitted estimator whose table is used.
    embeddings_ : ndarray of shape (n_entities, width)
        Its entity table.
    dropped_relations_ : ndarray
        Relations left out of the training graph (``exclude_relations`` and
        those linking a row's entity to its target).
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Only when ``X`` had column names.

    Examples
    --------
    >>> from kgestimator import KGEmbedder, make_kg
    >>> from kgestimator.features import EntityEmbeddingTransformer
    >>> kg = make_kg(random_state=0)
    >>> est = KGEmbedder(dim=8, n_epochs=2, random_state=0).fit(kg.train)
    >>> t = EntityEmbeddingTransformer(est, prefit=True).fit(kg.train[:5, :1])
    >>> t.transform(kg.train[:5, :1]).shape
    (5, 8)
    """

    def __init__(self, embedder=None, graph=None, prefit=False, handle_unknown="error",
                 exclude_relations=None, cv=None):
        self.embedder = embedder
        self.graph = graph
        self.prefit = prefit
        self.handle_unknown = handle_unknown
        self.exclude_relations = exclude_relations
        self.cv = cv

    def __sklearn_clone__(self):
        if self.prefit is True:
            # a clone keeps the fitted embedder itself: clone() would hand back an unfitted copy
            return type(self)(**self.get_params(deep=False))
        return super().__sklearn_clone__()

    # ------------------------------------------------------------------ fitting
    def _check_params(self):
        check_choice("handle_unknown", self.handle_unknown, HANDLE_UNKNOWN)
        check_choice("prefit", self.prefit, (True, False))
        if self.embedder is None:
            raise ValueError("EntityEmbeddingTransformer needs an embedder: a KGEmbedder to fit on graph=, "
                             "or a fitted one with prefit=True.")
        # duck-typed: this module is imported by the estimator, so it does not import it back
        if not all(hasattr(self.embedder, name) for name in ("fit", "score_samples", "get_params")):
            raise TypeError(f"The 'embedder' parameter must be a KGEmbedder; got {type(self.embedder).__name__}.")
        if self.prefit:
            check_is_fitted(self.embedder)
        elif self.graph is None:
            raise ValueError("EntityEmbeddingTransformer needs graph= triples to train on, or a fitted "
                             "embedder with prefit=True.")
        if self.handle_unknown == "neighbours" and self.graph is None:
            raise ValueError("handle_unknown='neighbours' needs graph= triples in which to find the neighbours "
                             "of unknown entities.")

    def _graph(self, X, y):
        """``(triples kept, dropped relation labels)``: the graph without excluded and target relations."""
        graph = kgdata.check_triples(self.graph, name="graph")
        drop = set()
        if self.exclude_relations is not None:
            drop |= {str(r) for r in np.asarray(self.exclude_relations, dtype=object).ravel()}
        if y is not None and not self.prefit:
            drop |= _target_relations(graph, X, y)
        keep = ~np.isin(graph[:, 1].astype(str), sorted(drop))
        return graph[keep], np.array(sorted(drop), dtype=object)

    def fit(self, X, y=None):
        """Fit the embedder on ``graph`` (unless prefit) and record the input columns.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_columns)
            Entity labels.
        y : array-like of shape (n_samples,), optional
            The downstream target. When it holds entity labels, the relations
            that link a row's entity to its target are left out of training.

        Returns
        -------
        self
        """
        self._check_params()
        X, names = _label_columns(X)
        self._fit(X, y, names)
        return self

    def _fit(self, X, y, names, graph=None):
        self.n_features_in_ = X.shape[1]
        if names is not None:
            self.feature_names_in_ = names
        elif hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        kept, dropped = (None, np.array([], dtype=object)) if self.graph is None else self._graph(X, y)
        if graph is not None:
            kept = graph
        self.embedder_ = self.embedder if self.prefit else clone(self.embedder).fit(kept)
        self.embeddings_ = entity_table(self.embedder_)
        self.dropped_relations_ = dropped
        self._neighbours = None if self.handle_unknown != "neighbours" else _adjacency(kept)

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform ``X``; with ``cv``, the features of each fold come from an embedder
        that did not see the target facts of that fold's entities (see the module docstring)."""
        if self.cv is None:
            return self.fit(X, y).transform(X)
        self._check_params()
        if self.prefit:
            raise ValueError("cv cross-fitting retrains the embedder, which prefit=True forbids; set cv=None.")
        from sklearn.model_selection import check_cv

        X_arr, names = _label_columns(X)
        graph = kgdata.check_triples(self.graph, name="graph")
        _, dropped = self._graph(X_arr, y)
        if not dropped.size:
            raise ValueError("cv cross-fitting needs target facts to hide: a y of entity labels linked to the "
                             "rows' entities in graph, or exclude_relations.")
        in_target = np.isin(graph[:, 1].astype(str), sorted(dropped))
        out = None
        for train_idx, test_idx in check_cv(self.cv).split(X_arr):
            fold = _entities_as_strings(X_arr[test_idx])
            hide = in_target & (np.isin(graph[:, 0].astype(str), fold) | np.isin(graph[:, 2].astype(str), fold))
            part = clone(self)
            part.cv = None
            part._check_params()
            part._fit(X_arr, None, names, graph=graph[~hide])
            features = part.transform(X[test_idx] if not hasattr(X, "iloc") else X.iloc[test_idx])
            if out is None:
                out = np.zeros((X_arr.shape[0], features.shape[1]))
            out[test_idx] = np.asarray(features)
        self.fit(X, y)
        return out  # set_output wraps fit_transform's result like transform's

    # ------------------------------------------------------------------ transforming
    def transform(self, X):
        """The embedding vectors of each column's entities, side by side.

        Parameters
        ----------
        X : array-like of shape (n_samples, ``n_features_in_``)

        Returns
        -------
        features : ndarray of shape (n_samples, ``n_features_in_ * width``)
        """
        check_is_fitted(self, "embeddings_")
        X, names = _label_columns(X)
        if X.shape[1] != self.n_features_in_:
            raise ValueError(f"X has {X.shape[1]} features, but EntityEmbeddingTransformer is expecting "
                             f"{self.n_features_in_} features as input.")
        table, vocab = self.embeddings_, self.embedder_.entities_
        out = []
        for j in range(X.shape[1]):
            ids, known = _encode_column(X[:, j], vocab)
            col = table[ids].astype(np.float64)
            if not known.all():
                col[~known] = self._unknown(X[~known, j])
            out.append(col)
        return np.hstack(out)

    def _unknown(self, labels):
        if self.handle_unknown == "error":
            shown = list(dict.fromkeys(map(str, labels)))[:5]
            raise ValueError(f"X holds {len(labels)} label(s) the embedder does not know, e.g. {shown}; "
                             "set handle_unknown='zeros' or 'neighbours' to transform them anyway.")
        width = self.embeddings_.shape[1]
        if self.handle_unknown == "zeros":
            return np.zeros((len(labels), width))
        rows = np.zeros((len(labels), width))
        vocab = self.embedder_.entities_
        for i, label in enumerate(labels):
            near = self._neighbours.get(_as_string(label), ())
            if near:
                ids, known = _encode_column(np.array(sorted(near), dtype=object), vocab)
                if known.any():
                    rows[i] = self.embeddings_[ids[known]].mean(0)
        return rows

    def get_feature_names_out(self, input_features=None):
        """``<column>_emb<j>`` for each input column and embedding coordinate."""
        check_is_fitted(self, "embeddings_")
        columns = _check_feature_names_in(self, input_features)
        width = self.embeddings_.shape[1]
        return np.array([f"{c}_emb{j}" for c in columns for j in range(width)], dtype=object)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = False
        tags.target_tags.required = False
        return tags


def _as_string(value):
    if isinstance(value, numbers.Integral) or (isinstance(value, float) and float(value).is_integer()):
        return str(int(value))
    return str(value)


def _entities_as_strings(X):
    return sorted({_as_string(v) for v in np.asarray(X, dtype=object).ravel()})


def _adjacency(triples):
    """``{entity label (str): set of neighbour labels (str)}`` over both directions."""
    out = {}
    for h, _, t in (() if triples is None else triples):
        h, t = _as_string(h), _as_string(t)
        out.setdefault(h, set()).add(t)
        out.setdefault(t, set()).add(h)
    return out


def _target_relations(graph, X, y):
    """Relations (str) of the triples that link a row's entity (any column) to that row's target label."""
    y = np.asarray(y, dtype=object).ravel()
    if y.shape[0] != X.shape[0]:
        return set()
    pairs = {(_as_string(e), _as_string(t)) for row, t in zip(X, y) for e in row}
    heads, tails = graph[:, 0].astype(str), graph[:, 2].astype(str)
    hit = np.array([(h, t) in pairs or (t, h) in pairs for h, t in zip(heads, tails)], dtype=bool)
    found = {str(r) for r in graph[hit, 1]}
    if found:
        warn_at_caller(f"relation(s) {sorted(found)} link the rows' entities to their targets; they are left "
                       "out of the embedder's training graph (dropped_relations_).")
    return found

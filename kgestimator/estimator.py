"""``KGEmbedder``: the scikit-learn estimator. Parameters, validation and glue; no maths."""

import contextlib
import copy
import io
import numbers
import threading
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._available_if import available_if
from sklearn.utils.validation import check_is_fitted

from . import data as kgdata
from . import distributed as kgdist
from . import persistence
from .losses import LOSSES as LOSS_FUNCTIONS
from .losses import describe as describe_loss
from ._progress import epoch_progress, logger
from ._utils import make_generator, resolve_device, to_numpy, warn_at_caller
from .callbacks import CallbackRunner, check_callbacks
from .checkpoint import Checkpointer, fingerprint
from .evaluation import EvaluationCache, digest, evaluate_ranks, query_batch_size, score_all
from .calibration import apply_calibrator, fit_calibrator, labelled_ids
from .conformal import evaluate_sets as conformal_coverage
from .conformal import fit_conformal, predict_sets
from .features import entity_table, relation_table, triple_feature_names, triple_features
from .filtering import KnownTriples
from .relations import relation_index, relation_metrics, score_relations
from .memory import activation_estimate, check_training_fits
from .models import MODELS, check_model_params, is_path_based, make_model, resolve_defaults
from .mutation import resolve_emu_masks
from ._utils import as_bool
from ._utils import check_bool as _check_bool
from ._utils import check_choice as _check_choice
from ._utils import check_number as _check_number
from ._parameters import PARAMETERS, constraints, document, json_object
from .samplers import UniformSampler, make_sampler, n_generated
from .schedules import check_schedule
from ._heap import freed_blocks_kept
from ._threads import fit_threads, torch_threads
from .model_selection import train_test_split_triples
from .training import (NonFiniteLossError, TrainingInterrupted, check_generated, make_config, resolve_compile,
                       train)

#: The EMU paper's settings, per model, as (alpha, keep flag as printed under "n_P/d", beta): Table 5
#: (FB15k-237/WN18RR, d=100) with Table 7 (HAKE) and Table 15 (NBFNet); the released scripts'
#: experiments_EMU.sh, one setting for every model; Table 12's DistMult setting, whose MRR is the
#: paper's DistMult result. The tables print the code's keep-negative flag under "n_P/d", so
#: mutation_ratio = 1 - flag (docs/algorithms.md §5.2).
_PAPER_SETTINGS = {
    "table5": {
        #            alpha, flag,  beta
        "complex": (0.34, 0.92, 0.12),
        "distmult": (0.73, 0.94, 0.25),
        "rotate": (0.11, 0.39, 0.53),
        "transe": (0.11, 0.39, 0.53),
        "hake": (0.10, 0.128, 0.964),
        "nbfnet": (1.0, 0.94, 0.25),
    },
    "scripts": {model: (0.11, 0.39, 0.53) for model in ("complex", "distmult", "rotate", "transe", "hake", "nbfnet")},
    "table12": {"distmult": (0.11, 0.914, 0.53)},
}


#: What ``'auto'`` resolves to, per model, as (alpha, keep flag, beta), chosen on evidence at the
#: library's defaults (d=100, 256 negatives, batch 1000, Adam; ``benchmarks/emu_defaults.py``,
#: BENCHMARKS.md §8): the released scripts' (0.11, 0.39, 0.53) for ComplEx, RotatE and HAKE, and
#: the same mutation and label with ``alpha=0.25`` on the plain loss for DistMult and TransE, where
#: the scripts' setting lost to no EMU (TransE on kinship, 0.248 against 0.378, and on WN18RR;
#: DistMult on a held-out generated graph, 0.764 against 0.784). With these values EMU beat no EMU
#: for every model on nations, kinship and four generated graphs, two of them held out until the
#: choice was made. NBFNet keeps Table 15's values (with them EMU gained 0.021 test MRR on kinship
#: in 20 epochs). The paper's tables stay reachable in :data:`EMU_PRESETS`.
_MORE_PLAIN_LOSS = (0.25, 0.39, 0.53)
EMU_DEFAULTS = {**_PAPER_SETTINGS["scripts"], "distmult": _MORE_PLAIN_LOSS, "transe": _MORE_PLAIN_LOSS,
                "nbfnet": _PAPER_SETTINGS["table5"]["nbfnet"]}

#: Named EMU settings: ``EMU_PRESETS[name][model]`` is a dict of ``alpha``, ``mutation_ratio`` and
#: ``beta``, e.g. ``KGEmbedder(model="distmult", emu=True, **EMU_PRESETS["table5"]["distmult"])``;
#: ``"auto"`` holds what ``'auto'`` resolves to (:data:`EMU_DEFAULTS`).
EMU_PRESETS = {name: {model: {"alpha": a, "mutation_ratio": round(1.0 - flag, 6), "beta": b}
                      for model, (a, flag, b) in table.items()}
               for name, table in {**_PAPER_SETTINGS, "auto": EMU_DEFAULTS}.items()}


#: loss name -> one line for ``kgestimator list`` (the registry is :data:`kgestimator.losses.LOSSES`)
LOSSES = {name: describe_loss(name) for name in LOSS_FUNCTIONS}


#: held while a fit swaps in its state and while a method takes its snapshot, so a
#: thread predicting during another thread's refit sees the old state or the new, never a mix
_FITTED_LOCK = threading.Lock()
#: (parameter, value above which a divergence is most likely its doing)
DIVERGENCE_SUSPECTS = (("learning_rate", 1.0), ("gamma", 1e3), ("alpha", 1e3), ("reg_weight", 1e3),
                       ("adversarial_temperature", 1e3))


def _params_at_fit(est):
    """The parameters a fit runs with, copied (sampler objects cloned) so later ``set_params``
    calls cannot reach them; ``save`` writes these, never the current ones."""
    from sklearn.base import clone

    # callbacks are run-time hooks (open runs, files), neither saved nor part of the model: not copied
    return {name: value if name == "callbacks" else as_bool(clone(value, safe=False))
            for name, value in est.get_params(deep=False).items()}


def _on_snapshot(method):
    """Run ``method`` on :meth:`KGEmbedder._snapshot`: one fit's state even during a refit."""
    import functools

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        return method(self._snapshot(), *args, **kwargs)

    return wrapper


def _check_enough_candidates(known_mask, k, offset):
    """Refuse top-k queries with fewer than ``k`` answers that are not known facts."""
    left = known_mask.shape[1] - known_mask.sum(1)
    short = left < k
    if bool(short.any()):
        row = int(short.nonzero()[0, 0])
        raise ValueError(
            f"Query row {offset + row} has only {int(left[row])} candidate(s) that are not known "
            f"facts, fewer than k={k}; lower k or pass exclude_known=False."
        )


class KGEmbedder(BaseEstimator):
    """Knowledge-graph embedding estimator for link prediction.

    Learns entity and relation embeddings from ``(head, relation, tail)`` triples
    with negative sampling, optionally with EMU (Embedding MUtation) and ULS
    (Unbounded Label Smoothing) from Takamoto et al., "Optimal Embedding Guided
    Negative Sample Generation for Knowledge Graph Link Prediction" (TMLR 2025).

    Parameters
    ----------
    (the PARAMETERS table of kgestimator/_parameters.py, written here at import)

    Attributes
    ----------
    entities_ : ndarray
        Entity labels; an entity's id is its position.
    relations_ : ndarray
        Relation labels.
    model_ : torch.nn.Module
        The trained scoring model.
    entity_embeddings_ : ndarray of shape (n_entities, width)
        The entity table, row ``i`` for ``entities_[i]`` (float32, a CPU copy
        made on each access). ``width`` is ``dim`` for TransE and DistMult, and
        ``2 * dim`` for ComplEx and RotatE (``[real | imaginary]`` halves) and
        HAKE (``[phase | modulus]``; phases as raw parameters, angle
        ``x * pi / rho`` with ``rho = (gamma + 2) / dim``). NBFNet has no
        entity table: reading it raises an AttributeError that says so.
    relation_embeddings_ : ndarray of shape (n_relations, width)
        The relation table, row ``i`` for ``relations_[i]``: ``dim`` columns
        for TransE, DistMult and RotatE (RotatE: raw phases, as for HAKE),
        ``2 * dim`` for ComplEx (``[real | imaginary]``) and ``3 * dim`` for
        HAKE (``[phase | modulus | bias]``); for NBFNet the ``dim``-wide query
        vectors of the relations (inverse relations left out).
    calibrator_ : dict
        After :meth:`calibrate`: the fitted score-to-probability map.
    conformal_ : dict
        After :meth:`calibrate_sets`: the sorted nonconformity values per group.
    sampler_ : object
        The fitted sampler.
    history_ : list of dict
        Per-epoch loss, time and validation MRR.
    emu_params_ : dict
        The resolved ``alpha``, ``mutation_ratio`` and ``beta``.
    device_ : torch.device
    n_threads_ : int
        torch's CPU threads during ``fit`` (see ``n_threads``).
    checkpoint_path_ : str or None
        The run's checkpoint file under ``checkpoint_dir`` (None without one).
    distributed_ : dict or None
        With ``distributed=True``: ``rank``, ``world_size``, ``backend``,
        ``batch_size_per_rank``, ``triples_per_second`` (each rank's training
        throughput in positives per second over the whole fit) and
        ``total_triples_per_second``; each ``history_`` record then also holds
        ``triples_per_second``, per rank. None otherwise.

    Notes
    -----
    Ctrl-C (``KeyboardInterrupt``) during ``fit`` stops training and leaves a
    fitted estimator with the best weights so far (the best validation weights
    under ``early_stopping``, else the latest), with a warning that says so;
    the last checkpoint is kept for resuming. Any other failure leaves the
    estimator as it was before ``fit`` (fitted state is assigned only when a
    fit succeeds). A NaN or infinite loss stops ``fit`` with a
    ``FloatingPointError`` that names the likely cause; the error's
    ``estimator`` attribute holds a copy fitted with the last finite weights
    (None when there are none).

    Prediction, scoring, evaluation and ``save`` are safe to call from several
    threads, also while another thread refits the estimator: each call sees
    one fit's state. ``set_params`` during such calls, or two concurrent fits
    of one estimator, are not supported.

    ``save``/``load`` exchange models safely: ``load`` reads tensors and JSON
    only. ``joblib.load`` or ``pickle.load`` of a file can run arbitrary code:
    never unpickle a model file from someone you do not trust.

    Examples
    --------
    >>> from kgestimator import KGEmbedder, make_kg
    >>> kg = make_kg(random_state=0)
    >>> est = KGEmbedder(n_epochs=5, random_state=0).fit(kg.train)
    >>> labels, scores = est.predict_topk(kg.test[:2, :2], k=3)
    >>> labels.shape
    (2, 3)
    """

    def __init__(self, model="distmult", dim=None, gamma=24.0, model_params=None, sampler="uniform", n_negatives=None,
                 neg_chunk_size=100, emu=False, alpha="auto", mutation_ratio="auto", uls=True,
                 beta="auto", emu_normalize=True, emu_resample="auto", emu_masks="shared", loss="ce",
                 adversarial_temperature=1.0, regularizer=None, reg_weight=0.0, training="negative_sampling",
                 label_smoothing=0.0, reciprocal=False, dropout=0.0, lr_scheduler=None,
                 lr_scheduler_params=None, optimizer="adam",
                 learning_rate=0.01, batch_size=None, n_epochs=50, max_steps=None,
                 early_stopping=False, eval_every=5, patience=3, validation_fraction=0.1,
                 compile="auto", sparse=False, mixed_precision=False, device="auto", random_state=None, verbose=0,
                 checkpoint_dir=None, checkpoint_every=None, n_threads=None, distributed=False, callbacks=None):
        self.model = model
        self.dim = dim
        self.gamma = gamma
        self.model_params = model_params
        self.sampler = sampler
        self.n_negatives = n_negatives
        self.neg_chunk_size = neg_chunk_size
        self.emu = emu
        self.alpha = alpha
        self.mutation_ratio = mutation_ratio
        self.uls = uls
        self.beta = beta
        self.emu_normalize = emu_normalize
        self.emu_resample = emu_resample
        self.emu_masks = emu_masks
        self.loss = loss
        self.adversarial_temperature = adversarial_temperature
        self.regularizer = regularizer
        self.reg_weight = reg_weight
        self.training = training
        self.label_smoothing = label_smoothing
        self.reciprocal = reciprocal
        self.dropout = dropout
        self.lr_scheduler = lr_scheduler
        self.lr_scheduler_params = lr_scheduler_params
        self.optimizer = optimizer
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.max_steps = max_steps
        self.early_stopping = early_stopping
        self.eval_every = eval_every
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.compile = compile
        self.sparse = sparse
        self.mixed_precision = mixed_precision
        self.device = device
        self.random_state = random_state
        self.verbose = verbose
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.n_threads = n_threads
        self.distributed = distributed
        self.callbacks = callbacks

    # ------------------------------------------------------------------ validation
    #: the single-parameter rules, checked by scikit-learn's ``_validate_params`` (kgestimator/_parameters.py)
    _parameter_constraints = constraints(PARAMETERS)
    #: the table the docstring's Parameters section and the ``kgestimator train`` flags are written from
    _parameter_table = PARAMETERS

    def _resolve_emu(self):
        defaults = EMU_DEFAULTS.get(self.model, EMU_DEFAULTS["rotate"])
        resolved = {}
        for name, default in zip(("alpha", "mutation_ratio", "beta"),
                                 (defaults[0], 1.0 - defaults[1], defaults[2])):
            value = getattr(self, name)
            resolved[name] = float(default if isinstance(value, str) and value == "auto" else value)
        return resolved

    def _check_params(self):
        """Check every parameter before anything is built; return the resolved EMU parameters.

        Single-parameter rules first (scikit-learn's ``_validate_params`` against
        ``_parameter_constraints``: an ``InvalidParameterError`` naming the parameter
        and the value), then :meth:`_check_param_combinations`.
        """
        self._validate_params()
        self._check_param_combinations()
        return self._resolve_emu()

    def _check_param_combinations(self):
        """The rules that span several parameters (after each one passed its own check)."""
        if self.sparse and self.regularizer in ("l3", "l2"):
            raise ValueError(f"The 'sparse' parameter cannot be True with regularizer={self.regularizer!r}: the "
                             "full-table penalty gives every row a gradient; use regularizer='n3'.")
        if self.checkpoint_every is not None and self.checkpoint_dir is None:
            raise ValueError("The 'checkpoint_every' parameter has no effect without checkpoint_dir; "
                             "set checkpoint_dir or leave checkpoint_every at None.")
        if self.distributed and self.checkpoint_dir is not None:
            raise ValueError("The 'distributed' parameter cannot be True with checkpoint_dir: each rank's "
                             "random state would have to be checkpointed; leave checkpoint_dir at None.")
        self._check_model_params()
        sampler = make_sampler(self.sampler)
        if isinstance(n_generated(sampler), numbers.Integral):  # else the sampler's own check names it
            check_generated(sampler, self._sizes()["n_negatives"])
        self._check_regime()

    def _check_regime(self):
        """``training``, ``dropout`` and the schedule against the rest: ``(dropout rates, schedule params)``."""
        rates = tuple(self.dropout) if isinstance(self.dropout, (tuple, list)) else (self.dropout, self.dropout)
        if is_path_based(MODELS[self.model]) and any(rates):
            raise ValueError("The 'dropout' parameter is not supported with model='nbfnet' (it has no "
                             "embedding tables); leave it at 0.")
        if self.training != "negative_sampling":
            if self.loss not in ("ce", "bce"):
                raise ValueError(f"training={self.training!r} takes loss='ce' or 'bce'; got loss={self.loss!r}.")
            if not (isinstance(self.sampler, str) and self.sampler == "uniform"):
                raise ValueError(f"training={self.training!r} scores every entity, so no sampler applies; "
                                 f"leave sampler='uniform' (got {self.sampler!r}).")
            if self.emu and (self.training == "kvsall" or self.emu == "mixup" or self.loss == "bce"):
                raise ValueError(f"emu={self.emu!r} is available with training='1vsall', loss='ce' and "
                                 f"emu in (True, 'ls_only'); got training={self.training!r}, loss={self.loss!r}.")
            if resolve_emu_masks(self.emu_masks, self.emu) == "independent":
                # a mask per (query, entity, coordinate) would be n_entities times a step's embeddings
                raise ValueError(f"emu_masks='independent' is available with training='negative_sampling'; "
                                 f"training={self.training!r} mutates every entity with one mask per entity, "
                                 "so leave emu_masks='shared'.")
        elif self.label_smoothing:
            raise ValueError("The 'label_smoothing' parameter applies to training='1vsall' or 'kvsall'; "
                             "leave it at 0 with negative sampling.")
        schedule = check_schedule(self.lr_scheduler, json_object(self.lr_scheduler_params))
        if self.lr_scheduler is not None and self.optimizer == "adagrad_then_adam":
            raise ValueError("The 'lr_scheduler' parameter cannot be combined with optimizer='adagrad_then_adam', "
                             "which sets its own rate halfway; use 'adam' or 'adagrad'.")
        return tuple(float(r) for r in rates), schedule

    def _check_model_params(self):
        """``model_params`` as a dict, its keys checked against the model; NBFNet's unsupported combinations."""
        params = json_object(self.model_params) or {}
        check_model_params(self.model, params)
        if is_path_based(MODELS[self.model]):
            self._check_path_model()
        return params

    def _check_path_model(self):
        # Bernoulli subclasses Uniform: both only choose the corrupted side here
        if isinstance(self.sampler, str):
            ok, sampler = self.sampler in ("uniform", "bernoulli"), self.sampler
        else:
            ok, sampler = isinstance(self.sampler, UniformSampler), type(self.sampler).__name__
        if not ok:
            raise ValueError(f"model='nbfnet' does not support sampler={sampler!r}: NBFNet draws strict uniform "
                             "negatives from its propagated node representations; use sampler='uniform' or "
                             "'bernoulli' (which only choose the corrupted side).")
        for name, bad, why in (("sparse", as_bool(self.sparse) is True, "it has no embedding tables"),
                               ("regularizer", self.regularizer is not None, "N3/L3 penalise embedding tables"),
                               ("distributed", as_bool(self.distributed) is True,
                                "its strict negatives need every training triple on every rank")):
            if bad:
                raise ValueError(f"The {name!r} parameter is not supported with model='nbfnet' "
                                 f"({name}={getattr(self, name)!r}): {why}.")

    def _sizes(self):
        """``dim``, ``batch_size`` and ``n_negatives``, the model's defaults where they are None."""
        return resolve_defaults(self.model, dim=self.dim, batch_size=self.batch_size, n_negatives=self.n_negatives)

    def _train_config(self, params, emu_params, n_train, device):
        params = dict(params, lr_scheduler_params=self._check_regime()[1])  # a JSON string becomes its dict
        return make_config(params, emu_params, n_train, device)

    # ------------------------------------------------------------------ encoding
    def _encode(self, X, n_columns=3, name="X"):
        return _encode(X, self.entities_, self.relations_, self.device_, n_columns, name)

    def _encode_strict(self, X, n_columns=3, name="X"):
        return _encode_strict(X, self.entities_, self.relations_, self.device_, n_columns, name)

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None, valid=None, valid_filter=None):
        """Learn embeddings from training triples.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)
            ``(head, relation, tail)`` labels (strings or ints), a list of triples
            or a 3-column DataFrame.
        y : None
            Ignored; present for scikit-learn compatibility.
        valid : array-like of shape (n_valid, 3), optional
            Validation triples for early stopping and for the filter of later
            evaluations. Triples with entities unseen in ``X`` are ignored.
        valid_filter : array-like of shape (n_filter, 3), optional
            More known true triples left out of the validation rankings, besides
            ``X`` and the validation triples; typically the test split, which is
            how LibKGE (``filter_with_test``) and kbc select models. Only the
            validation MRR changes (early stopping, the ``'plateau'`` schedule,
            ``history_``); the filter of later evaluations is not extended.
            Without it the validation MRR of a dense graph reads well below its
            test MRR (FB15k-237, BENCHMARKS.md §10). Triples with entities unseen
            in ``X`` are ignored.

        Returns
        -------
        self : KGEmbedder
        """
        emu_params = self._check_params()
        fit_params = _params_at_fit(self)
        with torch_threads(fit_threads(self.n_threads)), _cuda_cache_released():
            run = self._prepare_fit(X, valid, emu_params, fit_params, valid_filter)
            with freed_blocks_kept(run.parts.host_need), self._training(run) as progress:
                run.history = train(run.parts.model, run.fit_ids, run.parts.sampler, run.cfg, run.parts.gen,
                                    validate=run.validate, progress=progress, checkpoint=run.checkpoint,
                                    sync=run.sync)
            if run.history is not None:  # else interrupted: _training fitted what there was
                self._set_fitted(_fitted(run, run.history))
                run.hooks.end()
        return self

    def _prepare_fit(self, X, valid, emu_params, fit_params, valid_filter=None):
        """Everything ``train`` needs, as a ``_FitRun``: data, model, sampler, validation, checkpoint, hooks.

        fit is transactional: the fitted state is assembled in ``_FitParts`` and
        assigned at once at the end (or on Ctrl-C, as documented), so a fit that
        raises leaves the estimator exactly as it was.
        """
        labels = kgdata.check_triples(X, name="X")
        if valid_filter is not None:
            valid_filter = kgdata.check_triples(valid_filter, name="valid_filter")
            if valid is None and not self.early_stopping:
                raise ValueError("valid_filter filters the validation rankings, but this fit validates nothing: "
                                 "pass valid= or set early_stopping=True.")
        device, ctx, random_state = self._fit_context(resolve_device(self.device))
        cfg = self._train_config(fit_params, emu_params, labels.shape[0], device)
        parts = self._encode_data(labels, self._validation_labels(labels, valid, random_state), device, cfg)
        if valid_filter is not None:
            parts.valid_filter_ids = _encode_known(valid_filter, parts.entities, parts.relations, device,
                                                   "valid_filter")
        del labels  # label arrays can be hundreds of MB (fixed-width unicode); training needs only ids
        self._build_parts(parts, random_state, device)
        fit_ids, sync = parts.train_ids, None
        if ctx is not None:
            fit_ids, sync = self._distribute(parts, cfg, ctx, device)
        main = ctx is None or ctx.is_main
        desc = f"{self.model}{'+EMU' if self.emu else ''}"
        if main:
            logger.info("fit %s: %d triples, %d entities, %d relations, device %s%s", desc,
                        parts.train_ids.shape[0], len(parts.entities), len(parts.relations), device,
                        "" if ctx is None else f", {ctx.world_size} ranks ({ctx.backend})")
        # callbacks run where the progress is reported: on rank 0 only
        hooks = CallbackRunner(check_callbacks(self.callbacks) if main else (), self, can_stop=ctx is None)
        return _FitRun(parts, cfg, ctx, fit_ids, sync, self._checkpointer(parts, fit_params),
                       self._validation(parts, cfg, ctx, device), hooks, desc, emu_params, fit_params)

    @contextlib.contextmanager
    def _training(self, run):
        """Around ``train``: the checkpoint's lock, the progress bar and callbacks, and what a stop or a
        failure leaves (Ctrl-C: fitted with the weights so far, a warning; divergence: the estimator
        unchanged, a copy with the last finite weights in the error)."""
        main = run.ctx is None or run.ctx.is_main
        try:
            if run.checkpoint is not None:
                run.checkpoint.prepare()  # takes the run's lock: one fit per run at a time
            with epoch_progress(run.desc, self.verbose if main else 0,
                                None if self.max_steps else self.n_epochs) as progress:
                run.hooks.begin()
                yield run.hooks.wrap(progress) if main else None
        except TrainingInterrupted as stop:
            self._set_fitted(_fitted(run, stop.history))
            warn_at_caller(str(stop))
            run.hooks.end()
        except NonFiniteLossError as err:
            diverged = self._diverged(err, _fitted(run, err.history) if err.weights_kept else None, run.checkpoint)
            run.hooks.error(diverged)
            raise diverged from None
        except Exception as err:
            run.hooks.error(err)
            raise
        finally:
            if run.checkpoint is not None:
                run.checkpoint.close()

    def _fit_context(self, device):
        """``(device, distributed context or None, random_state shared by the ranks)``."""
        if not self.distributed:
            return device, None, self.random_state
        device = kgdist.local_device(device)
        ctx = kgdist.init(device)
        return device, ctx, kgdist.shared_seed(self.random_state, ctx, device)

    def _validation_labels(self, labels, valid, random_state):
        """``(training labels, validation labels or None)``: ``valid``, or a held-out split for early stopping."""
        if valid is not None:
            return labels, kgdata.check_triples(valid, name="valid")
        if not self.early_stopping:
            return labels, None
        try:
            labels, valid_labels = train_test_split_triples(
                labels, test_size=self.validation_fraction, random_state=random_state)
        except ValueError as exc:
            raise ValueError(
                f"early_stopping holds out validation_fraction={self.validation_fraction} of X's "
                f"{labels.shape[0]} triple(s), which leaves none to train on; pass valid= or lower "
                "validation_fraction.") from exc
        # empty when every held-out triple was needed to introduce an entity or relation
        return labels, valid_labels if valid_labels.shape[0] else None

    def _encode_data(self, labels, split, device, cfg):
        """Vocabularies and id tensors of the training and validation triples, as ``_FitParts``."""
        labels, valid_labels = split
        entities, relations = kgdata.build_vocabulary(labels)
        # fail in a second, not after an hour or with the machine swapping
        dim = self._sizes()["dim"]
        need = check_training_fits(MODELS[self.model], len(entities), len(relations), dim,
                            labels.shape[0] + (0 if valid_labels is None else valid_labels.shape[0]),
                            self.optimizer, self.sparse, self.early_stopping, device,
                            activations=activation_estimate(MODELS[self.model], len(entities), len(relations),
                                                            labels.shape[0],
                                                            cfg, dim,
                                                            self._check_model_params(), device))
        parts = _FitParts(entities, relations, device, _encode_strict(labels, entities, relations, device))
        parts.host_need = need if device.type == "cpu" else 0
        if valid_labels is not None:
            parts.valid_ids = _encode_known(valid_labels, entities, relations, device, "valid")
        parts.known_ids = parts.train_ids if parts.valid_ids is None else torch.cat([parts.train_ids,
                                                                                     parts.valid_ids])
        return parts

    def _build_parts(self, parts, random_state, device):
        """The seeded generator, the model and the fitted sampler, into ``parts``."""
        parts.gen, parts.seed = make_generator(random_state, device)
        n_ent, n_rel = len(parts.entities), len(parts.relations)
        model = make_model(self.model, n_ent, n_rel, self._sizes()["dim"], float(self.gamma), self._check_model_params(),
                           generator=torch.Generator().manual_seed(parts.seed), reciprocal=bool(self.reciprocal))
        if not is_path_based(model):
            model.entity_dropout, model.relation_dropout = self._check_regime()[0]
        if is_path_based(model):
            # the fact graph NBFNet propagates over: the training triples only
            model.set_graph(parts.train_ids.cpu())
        parts.model = model.to(device)
        parts.sampler = make_sampler(self.sampler).fit(parts.train_ids, n_ent, n_rel, generator=parts.gen)

    def _distribute(self, parts, cfg, ctx, device):
        """This rank's share of the work: ``(its training ids, the gradient averager)``."""
        kgdist.broadcast_parameters(parts.model)
        parts.gen.manual_seed(kgdist.rank_seed(parts.seed, ctx.rank))  # own shuffles and negatives per rank
        cfg.batch_size = -(-cfg.batch_size // ctx.world_size)
        return kgdist.shard(parts.train_ids, ctx, parts.seed), kgdist.GradientAverager(ctx, device)

    def _validation(self, parts, cfg, ctx, device):
        """``validate() -> MRR`` on the validation ids, or None when there are none."""
        valid_ids = parts.valid_ids
        if valid_ids is None or not valid_ids.shape[0]:
            if self.early_stopping:
                warn_at_caller("early_stopping is on but no validation triple has its entities and relation in "
                               "the training triples; training runs every epoch without early stopping.")
            return None
        known = parts.known_ids if parts.valid_filter_ids is None else torch.cat([parts.known_ids,
                                                                                 parts.valid_filter_ids])
        known_valid = KnownTriples(known, len(parts.entities), len(parts.relations))

        def validate():
            return evaluate_ranks(parts.model, valid_ids, known_valid, compile=cfg.compile)["mrr"]

        return validate if ctx is None else kgdist.main_validates(validate, ctx, device)

    def _checkpointer(self, parts, fit_params):
        if self.checkpoint_dir is None:
            return None
        data = [parts.train_ids, parts.entities, parts.relations]
        data += [] if parts.valid_ids is None else [parts.valid_ids]
        # another filter gives other validation MRRs, so another model selection: another run
        data += [] if parts.valid_filter_ids is None else [parts.valid_filter_ids]
        checkpoint = Checkpointer(self.checkpoint_dir, self.checkpoint_every,
                                  fingerprint(fit_params, parts.device, data))
        return checkpoint

    def _set_fitted(self, state):
        with _FITTED_LOCK:
            for stale in ("calibrator_", "conformal_"):  # they belong to the previous model
                self.__dict__.pop(stale, None)
            self.__dict__.update(state)

    def _snapshot(self):
        """A shallow copy whose fitted state is one fit's (see ``_FITTED_LOCK``)."""
        view = object.__new__(type(self))
        with _FITTED_LOCK:
            view.__dict__ = dict(self.__dict__)
        return view

    def _diverged(self, err, state, checkpoint):
        """The error of a fit whose loss or weights stopped being finite, naming the likely cause.

        The estimator stays as it was; a copy fitted with the last finite weights (``state``),
        if any, travels in the error's ``estimator`` attribute.
        """
        before = "a fitted model" if "model_" in self.__dict__ else "unfitted"
        params = {**state["_fit_params"], **state["emu_params_"]} if state else {
            **self.get_params(deep=False), **self._resolve_emu()}
        suspects = [f"{name!r} (it is {params[name]})" for name, limit in DIVERGENCE_SUSPECTS
                    if isinstance(params.get(name), numbers.Real) and params[name] > limit]
        if suspects:
            advice = "Lower " + " or ".join(suspects) + "."
        else:
            advice = (f"Lower 'learning_rate' (it is {params['learning_rate']}), or use regularizer='n3', or "
                      f"a smaller 'gamma' (it is {params['gamma']}; it also sets the initial weight range).")
        if state is not None:
            kept = (f"The estimator is left as it was before this fit ({before}); the exception's "
                    f"'estimator' attribute holds a copy fitted with {err.kept}.")
        else:
            kept = f"No finite weights are left; the estimator is left as it was before this fit ({before})."
        if checkpoint is not None and checkpoint.step is not None:
            kept += f" The last checkpoint (step {checkpoint.step}, {checkpoint.path}) is kept."
        new = NonFiniteLossError(f"{err} {kept} {advice}", err.history, err.weights_kept, err.kept)
        if state is not None:
            new.estimator = type(self)(**state["_fit_params"])
            new.estimator._set_fitted(state)
        return new

    # ------------------------------------------------------------------ inference
    def _known_index(self, extra=None):
        ids = self._known_ids.to(self.device_)
        if extra is not None and extra.shape[0]:
            ids = torch.cat([ids, extra])
        return KnownTriples(ids, len(self.entities_), len(self.relations_))

    @_on_snapshot
    def score_samples(self, X):
        """Plausibility score of each triple (higher is more plausible).

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)

        Returns
        -------
        scores : ndarray of shape (n_triples,)
        """
        check_is_fitted(self)
        ids = self._encode_strict(X, 3)
        m = self.model_
        out = []
        if is_path_based(m):
            # one propagation per (head, relation) query scores its tail
            m.eval()
            bs = query_batch_size(m)
            with torch.no_grad():
                for i in range(0, ids.shape[0], bs):
                    b = ids[i:i + bs]
                    out.append(score_all(m, b[:, 0], b[:, 1], "tail").gather(1, b[:, 2:3]).squeeze(1))
            return to_numpy(torch.cat(out)).astype(np.float64) if out else np.zeros(0)
        with torch.no_grad():
            for i in range(0, ids.shape[0], 65536):
                b = ids[i:i + 65536]
                out.append(m.score(m.entities(b[:, 0]), m.relations(b[:, 1]), m.entities(b[:, 2])))
        return to_numpy(torch.cat(out)).astype(np.float64)

    # ------------------------------------------------------------------ embeddings as features
    @property
    def entity_embeddings_(self):
        return entity_table(self)

    @property
    def relation_embeddings_(self):
        return relation_table(self)

    def transform(self, X):
        """Per-triple features for triple classification: head, relation and tail embeddings and the score.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)

        Returns
        -------
        features : ndarray of shape (n_triples, 2 * entity width + relation width + 1)
            ``[head | relation | tail | score]`` (widths as in
            ``entity_embeddings_`` and ``relation_embeddings_``);
            :meth:`get_feature_names_out` names the columns. Not available for
            NBFNet (no entity table; a ValueError says so).
        """
        return triple_features(self, X)

    def fit_transform(self, X, y=None, **fit_params):
        """``fit(X, **fit_params)``, then :meth:`transform` of ``X``."""
        return self.fit(X, y, **fit_params).transform(X)

    def get_feature_names_out(self, input_features=None):
        """Names of the :meth:`transform` columns: ``head0..``, ``relation0..``, ``tail0..``, ``score``."""
        check_is_fitted(self)
        return triple_feature_names(self)

    # ------------------------------------------------------------------ probabilities
    def calibrate(self, X, method="sigmoid", n_negatives=1, filter_triples=None, random_state=None):
        """Fit a map from scores to probabilities on held-out true triples and generated negatives.

        Each triple of ``X`` is corrupted ``n_negatives`` times on each side
        (head and tail) with uniform entities, redrawn when the corruption is
        a known fact; :mod:`kgestimator.calibration` explains what the
        probability then means.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)
            Held-out true triples, not used in ``fit`` (e.g. a validation split
            that early stopping did not use). Rows with unseen labels are left out.
        method : {'sigmoid', 'isotonic'}, default='sigmoid'
            Platt scaling (two parameters, for small ``X``) or isotonic
            regression (monotone, non-parametric; needs more triples).
        n_negatives : int, default=1
            Corruptions per triple and per side.
        filter_triples : array-like of shape (n_filter, 3), optional
            More known facts a negative must not be (e.g. the test split).
        random_state : int, RandomState instance or None, default=None

        Returns
        -------
        self : KGEmbedder
            With ``calibrator_`` set; the model itself is unchanged. A later
            ``fit`` removes it; :meth:`save` does not write it (a pickle keeps it).
        """
        check_is_fitted(self)
        ids, y = labelled_ids(self, X, n_negatives, filter_triples, random_state)
        scores = self._score_ids(ids)
        self.calibrator_ = fit_calibrator(scores, y, method)
        return self

    def _check_calibrated(self):
        if not hasattr(self, "calibrator_"):
            raise AttributeError("predict_proba needs a calibration: call calibrate(held_out_triples) first.")
        return True

    @available_if(_check_calibrated)
    def predict_proba(self, X):
        """Calibrated probability that each triple is true (needs :meth:`calibrate` first).

        Before :meth:`calibrate` the method is absent (``hasattr`` is False;
        calling it raises an AttributeError that says to calibrate).

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)

        Returns
        -------
        proba : ndarray of shape (n_triples,)
        """
        check_is_fitted(self)
        return apply_calibrator(self.calibrator_, self.score_samples(X))

    # ------------------------------------------------------------------ conformal answer sets
    def calibrate_sets(self, X, nonconformity="score", min_queries=100, filter_triples=None, random_state=None):
        """Calibrate split-conformal answer sets (:meth:`predict_set`) on held-out triples.

        Both queries of each triple, ``(h, r, ?)`` and ``(?, r, t)``, are
        ranked with the filtered protocol (training and validation facts,
        ``X`` and ``filter_triples`` filtered, the answer kept);
        :mod:`kgestimator.conformal` describes the nonconformity values and
        the guarantee.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)
            Held-out true triples exchangeable with the future queries, not used
            in ``fit``. Rows with unseen labels are left out.
        nonconformity : {'score', 'rank'}, default='score'
            One minus the softmax probability of the answer (sets adapt to each
            query), or its filtered rank (every query of a group gets the same
            number of candidates, give or take one).
        min_queries : int, default=100
            Calibration queries a relation needs on a side to get its own
            threshold; relations with fewer share the side's.
        filter_triples : array-like of shape (n_filter, 3), optional
            More known facts to filter.
        random_state : int, RandomState instance or None, default=None
            Tie-breaking draws of ``nonconformity='rank'``.

        Returns
        -------
        self : KGEmbedder
            With ``conformal_`` set. A later ``fit`` removes it; :meth:`save`
            does not write it (a pickle keeps it).
        """
        check_is_fitted(self)
        ids, ok, _ = self._encode(X, 3, name="X")
        ids = ids[torch.as_tensor(ok, device=self.device_)]
        if not ids.shape[0]:
            raise ValueError("X has no triple whose entities and relation were seen during fit.")
        known = self._known_index(self._with_filter(ids, filter_triples))
        self.conformal_ = fit_conformal(self, ids, known, nonconformity, min_queries, random_state)
        return self

    def _check_calibrated_sets(self, coverage):
        check_is_fitted(self)
        if not hasattr(self, "conformal_"):
            raise ValueError("Answer sets need a conformal calibration: call calibrate_sets(held_out_triples) first.")
        _check_number("coverage", coverage, 0.0, 1.0, low_open=True)

    def predict_set(self, X, coverage=0.9, direction="tail", random_state=None):
        """For each query, a set of answers that holds the true one with probability ``coverage``.

        Known facts (training and validation triples) are never in a set, as
        in the filtered ranking the calibration used. Needs :meth:`calibrate_sets`.

        Parameters
        ----------
        X : array-like of shape (n_queries, 2) or (n_queries, 3)
            Queries as for :meth:`predict_topk` (``'tail'`` or ``'head'``).
        coverage : float in (0, 1], default=0.9
        direction : {'tail', 'head'}, default='tail'
        random_state : int, RandomState instance or None, default=None
            The draw that settles the boundary candidate with ``nonconformity='rank'``.

        Returns
        -------
        sets : list of ndarray
            One array of entity labels per query, best score first (possibly empty).
        """
        return self._predict_set(X, coverage, direction, random_state)[1]

    def _predict_set(self, X, coverage, direction, random_state):
        """``(query labels, label arrays, score arrays)`` of :meth:`predict_set`."""
        self._check_calibrated_sets(coverage)
        query_labels, anchor, rel = self._queries(X, direction)
        ids, scores = predict_sets(self, anchor, rel, direction, self._known_index(), coverage, random_state)
        return query_labels, [self.entities_[i] for i in ids], scores

    def evaluate_sets(self, X, coverage=0.9, filter_triples=None, random_state=None):
        """Empirical coverage and set sizes of :meth:`predict_set` on test triples, both query sides.

        The sets are those of the filtered protocol (``X`` and
        ``filter_triples`` filtered besides the known facts, as in
        :meth:`evaluate`). Triples with unseen labels count as uncovered.

        Returns
        -------
        report : dict
            ``coverage``, ``mean_set_size``, ``median_set_size``, ``n_queries``
            over both sides, the same under ``'head'`` and ``'tail'``, and
            ``target_coverage``, ``n_triples``, ``n_unknown``, ``n_relation_groups``.
        """
        self._check_calibrated_sets(coverage)
        ids, known, _ = self._encode(X, 3, name="X")
        ok = torch.as_tensor(known, device=self.device_)
        ids = ids[ok]
        return conformal_coverage(self, ids, self._known_index(self._with_filter(ids, filter_triples)), coverage,
                             int((~known).sum()), random_state)

    def _with_filter(self, ids, filter_triples):
        """``ids`` and the encodable ``filter_triples``, as one id tensor."""
        if filter_triples is None:
            return ids
        f_ids, f_known, _ = self._encode(filter_triples, 3, name="filter_triples")
        return torch.cat([ids, f_ids[torch.as_tensor(f_known, device=self.device_)]])

    def _score_ids(self, ids):
        """:meth:`score_samples` of encoded triples."""
        labels = np.stack([self.entities_[ids[:, 0].cpu().numpy()], self.relations_[ids[:, 1].cpu().numpy()],
                           self.entities_[ids[:, 2].cpu().numpy()]], 1)
        return self.score_samples(labels)

    def _queries(self, X, direction):
        """``(labels (n, 2), anchor ids, relation ids)`` of tail or head queries.

        ``labels`` holds ``(anchor, relation)``: the head for tail queries, the
        tail for head queries.
        """
        _check_choice("direction", direction, ("tail", "head", "relation"))
        if direction == "relation":
            # (head, tail) pairs, or full triples whose relation is ignored
            labels = kgdata.check_triples(X, n_columns=2, name="X", columns=("head", "tail"))
            ids = _encode_strict(labels, self.entities_, self.entities_, self.device_, 2, name="X")
            return labels, ids[:, 0], ids[:, 1]
        roles = kgdata.column_roles(X)
        expected = ("head", "relation") if direction == "tail" else ("relation", "tail")
        if roles is not None and len(roles) == 2 and roles != expected:
            raise ValueError(f"{direction} queries need columns {expected}; got a DataFrame with "
                             f"columns {list(X.columns)}.")
        if direction == "tail":
            labels = kgdata.check_triples(X, n_columns=2, name="X")
        else:
            # (relation, tail) pairs, or full triples whose head is ignored
            labels = kgdata.check_triples(X, n_columns=2, name="X", columns=("relation", "tail"))[:, ::-1]
        ids = self._encode_strict(labels, 2, name="X")
        return labels, ids[:, 0], ids[:, 1]

    @_on_snapshot
    def predict_topk(self, X, k=10, direction="tail", exclude_known=True, as_frame=False):
        """The ``k`` best entities for each query.

        Parameters
        ----------
        X : array-like of shape (n_queries, 2) or (n_queries, 3)
            Tail queries ``(head, relation)``; for ``direction='head'``,
            ``(relation, tail)`` pairs; for ``direction='relation'``,
            ``(head, tail)`` pairs. A third column is ignored (tail queries) or
            the head (head queries) or relation (relation queries) column of
            triples is ignored. A
            DataFrame with columns named ``head``, ``relation`` (and ``tail``)
            is read by name.
        k : int, default=10
        direction : {'tail', 'head', 'relation'}, default='tail'
            Which element of the triple to predict; relations are ranked with
            the same known-fact exclusion (the relations already known between
            the pair). NBFNet needs one propagation per relation for it.
        exclude_known : bool, default=True
            Leave out answers already known from the training (and validation) triples.
        as_frame : bool, default=False
            Return a tidy pandas DataFrame instead of two arrays (needs pandas).

        Returns
        -------
        labels : ndarray of shape (n_queries, k)
        scores : ndarray of shape (n_queries, k)
            Returned as ``(labels, scores)`` when ``as_frame=False``.
        frame : pandas.DataFrame
            When ``as_frame=True``: ``k`` rows per query, in query order, with
            columns ``query`` (the query's position in ``X``), ``head`` and
            ``relation`` (``relation`` and ``tail`` for head queries, ``head``
            and ``tail`` for relation queries), ``rank``
            (1 to ``k``), ``label``, ``score`` and ``known`` (whether the answer
            is a training or validation fact, so always False with
            ``exclude_known=True``; a query then has fewer than ``k`` rows
            when fewer than ``k`` of its answers are unknown).
        """
        if as_frame:
            try:
                import pandas as pd
            except ImportError as exc:
                raise ImportError("predict_topk(as_frame=True) needs pandas: "
                                  "pip install 'kgestimator[pandas]'") from exc
            return pd.DataFrame(topk_columns(*self._predict_topk(X, k, direction, exclude_known, True),
                                             direction, exclude_known))
        _, labels, scores, _ = self._predict_topk(X, k, direction, exclude_known)
        return labels, scores

    def _predict_topk(self, X, k, direction, exclude_known, with_known=False):
        """``(query labels (n, 2), labels (n, k), scores (n, k), known (n, k) or None)``."""
        check_is_fitted(self)
        relation = isinstance(direction, str) and direction == "relation"
        n_cand, what = (len(self.relations_), "relations") if relation else (len(self.entities_), "entities")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or not 1 <= k <= n_cand:
            raise ValueError(f"k must be an int in [1, {n_cand}] (the number of {what}); got {k!r}.")
        _check_bool("exclude_known", exclude_known)
        query_labels, anchor, rel = self._queries(X, direction)
        known = None
        if exclude_known or with_known:
            known = self._known_index() if not relation else relation_index(
                self._known_ids.to(self.device_), len(self.entities_), len(self.relations_))
        labels, scores, flags = [], [], []
        bs = query_batch_size(self.model_)
        self.model_.eval()
        with torch.no_grad():
            for i in range(0, anchor.shape[0], bs):
                a, r = anchor[i:i + bs], rel[i:i + bs]
                if relation:  # r holds the tails of (head, tail) pairs
                    s = score_relations(self.model_, a, r)
                else:
                    s = score_all(self.model_, a, r, direction, self._compile_scoring())
                side = "tail" if relation else direction
                mask = known.mask(a, r, side) if known is not None else None
                if exclude_known:
                    if not with_known:  # a frame can hold fewer than k rows; arrays cannot
                        _check_enough_candidates(mask, k, i)
                    s = s.masked_fill(mask, -torch.inf)
                top = torch.topk(s, k, dim=1)
                labels.append(to_numpy(top.indices))
                scores.append(to_numpy(top.values))
                if with_known:
                    flags.append(to_numpy(mask.gather(1, top.indices)))
        idx = np.concatenate(labels)
        return (query_labels, (self.relations_ if relation else self.entities_)[idx], np.concatenate(scores).astype(np.float64),
                np.concatenate(flags) if with_known else None)

    def predict(self, X, direction="tail", exclude_known=True):
        """The best entity for each query (see :meth:`predict_topk`).

        Returns
        -------
        labels : ndarray of shape (n_queries,)
        """
        return self.predict_topk(X, k=1, direction=direction, exclude_known=exclude_known)[0][:, 0]

    @_on_snapshot
    def evaluate(self, X, filter_triples=None, batch_size=None, relation=False):
        """Filtered ranking metrics, per side and over both sides.

        Known answers from the training triples, ``valid`` of ``fit``, ``X`` itself
        and ``filter_triples`` are filtered out. Ranks are realistic (mean of
        optimistic and pessimistic). Triples with an entity or relation unseen in
        ``fit`` count as misses with the worst rank; ``n_unknown`` reports them.

        Parameters
        ----------
        X : array-like of shape (n_triples, 3)
        filter_triples : array-like of shape (n_filter, 3), optional
            More known triples to filter out (e.g. the other splits of a dataset).
        batch_size : int, optional
            Queries scored at once; by default as many as fit a bounded block
            of memory (see :func:`kgestimator.evaluation.query_batch_size`).
        relation : bool, default=False
            Also rank each triple's relation among all relations for its
            ``(head, tail)`` pair, other known relations of the pair filtered
            (reported under ``'relation'``, not in the overall metrics).

        Returns
        -------
        metrics : dict
            ``mrr``, ``mr``, ``hits@1``, ``hits@3``, ``hits@10``, ``n_triples``,
            ``n_unknown`` and the same metrics under ``'head'`` and ``'tail'``
            (and ``'relation'`` with ``relation=True``).
        """
        check_is_fitted(self)
        if batch_size is not None:
            _check_number("batch_size", batch_size, 1, integer=True)
        ids, known = self._encode_cached(X, "X")
        ok = torch.as_tensor(known, device=self.device_)
        ids = ids[ok]
        extra = ids
        if filter_triples is not None:
            f_ids, f_known = self._encode_cached(filter_triples, "filter_triples")
            extra = torch.cat([ids, f_ids[torch.as_tensor(f_known, device=self.device_)]])
        n_missing = int((~known).sum())
        if n_missing:
            warnings.warn(f"{n_missing} triple(s) have entities or relations unseen during fit; "
                          "they count as misses.", stacklevel=2)
        _check_bool("relation", relation)
        key = digest(extra)
        index = self._known_index(extra) if key is None else self._evaluation_cache().get(
            "filter", key, lambda: self._known_index(extra))
        with freed_blocks_kept():
            result = evaluate_ranks(self.model_, ids, index, n_missing, batch_size, self._compile_scoring())
        if relation:
            known_rel = relation_index(torch.cat([self._known_ids.to(self.device_), extra]),
                                       len(self.entities_), len(self.relations_))
            result["relation"] = relation_metrics(self.model_, ids, known_rel, n_missing, batch_size)
        return result

    def _evaluation_cache(self):
        cache = getattr(self, "_eval_cache", None)
        if cache is None:
            cache = self._eval_cache = EvaluationCache()
        return cache

    def _encode_cached(self, X, name):
        """``(ids, known)`` of labelled triples, from the evaluation cache when they were encoded before."""
        labels = kgdata.check_triples(X, name=name)
        key = digest(labels)
        if key is None:
            return self._encode(labels, 3, name=name)[:2]
        return self._evaluation_cache().get("labels", key, lambda: self._encode(labels, 3, name=name)[:2])

    def _compile_scoring(self):
        """Whether ranking and top-k scoring use the compiled kernels (``compile``; NBFNet's message passing too)."""
        device = next(self.model_.parameters()).device
        return as_bool(resolve_compile(self.compile, self.model, self._known_ids.shape[0], device)) is True

    def score(self, X, y=None):
        """Filtered MRR over both directions (higher is better); see :meth:`evaluate`."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.evaluate(X)["mrr"]

    # ------------------------------------------------------------------ persistence
    def __getstate__(self):
        state = self._snapshot().__dict__
        state.pop("_eval_cache", None)  # rebuilt on demand
        if "model_" in state:
            # tensors travel on the CPU so a pickle loads on a machine without CUDA (a Dask
            # worker's result reaches a client that may have none)
            state["model_"] = copy_to_cpu(state["model_"])
            state["sampler_"] = copy_to_cpu(state["sampler_"])
            state["_known_ids"] = state["_known_ids"].cpu()
            state["device_"] = torch.device("cpu")
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "model_" in state:
            self._eval_cache = EvaluationCache()  # left out of the pickle; rebuilt on demand

    @_on_snapshot
    def save(self, path):
        """Write the fitted estimator to ``path`` in a format that runs no code on load.

        The file holds tensors, JSON metadata and a SHA-256 checksum, and is
        written atomically (temporary file, then rename). It records the
        parameters the model was fitted with, not the current ones (after
        ``set_params``), and no ``checkpoint_dir``. Read it with :meth:`load`.
        """
        persistence.save(self, path)

    @classmethod
    def load(cls, path, device="cpu"):
        """Read an estimator written by :meth:`save`: the safe way to open a model file.

        Only tensors and JSON are read (``torch.load(weights_only=True)``), so
        loading never runs code from the file. ``joblib.load`` or ``pickle.load``
        of an untrusted file can run arbitrary code: do not use them on files
        from others.

        Parameters
        ----------
        path : str or path-like
        device : str, default='cpu'

        Returns
        -------
        estimator : KGEmbedder

        Raises
        ------
        ValueError
            For a file that is not a kgestimator model file (a pickle holding
            code included, refused without running it), that is truncated,
            corrupt or modified (checksum), inconsistent, or of another format
            version.
        FileNotFoundError
            When ``path`` does not exist.
        TypeError
            When ``path`` is not a str or path-like object.
        """
        return persistence.load(path, cls, device=device)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.string = True
        tags.input_tags.categorical = True
        tags.target_tags.required = False
        tags.non_deterministic = False
        # transform() gives per-triple features (not a TransformerMixin: no fit_transform)
        from sklearn.utils import TransformerTags

        tags.transformer_tags = TransformerTags(preserves_dtype=[])
        return tags


document(KGEmbedder, PARAMETERS)


@dataclass
class _FitParts:
    """What one fit builds before it becomes the estimator's fitted state."""

    entities: np.ndarray
    relations: np.ndarray
    device: torch.device
    train_ids: torch.Tensor
    valid_ids: torch.Tensor | None = None
    valid_filter_ids: torch.Tensor | None = None  # extra facts filtered from the validation rankings only
    model: torch.nn.Module | None = None
    sampler: object = None
    gen: torch.Generator | None = None
    seed: int = 0
    n_threads: int = field(default_factory=torch.get_num_threads)
    known_ids: torch.Tensor | None = None       # training and validation ids: the filter of evaluations
    host_need: int = 0                          # the memory check's estimate of the fit's peak in host memory


@dataclass
class _FitRun:
    """One fit's training run: what ``train`` takes, and what the fitted state is made of."""

    parts: _FitParts
    cfg: object
    ctx: object                  # distributed context, or None
    fit_ids: torch.Tensor        # this rank's training ids
    sync: object
    checkpoint: object
    validate: object
    hooks: CallbackRunner
    desc: str
    emu_params: dict
    fit_params: dict
    history: list | None = None


def _fitted(run, history):
    """The fitted attributes of one fit, assigned together by ``KGEmbedder._set_fitted``."""
    parts, checkpoint = run.parts, run.checkpoint
    parts.model.eval()  # dropout is for training only; score_samples does not switch modes
    distributed = None
    if run.ctx is not None:
        batch = min(run.cfg.batch_size, run.fit_ids.shape[0])  # as train() takes it
        distributed = _report_throughput(history, run.ctx, batch, parts.device)
    return dict(entities_=parts.entities, relations_=parts.relations, device_=parts.device, model_=parts.model,
                sampler_=parts.sampler, history_=history, emu_params_=run.emu_params, _known_ids=parts.known_ids,
                n_iter_=len(history), n_threads_=parts.n_threads, distributed_=distributed,
                # encodings and filter indices of this fit's evaluations: a container, so that calls on a
                # snapshot (see _on_snapshot) fill the estimator's own cache
                _eval_cache=EvaluationCache(),
                checkpoint_path_=None if checkpoint is None else checkpoint.path, _fit_params=run.fit_params)


@contextlib.contextmanager
def _cuda_cache_released():
    try:
        yield
    finally:
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            # hand the training's cached blocks (activations, optimiser state) back, so the
            # next fit on this GPU, or another process sharing it, can use them
            torch.cuda.empty_cache()


def _encode(X, entities, relations, device, n_columns=3, name="X"):
    """Check and encode labels: ``(ids LongTensor on device, known bool ndarray, labels)``."""
    labels = kgdata.check_triples(X, n_columns=n_columns, name=name)
    vocabs = (entities, relations, entities)[:n_columns]
    cols = [kgdata.encode(labels[:, j], vocab) for j, vocab in enumerate(vocabs)]
    ids = np.stack([c[0] for c in cols], 1)
    known = np.logical_and.reduce([c[1] for c in cols])
    return torch.as_tensor(ids, dtype=torch.long, device=device), known, labels


def _encode_known(X, entities, relations, device, name):
    """Ids of the triples of ``X`` whose labels are all in the vocabularies (the others are left out)."""
    ids, known, _ = _encode(X, entities, relations, device, name=name)
    return ids[torch.as_tensor(known, device=device)]


def _encode_strict(X, entities, relations, device, n_columns=3, name="X"):
    """Like :func:`_encode`, raising a ValueError that names unseen labels."""
    ids, known, labels = _encode(X, entities, relations, device, n_columns, name)
    if not known.all():
        bad = labels[~known][:5]
        raise ValueError(
            f"{name} contains {int((~known).sum())} row(s) with labels unseen during fit, "
            f"e.g. {bad.tolist()}; an unseen entity or relation has no embedding."
        )
    return ids


def topk_columns(query_labels, labels, scores, known, direction, exclude_known):
    """Columns of the tidy top-k table (see ``predict_topk(as_frame=True)``), as a dict of arrays.

    With ``exclude_known``, known answers (masked to a score of -inf, which reach
    the top k only when fewer than k candidates are unknown) are dropped.
    """
    n, k = labels.shape
    anchor, rel = query_labels[:, 0], query_labels[:, 1]
    query = ({"head": anchor, "relation": rel} if direction == "tail" else
             {"relation": rel, "tail": anchor} if direction == "head" else {"head": anchor, "tail": rel})
    columns = {"query": np.repeat(np.arange(n), k),
               **{name: np.repeat(values, k) for name, values in query.items()},
               "rank": np.tile(np.arange(1, k + 1), n), "label": labels.ravel(),
               "score": scores.ravel(), "known": known.ravel()}
    if exclude_known:
        keep = ~columns["known"]
        columns = {name: values[keep] for name, values in columns.items()}
    return columns


def _report_throughput(history, ctx, batch_size, device):
    """Gather every rank's throughput into ``history`` and a summary (``distributed_``); log it on rank 0."""
    per_epoch = kgdist.throughput(history, batch_size)
    steps, seconds = history[-1]["step"] if history else 0, sum(r["seconds"] for r in history)
    overall = steps * batch_size / seconds if seconds > 0 else 0.0
    ranks = kgdist.gather_floats([overall] + per_epoch, ctx, device)
    for i, record in enumerate(history):
        record["triples_per_second"] = [r[1 + i] for r in ranks]
    report = {"rank": ctx.rank, "world_size": ctx.world_size, "backend": ctx.backend,
              "batch_size_per_rank": batch_size, "triples_per_second": [r[0] for r in ranks],
              "total_triples_per_second": sum(r[0] for r in ranks)}
    if ctx.is_main:
        logger.info("data-parallel fit on %d ranks (%s): %s triples/s per rank, %.0f in all",
                    ctx.world_size, ctx.backend, ", ".join(f"{r:.0f}" for r in report["triples_per_second"]),
                    report["total_triples_per_second"])
    return report


def copy_to_cpu(obj):
    """A copy of a module, or of any object holding tensors (samplers: caches, networks,
    optimisers), with every tensor on the CPU."""
    if isinstance(obj, torch.nn.Module):
        return copy.deepcopy(obj).cpu()
    # torch's own serialiser reaches tensors anywhere inside the object (optimiser state
    # included) and map_location moves them; the bytes are our own, never a file
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return torch.load(buffer, map_location="cpu", weights_only=False)

"""The estimator's parameter table: per ``KGEmbedder.__init__`` parameter, its docs, rule and flag.

One entry per parameter holds its numpydoc type (before ``, default=``), its
description (``summary``, the first sentence, then ``details``), its
scikit-learn constraints and how the command line takes it. Defaults live
in the signature only. Three readers share the entry:

- ``KGEmbedder._parameter_constraints`` (:func:`constraints`), which
  scikit-learn's ``_validate_params`` checks at the start of ``fit``;
- the ``Parameters`` section of ``KGEmbedder.__doc__``, written at import by
  :func:`document`;
- the ``kgestimator train`` flags (``_cli_params``): help, parsing and checking.

Rules that span several parameters are ``KGEmbedder._check_param_combinations``.
"""

import inspect
import json
import os
import textwrap
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.utils._param_validation import HasMethods

from ._constraints import Range, Rule, accepts, describe, options
from .callbacks import HOOKS, is_callback
from .lcwa import TRAININGS
from .losses import LOSSES, REGULARIZERS
from .models import MODELS
from .mutation import EMU_MASKS
from .samplers import SAMPLERS
from .schedules import SCHEDULES

OPTIMIZERS = ("adam", "adagrad", "adagrad_then_adam")
#: the largest gamma whose initialisation range (gamma + 2) / dim is a finite float32
GAMMA_MAX = float(np.finfo(np.float32).max) / 2
#: the marker line of ``KGEmbedder``'s docstring that :func:`document` replaces
MARKER = "(the PARAMETERS table of kgestimator/_parameters.py, written here at import)"


@dataclass(frozen=True)
class Parameter:
    """One row of the table.

    ``flag``: ``'value'`` (parsed by the constraints: bool, None, int, float or
    the text), ``'path'`` (the text as it is, so ``2024`` is a folder) or None
    (no flag: the value is an object).
    """

    type: str
    constraints: tuple
    summary: str
    details: str = ""
    flag: str = "value"

    @property
    def text(self):
        """The description, as the docstring shows it."""
        return f"{self.summary} {self.details}" if self.details else self.summary

    def accepts(self, value):
        return accepts(self.constraints, value)

    def describe(self):
        """What the parameter accepts, in the words of scikit-learn's errors."""
        return describe(self.constraints)


def json_object(value):
    """A ``dict`` parameter given as a dict, a JSON object string or None, as a dict or None."""
    if isinstance(value, str):
        return json.loads(value)
    return value


def _is_json_object(value):
    try:
        return isinstance(value, str) and isinstance(json.loads(value), dict)
    except ValueError:
        return False


def _is_device(value):
    # whether the device exists on this machine is fit's check (resolve_device), not the parameter's
    if isinstance(value, str) and value == "auto":
        return True
    try:
        return isinstance(value, (str, torch.device)) and torch.device(value).type in ("cpu", "cuda", "mps")
    except (RuntimeError, TypeError, ValueError):
        return False


_RATE = Range(Real, 0.0, 1.0, closed="left")
_COUNT = Range(Integral, 1, None, closed="left")
_AUTO = options(["auto"])
_WEIGHT = Range(Real, 0.0, None, closed="left")  # finite: the open right end refuses inf
_FRACTION = Range(Real, 0.0, 1.0, closed="both")
_JSON = Rule(_is_json_object, "a JSON object string")
_PAIR = Rule(lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_RATE.is_satisfied_by(r) for r in v),
             "a pair (entity_rate, relation_rate) of floats in the range [0.0, 1.0)")
_DEVICE = Rule(_is_device, "'auto' or a device torch names ('cpu', 'cuda', 'cuda:N' or 'mps')")
_CALLBACKS = Rule(lambda v: isinstance(v, (list, tuple)) and all(map(is_callback, v)),
                  f"a list of callback objects (instances with one of the methods {', '.join(HOOKS)})")


#: name -> Parameter, in the signature's order (tests/test_parameters.py checks both ways)
PARAMETERS = {
    "model": Parameter(
        "{'distmult', 'complex', 'transe', 'rotate', 'hake', 'nbfnet'}", (options(MODELS),),
        "Scoring function.",
        "``'nbfnet'`` is the path-based Neural Bellman-Ford network: message passing over the training "
        "triples, no entity table (see ``kgestimator.models.nbfnet.REFERENCE_PARAMS`` for the reference "
        "settings)."),
    "dim": Parameter(
        "int or None", (_COUNT, None),
        "Embedding dimension (complex dimensions for ComplEx, RotatE and HAKE; the width of every layer for "
        "NBFNet).",
        "None: 100, and 32 for NBFNet (the reference's)."),
    "gamma": Parameter(
        "float", (Range(Real, 0.0, GAMMA_MAX, closed="right"),),
        "Margin of distance models; sets the initialisation range ``(gamma + 2) / dim`` of every embedding "
        "model (NBFNet ignores it)."),
    "model_params": Parameter(
        "dict, str or None", (dict, _JSON, None),
        "Keyword arguments of the model itself, as a dict or a JSON object string: for NBFNet ``n_layers`` "
        "(6), ``aggregate`` ('pna' or 'sum'), ``message`` ('distmult' or 'transe'), ``dependent`` (False), "
        "``layer_norm`` (True), ``short_cut`` (True), ``remove_one_hop`` (False) and ``checkpoint`` (False); "
        "for HAKE ``phase_weight`` and ``modulus_weight``; for every embedding model ``init_scale``, the "
        "initial uniform range ``[-init_scale, init_scale]`` instead of ``(gamma + 2) / dim`` (kbc starts "
        "near 1e-3)."),
    "sampler": Parameter(
        "str or sampler object", (options(SAMPLERS), HasMethods(["fit", "sides", "sample", "update"])),
        "``'uniform'`` (alternating head/tail corruption), ``'bernoulli'``, ``'san'``, ``'nscaching'`` or "
        "``'adversarial'`` (``kgestimator list`` describes them), or an object from "
        ":mod:`kgestimator.samplers` whose parameters grid searches reach as ``sampler__<name>``."),
    "n_negatives": Parameter(
        "int or None", (_COUNT, None),
        "Negatives per positive.",
        "None: 256, and 32 for NBFNet (the reference's)."),
    "neg_chunk_size": Parameter(
        "int", (_COUNT,),
        "Positives that share one set of negatives (chunked sampling as in DGL-KE).",
        "``1`` draws independent negatives per positive as the reference code does; larger chunks turn "
        "candidate scoring into matrix products and are much faster. Each positive still sees "
        "``n_negatives`` uniform negatives."),
    "emu": Parameter(
        "{False, True, 'mixup', 'ls_only'}", (options(("mixup", "ls_only")), "boolean"),
        "``True`` adds the EMU loss on mutated negatives; ``'mixup'`` mixes whole embeddings with a Beta(2, 1) "
        "weight instead (the paper's comparison); ``'ls_only'`` applies ULS to unmutated negatives (the "
        "\"w/o Emb.Mut.\" ablation)."),
    "alpha": Parameter(
        "float or 'auto'", (_WEIGHT, _AUTO),
        "Weight of the vanilla (one-hot) loss in Eq. 12."),
    "mutation_ratio": Parameter(
        "float or 'auto'", (_FRACTION, _AUTO),
        "Fraction of a negative's coordinates copied from the positive (the paper's ``n_P / d``; the "
        "reference code's ``-if_EMU`` is ``1 - mutation_ratio``)."),
    "uls": Parameter(
        "bool", ("boolean",),
        "Unbounded Label Smoothing on the EMU term; False uses one-hot targets."),
    "beta": Parameter(
        "float or 'auto'", (_FRACTION, _AUTO),
        "ULS label of the mutated negatives: the EMU term puts them ``log(1/beta)`` below the positive."),
    "emu_normalize": Parameter(
        "bool", ("boolean",),
        "Divide the EMU term by ``n_negatives`` as the reference code does (Eq. 12 does not; without it, the "
        "effective ``alpha`` shifts by about ``n_negatives``)."),
    "emu_resample": Parameter(
        "bool or 'auto'", (_AUTO, "boolean"),
        "Draw a second, independent set of negatives for the EMU term, as the reference code does for "
        "uniform negatives; False mutates the vanilla term's own negatives.",
        "``'auto'``: True, except for samplers whose reference reuses its draw (SAN: the EMU code's "
        "``if_CE 2``), which also spares a second hard-negative draw per step."),
    "emu_masks": Parameter(
        "{'shared', 'independent'}", (options(EMU_MASKS),),
        "How the EMU masks are drawn: ``'shared'``, one mask per negative slot shared by every positive of a "
        "step; ``'independent'``, a Bernoulli(``mutation_ratio``) draw per positive, negative and coordinate, "
        "as the reference code does.",
        "Shared masks correlate the mutated negatives of different positives (the expectation of each row's "
        "loss is unchanged) and keep EMU scoring on its fast paths (matrix products, fused distances); "
        "independent masks materialise the mutated candidates, which is slower (``benchmarks/bench_emu_masks.py``). ``neg_chunk_size=1`` with ``'independent'`` is the "
        "reference's exact sampling for uniform negatives; SAN needs ``'independent'`` only, since it draws "
        "per positive and ``emu_resample='auto'`` reuses its draw as the reference does (docs/algorithms.md "
        "§5.10). Ignored unless ``emu=True`` (no masks are drawn for ``'mixup'`` and ``'ls_only'``) and by "
        "NBFNet, whose EMU masks are always per positive; ``training='1vsall'`` takes ``'shared'`` only."),
    "loss": Parameter(
        "{'ce', 'logistic', 'self_adversarial', 'bce'}", (options(LOSSES),),
        "Softmax cross-entropy over ``[positive, negatives]`` (the EMU code path), the negative-sampling "
        "logistic loss, its self-adversarial variant (RotatE), or NBFNet's binary cross-entropy with "
        "self-adversarial weights.",
        "With ``'bce'`` the EMU term is BCE with ULS targets too."),
    "adversarial_temperature": Parameter(
        "float", (_WEIGHT,),
        "``alpha`` of the self-adversarial weights ``softmax(alpha * s_neg)`` (``'self_adversarial'`` and "
        "``'bce'``; NBFNet's temperature ``T`` is ``1 / alpha``)."),
    "regularizer": Parameter(
        "{None, 'n3', 'l3', 'l2'}", (options(REGULARIZERS), None),
        "N3 over the batch's factors (Lacroix et al. 2018; frequency-weighted as in kbc and LibKGE's "
        "``weighted: True``: an entity is penalised once per occurrence in the step, divided by the number "
        "of queries), or L3 / squared L2 over the full tables (LibKGE's unweighted ``lp``)."),
    "reg_weight": Parameter(
        "float", (_WEIGHT,),
        "Regularisation weight. With ``emu=True`` the regulariser is scaled by ``alpha`` with the vanilla "
        "loss, so a weight tuned without EMU keeps its strength against the data term."),
    "training": Parameter(
        "{'negative_sampling', '1vsall', 'kvsall'}", (options(TRAININGS),),
        "How a step scores candidates.",
        "``'negative_sampling'``: each positive against ``n_negatives`` sampled entities (one side per step, "
        "as the sampler chooses). ``'1vsall'``: each training triple's tail query ``(h, r, ?)`` and head "
        "query ``(?, r, t)`` against every entity, with ``loss='ce'`` (softmax cross-entropy, LibKGE's "
        "``kl``) or ``'bce'``. ``'kvsall'``: each distinct training query against every entity, its target "
        "marking all known training answers (multi-label; an epoch goes through the distinct queries). Both "
        "score all entities with one matrix product for bilinear models and in blocks for distance models "
        "and NBFNet; steps with more than ``kgestimator.lcwa.SCORE_ELEMENTS`` scores go through the entity "
        "axis in chunks. ``emu`` works with ``'1vsall'`` (every entity mutated, see the README); samplers "
        "other than ``'uniform'`` do not apply."),
    "label_smoothing": Parameter(
        "float", (_RATE,),
        "1vsAll/KvsAll targets ``(1 - label_smoothing) * y + label_smoothing / n_entities`` (LibKGE's "
        "``KvsAll.label_smoothing``), in [0, 1)."),
    "reciprocal": Parameter(
        "bool", ("boolean",),
        "Reciprocal relations (Lacroix et al. 2018; LibKGE's ``reciprocal_relations_model``): every relation "
        "gets a second embedding for its inverse, and head queries ``(?, r, t)`` are answered as tail queries "
        "``(t, r^-1, ?)`` in training, evaluation and ``predict_topk(direction='head')``; ``score_samples`` "
        "scores the forward direction.",
        "NBFNet always works this way and ignores it."),
    "dropout": Parameter(
        "float or (float, float)", (_RATE, _PAIR),
        "Dropout on embeddings while training: one rate for entities and relations, or "
        "``(entity_rate, relation_rate)`` (LibKGE's embedder ``dropout``).",
        "It applies to looked-up rows and to the candidate table scored in full. Embedding models only."),
    "lr_scheduler": Parameter(
        "{None, 'plateau', 'cosine'}", (options(SCHEDULES), None),
        "``'plateau'``: multiply the learning rate by ``factor`` after ``patience`` validation evaluations "
        "without improvement of the MRR (needs validation triples: ``valid`` or ``early_stopping``); "
        "``'cosine'``: cosine decay from ``learning_rate`` to ``min_lr`` over the run's steps.",
        "Not with ``optimizer='adagrad_then_adam'``."),
    "lr_scheduler_params": Parameter(
        "dict, str or None", (dict, _JSON, None),
        "The schedule's settings, as a dict or a JSON object string: ``'plateau'`` takes ``factor`` (0.5), "
        "``patience`` (2 evaluations), ``threshold`` (1e-4, relative) and ``min_lr`` (0); ``'cosine'`` "
        "``min_lr`` (0)."),
    "optimizer": Parameter(
        "{'adam', 'adagrad', 'adagrad_then_adam'}", (options(OPTIMIZERS),),
        "``'adagrad_then_adam'`` is the EMU code's schedule: Adagrad, then a fresh Adam at "
        "``learning_rate / 10`` halfway."),
    "learning_rate": Parameter(
        "float", (Range(Real, 0.0, None, closed="neither"),),
        "Step size of the optimiser."),
    "batch_size": Parameter(
        "int or None", (_COUNT, None),
        "Positives per step (rounded up to whole chunks of ``neg_chunk_size``).",
        "None: 1000, and 32 for NBFNet, whose step propagates every query over the whole graph (memory "
        "``O(n_entities * batch_size * dim)`` a layer; ``fit`` refuses up front a batch whose activations "
        "cannot fit)."),
    "n_epochs": Parameter(
        "int", (_COUNT,),
        "Passes over the training triples."),
    "max_steps": Parameter(
        "int or None", (_COUNT, None),
        "When set, the step budget instead of ``n_epochs``."),
    "early_stopping": Parameter(
        "bool", ("boolean",),
        "Evaluate filtered validation MRR every ``eval_every`` epochs, stop after ``patience`` evaluations "
        "without improvement and restore the best weights.",
        "Uses ``valid`` from ``fit`` or holds out ``validation_fraction`` of ``X``."),
    "eval_every": Parameter(
        "int", (_COUNT,),
        "Epochs between two evaluations of the validation MRR (recorded in ``history_``), when there are "
        "validation triples."),
    "patience": Parameter(
        "int", (_COUNT,),
        "Evaluations without improvement before early stopping ends training."),
    "validation_fraction": Parameter(
        "float", (Range(Real, 0.0, 1.0, closed="right"),),
        "Fraction of ``X`` held out for early stopping when ``fit`` gets no ``valid``."),
    "compile": Parameter(
        "{False, True, 'auto'}", (_AUTO, "boolean"),
        "Build fused scoring kernels at run time: RotatE's and HAKE's distances (vanilla and EMU candidates, "
        "training, evaluation and ``predict_topk``) as C kernels compiled with the system's C compiler (a "
        "few seconds, once per machine), and with ``torch.compile`` TransE's EMU scoring and all-entity "
        "ranking (seconds to tens of seconds, per shape): on FB15k-237 a RotatE step about 10x, a RotatE "
        "EMU step about 20x faster than eager (one core), and TransE's EMU steps several times faster.",
        "``'auto'`` builds RotatE's and HAKE's C kernels on the CPU whatever the graph's size (once per "
        "machine, cached), and uses ``torch.compile`` when the training set has at least 50,000 triples, where "
        "it pays for itself within an epoch; without a working compiler it falls back to eager code with a "
        "warning. NBFNet's message passing runs in a fused C kernel under ``True`` and ``'auto'`` (on the CPU, "
        "any graph size), and in the blocked PyTorch path under ``False``. "
        "Bilinear models (matrix products) are never compiled."),
    "sparse": Parameter(
        "bool", ("boolean",),
        "Row-wise updates: embedding lookups produce sparse gradients and only the rows a batch touches are "
        "updated (Adagrad, or ``SparseAdam`` for Adam), so the step cost stops growing with the number of "
        "entities.",
        "Sparse Adam is \"lazy\": rows absent from a batch keep their moments, which changes the "
        "optimisation slightly. Not available with ``regularizer='l3'``."),
    "mixed_precision": Parameter(
        "{False, True, 'auto'}", (_AUTO, "boolean"),
        "Run the training steps' forward passes under ``torch.autocast`` in bfloat16: matrix products and "
        "linear layers compute in bfloat16, while weights, optimiser state, softmax and loss stay float32 "
        "(bfloat16 needs no loss scaling).",
        "``'auto'`` turns it on for CUDA devices with bfloat16 support only. On a 2-core CPU with bfloat16 "
        "matrix units (AMX) it made FB15k-237 sampled steps only 1.03-1.15x faster and 1vsAll steps 1.7x; on a "
        "CPU without them (AVX2 only) the products are emulated, a 1vsAll DistMult step on FB15k-237 ran 14x "
        "slower (243 ms against 17 ms), and ``fit`` warns. See the README's speed notes. "
        "Evaluation, ``predict_topk`` and ``score_samples`` always score in float32, since bfloat16 scores "
        "would tie and blur the filtered ranks."),
    "device": Parameter(
        "str", (_DEVICE,),
        "``'auto'`` uses CUDA when available."),
    "random_state": Parameter(
        "int, RandomState instance or None",
        (Range(Integral, 0, 2**32 - 1, closed="both"), np.random.RandomState, None),
        "Seeds initialisation, shuffling and sampling (an int in ``[0, 2**32 - 1]``).",
        "Pass an int for reproducible output across multiple function calls (CPU)."),
    "verbose": Parameter(
        "int", (Range(Integral, 0, None, closed="left"),),
        "When positive, a progress bar over epochs on stderr with the loss and the last validation MRR; "
        "otherwise one INFO record per epoch on the ``kgestimator`` logger (shown once logging is "
        "configured)."),
    "checkpoint_dir": Parameter(
        "str or path-like", (str, os.PathLike, None),
        "Folder of training checkpoints.",
        "Each run (training data and the parameters other than ``verbose``, the checkpoint settings, the "
        "device index, ``n_threads`` and ``callbacks``) gets a sub-folder ``run-<fingerprint>`` holding "
        "``checkpoint.pt``, replaced atomically, so the clones of a grid search or a cross-validation can "
        "share one folder. When the run's sub-folder already holds a checkpoint, ``fit`` resumes from it and "
        "continues the same run: weights, optimiser state, random generator, sampler state, history and step "
        "counter, so that on CPU the result is identical to an uninterrupted fit; a finished run's "
        "checkpoint makes ``fit`` return its final model. A second fit of the same run while one is running "
        "(another process or thread) is refused with a ValueError.",
        flag="path"),
    "checkpoint_every": Parameter(
        "int or None", (_COUNT, None),
        "Optimiser steps between checkpoints (None: at the end of every epoch); a crash loses at most this "
        "much work.",
        "A checkpoint is also written at the end of training."),
    "n_threads": Parameter(
        "int or None", (_COUNT, None),
        "CPU threads torch uses during ``fit`` (the caller's setting is restored afterwards).",
        "None leaves torch's setting alone, except inside a Dask worker, where the fit takes the worker's "
        "share of the host: the ``OMP_NUM_THREADS`` the cluster sets in its workers (1 by default, see "
        "Dask's ``distributed.nanny.pre-spawn-environ``), else the host's cores divided by the worker's "
        "threads; so several fits on one machine do not oversubscribe it. Values above the number of cores "
        "are clipped to it."),
    "distributed": Parameter(
        "bool", ("boolean",),
        "Train data-parallel with ``torch.distributed`` in a script launched by ``torchrun`` (or after "
        "``init_process_group``; otherwise the process group is initialised from ``torchrun``'s environment, "
        "gloo on CPU and NCCL on CUDA, where each rank takes ``cuda:LOCAL_RANK``).",
        "Every rank needs the same data and parameters: each trains on its shard of ``X`` with its own "
        "negatives, gradients are averaged over the ranks, and the ranks end with identical weights. "
        "``batch_size`` stays the global batch (each rank takes its share), so an epoch has as many steps as "
        "in one process. Rank 0 computes the validation MRR; ``distributed_`` and ``history_`` report each "
        "rank's throughput. Not available with ``checkpoint_dir``."),
    "callbacks": Parameter(
        "list of callback objects", (_CALLBACKS, None),
        "Objects whose optional methods ``on_fit_begin(est)``, ``on_validation(est, record)``, "
        "``on_epoch_end(est, record)``, ``on_fit_end(est)`` and ``on_exception(est, error)`` ``fit`` calls as "
        "it goes (``record``: the epoch's ``history_`` entry); ``on_epoch_end`` or ``on_validation`` "
        "returning True stops training after that epoch, like early stopping.",
        "Early stopping and checkpoints work beside them; a clone gets copies. Trackers for MLflow, "
        "TensorBoard and CSV files are in :mod:`kgestimator.trackers`; see :mod:`kgestimator.callbacks`. Not "
        "saved by ``save``.",
        flag=None),
}


def constraints(table):
    """``{name: [constraint, ...]}``: scikit-learn's ``_parameter_constraints``."""
    return {name: list(entry.constraints) for name, entry in table.items()}


def _wrap(text, indent):
    # inline literals stay on one line: their spaces are not break points
    parts = text.split("``")
    protected = "``".join(p.replace(" ", "\0") if i % 2 else p for i, p in enumerate(parts))
    lines = textwrap.wrap(protected, width=88, initial_indent=indent, subsequent_indent=indent,
                          break_long_words=False, break_on_hyphens=False)
    return [line.replace("\0", " ") for line in lines]


def render(cls, table, indent="    "):
    """The numpydoc ``Parameters`` entries of ``cls.__init__``'s signature, from ``table``."""
    lines = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name != "self":
            lines.append(f"{indent}{name} : {table[name].type}, default={param.default!r}")
            lines += _wrap(table[name].text, indent * 2)
    return "\n".join(lines)


def document(cls, table):
    """Write ``table`` into ``cls.__doc__`` in place of the :data:`MARKER` line."""
    if cls.__doc__ is None:  # python -OO
        return
    line = next((line for line in cls.__doc__.splitlines() if line.strip() == MARKER), None)
    if line is None:
        raise RuntimeError(f"{cls.__name__}'s docstring has no line {MARKER!r} for its parameters")
    cls.__doc__ = cls.__doc__.replace(line, render(cls, table, indent=line[: len(line) - len(line.lstrip())]))

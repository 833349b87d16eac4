"""The training loop: batches, corruption, EMU, loss, optimiser, early stopping, checkpoints.

One step (DESIGN.md §2): positives -> query vectors -> sampler negatives ->
scores ``(B, 1 + N)`` with the positive at index 0 -> optional EMU pass on a
second set of negatives -> loss -> optimiser step. The training triples stay on
the device; shuffling and sampling use the estimator's seeded generator.

Negative sharing. ``neg_chunk`` positives share one set of ``N`` negatives
(DGL-KE's chunked sampling). Scoring a chunk is then one ``(c, d) x (d, N)``
product for bilinear models and the negatives are gathered once per chunk, not
once per positive. Each positive still sees ``N`` uniform negatives, so every
row's loss keeps its expectation; rows of one chunk become correlated, which
raises the gradient variance a little. ``neg_chunk=1`` is the reference's
independent sampling.
"""

import copy
import functools
import math
import time
from dataclasses import dataclass, field, fields

import torch

from . import losses, path_training
from ._utils import compiled, resolve_mixed_precision
from .checkpoint import to_device
from .filtering import KnownTriples
from .lcwa import LCWAStep
from .losses import regularization, training_loss
from .models import MODELS, EmbeddingModel, is_path_based, resolve_defaults
from .models._base import sampled_scores
from .models.transe import masked_l1
from .mutation import emu_scores, resolve_emu_masks, sampled_emu_scores
from .samplers import generate, n_generated, resolve_emu_resample, with_generated
from .schedules import LRSchedule


#: below this many training triples the one-off compile costs more than it saves
COMPILE_MIN_TRIPLES = 50_000


@dataclass
class TrainConfig:
    """Resolved training settings: built by :func:`make_config` from the estimator's
    parameters, whose defaults are the only ones (the estimator validates them first)."""

    n_negatives: int
    batch_size: int
    neg_chunk: int               # the 'neg_chunk_size' parameter
    n_epochs: int
    max_steps: int | None
    learning_rate: float
    optimizer: str
    loss: str
    adversarial_temperature: float
    emu: object
    alpha: float
    mutation_ratio: float
    uls: bool
    beta: float
    emu_normalize: bool
    emu_resample: bool
    emu_masks: str               # 'independent' only where masks are drawn (mutation.resolve_emu_masks)
    regularizer: str | None
    reg_weight: float
    early_stopping: bool
    eval_every: int
    patience: int
    compile: bool
    sparse: bool
    mixed_precision: bool
    training: str
    label_smoothing: float
    lr_scheduler: str | None
    lr_scheduler_params: dict | None


#: TrainConfig fields named differently among the estimator's parameters
_PARAM_NAMES = {"neg_chunk": "neg_chunk_size"}
#: fields resolved from more than their parameter (see make_config)
_RESOLVED = ("alpha", "mutation_ratio", "beta", "compile", "mixed_precision")


def make_config(params, emu_params, n_train, device):
    """The :class:`TrainConfig` of the estimator parameters ``params`` (``get_params(deep=False)``).

    ``emu_params`` holds the resolved ``alpha``, ``mutation_ratio`` and ``beta``;
    ``compile='auto'`` is resolved by :func:`resolve_compile` (for NBFNet:
    its fused message kernel) and ``mixed_precision`` is
    resolved for ``device``. Float and bool settings are cast to their type.
    """
    # None sizes take the model's defaults; emu_resample='auto' follows the sampler
    params = {**params, **resolve_defaults(params["model"], dim=params["dim"], batch_size=params["batch_size"],
                                           n_negatives=params["n_negatives"]),
              "emu_resample": resolve_emu_resample(params["emu_resample"], params["sampler"]),
              "emu_masks": resolve_emu_masks(params["emu_masks"], params["emu"])}
    compile_ = resolve_compile(params["compile"], params["model"], n_train, device)
    values = {"compile": bool(compile_),
              "mixed_precision": resolve_mixed_precision(params["mixed_precision"], device), **emu_params}
    for f in fields(TrainConfig):
        if f.name not in _RESOLVED:
            value = params[_PARAM_NAMES.get(f.name, f.name)]
            values[f.name] = f.type(value) if f.type in (bool, float) else value
    return TrainConfig(**values)


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss, or non-finite weights.

    Attributes
    ----------
    history : list of dict
        Records of the epochs finished before it happened.
    weights_kept : bool
        Whether the model was left with finite weights.
    kept : str or None
        Which finite weights the model was left with, in words.
    estimator : KGEmbedder or None
        Set by :meth:`KGEmbedder.fit`: a copy of the estimator fitted with those
        weights (the estimator itself is left as it was before the fit), or None.
    """

    def __init__(self, message, history=(), weights_kept=False, kept=None):
        super().__init__(message)
        self.history = list(history)
        self.weights_kept = weights_kept
        self.kept = kept
        self.estimator = None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during :func:`train`; the model holds the weights the message names.

    Attributes
    ----------
    history : list of dict
        Records of the finished epochs.
    """

    def __init__(self, message, history):
        super().__init__(message)
        self.history = list(history)


def _chunk_rows(rows, chunk):
    """Pad ``rows`` (1-D index) to ``C * c`` by wrapping around; return it as ``(C, c)``."""
    n = rows.shape[0]
    n_chunks = max(1, math.ceil(n / chunk))
    c = math.ceil(n / n_chunks)
    if n_chunks * c != n:
        rows = rows[torch.arange(n_chunks * c, device=rows.device) % n]
    return rows.view(n_chunks, c)


def resolve_compile(value, model, n_train, device):
    """What ``compile=value`` means for a fit of ``model`` (a name) on ``n_train`` triples on ``device``.

    ``'auto'`` is on for RotatE and HAKE on the CPU whatever the graph's size: there
    ``compile`` builds only the C distance kernels, once per machine (cached, a few
    seconds), and the eager distance they replace is 10-20x slower on a small graph as
    on a large one. The same holds for NBFNet's C message-passing kernel (``_nbf``). Elsewhere (``torch.compile``, seconds to tens of seconds per shape)
    it is on from :data:`COMPILE_MIN_TRIPLES` training triples, where that pays off
    within an epoch.
    """
    if not (isinstance(value, str) and value == "auto"):
        return value
    native = getattr(MODELS[model], "native_scoring", False) or is_path_based(MODELS[model])
    if native and torch.device(device).type == "cpu":
        return True
    return n_train >= COMPILE_MIN_TRIPLES


def pairwise_fn(model, compile=False):
    """The function scoring query blocks against shared candidates, optionally compiled.

    RotatE and HAKE (``native_scoring``) score through their fused distance
    (``models/_distance.py``); ``compile`` runs it in C kernels built at run
    time (FB15k-237, one CPU core: 22 ms for a step side's forward and backward
    against 60 ms for ``torch.compile`` of the broadcast score). On other
    devices ``compile`` keeps ``torch.compile`` of the unblocked score. Bilinear
    models are matrix products and TransE uses ``cdist``; neither is compiled.
    """
    native = getattr(model, "native_scoring", False)
    if native and not (compile and _off_cpu(model)):
        return functools.partial(model.pairwise, native=compile)
    if compile and not model.bilinear and (native or type(model).pairwise is EmbeddingModel.pairwise):
        # compile the unblocked form: fusion replaces blocking, and dynamo would
        # unroll the block loops
        return compiled(model.broadcast_pairwise)
    return model.pairwise


def _off_cpu(model):
    return next(model.parameters()).device.type != "cpu"


def masked_distance_fn(model, compile=False):
    """What a model's ``mutated_pairwise`` takes last for EMU scoring, or None to stay eager.

    TransE's mutated scores are a matrix product plus a masked L1 distance
    (``TransE.mutated_pairwise``). Compiled, the masked distance is one fused
    reduction: forward and backward of a FB15k-237 step side measured 46 ms
    against 200-340 ms for the blocked eager form and 77 ms for the vanilla
    ``cdist`` (one CPU core). RotatE and HAKE take whether their fused masked
    distance runs in the C kernels (``compile``).
    """
    if not compile or not hasattr(model, "mutated_pairwise"):
        return None
    if getattr(model, "native_scoring", False):
        return True
    return compiled(masked_l1)


class _Optimizers:
    """Several optimisers stepped together (sparse tables + dense extras)."""

    def __init__(self, *optimizers):
        self.optimizers = [o for o in optimizers if o is not None]

    def zero_grad(self, set_to_none=True):
        for o in self.optimizers:
            o.zero_grad(set_to_none=set_to_none)

    def step(self):
        for o in self.optimizers:
            o.step()

    def state_dict(self):
        return {"optimizers": [o.state_dict() for o in self.optimizers]}

    def load_state_dict(self, state):
        for o, s in zip(self.optimizers, state["optimizers"], strict=True):
            o.load_state_dict(s)


def _fused(cls, params, lr):
    """``cls(params, lr=lr, fused=True)``, or the unfused optimiser where fusing is unsupported.

    The fused kernels update all parameters in one pass over memory: dense Adam
    over FB15k-237's entity table (1.45M numbers) takes 0.6 ms a step instead of
    6.4 ms on 2 CPU cores, the largest single cost of a vanilla DistMult step.
    """
    params = list(params)
    try:
        return cls(params, lr=lr, fused=True)
    except (RuntimeError, ValueError, TypeError):  # device or dtype without fused kernels
        return cls(params, lr=lr)


def make_optimizer(name, model, lr, sparse=False, adam=False):
    """The optimiser for ``model``.

    ``sparse``: the embedding tables get sparse (row-wise) gradients; Adagrad
    handles them itself, Adam becomes ``SparseAdam`` ("lazy" Adam: rows absent
    from a batch keep their moments) on the tables plus Adam on the rest.
    ``adam=True`` forces Adam (the second half of 'adagrad_then_adam').
    """
    if name in ("adagrad", "adagrad_then_adam") and not adam:
        # 'adagrad_then_adam' starts with Adagrad; the trainer switches halfway
        # sparse gradients have no fused Adagrad kernel
        return torch.optim.Adagrad(model.parameters(), lr=lr) if sparse else _fused(
            torch.optim.Adagrad, model.parameters(), lr)
    if not sparse:
        return _fused(torch.optim.Adam, model.parameters(), lr)
    tables = [model.entity, model.relation]
    rest = [p for p in model.parameters() if all(p is not t for t in tables)]
    return _Optimizers(torch.optim.SparseAdam(tables, lr=lr),
                       _fused(torch.optim.Adam, rest, lr) if rest else None)


#: largest ``(B, n_entities)`` score matrix for which per-positive negatives of a
#: bilinear model are scored against the whole table (see ``group_logits``)
FULL_TABLE_ELEMENTS = 1 << 26


def _lookup(model, *ids):
    """Entity rows for several id tensors, gathered with one lookup.

    Each lookup's backward writes a dense, table-sized gradient (a zero fill and
    an add): on FB15k-237 four lookups a step cost more than the scoring itself,
    so a step gathers every entity row it needs at once.
    """
    rows = model.entities(torch.cat([i.reshape(-1) for i in ids]))
    return [r.view(*i.shape, -1) for i, r in zip(ids, rows.split([i.numel() for i in ids]))]


def _scores_full_table(model, C, c):
    """Whether per-positive negatives are scored against the whole entity table.

    Per-positive negatives (``c = 1``) of a bilinear model are scored with one
    ``(B, d) x (d, n_entities)`` product and a column gather: on FB15k-237 that is
    cheaper than gathering a ``(B, N, d)`` candidate tensor and scattering its
    gradient back (DistMult, B=1000, N=256). Sparse tables keep the gather, since
    the product would make the gradient dense.
    """
    return c == 1 and model.bilinear and not model.sparse and C * model.n_entities <= FULL_TABLE_ELEMENTS


def _logits(pos_scores, neg_scores, n_negatives):
    """``(B, 1 + N)`` logits, the positive at index 0, from ``(C, c)`` and ``(C, c, N)`` scores."""
    return torch.cat([pos_scores.unsqueeze(-1), neg_scores], -1).view(-1, n_negatives + 1)


@dataclass
class _Draw:
    """One side's negatives and the rows one lookup gathered for them (see :func:`_draw`)."""

    batch: object                # (C, c, 3) positives in chunks
    flat: object                 # (C * c, 3)
    n_ids: int                   # sampled (not generated) negatives per positive
    neg_ids: object
    emu_ids: object              # a fresh draw for the EMU term, or None
    full_table: bool             # per-positive bilinear negatives scored against the whole table
    emu_table: bool              # ... and the EMU term too (mutation.sampled_emu_scores)
    anchor: object
    pos: object
    cands: list                  # embedded negatives, in the order they are used


def _draw(model, sampler, cfg, triples, side, generator):
    """Chunk the positives, draw the negatives (and the EMU term's), and gather every row at once."""
    chunk = cfg.neg_chunk if getattr(sampler, "shares_negatives", True) else 1
    batch = triples[_chunk_rows(torch.arange(triples.shape[0], device=triples.device), chunk)]   # (C, c, 3)
    C, c = batch.shape[:2]
    anchor_col, target_col = (0, 2) if side == "tail" else (2, 0)
    flat = batch.view(-1, 3)
    n_ids = cfg.n_negatives - n_generated(sampler)
    neg_ids = sampler.sample(flat, side, C, n_ids, generator)
    # the EMU negatives are drawn up front so that one lookup gathers every row
    emu_ids = sampler.sample(flat, side, C, n_ids, generator) if cfg.emu and cfg.emu_resample else None
    full_table = _scores_full_table(model, C, c)
    # per-positive ids: the EMU term scores them from the table too (mutation.sampled_emu_scores),
    # except under entity dropout, whose looked-up rows draw their own masks, and with per-positive
    # EMU masks, which the table kernels do not take
    emu_table = bool(cfg.emu) and full_table and not model.entity_dropout and cfg.emu_masks == "shared"
    wanted = [batch[..., anchor_col], batch[..., target_col]]
    if not full_table:
        wanted.append(neg_ids)
    if cfg.emu and not emu_table and (emu_ids is not None or full_table):
        wanted.append(neg_ids if emu_ids is None else emu_ids)
    anchor, pos, *cands = _lookup(model, *wanted)
    return _Draw(batch, flat, n_ids, neg_ids, emu_ids, full_table, emu_table, anchor, pos, cands)


def group_logits(model, pairwise, sampler, cfg, triples, side, generator, masked_distance=None):
    """Vanilla and EMU logits, ``(B, 1 + N)`` each, for one side of a batch.

    Returns ``(logits, emu_logits or None, factors)``.
    """
    d = _draw(model, sampler, cfg, triples, side, generator)
    flat, n_ids, neg_ids, emu_ids, pos = d.flat, d.n_ids, d.neg_ids, d.emu_ids, d.pos
    rel_ids, query_side = model.orient(d.batch[..., 1], side)   # reciprocal: head queries on r^-1
    rel = model.relations(rel_ids)
    q = model.query(d.anchor, rel, query_side)
    pos_scores = model.match(q, pos)            # (C, c)

    fake = generate(sampler, flat, side, model, d.anchor, q, generator, train=True)
    # a fresh EMU draw whose plain scores the EMU term needs is scored in the same sampled product
    joint = d.emu_table and emu_ids is not None and (cfg.emu in ("mixup", "ls_only") or cfg.mutation_ratio <= 0.5)
    neg = None
    if d.full_table:
        ids = torch.cat([neg_ids, emu_ids], 1) if joint else neg_ids
        neg_scores = sampled_scores(q.view(q.shape[0], -1), model.entity_table(), ids).unsqueeze(1)  # (C, c, N)
    else:
        neg = d.cands.pop(0)
        neg_scores = pairwise(q, neg)
    if fake is not None:
        neg_scores = torch.cat([neg_scores, pairwise(q, fake.to(neg_scores.dtype))], -1)
    emu_plain = neg_scores[..., n_ids:2 * n_ids] if joint else None
    if joint:
        neg_scores = torch.cat([neg_scores[..., :n_ids], neg_scores[..., 2 * n_ids:]], -1)
    sampler.update(flat, side, model, q, neg_ids, neg_scores[..., :n_ids].detach(), generator)
    logits = _logits(pos_scores, neg_scores, cfg.n_negatives)

    emu_logits = None
    if cfg.emu:
        if emu_ids is not None:
            fake = generate(sampler, flat, side, model, d.anchor, q, generator, train=False)
            neg_scores = None
        if d.emu_table:
            emu = sampled_emu_scores(cfg.emu, model, q, pos, neg_ids if emu_ids is None else emu_ids, fake,
                                     neg_scores, pos_scores, cfg.mutation_ratio, generator, pairwise, emu_plain)
        else:
            neg = with_generated(d.cands.pop(0) if d.cands else neg, fake)
            emu = emu_scores(cfg.emu, model, q, pos, neg, neg_scores, pos_scores, cfg.mutation_ratio, generator,
                             pairwise, masked_distance, cfg.emu_masks)
        emu_logits = _logits(pos_scores, emu, cfg.n_negatives)
    factors = None
    if cfg.regularizer == "n3":
        h, t = (d.anchor, pos) if side == "tail" else (pos, d.anchor)
        factors = model.n3_factors(h, rel, t)
    return logits, emu_logits, factors


def step_loss(model, pairwise, sampler, cfg, batch, step, generator, masked_distance=None):
    """The scalar training loss of one batch of positives ``(B, 3)``.

    ``masked_distance``: the compiled masked distance of models with a
    ``mutated_pairwise`` (see :func:`masked_distance_fn`), or None.
    """
    parts = []
    for idx, side in sampler.sides(batch, step, generator):  # a loop, not a comprehension: one frame less
        parts.append(group_logits(model, pairwise, sampler, cfg, batch if idx is None else batch[idx], side,
                                  generator, masked_distance))
    logits = torch.cat([p[0] for p in parts])
    loss = training_loss(cfg, logits, torch.cat([p[1] for p in parts]) if cfg.emu else None)
    factors = None
    if cfg.regularizer == "n3":
        factors = [torch.cat([p[2][i].reshape(-1, p[2][i].shape[-1]) for p in parts]) for i in range(3)]
    return regularization(cfg, model, loss, factors, logits.shape[0])


@dataclass
class _Run:
    """Where a run stands. With the model, optimiser, generator and sampler, it is all
    that the next step depends on, hence all that a checkpoint holds."""

    step: int = 0
    epoch: int = 0               # epochs started
    pos: int = 0                 # steps done in the current epoch
    n_steps: int = 0             # steps in the current epoch's loss
    seconds: float = 0.0         # time spent in the current epoch
    history: list = field(default_factory=list)
    best: float = -math.inf
    best_epoch: int = 0
    bad_evals: int = 0
    switched: bool = False       # 'adagrad_then_adam' is on Adam
    done: bool = False
    # tensors (the checkpoint's state, not its JSON)
    perm: object = None          # the current epoch's order; None between epochs
    loss_sum: object = None
    best_state: object = None    # best validation weights (early stopping)

    TENSORS = ("perm", "loss_sum", "best_state")

    def meta(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.TENSORS}


def _optimizer(cfg, model, switched):
    if switched:
        # the EMU reference switches to a fresh Adam at lr / 10 halfway
        return make_optimizer("adam", model, cfg.learning_rate / 10, cfg.sparse, adam=True)
    return make_optimizer(cfg.optimizer, model, cfg.learning_rate, cfg.sparse)


def _finite(model):
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _snapshot(run, model, optimizer, generator, sampler):
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
             "generator": generator.get_state(),
             "run": {k: getattr(run, k) for k in run.TENSORS if getattr(run, k) is not None}}
    if hasattr(sampler, "state_dict"):
        state["sampler"] = sampler.state_dict()
    return run.meta(), state


def _restore(saved, run, model, generator, sampler, device):
    meta, state = saved
    for f in fields(run):
        if f.name in meta["run"]:
            setattr(run, f.name, meta["run"][f.name])
    for name, value in to_device(state["run"], device).items():
        setattr(run, name, value)
    model.load_state_dict(state["model"])
    generator.set_state(state["generator"])
    if "sampler" in state and hasattr(sampler, "load_state_dict"):
        sampler.load_state_dict(to_device(state["sampler"], device))


def _non_finite(problem, run, model, cfg, checkpoint):
    """Leave the model with the last finite weights there are, and say which (``kept``)."""
    history = run.history
    if _finite(model):
        kept = f"the weights after step {run.step}, the last finite ones" if run.step else "the initial weights"
    elif run.best_state is not None and cfg.early_stopping:
        model.load_state_dict(run.best_state)
        kept = f"the best validation weights (epoch {run.best_epoch})"
    elif checkpoint is not None and checkpoint.step is not None:
        meta, state = checkpoint.load()
        model.load_state_dict(state["model"])  # checkpoints are written finite only
        history = meta["run"]["history"]
        kept = f"the weights of the checkpoint of step {checkpoint.step}"
    else:
        kept = None
    # the estimator adds what it did with the weights and which parameter to change
    return NonFiniteLossError(f"{problem}.", history, weights_kept=kept is not None, kept=kept)


def _interrupted(run, model, cfg, checkpoint, total_steps):
    if cfg.early_stopping and run.best_state is not None:
        model.load_state_dict(run.best_state)
        kept = f"the best weights so far (validation MRR {run.best:.4f} at epoch {run.best_epoch})"
    else:
        kept = f"the weights after step {run.step}"
    if checkpoint is not None and checkpoint.step is not None:
        resume = (f"fit with the same checkpoint_dir resumes from the checkpoint of step "
                  f"{checkpoint.step} in {checkpoint.path}.")
    else:
        resume = "set checkpoint_dir to be able to resume an interrupted fit."
    return TrainingInterrupted(
        f"Training was interrupted at epoch {run.epoch}, step {run.step} of {total_steps}. The estimator "
        f"is fitted with {kept}; history_ holds the {len(run.history)} finished epoch(s). To go on, {resume}",
        run.history)


def train(model, triples, sampler, cfg, generator, validate=None, progress=None, checkpoint=None, sync=None):
    """Train ``model`` in place on encoded ``triples`` (LongTensor on the device).

    Parameters
    ----------
    validate : callable, optional
        ``validate() -> float`` (higher is better), called every ``cfg.eval_every``
        epochs when given; with ``cfg.early_stopping`` training stops after
        ``cfg.patience`` evaluations without improvement and the best weights
        are restored.
    progress : callable, optional
        ``progress(epoch_record)`` after each epoch (progress bar, logging,
        callbacks); returning True stops training after that epoch, as early
        stopping does.
    checkpoint : Checkpointer, optional
        Resume from its checkpoint when there is one; write one every
        ``checkpoint.every`` steps (or each epoch) and at the end. Checkpoints
        hold the model, the optimiser, the generator's state, the sampler's
        ``state_dict()`` when it has one, and the run's position (epoch order,
        step, running loss, history, early-stopping state), so that a resumed
        run takes exactly the steps the uninterrupted run would have taken.
    sync : callable, optional
        ``sync(model, loss) -> loss`` after each backward pass: data-parallel
        training averages the gradients and the loss over the ranks there
        (:class:`kgestimator.distributed.GradientAverager`).

    Returns
    -------
    history : list of dict
        One record per epoch: ``epoch``, ``step``, ``loss``, ``seconds`` and, where
        evaluated, ``valid_mrr``.

    Raises
    ------
    TrainingInterrupted
        On Ctrl-C (a KeyboardInterrupt), with the best weights so far restored
        under early stopping; the last checkpoint is left as it was.
    NonFiniteLossError
        When the loss or the weights stop being finite; the model is left with
        the last finite weights there are (see the message).
    """
    model.dropout_generator = generator
    loop = prepare(model, triples, sampler, cfg, generator, checkpoint, sync, validate)
    device_type = triples.device.type
    try:
        while not loop.run.done:
            start_epoch(loop)
            while (batch := next_batch(loop)) is not None:
                # before the step: a step may run its own backward passes (path_training.Backpropagated)
                loop.optimizer.zero_grad(set_to_none=True)
                with torch.autocast(device_type, dtype=torch.bfloat16, enabled=cfg.mixed_precision):
                    loss = loop.step(batch, loop.run.step, generator)
                apply_step(loop, loss)
            record = close_epoch(loop)
            validate_epoch(loop, record, validate)
            end_epoch(loop, record, progress)
    except KeyboardInterrupt:
        raise _interrupted(loop.run, model, cfg, checkpoint, loop.total_steps) from None
    return finish(loop)


@dataclass
class _Loop:
    """What the stages of :func:`train` share: the run, its parts and its step function."""

    model: object
    triples: object
    sampler: object
    cfg: TrainConfig
    generator: object
    checkpoint: object
    sync: object
    rows: object                 # what an epoch goes through: the triples, or KvsAll's distinct queries
    lcwa: object                 # 1vsAll / KvsAll: the step function (lcwa.LCWAStep), else None
    schedule: object             # lr_scheduler: a schedules.LRSchedule, else None
    known: object                # path-based models: the strict negatives' filter
    pairwise: object             # embedding models: pairwise_fn and masked_distance_fn
    masked_distance: object
    optimizer: object
    run: _Run
    batch_size: int
    steps_per_epoch: int
    total_steps: int
    switch_at: int | None        # 'adagrad_then_adam' switches to Adam at this step
    step: object = None          # step(batch, step, generator) -> loss: the model's step function
    t0: float = 0.0              # when the epoch's clock last started


def _step_parts(model, triples, sampler, cfg):
    """``(known, pairwise, masked_distance, lcwa)``: what the step function of the model needs."""
    if not is_path_based(model):
        model.sparse = cfg.sparse
    else:
        model.native_messages = cfg.compile
    if cfg.training != "negative_sampling":
        return None, None, None, LCWAStep(model, triples, cfg)
    if is_path_based(model):
        # NBFNet: strict negatives, edge removal, one propagation per batch
        return KnownTriples(triples, model.n_entities, model.n_relations), None, None, None
    return None, pairwise_fn(model, cfg.compile), masked_distance_fn(model, cfg.compile) if cfg.emu else None, None


def _schedule(cfg, total_steps, validate):
    """The learning-rate schedule of ``lr_scheduler``, or None."""
    if cfg.lr_scheduler is None:
        return None
    if cfg.lr_scheduler == "plateau" and validate is None:
        raise ValueError("lr_scheduler='plateau' follows the validation MRR, and there are no validation "
                         "triples: pass valid= to fit, or set early_stopping=True, or use 'cosine'.")
    return LRSchedule(cfg.lr_scheduler, cfg.lr_scheduler_params, cfg.learning_rate, total_steps)


def prepare(model, triples, sampler, cfg, generator, checkpoint=None, sync=None, validate=None):
    """The first stage of :func:`train`: the step function, the optimiser and the run, resumed from
    ``checkpoint`` when it holds one."""
    known, pairwise, masked_distance, lcwa = _step_parts(model, triples, sampler, cfg)
    rows = triples if lcwa is None else lcwa.rows  # what an epoch goes through: triples, or KvsAll's queries
    n = rows.shape[0]
    batch_size = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / batch_size)
    total_steps = cfg.max_steps or cfg.n_epochs * steps_per_epoch
    check_generated(sampler, cfg.n_negatives)
    schedule = _schedule(cfg, total_steps, validate)
    run = _Run()
    saved = checkpoint.load() if checkpoint is not None else None
    if saved is not None:
        _restore(saved, run, model, generator, sampler, triples.device)
    optimizer = _optimizer(cfg, model, run.switched)
    if saved is not None:
        optimizer.load_state_dict(saved[1]["optimizer"])
        if schedule is not None:
            schedule.load_state_dict(saved[0]["run"]["lr_schedule"])
    return _Loop(model, triples, sampler, cfg, generator, checkpoint, sync, rows, lcwa, schedule, known, pairwise,
                 masked_distance, optimizer, run, batch_size,
                 steps_per_epoch, total_steps, total_steps // 2 if cfg.optimizer == "adagrad_then_adam" else None,
                 _step_function(model, sampler, cfg, known, pairwise, masked_distance, lcwa))


def _step_function(model, sampler, cfg, known, pairwise, masked_distance, lcwa):
    """``step(batch, step, generator) -> loss``, with the model's parts bound (a partial adds no frame)."""
    if lcwa is not None:  # 1vsAll / KvsAll
        return lcwa
    if known is not None:  # path-based
        return functools.partial(path_training.path_step_loss, model, sampler, cfg, known=known)
    return functools.partial(step_loss, model, pairwise, sampler, cfg, masked_distance=masked_distance)


def check_generated(sampler, n_negatives):
    """Refuse a sampler that generates ``n_negatives`` or more negatives: no room is left for sampled ones."""
    n_gen = n_generated(sampler)
    if n_gen >= n_negatives:
        raise ValueError(f"The sampler generates {n_gen} negatives per positive, which leaves no room "
                         f"for sampled ones within n_negatives={n_negatives}; raise 'n_negatives' "
                         "or lower the sampler's number of generated negatives.")


def _save(loop):
    """Write a checkpoint of the run; refuse non-finite weights (checkpoints are finite only)."""
    run, model = loop.run, loop.model
    if not _finite(model):
        raise _non_finite(f"The weights became non-finite by step {run.step}", run, model, loop.cfg, loop.checkpoint)
    meta, state = _snapshot(run, model, loop.optimizer, loop.generator, loop.sampler)
    if loop.schedule is not None:
        meta = {**meta, "lr_schedule": loop.schedule.state_dict()}
    loop.checkpoint.save(meta, state)


def _check_loss(loop, loss):
    if not torch.isfinite(loss):
        run = loop.run
        raise _non_finite(f"The training loss became {loss.item()} at epoch {run.epoch}, step {run.step + 1}",
                          run, loop.model, loop.cfg, loop.checkpoint)


def start_epoch(loop):
    """Begin an epoch (its order, its running loss, its clock), or go on with a resumed one."""
    run = loop.run
    if run.perm is None:
        run.epoch, run.pos, run.n_steps, run.seconds = run.epoch + 1, 0, 0, 0.0
        run.perm = torch.randperm(loop.rows.shape[0], generator=loop.generator, device=loop.rows.device)
        run.loss_sum = torch.zeros((), device=loop.triples.device)
    loop.model.train()
    loop.t0 = time.perf_counter()


def next_batch(loop):
    """The epoch's next batch of rows, or None at the end of the epoch or of the step budget."""
    run, bs, rows = loop.run, loop.batch_size, loop.rows
    if run.pos >= loop.steps_per_epoch or run.step >= loop.total_steps:
        return None
    if run.step == loop.switch_at and not run.switched:
        run.switched = True
        loop.optimizer = _optimizer(loop.cfg, loop.model, True)
    return rows[run.perm[torch.arange(run.pos * bs, (run.pos + 1) * bs, device=rows.device) % rows.shape[0]]]


def apply_step(loop, loss):
    """Backward pass, (gradient exchange), optimiser step, schedule and checkpoint for one batch's ``loss``.

    The gradients were zeroed before the step; a :class:`~kgestimator.path_training.Backpropagated`
    loss has its gradients already (the check below still comes before the optimiser's step).
    """
    run = loop.run
    done = isinstance(loss, path_training.Backpropagated)
    # autocast already returns softmax/BCE losses in float32; this keeps any hand-written
    # reduction (and the float32 running sum below) in float32 too. A no-op otherwise.
    loss = (loss.loss if done else loss).float()
    if loop.sync is None:
        _check_loss(loop, loss)
    if not done:
        loss.backward()
    if loop.sync is not None:
        # every rank must see the same loss to stop at the same step, hence the
        # check after the exchange (still before the step: the weights stay finite)
        loss = loop.sync(loop.model, loss)
        _check_loss(loop, loss)
    loop.optimizer.step()
    run.loss_sum += loss.detach()
    run.n_steps, run.step, run.pos = run.n_steps + 1, run.step + 1, run.pos + 1
    if loop.schedule is not None:
        loop.schedule.after_step(run.step, loop.optimizer)
    if loop.checkpoint is not None and loop.checkpoint.due(run.step):
        now = time.perf_counter()
        run.seconds, loop.t0 = run.seconds + now - loop.t0, now
        _save(loop)


def close_epoch(loop):
    """Stop the epoch's clock, refuse non-finite weights, return the epoch's record."""
    run = loop.run
    run.seconds += time.perf_counter() - loop.t0
    if not _finite(loop.model):
        raise _non_finite(f"The weights became non-finite in epoch {run.epoch}", run, loop.model, loop.cfg,
                          loop.checkpoint)
    return {"epoch": run.epoch, "step": run.step, "loss": float(run.loss_sum) / max(1, run.n_steps),
            "seconds": run.seconds}


def validate_epoch(loop, record, validate):
    """Record the validation MRR when due and track the best weights (early stopping)."""
    run, cfg = loop.run, loop.cfg
    if validate is None or not (run.epoch % cfg.eval_every == 0 or run.step >= loop.total_steps):
        return
    score = validate()
    record["valid_mrr"] = score
    if loop.schedule is not None:
        loop.schedule.after_validation(score, loop.optimizer)
        record["lr"] = loop.schedule.lr
    if score > run.best:
        run.best, run.best_epoch, run.bad_evals = score, run.epoch, 0
        if cfg.early_stopping:
            run.best_state = copy.deepcopy(loop.model.state_dict())
    else:
        run.bad_evals += 1


def end_epoch(loop, record, progress):
    """Append the record, decide whether the run is done, report progress and checkpoint."""
    run, cfg = loop.run, loop.cfg
    run.history.append(record)
    run.perm = None
    run.done = run.step >= loop.total_steps or (cfg.early_stopping and run.bad_evals >= cfg.patience)
    if progress is not None and progress(record) is True:
        run.done = True  # a callback's stop, before the checkpoint so that it records it
    if loop.checkpoint is not None and (loop.checkpoint.every is None or run.done):
        _save(loop)


def finish(loop):
    """The last stage: restore the best validation weights under early stopping; return the history."""
    if loop.cfg.early_stopping and loop.run.best_state is not None:
        loop.model.load_state_dict(loop.run.best_state)
    return loop.run.history

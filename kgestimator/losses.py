"""Losses over a candidate list with the positive at index 0 (docs/algorithms.md §2, §3, §5.3, §5.4).

All functions take logits of shape ``(B, 1 + N)`` and average over rows.
:data:`LOSSES` maps each ``loss`` parameter value to its function;
:func:`training_loss` is the one place where a step's vanilla loss and its
EMU term (Eq. 12) are combined, for embedding and path-based models alike.
"""

import torch
import torch.nn.functional as F


def soft_cross_entropy(logits, neg_label=0.0):
    """Cross-entropy against targets ``y_0 = 1, y_k = neg_label`` (not renormalised).

    With ``neg_label = 0`` this is the usual softmax loss; with ``neg_label = beta``
    it is Unbounded Label Smoothing, whose optimum puts each negative
    ``log(1 / beta)`` below the positive.
    """
    logp = torch.log_softmax(logits, dim=-1)
    loss = -logp[:, 0]
    if neg_label:
        loss = loss - neg_label * logp[:, 1:].sum(-1)
    return loss.mean()


def logistic_loss(logits, adversarial_temperature=None):
    """Negative-sampling logistic loss, optionally self-adversarial (RotatE).

    ``(L+ + L-) / 2`` with ``L- = -sum_k w_k log sigmoid(-s_k)``, ``w_k = 1 / N``
    or, with a temperature ``a``, ``softmax_k(a * s_k)`` treated as a constant.
    """
    pos, neg = logits[:, 0], logits[:, 1:]
    if adversarial_temperature is None:
        neg_term = -F.logsigmoid(-neg).mean(-1)
    else:
        w = torch.softmax(adversarial_temperature * neg.detach(), dim=-1)
        neg_term = -(w * F.logsigmoid(-neg)).sum(-1)
    return 0.5 * (-F.logsigmoid(pos).mean() + neg_term.mean())


def binary_cross_entropy(logits, adversarial_temperature=0.0, neg_label=0.0):
    """NBFNet's binary cross-entropy with self-adversarial weights (torchdrug criterion ``bce``).

    Targets ``y_0 = 1``, ``y_k = neg_label``; weights ``w_0 = 1`` and
    ``w_k = softmax_k(adversarial_temperature * s_k)`` as constants (uniform
    ``1 / N`` at temperature 0); row loss ``sum_k w_k l_k / sum_k w_k``, then the
    mean over rows. NBFNet's temperature ``T`` divides: ``adversarial_temperature = 1 / T``.
    """
    target = torch.full_like(logits, float(neg_label))
    target[:, 0] = 1.0
    per = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    neg_w = torch.softmax(adversarial_temperature * logits[:, 1:].detach(), dim=-1)
    weights = torch.cat([torch.ones_like(logits[:, :1]), neg_w], -1)
    return ((per * weights).sum(-1) / weights.sum(-1)).mean()


def emu_combined_loss(vanilla, emu_logits, *, alpha, beta, n_negatives, normalize=True, bce_temperature=None):
    """EMU paper Eq. 12: ``L_emu(ULS) / N? + alpha * L_vanilla``.

    Parameters
    ----------
    vanilla : Tensor
        The vanilla loss value already computed on unmutated candidates.
    emu_logits : Tensor of shape (B, 1 + N)
        Logits against mutated negatives.
    normalize : bool
        Divide the EMU term by ``n_negatives`` as the reference code does
        (not written in Eq. 12; without it the effective ``alpha`` shifts by ~N).
        Only for the cross-entropy term.
    bce_temperature : float, optional
        When given, the EMU term is :func:`binary_cross_entropy` with ULS targets
        at this temperature (NBFNet + EMU, paper App. O). That term is already a
        weighted mean over the negatives, so it is never divided by ``n_negatives``.
    """
    if bce_temperature is not None:
        return binary_cross_entropy(emu_logits, bce_temperature, beta) + alpha * vanilla
    emu = soft_cross_entropy(emu_logits, beta)
    if normalize:
        emu = emu / n_negatives
    return emu + alpha * vanilla


def n3(factors, n_rows):
    """N3 regulariser over the batch factors: ``sum |f|^3 / B`` (Lacroix et al. 2018)."""
    return sum(f.abs().pow(3).sum() for f in factors) / n_rows


def l3_full(model):
    """"L3" over the whole entity and relation tables, as the RotatE/EMU code adds it."""
    return model.entity.abs().pow(3).sum() + model.relation.abs().pow(3).sum()


def l2_full(model):
    """Squared L2 norm of the whole entity and relation tables (LibKGE's unweighted ``lp`` with ``p = 2``)."""
    return model.entity.pow(2).sum() + model.relation.pow(2).sum()


def _ce(logits, adversarial_temperature):
    """softmax cross-entropy over [positive, negatives]; the EMU code path"""
    return soft_cross_entropy(logits)


def _logistic(logits, adversarial_temperature):
    """negative-sampling logistic loss, negatives averaged"""
    return logistic_loss(logits)


def _self_adversarial(logits, adversarial_temperature):
    """logistic loss with negatives weighted by softmax(adversarial_temperature * score) (RotatE)"""
    return logistic_loss(logits, adversarial_temperature)


def _bce(logits, adversarial_temperature):
    """binary cross-entropy, negatives weighted by softmax(adversarial_temperature * score) (NBFNet's loss)"""
    return binary_cross_entropy(logits, adversarial_temperature)


#: ``loss`` parameter value -> ``fn(logits, adversarial_temperature)``; the docstring is its description
LOSSES = {"ce": _ce, "logistic": _logistic, "self_adversarial": _self_adversarial, "bce": _bce}


def describe(name):
    """The one-line description of loss ``name`` (``kgestimator list``)."""
    return LOSSES[name].__doc__


def training_loss(cfg, logits, emu_logits=None):
    """The loss of one step from its logits ``(B, 1 + N)``: ``cfg.loss``, plus the EMU term when given.

    ``cfg`` is a :class:`kgestimator.training.TrainConfig`. The EMU term is
    :func:`emu_combined_loss`, BCE when the vanilla loss is BCE.
    """
    loss = LOSSES[cfg.loss](logits, cfg.adversarial_temperature)
    if emu_logits is None:
        return loss
    beta = cfg.beta if cfg.uls else 0.0
    return emu_combined_loss(loss, emu_logits, alpha=cfg.alpha, beta=beta, n_negatives=cfg.n_negatives,
                             normalize=cfg.emu_normalize,
                             bce_temperature=cfg.adversarial_temperature if cfg.loss == "bce" else None)


def regularization(cfg, model, loss, factors, n_rows):
    """``loss`` plus the regulariser: N3 over the step's ``factors`` (``n_rows`` queries), L3/L2 over the tables.

    With EMU the regulariser is weighted by ``alpha`` like the vanilla loss it was tuned beside
    (``L_emu + alpha * (L_vanilla + reg_weight * R)``): at full weight next to ``alpha = 0.25`` it counted
    four times as much against the data term, and DistMult-N3 on FB15k-237 lost 0.07 validation MRR
    after 2 epochs (BENCHMARKS.md §10).
    """
    if cfg.regularizer is None:
        return loss
    weight = cfg.reg_weight * (cfg.alpha if cfg.emu else 1.0)
    return loss + weight * REGULARIZERS[cfg.regularizer](model, factors, n_rows)


#: ``regularizer`` name -> ``R(model, factors, n_rows)``: N3 over the step's factors, L3/L2 over the tables
REGULARIZERS = {"n3": lambda model, factors, n_rows: n3(factors, n_rows),
                "l3": lambda model, factors, n_rows: l3_full(model),
                "l2": lambda model, factors, n_rows: l2_full(model)}

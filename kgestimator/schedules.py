"""Learning-rate schedules: ``'plateau'`` on the validation MRR and ``'cosine'`` over the steps.

Own code rather than ``torch.optim.lr_scheduler``: the trainer's optimiser can
be a pair (sparse tables + dense extras, see ``training._Optimizers``), and a
schedule's state goes into the training checkpoint as plain numbers.
"""

import math

#: schedule name -> its parameters and their defaults (``lr_scheduler_params`` keys)
SCHEDULES = {
    # LibKGE's ReduceLROnPlateau settings are factor 0.95, patience 5-7, threshold 1e-4
    "plateau": {"factor": 0.5, "patience": 2, "threshold": 1e-4, "min_lr": 0.0},
    "cosine": {"min_lr": 0.0},
}


def check_schedule(name, params):
    """The schedule's resolved parameters; a ValueError names anything unknown or out of range."""
    if name is None:
        if params:
            raise ValueError(f"The 'lr_scheduler_params' parameter {params!r} has no effect without "
                             "lr_scheduler; set lr_scheduler or leave lr_scheduler_params at None.")
        return {}
    if not isinstance(name, str) or name not in SCHEDULES:
        raise ValueError(f"The 'lr_scheduler' parameter must be None or one of {sorted(SCHEDULES)}; got {name!r}.")
    params = dict(params or {})
    unknown = sorted(set(params) - set(SCHEDULES[name]))
    if unknown:
        raise ValueError(f"The 'lr_scheduler_params' parameter has key(s) {unknown} that lr_scheduler={name!r} "
                         f"does not take; it takes {sorted(SCHEDULES[name])}.")
    resolved = {**SCHEDULES[name], **params}
    for key, value in resolved.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"lr_scheduler_params[{key!r}] must be a non-negative number; got {value!r}.")
    if name == "plateau":
        if not 0 < resolved["factor"] < 1:
            raise ValueError(f"lr_scheduler_params['factor'] must be in (0, 1); got {resolved['factor']!r}.")
        if int(resolved["patience"]) != resolved["patience"]:
            raise ValueError(f"lr_scheduler_params['patience'] must be an int; got {resolved['patience']!r}.")
    return resolved


def _groups(optimizer):
    for opt in getattr(optimizer, "optimizers", [optimizer]):
        yield from opt.param_groups


class LRSchedule:
    """Sets the optimiser's learning rate: ``after_step`` each step, ``after_validation`` per evaluation.

    Parameters
    ----------
    name : {'plateau', 'cosine'}
    params : dict
        Resolved by :func:`check_schedule`.
    base_lr : float
    total_steps : int
        The cosine schedule's horizon: the rate goes from ``base_lr`` to
        ``min_lr`` along half a cosine period over the run's steps.

    ``'plateau'`` multiplies the rate by ``factor`` after ``patience``
    evaluations in a row without a relative improvement of ``threshold`` over
    the best validation MRR (PyTorch's ``ReduceLROnPlateau`` in ``max`` mode),
    never going below ``min_lr``.
    """

    def __init__(self, name, params, base_lr, total_steps):
        self.name, self.params, self.base_lr, self.total_steps = name, params, float(base_lr), int(total_steps)
        self.lr = self.base_lr
        self.best = -math.inf
        self.bad = 0

    def apply(self, optimizer):
        for group in _groups(optimizer):
            group["lr"] = self.lr

    def after_step(self, step, optimizer):
        if self.name == "cosine":
            low = self.params["min_lr"]
            frac = min(1.0, step / max(1, self.total_steps))
            self.lr = low + 0.5 * (self.base_lr - low) * (1.0 + math.cos(math.pi * frac))
            self.apply(optimizer)

    def after_validation(self, score, optimizer):
        if self.name != "plateau":
            return
        if score > self.best * (1.0 + self.params["threshold"]) if self.best > 0 else score > self.best:
            self.best, self.bad = score, 0
            return
        self.bad += 1
        if self.bad > self.params["patience"]:
            self.lr = max(self.params["min_lr"], self.lr * self.params["factor"])
            self.bad = 0
            self.apply(optimizer)

    def state_dict(self):
        return {"lr": self.lr, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state):
        self.lr, self.best, self.bad = float(state["lr"]), float(state["best"]), int(state["bad"])

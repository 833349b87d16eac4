"""Callbacks: user code that :meth:`KGEmbedder.fit <kgestimator.KGEmbedder.fit>` runs as training goes.

A callback is any object with some of these methods (a missing one is skipped;
:class:`Callback` has them all, doing nothing):

``on_fit_begin(est)``
    Before the first epoch, once the data is checked and the model built.
``on_validation(est, record)``
    After an epoch with a validation MRR (every ``eval_every`` epochs, when
    there are validation triples), before ``on_epoch_end`` of that epoch.
``on_epoch_end(est, record)``
    After each epoch.
``on_fit_end(est)``
    When ``fit`` ends with a fitted estimator (also after a stop from a
    callback or Ctrl-C): ``est.history_`` and ``est.model_`` are set. An
    error raised here comes out of ``fit``, with the estimator already fitted.
``on_exception(est, error)``
    When ``fit`` fails after ``on_fit_begin`` (the error is raised again).

``record`` is the epoch's ``history_`` entry: ``epoch``, ``step``, ``loss``,
``seconds`` and, where evaluated, ``valid_mrr``. During training ``est`` holds
its parameters, and the fitted attributes of a previous fit if any.

**Stopping.** ``on_epoch_end`` or ``on_validation`` returning ``True`` stops
training after that epoch, as early stopping does: the best validation weights
are restored under ``early_stopping``, and a checkpoint (``checkpoint_dir``)
records the run as finished, so a later fit with that folder returns the same
model. (A return value is used rather than an exception so that the stop goes
through the same path as early stopping, checkpoint included.) Not available
with ``distributed=True``, where the other ranks could not follow.

**Resuming.** A fit that resumes from a checkpoint calls ``on_fit_begin``, then
the hooks of the epochs it runs itself (their ``epoch`` numbers going on from
the checkpoint's), then ``on_fit_end``, where ``est.history_`` holds every
epoch.

**Cloning.** ``callbacks`` is a parameter like any other: :func:`sklearn.base.clone`
(and so every search) gives the clone its own callbacks, deep copies of the
originals, or fresh ones built from their parameters for callbacks that have
``get_params`` (the trackers of :mod:`kgestimator.trackers`). Callbacks are
run-time hooks, not part of the model: :meth:`KGEmbedder.save` does not write
them.
"""

import warnings

__all__ = ["Callback", "HOOKS", "check_callbacks", "CallbackRunner"]

HOOKS = ("on_fit_begin", "on_epoch_end", "on_validation", "on_fit_end", "on_exception")


class Callback:
    """Base class of callbacks, with every hook doing nothing (subclassing it is optional)."""

    def on_fit_begin(self, est):
        """Called before the first epoch."""

    def on_epoch_end(self, est, record):
        """Called after each epoch; return True to stop training."""

    def on_validation(self, est, record):
        """Called after an epoch with a validation MRR; return True to stop training."""

    def on_fit_end(self, est):
        """Called when ``fit`` ends with a fitted estimator."""

    def on_exception(self, est, error):
        """Called when ``fit`` fails after ``on_fit_begin``."""


def is_callback(obj):
    """Whether ``obj`` is a callback: an instance (not a class) with at least one of the :data:`HOOKS`."""
    return not isinstance(obj, type) and any(callable(getattr(obj, hook, None)) for hook in HOOKS)


def check_callbacks(callbacks):
    """``callbacks`` as a tuple, or a TypeError naming the bad entry."""
    if callbacks is None:
        return ()
    if not isinstance(callbacks, (list, tuple)):
        raise TypeError(f"The 'callbacks' parameter must be None or a list of callback objects; "
                        f"got {type(callbacks).__name__}.")
    for i, cb in enumerate(callbacks):
        if not is_callback(cb):
            raise TypeError(f"callbacks[{i}] ({cb!r}) is not a callback: it needs at least one of the "
                            f"methods {', '.join(HOOKS)}" + (" (pass an instance, not the class)"
                                                            if isinstance(cb, type) else ""))
    return tuple(callbacks)


class CallbackRunner:
    """Calls the hooks of ``callbacks`` on ``est``; ``wrap(progress)`` joins them to the training loop."""

    def __init__(self, callbacks, est, can_stop=True):
        self.callbacks, self.est, self.can_stop = tuple(callbacks), est, can_stop
        self.begun = False

    def _call(self, hook, *args):
        stop = False
        for cb in self.callbacks:
            method = getattr(cb, hook, None)
            if method is not None:
                stop |= method(self.est, *args) is True
        return stop

    def begin(self):
        self.begun = True
        self._call("on_fit_begin")

    def end(self):
        self._call("on_fit_end")

    def error(self, error):
        if self.begun:
            self._call("on_exception", error)

    def wrap(self, progress):
        """``progress(record) -> stop`` for :func:`kgestimator.training.train`: ``progress`` then the hooks."""
        if not self.callbacks:
            return progress

        def hooked(record):
            if progress is not None:
                progress(record)
            stop = "valid_mrr" in record and self._call("on_validation", record)
            stop = self._call("on_epoch_end", record) or stop
            if stop and not self.can_stop:
                warnings.warn("a callback asked to stop training, which distributed=True does not allow "
                              "(the other ranks could not follow); training goes on.", UserWarning,
                              stacklevel=2)
                return False
            return stop

        return hooked

"""Reporting training progress: a tqdm bar when ``verbose``, the ``kgestimator`` logger otherwise.

The library never configures logging itself: with no handler set up by the
application, the INFO records below go nowhere (the ``NullHandler`` keeps
Python's last-resort handler quiet). ``logging.basicConfig(level=logging.INFO)``
or the ``kgestimator`` command shows them.
"""

import contextlib
import logging

logger = logging.getLogger("kgestimator")
logger.addHandler(logging.NullHandler())


def _fields(record, last_mrr):
    fields = {"loss": round(record["loss"], 4)}
    if last_mrr is not None:
        fields["valid_mrr"] = round(last_mrr, 4)
    return fields


@contextlib.contextmanager
def epoch_progress(desc, verbose, total=None):
    """Yield ``progress(epoch_record)`` for :func:`kgestimator.training.train`.

    Parameters
    ----------
    desc : str
        What is being trained, e.g. ``'distmult+EMU'``.
    verbose : int
        Positive: a tqdm bar (one step per epoch) on stderr showing the loss and
        the last validation MRR. Zero: one INFO record per epoch on the
        ``kgestimator`` logger.
    total : int, optional
        Expected number of epochs (early stopping may end sooner).
    """
    state = {"mrr": None}
    if verbose:
        from tqdm.auto import tqdm

        bar = tqdm(total=total, unit="epoch", desc=desc)

        def progress(record):
            # the MRR is only computed every eval_every epochs; keep showing the last one
            state["mrr"] = record.get("valid_mrr", state["mrr"])
            bar.update(1)
            bar.set_postfix(_fields(record, state["mrr"]))

        try:
            yield progress
        finally:
            bar.close()
        return

    def progress(record):
        if not logger.isEnabledFor(logging.INFO):
            return
        # a log line reports the MRR of its own epoch only (it is not computed every epoch)
        shown = " ".join(f"{k}={v}" for k, v in _fields(record, record.get("valid_mrr")).items())
        logger.info("%s epoch %d/%s: %s (%.2f s)", desc, record["epoch"], total or "?", shown,
                    record["seconds"])

    yield progress

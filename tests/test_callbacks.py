"""KGEmbedder(callbacks=...): hook order, stopping, cloning, checkpoints and early stopping beside them."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone

from kgestimator import KGEmbedder
from kgestimator.callbacks import Callback, CallbackRunner
from kgestimator.trackers import CSVTracker

from conftest import FAST


class Recorder(Callback):
    """Records every hook call; stops at ``stop_at`` (an epoch) from ``stop_hook``."""

    def __init__(self, stop_at=None, stop_hook="on_epoch_end"):
        self.stop_at = stop_at
        self.stop_hook = stop_hook
        self.events = []

    def on_fit_begin(self, est):
        self.events.append(("begin",))

    def on_validation(self, est, record):
        self.events.append(("validation", record["epoch"], record["valid_mrr"]))
        return self.stop_hook == "on_validation" and record["epoch"] == self.stop_at

    def on_epoch_end(self, est, record):
        self.events.append(("epoch", record["epoch"], record["loss"]))
        return self.stop_hook == "on_epoch_end" and record["epoch"] == self.stop_at

    def on_fit_end(self, est):
        self.events.append(("end", len(est.history_)))

    def on_exception(self, est, error):
        self.events.append(("error", type(error).__name__))


def _weights(est):
    return [p.detach().clone() for p in est.model_.parameters()]


def _same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(_weights(a), _weights(b)))


def test_hooks_in_order_with_the_history_records(kg):
    rec = Recorder()
    est = KGEmbedder(**FAST, eval_every=2, callbacks=[rec], random_state=0).fit(kg.train, valid=kg.valid)
    h = est.history_
    expected = [("begin",)]
    for r in h:
        if "valid_mrr" in r:
            expected.append(("validation", r["epoch"], r["valid_mrr"]))
        expected.append(("epoch", r["epoch"], r["loss"]))
    expected.append(("end", len(h)))
    assert rec.events == expected
    assert [e[1] for e in expected if e[0] == "validation"] == [2, 4, 5]  # every eval_every, and the last


def test_callbacks_change_no_number_of_training(kg, tmp_path):
    """Early stopping and checkpoints beside a callback give the run they give without it."""
    params = dict(FAST, n_epochs=6, eval_every=1, early_stopping=True, patience=2, random_state=0)
    plain = KGEmbedder(**params, checkpoint_dir=tmp_path / "a").fit(kg.train, valid=kg.valid)
    rec = Recorder()
    hooked = KGEmbedder(**params, checkpoint_dir=tmp_path / "b", callbacks=[rec]).fit(kg.train, valid=kg.valid)
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in plain.history_]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in hooked.history_] == strip
    assert _same_weights(plain, hooked)
    assert len([e for e in rec.events if e[0] == "epoch"]) == len(plain.history_)


@pytest.mark.parametrize("hook", ["on_epoch_end", "on_validation"])
def test_a_callback_stops_training(kg, hook):
    full = KGEmbedder(**FAST, eval_every=1, random_state=0).fit(kg.train, valid=kg.valid)
    rec = Recorder(stop_at=2, stop_hook=hook)
    est = KGEmbedder(**FAST, eval_every=1, callbacks=[rec], random_state=0).fit(kg.train, valid=kg.valid)
    assert est.n_iter_ == 2 and len(est.history_) == 2
    assert [r["loss"] for r in est.history_] == [r["loss"] for r in full.history_[:2]]
    assert rec.events[-1] == ("end", 2)
    assert not any(e[0] == "epoch" and e[1] > 2 for e in rec.events)


def test_stop_restores_best_weights_under_early_stopping_and_finishes_the_checkpoint(kg, tmp_path):
    params = dict(FAST, n_epochs=8, eval_every=1, early_stopping=True, patience=10, random_state=0,
                  checkpoint_dir=tmp_path / "run")
    est = KGEmbedder(**params, callbacks=[Recorder(stop_at=4)]).fit(kg.train, valid=kg.valid)
    assert est.n_iter_ == 4
    # the weights are those of the best of the 4 epochs: their validation MRR is the best one
    best = max(r["valid_mrr"] for r in est.history_)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # valid triples with unseen entities are reported, not ranked
        assert est.evaluate(kg.valid)["mrr"] == pytest.approx(best, abs=1e-6)
    # the checkpoint marks the run finished: the same folder, without the callback, gives the same model
    again = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    assert again.n_iter_ == 4 and _same_weights(est, again)


class Interrupt(Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, est, record):
        if record["epoch"] == self.at:
            raise KeyboardInterrupt


def test_resumed_fit_calls_the_hooks_of_its_own_epochs(kg, tmp_path):
    params = dict(FAST, n_epochs=5, eval_every=1, random_state=0)
    full = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    first = Recorder()
    with pytest.warns(UserWarning, match="interrupted|Interrupt|stopped"):
        est = KGEmbedder(**params, checkpoint_dir=tmp_path / "run", callbacks=[first, Interrupt(3)])
        est.fit(kg.train, valid=kg.valid)
    assert first.events[-1][0] == "end"  # Ctrl-C leaves a fitted estimator: on_fit_end ran
    second = Recorder()
    est.set_params(callbacks=[second]).fit(kg.train, valid=kg.valid)
    # the epoch-3 checkpoint was not written (the interrupt came first): the resumed fit runs 3 to 5
    assert [e[1] for e in second.events if e[0] == "epoch"] == [3, 4, 5]
    assert second.events[-1] == ("end", 5)
    assert [r["loss"] for r in est.history_] == [r["loss"] for r in full.history_]
    assert _same_weights(est, full)


class Boom(Callback):
    def on_epoch_end(self, est, record):
        raise RuntimeError("boom")


def test_a_failing_fit_calls_on_exception_and_leaves_the_estimator_unfitted(kg):
    rec = Recorder()
    est = KGEmbedder(**FAST, callbacks=[rec, Boom()], random_state=0)
    with pytest.raises(RuntimeError, match="boom"):
        est.fit(kg.train)
    assert rec.events[-1] == ("error", "RuntimeError")
    assert not hasattr(est, "model_")


def test_clone_copies_callbacks_and_builds_fresh_trackers(kg, tmp_path):
    rec, tracker = Recorder(), CSVTracker(tmp_path / "runs")
    est = KGEmbedder(**dict(FAST, n_epochs=1), callbacks=[rec, tracker], random_state=0).fit(kg.train)
    copy = clone(est)
    rec2, tracker2 = copy.callbacks
    assert rec2 is not rec and rec2.events == rec.events  # a deep copy, as clone does for plain objects
    assert tracker2 is not tracker and tracker2.get_params() == tracker.get_params()
    assert not hasattr(tracker2, "run_dir_")  # unfitted: built from the parameters
    copy.fit(kg.train)
    assert tracker2.run_dir_ != tracker.run_dir_ and len(rec.events) == 3


def test_save_leaves_callbacks_out(kg, tmp_path):
    est = KGEmbedder(**dict(FAST, n_epochs=1), callbacks=[Recorder()], random_state=0).fit(kg.train)
    est.save(tmp_path / "m.kge")
    loaded = KGEmbedder.load(tmp_path / "m.kge")
    assert loaded.callbacks is None
    np.testing.assert_allclose(loaded.score_samples(kg.test[:5]), est.score_samples(kg.test[:5]), rtol=1e-6)


_CALLBACKS = r"The 'callbacks' parameter of KGEmbedder must be a list of callback objects \(instances with one of " \
             r"the methods on_fit_begin, .*\) or None\. Got "


@pytest.mark.parametrize("bad, match", [
    (Recorder(), _CALLBACKS + r"<.*Recorder object at .*> instead"),
    ([object()], _CALLBACKS + r"\[<object object at .*>\] instead"),
    ([Recorder], _CALLBACKS + r"\[<class '.*Recorder'>\] instead"),
])
def test_bad_callbacks_are_named(kg, bad, match):
    with pytest.raises(TypeError, match=match):
        KGEmbedder(callbacks=bad).fit(kg.train)


def test_any_object_with_a_hook_is_a_callback(kg):
    seen = []

    class OnlyEnd:
        def on_fit_end(self, est):
            seen.append(est.n_iter_)

    KGEmbedder(**dict(FAST, n_epochs=2), callbacks=[OnlyEnd()], random_state=0).fit(kg.train)
    assert seen == [2]


def test_a_stop_is_refused_where_ranks_could_not_follow():
    runner = CallbackRunner([Recorder(stop_at=1)], est=None, can_stop=False)
    hooked = runner.wrap(None)
    with pytest.warns(UserWarning, match="distributed=True"):
        assert hooked({"epoch": 1, "step": 1, "loss": 1.0, "seconds": 0.1}) is False
    assert CallbackRunner([Recorder(stop_at=1)], est=None).wrap(None)({"epoch": 1, "loss": 1.0}) is True

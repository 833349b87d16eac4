"""Faults during training: checkpoints and resume, Ctrl-C, SIGKILL, non-finite losses."""

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.exceptions import NotFittedError

import kgestimator
from conftest import FAST
from kgestimator import KGEmbedder, training
from kgestimator.checkpoint import FILENAME, FORMAT, FORMAT_VERSION, LOCKNAME, RUN_PREFIX
from kgestimator.persistence import read_payload
from kgestimator.samplers import (AdversarialSampler, BernoulliSampler, NSCachingSampler, SANSampler,
                                  UniformSampler)

#: steps per epoch with FAST on the session graph: ceil(1200 / 256) = 5
RUN = dict(FAST, n_epochs=6)


class Faults:
    """Switches the samplers below consult: raise Ctrl-C at a step."""

    interrupt_at = None


class _FaultMixin:
    def sides(self, batch, step, generator):
        if step == Faults.interrupt_at:
            Faults.interrupt_at = None
            raise KeyboardInterrupt
        return super().sides(batch, step, generator)


class FaultyUniform(_FaultMixin, UniformSampler):
    pass


class FaultyBernoulli(_FaultMixin, BernoulliSampler):
    pass


class CachingSampler(_FaultMixin, UniformSampler):
    """A sampler with training state, as NSCaching has: it keeps the hardest negatives seen
    and draws half of each set from them, so its state changes the run."""

    def __init__(self, cache_size=8):
        self.cache_size = cache_size

    def fit(self, triples, n_entities, n_relations, **kwargs):
        super().fit(triples, n_entities, n_relations, **kwargs)
        self.cache_ = torch.zeros(self.cache_size, dtype=torch.long, device=triples.device)
        self.updates_ = 0
        return self

    def sample(self, batch, side, n_chunks, n_negatives, generator, *args, **kwargs):
        ids = super().sample(batch, side, n_chunks, n_negatives, generator, *args, **kwargs)
        pick = torch.randint(self.cache_size, (n_chunks, n_negatives // 2), generator=generator,
                             device=ids.device)
        ids[:, : n_negatives // 2] = self.cache_[pick]
        return ids

    def update(self, batch, side, *args):
        # the trainer passes (neg_ids, neg_scores), or, in the sampler API that
        # adds hard-negative samplers, (model, query, neg_ids, neg_scores, generator)
        neg_ids, neg_scores = args if len(args) == 2 else args[2:4]
        hardest = neg_scores.mean(1).argsort(dim=-1, descending=True)[0, : self.cache_size]
        self.cache_ = neg_ids[0, hardest].clone()
        self.updates_ += 1

    def state_dict(self):
        return {"cache": self.cache_, "updates": self.updates_}

    def load_state_dict(self, state):
        assert state["cache"].device == self.cache_.device
        self.cache_, self.updates_ = state["cache"], state["updates"]


@pytest.fixture
def poison_at(monkeypatch):
    """``poison_at(step)``: the weights turn NaN just before that step's loss."""
    real = training.step_loss

    def arm(at):
        def step_loss(model, pairwise, sampler, cfg, batch, step, generator, *rest, **kw):
            if step == at:
                with torch.no_grad():
                    model.entity.fill_(float("nan"))
            return real(model, pairwise, sampler, cfg, batch, step, generator, *rest, **kw)

        monkeypatch.setattr(training, "step_loss", step_loss)

    return arm


def _weights(est):
    return {k: v.clone() for k, v in est.model_.state_dict().items()}


def _same_run(a, b):
    """Identical weights, bit for bit, and identical history but for the wall-clock seconds."""
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in a.history_]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in b.history_]


def _run_dir(directory):
    """The one run sub-folder of a checkpoint_dir (each run has its own, named after its fingerprint)."""
    runs = [p for p in Path(directory).iterdir() if p.name.startswith(RUN_PREFIX)]
    assert len(runs) == 1, runs
    return runs[0]


def _checkpoint_step(directory):
    meta, _ = read_payload(_run_dir(directory) / FILENAME, FORMAT, FORMAT_VERSION, "checkpoint")
    return meta["run"]["step"]


def _fit_interrupted(params, kg, at):
    Faults.interrupt_at = at
    with pytest.warns(UserWarning, match=f"interrupted at epoch .*step {at} of") as record:
        est = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    assert Faults.interrupt_at is None
    return est, str(record[0].message)


@pytest.mark.parametrize("options", [
    dict(sampler=FaultyUniform()),
    dict(sampler=FaultyUniform(), emu=True, optimizer="adagrad_then_adam", learning_rate=0.05,
         early_stopping=True, eval_every=1, patience=50),
    dict(sampler=FaultyBernoulli(), sparse=True, loss="self_adversarial", regularizer="n3", reg_weight=1e-3),
], ids=["adam", "adagrad-then-adam-emu-early-stopping", "bernoulli-sparse"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(kg, tmp_path, options):
    params = dict(RUN, **options, random_state=5)
    reference = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    # interrupted twice: mid-epoch (step 13, after the checkpoint of step 12) and
    # across the Adagrad -> Adam switch (step 15), then run to the end
    params.update(checkpoint_dir=tmp_path / "run", checkpoint_every=4)
    est, message = _fit_interrupted(params, kg, at=13)
    assert _checkpoint_step(tmp_path / "run") == 12
    assert "resumes from the checkpoint of step 12" in message
    assert len(est.history_) == 2 and est.n_iter_ == 2  # the two finished epochs
    _fit_interrupted(params, kg, at=17)
    assert _checkpoint_step(tmp_path / "run") == 16
    resumed = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    _same_run(resumed, reference)
    np.testing.assert_array_equal(resumed.score_samples(kg.test), reference.score_samples(kg.test))
    assert _checkpoint_step(tmp_path / "run") == reference.history_[-1]["step"]


def test_epoch_checkpoints_resume_identically(kg, tmp_path):
    params = dict(RUN, sampler=FaultyUniform(), random_state=1, early_stopping=True, eval_every=2, patience=9)
    reference = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    params["checkpoint_dir"] = tmp_path
    _fit_interrupted(params, kg, at=12)  # in epoch 3, after the checkpoint of epoch 2
    assert _checkpoint_step(tmp_path) == 10
    _same_run(KGEmbedder(**params).fit(kg.train, valid=kg.valid), reference)


def _stopped_at_step_9(params, kg):
    """Fit until Ctrl-C in step 9 (the tenth); the checkpoint then holds step 9."""
    Faults.interrupt_at = 9
    with pytest.warns(UserWarning, match="interrupted"):
        KGEmbedder(**params).fit(kg.train)
    assert _checkpoint_step(params["checkpoint_dir"]) == 9


def test_sampler_state_is_checkpointed(kg, tmp_path, monkeypatch):
    params = dict(RUN, sampler=CachingSampler(), random_state=2)
    reference = KGEmbedder(**params).fit(kg.train)
    params.update(checkpoint_dir=tmp_path / "a", checkpoint_every=3)
    _stopped_at_step_9(params, kg)
    resumed = KGEmbedder(**params).fit(kg.train)
    _same_run(resumed, reference)
    assert resumed.sampler_.updates_ == reference.sampler_.updates_ == 30
    # the check has teeth: a resume that forgets the sampler's cache trains another model
    params["checkpoint_dir"] = tmp_path / "b"
    _stopped_at_step_9(params, kg)
    monkeypatch.setattr(CachingSampler, "load_state_dict", lambda self, state: None)
    forgetful = KGEmbedder(**params).fit(kg.train)
    assert not torch.equal(forgetful.model_.entity, reference.model_.entity)


def test_finished_run_is_returned_as_it_was(kg, tmp_path):
    params = dict(RUN, random_state=0, checkpoint_dir=tmp_path)
    first = KGEmbedder(**params).fit(kg.train)
    t0 = time.perf_counter()
    again = KGEmbedder(**params).fit(kg.train)
    _same_run(again, first)
    assert again.history_ == first.history_  # nothing was retrained, not even the seconds
    assert time.perf_counter() - t0 < 30


@pytest.mark.parametrize("change", [dict(dim=8), dict(random_state=1), dict(sampler="bernoulli"),
                                    dict(data="other")])
def test_another_run_gets_its_own_sub_folder(kg, tmp_path, change):
    params = dict(RUN, n_epochs=1, random_state=0, checkpoint_dir=tmp_path)
    first = KGEmbedder(**params).fit(kg.train)
    before = (Path(first.checkpoint_path_)).read_bytes()
    data = kg.train[:-1] if change.pop("data", None) else kg.train
    other = KGEmbedder(**{**params, **change}).fit(data)
    assert Path(other.checkpoint_path_).parent != Path(first.checkpoint_path_).parent
    assert Path(first.checkpoint_path_).read_bytes() == before  # the first run's checkpoint is untouched
    # what may change and still resume the same run: the progress display, the checkpoint interval
    again = KGEmbedder(**{**params, "verbose": 0, "checkpoint_every": 2}).fit(kg.train)
    assert again.checkpoint_path_ == first.checkpoint_path_
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(RUN_PREFIX)]) == 2


def test_a_checkpoint_of_another_run_is_refused(kg, tmp_path):
    # the fingerprint inside is checked too: a checkpoint copied into another run's folder
    params = dict(RUN, n_epochs=1, random_state=0, checkpoint_dir=tmp_path)
    a = KGEmbedder(**params).fit(kg.train)
    b = KGEmbedder(**{**params, "dim": 8}).fit(kg.train)
    Path(b.checkpoint_path_).write_bytes(Path(a.checkpoint_path_).read_bytes())
    with pytest.raises(ValueError, match="'dim' is 16 there and 8 here") as info:
        KGEmbedder(**{**params, "dim": 8}).fit(kg.train)
    assert "use another checkpoint_dir, or delete" in str(info.value)


def test_checkpoint_parameters_are_validated(kg, tmp_path):
    with pytest.raises(ValueError, match="'checkpoint_every'.*without checkpoint_dir"):
        KGEmbedder(**RUN, checkpoint_every=5).fit(kg.train)
    with pytest.raises(ValueError, match="'checkpoint_every'"):
        KGEmbedder(**RUN, checkpoint_dir=tmp_path, checkpoint_every=0).fit(kg.train)
    with pytest.raises(ValueError, match="'checkpoint_dir'"):
        KGEmbedder(**RUN, checkpoint_dir=3).fit(kg.train)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ValueError, match="must be a folder"):
        KGEmbedder(**RUN, checkpoint_dir=tmp_path / "file").fit(kg.train)


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(kg, tmp_path, monkeypatch):
    params = dict(RUN, sampler=FaultyUniform(), random_state=0)
    reference = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    params.update(checkpoint_dir=tmp_path, checkpoint_every=4)
    _fit_interrupted(params, kg, at=9)
    run = _run_dir(tmp_path)
    before = (run / FILENAME).read_bytes()
    real_save = torch.save

    def half_written(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_written)
    (run / ".checkpoint-stale.tmp").write_bytes(b"left by a killed run")
    with pytest.raises(OSError, match="disk full"):
        KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    assert (run / FILENAME).read_bytes() == before
    assert sorted(p.name for p in run.iterdir()) == [LOCKNAME, FILENAME]  # no temporary files left
    monkeypatch.setattr(torch, "save", real_save)
    _same_run(KGEmbedder(**params).fit(kg.train, valid=kg.valid), reference)


def test_tampered_checkpoint_is_refused(kg, tmp_path):
    params = dict(RUN, n_epochs=1, random_state=0, checkpoint_dir=tmp_path)
    KGEmbedder(**params).fit(kg.train)
    path = _run_dir(tmp_path) / FILENAME
    payload = torch.load(path, weights_only=True)
    payload["state"]["model"]["entity"][0, 0] += 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match="checksum.*Delete it to start the run over"):
        KGEmbedder(**params).fit(kg.train)


def test_ctrl_c_keeps_best_weights_so_far(kg):
    params = dict(RUN, n_epochs=30, sampler=FaultyUniform(), early_stopping=True, eval_every=1, patience=100,
                  random_state=0)
    est, message = _fit_interrupted(params, kg, at=42)
    evals = [h["valid_mrr"] for h in est.history_]
    best = int(np.argmax(evals))
    assert f"best weights so far (validation MRR {evals[best]:.4f} at epoch {best + 1})" in message
    assert "set checkpoint_dir to be able to resume" in message
    assert est.evaluate(kg.valid)["mrr"] == pytest.approx(evals[best], abs=1e-12)
    assert est.predict(kg.test[:3, :2]).shape == (3,)


def test_non_finite_loss_keeps_last_finite_weights(kg, tmp_path, poison_at):
    params = dict(RUN, random_state=0)
    # no checkpoint: the weights turn NaN before step 7 (the eighth); nothing finite is left
    poison_at(7)
    est = KGEmbedder(**params)
    with pytest.raises(FloatingPointError, match="loss became nan at epoch 2, step 8.*No finite weights") as info:
        est.fit(kg.train)
    assert info.value.estimator is None
    with pytest.raises(NotFittedError, match="not fitted yet"):
        est.predict(kg.test[:1, :2])
    # with a checkpoint, the error carries a copy fitted with its weights; the estimator stays unfitted
    est = KGEmbedder(**params, checkpoint_dir=tmp_path, checkpoint_every=3)
    with pytest.raises(FloatingPointError, match="copy fitted with the weights of the checkpoint of step 6") as info:
        est.fit(kg.train)
    assert "learning_rate" in str(info.value) and "last checkpoint (step 6" in str(info.value)
    with pytest.raises(NotFittedError):
        est.predict(kg.test[:1, :2])
    kept = info.value.estimator
    assert all(torch.isfinite(p).all() for p in kept.model_.parameters())
    ref = KGEmbedder(**{**params, "max_steps": 6}).fit(kg.train)
    assert torch.equal(kept.model_.entity, ref.model_.entity)
    assert len(kept.history_) == 1 and np.all(np.isfinite(kept.score_samples(kg.test)))


def test_non_finite_loss_from_divergence(kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 50, "learning_rate": 1e6}, gamma=1e15, random_state=0)
    with pytest.raises(FloatingPointError, match="Lower 'learning_rate' \\(it is 1000000.0\\)"):
        est.fit(kg.train)
    if hasattr(est, "model_"):
        assert all(torch.isfinite(p).all() for p in est.model_.parameters())


# ---------------------------------------------------------------- SIGKILL
CHILD = """
import os, signal, sys, time
# a job started in the background (nohup, CI runners) inherits SIGINT ignored, and
# Python then never raises KeyboardInterrupt; a terminal's Ctrl-C has the default
signal.signal(signal.SIGINT, signal.default_int_handler)
import torch
torch.set_num_threads(1)
from kgestimator import KGEmbedder, make_kg
from kgestimator.samplers import UniformSampler

log = os.open(sys.argv[2], os.O_WRONLY | os.O_CREAT | os.O_APPEND)
pause_at = int(os.environ.get("KGE_TEST_PAUSE_AT", "-1"))


class LoggingSampler(UniformSampler):
    # records each step as it starts; os.write survives a SIGKILL
    def sides(self, batch, step, generator):
        os.write(log, b"%d\\n" % step)
        if step == pause_at:  # hold still so the parent's signal lands inside fit
            time.sleep(120)
        return super().sides(batch, step, generator)


kg = make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)
est = KGEmbedder(**PARAMS, sampler=LoggingSampler(), checkpoint_dir=sys.argv[1], checkpoint_every=EVERY)
est.fit(kg.train, valid=kg.valid)
# the logging sampler draws as 'uniform' does; save writes the parameters of the fit, so say it there
est._fit_params["sampler"] = "uniform"
est.save(sys.argv[3])
"""
KILL_PARAMS = dict(dim=16, n_negatives=32, batch_size=200, neg_chunk_size=20, n_epochs=25, emu=True,
                   optimizer="adagrad_then_adam", learning_rate=0.05, eval_every=5, random_state=3)
EVERY = 7


def _logged_steps(path):
    text = path.read_text() if path.exists() else ""
    return [int(line) for line in text.split("\n")[:-1]]


TOTAL_STEPS = KILL_PARAMS["n_epochs"] * 6  # 1200 triples / 200 per batch


def _child_runner(tmp_path):
    """``start(log)`` -> a training subprocess logging its steps to ``log``; and its folders."""
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD).replace("PARAMS", repr(KILL_PARAMS)).replace("EVERY", str(EVERY)))
    repo = str(Path(kgestimator.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    ckpt, model_path = tmp_path / "run", tmp_path / "model.kge"

    def start(log, pause_at=-1):
        return subprocess.Popen([sys.executable, str(script), str(ckpt), str(log), str(model_path)],
                                env=dict(env, KGE_TEST_PAUSE_AT=str(pause_at)),
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    return start, ckpt, model_path


def _wait_for_step(proc, log, target):
    deadline = time.monotonic() + 300
    while (not _logged_steps(log) or _logged_steps(log)[-1] < target) and proc.poll() is None:
        assert time.monotonic() < deadline, "the child did not reach the step"
        time.sleep(0.002)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_at_a_random_moment_then_resume(kg, tmp_path):
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    print(f"kill moments from seed {seed}")
    start, ckpt, model_path = _child_runner(tmp_path)
    total = TOTAL_STEPS
    resumed_from = 0
    # one kill in each half of the run
    targets = [rng.randrange(EVERY + 1, total // 2), rng.randrange(total // 2 + EVERY + 1, total - 10)]
    for kill, target in enumerate(targets):
        log = tmp_path / f"steps{kill}.log"
        proc = start(log)
        _wait_for_step(proc, log, target)
        time.sleep(rng.uniform(0, 0.01))  # somewhere inside a step, a validation or a checkpoint write
        proc.kill()
        proc.wait()
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
        steps = _logged_steps(log)
        assert steps[0] == resumed_from  # each run starts exactly where the checkpoint was
        done = steps[-1] + 1  # at most this many steps were finished when it died
        resumed_from = _checkpoint_step(ckpt)
        print(f"killed after step {steps[-1]} had started; the checkpoint holds step {resumed_from}")
        assert done - EVERY <= resumed_from <= done, (done, resumed_from)  # at most one interval lost
    log = tmp_path / "final.log"
    proc = start(log)
    assert proc.wait(timeout=300) == 0, proc.stderr.read().decode()
    assert _logged_steps(log)[0] == resumed_from
    # the killed-and-resumed model is the uninterrupted one
    loaded = KGEmbedder.load(model_path)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the children's setting: float sums then agree bit for bit
    try:
        reference = KGEmbedder(**KILL_PARAMS).fit(kg.train, valid=kg.valid)
    finally:
        torch.set_num_threads(threads)
    _same_run(loaded, reference)
    assert [h["epoch"] for h in loaded.history_] == list(range(1, KILL_PARAMS["n_epochs"] + 1))
    assert 0 < loaded.evaluate(kg.test)["mrr"] <= 1
    assert sorted(p.name for p in _run_dir(ckpt).iterdir()) == [LOCKNAME, FILENAME]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_real_ctrl_c_in_a_training_process(tmp_path):
    start, ckpt, model_path = _child_runner(tmp_path)
    log = tmp_path / "steps.log"
    # the child holds still at that step: without it, a loaded machine can let the
    # short run finish between the parent seeing the step and the signal arriving
    proc = start(log, pause_at=TOTAL_STEPS // 2)
    _wait_for_step(proc, log, TOTAL_STEPS // 2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    # fit returned: the script went on to save the model it was left with
    assert proc.returncode == 0, err.decode()
    assert "Training was interrupted at epoch" in err.decode() and "resumes from the checkpoint" in err.decode()
    loaded = KGEmbedder.load(model_path)
    assert 0 < len(loaded.history_) < KILL_PARAMS["n_epochs"]
    assert all(torch.isfinite(p).all() for p in loaded.model_.parameters())
    assert _checkpoint_step(ckpt) <= _logged_steps(log)[-1] + 1


class FaultySAN(_FaultMixin, SANSampler):
    pass


class FaultyNSCaching(_FaultMixin, NSCachingSampler):
    pass


class FaultyAdversarial(_FaultMixin, AdversarialSampler):
    pass


@pytest.mark.parametrize("sampler", [FaultySAN(n_random_walks=20), FaultyNSCaching(), FaultyAdversarial(n_fake=2)],
                         ids=["san", "nscaching", "adversarial"])
def test_hard_samplers_resume_identically(kg, tmp_path, sampler):
    # their state (SAN pools, NSCaching caches, DANS networks and optimisers) goes
    # into the checkpoint, so an interrupted run ends exactly like an uninterrupted one
    params = dict(RUN, sampler=sampler, emu=True, random_state=3)
    reference = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    params.update(checkpoint_dir=tmp_path / "run", checkpoint_every=4)
    _fit_interrupted(params, kg, at=13)
    resumed = KGEmbedder(**params).fit(kg.train, valid=kg.valid)
    _same_run(resumed, reference)

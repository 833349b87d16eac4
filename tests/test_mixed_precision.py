"""``mixed_precision``: bfloat16 autocast in the training steps only, run on the CPU here.

The CUDA path is the same ``torch.autocast`` call with ``device_type='cuda'``;
these tests run every function it goes through on ``device='cpu'``.
"""

import numpy as np
import pytest
import torch

from kgestimator import KGEmbedder, evaluation, training
from kgestimator._utils import resolve_mixed_precision

from conftest import FAST


def _spy_steps(monkeypatch):
    seen = []
    real = training.step_loss

    def step_loss(model, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        loss = real(model, *args, **kwargs)
        seen.append(loss.dtype)
        return loss

    monkeypatch.setattr(training, "step_loss", step_loss)
    return seen


@pytest.mark.parametrize("setting, on", [(True, True), (False, False), ("auto", False)])
def test_training_steps_run_under_bfloat16_autocast_only_when_asked(kg, monkeypatch, setting, on):
    seen = _spy_steps(monkeypatch)
    est = KGEmbedder(**FAST, mixed_precision=setting, emu=True, device="cpu", random_state=0).fit(kg.train)
    assert seen and set(seen[0::2]) == {on}
    # with autocast the scores come out of bfloat16 products; the loss is still a float32 softmax
    assert set(seen[1::2]) == {torch.float32}
    assert all(p.dtype == torch.float32 for p in est.model_.parameters())
    assert np.isfinite(est.history_[-1]["loss"])


def test_evaluation_never_scores_under_autocast(kg, monkeypatch):
    est = KGEmbedder(**FAST, mixed_precision=True, random_state=0).fit(kg.train)
    seen = []
    real = evaluation.score_all

    def score_all(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        out = real(*args, **kwargs)
        seen.append(out.dtype)
        return out

    monkeypatch.setattr(evaluation, "score_all", score_all)
    est.evaluate(kg.test)
    assert seen and set(seen[0::2]) == {False} and set(seen[1::2]) == {torch.float32}


@pytest.mark.parametrize("model", ["distmult", "complex"])
def test_bfloat16_training_changes_the_numbers_but_not_the_quality(kg, model):
    params = dict(FAST, model=model, n_epochs=30, random_state=0)
    full = KGEmbedder(**params).fit(kg.train)
    half = KGEmbedder(**params, mixed_precision=True).fit(kg.train)
    # bfloat16 products round the scores, so the runs part ways ...
    assert full.history_[-1]["loss"] != half.history_[-1]["loss"]
    # ... but learn the same graph equally well, far above chance (random scores: MRR ~0.08 here)
    mrr_full, mrr_half = full.score(kg.test), half.score(kg.test)
    assert mrr_half > 0.2 and abs(mrr_half - mrr_full) < 0.03


def test_bfloat16_training_is_reproducible_on_cpu(kg):
    params = dict(FAST, emu=True, mixed_precision=True, random_state=3)
    a = KGEmbedder(**params).fit(kg.train)
    b = KGEmbedder(**params).fit(kg.train)
    np.testing.assert_array_equal(a.score_samples(kg.test), b.score_samples(kg.test))


def test_mixed_precision_is_validated(kg):
    before = KGEmbedder(**FAST, random_state=0).fit(kg.train)
    scores = before.score_samples(kg.test)
    with pytest.raises(ValueError, match=r"'mixed_precision' parameter of KGEmbedder must be a str among \{'auto'\} "
                                         r"or an instance of 'bool'.* Got 'bf16' instead"):
        before.set_params(mixed_precision="bf16").fit(kg.train)
    # the failed re-fit left the fitted model alone
    np.testing.assert_array_equal(before.score_samples(kg.test), scores)


def test_resolution_per_device(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_mixed_precision(True, cpu) is True
    assert resolve_mixed_precision("auto", cpu) is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_mixed_precision("auto", cuda) is True
    assert resolve_mixed_precision(False, cuda) is False
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_mixed_precision("auto", cuda) is False
    with pytest.raises(ValueError, match="bfloat16 autocast is not available on cuda"):
        resolve_mixed_precision(True, cuda)


def test_nbfnet_steps_run_under_autocast_too(monkeypatch):
    from kgestimator import make_kg, path_training

    seen = []
    real = path_training.path_step_loss

    def path_step_loss(*args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return real(*args, **kwargs)

    monkeypatch.setattr(path_training, "path_step_loss", path_step_loss)
    kg = make_kg(n_entities=30, n_relations=8, n_triples=400, random_state=0)
    est = KGEmbedder(model="nbfnet", dim=8, model_params={"n_layers": 2}, loss="bce", n_negatives=8,
                     batch_size=64, n_epochs=2, emu=True, mixed_precision=True, random_state=0).fit(kg.train)
    assert seen and set(seen) == {True}
    assert all(p.dtype == torch.float32 for p in est.model_.parameters())
    assert np.isfinite(est.history_[-1]["loss"]) and np.isfinite(est.score_samples(kg.test)).all()


@pytest.mark.parametrize("native", [True, False])
def test_a_cpu_without_bfloat16_products_gets_a_warning(kg, monkeypatch, native):
    import warnings

    from kgestimator import _utils
    monkeypatch.setattr(_utils, "cpu_has_bf16_products", lambda: native)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        KGEmbedder(**FAST, mixed_precision=True, device="cpu", random_state=0).fit(kg.train)
        KGEmbedder(**FAST, mixed_precision=False, device="cpu", random_state=0).fit(kg.train)
    slow = [w for w in caught if "without bfloat16 matrix instructions" in str(w.message)]
    assert len(slow) == (0 if native else 1)
    # it names the user's call, not a frame inside the library
    assert all(w.filename == __file__ for w in slow)

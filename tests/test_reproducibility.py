"""The same random_state gives the same run: history, weights and scores, also after save/load."""

import joblib
import numpy as np
import pytest
import torch

from conftest import FAST
from kgestimator import KGEmbedder

CONFIGS = {
    "distmult": dict(),
    "emu-bernoulli": dict(emu=True, sampler="bernoulli"),
    "mixup-rotate": dict(model="rotate", emu="mixup", loss="self_adversarial"),
    "adagrad-then-adam-early-stopping": dict(model="complex", optimizer="adagrad_then_adam", learning_rate=0.05,
                                             early_stopping=True, eval_every=1, patience=2),
    "sparse-n3": dict(model="hake", sparse=True, regularizer="n3", reg_weight=1e-3, emu=True),
    "held-out-validation": dict(model="transe", early_stopping=True, eval_every=2),
}


def _history(est):
    return [{k: v for k, v in h.items() if k != "seconds"} for h in est.history_]


def _outputs(est, kg):
    return (_history(est), est.score_samples(kg.test), est.evaluate(kg.test),
            est.predict_topk(kg.test[:, :2], k=3))


def _assert_same(a, b):
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    np.testing.assert_array_equal(a[3][0], b[3][0])
    np.testing.assert_array_equal(a[3][1], b[3][1])


@pytest.mark.parametrize("options", CONFIGS.values(), ids=CONFIGS.keys())
def test_same_random_state_same_run(kg, tmp_path, options):
    valid = None if options.get("early_stopping") and options.get("model") == "transe" else kg.valid
    a = KGEmbedder(**{**FAST, **options}, random_state=11).fit(kg.train, valid=valid)
    b = KGEmbedder(**{**FAST, **options}, random_state=11).fit(kg.train, valid=valid)
    out = _outputs(a, kg)
    _assert_same(out, _outputs(b, kg))
    for k, v in a.model_.state_dict().items():
        assert torch.equal(v, b.model_.state_dict()[k]), k
    a.save(tmp_path / "a.kge")
    _assert_same(out, _outputs(KGEmbedder.load(tmp_path / "a.kge"), kg))
    joblib.dump(a, tmp_path / "a.joblib")
    _assert_same(out, _outputs(joblib.load(tmp_path / "a.joblib"), kg))
    c = KGEmbedder(**{**FAST, **options}, random_state=12).fit(kg.train, valid=valid)
    assert _history(c) != out[0]


def test_random_state_instances_reproduce(kg):
    a = KGEmbedder(**FAST, random_state=np.random.RandomState(3)).fit(kg.train)
    b = KGEmbedder(**FAST, random_state=np.random.RandomState(3)).fit(kg.train)
    assert _history(a) == _history(b)


def test_fit_does_not_touch_global_random_state(kg):
    torch.manual_seed(0)
    np.random.seed(0)
    expected = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    KGEmbedder(**FAST, random_state=1).fit(kg.train)
    assert torch.equal(torch.rand(3), expected[0]) and np.array_equal(np.random.rand(3), expected[1])

"""NBFNet training batches propagated in passes of fewer queries (path_training, NBFNet.pass_bytes)."""

import numpy as np
import pytest
import torch
from conftest import train_config

from kgestimator import KGEmbedder, make_kg, memory
from kgestimator.filtering import KnownTriples
from kgestimator.models import NBFNet
from kgestimator.path_training import Backpropagated, path_step_loss
from kgestimator.samplers import BernoulliSampler, UniformSampler


def _graph(n=20, n_rel=3, m=120, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.stack([torch.randint(n, (m,), generator=gen), torch.randint(n_rel, (m,), generator=gen),
                        torch.randint(n, (m,), generator=gen)], 1)


def _step(cfg, pass_bytes, sampler_cls=UniformSampler, **model_params):
    """Loss and gradients of one float64 step through ``path_step_loss`` with ``pass_bytes``."""
    ids = _graph()
    model = NBFNet(20, 3, 4, generator=torch.Generator().manual_seed(0), n_layers=2, **model_params)
    model = model.set_graph(ids).double()
    model.pass_bytes = pass_bytes
    known = KnownTriples(ids, 20, 3)
    sampler = sampler_cls().fit(ids, 20, 3)
    out = path_step_loss(model, sampler, cfg, ids[:16], 0, torch.Generator().manual_seed(0), known)
    if isinstance(out, Backpropagated):
        loss, passes = out.loss, True
    else:
        (loss := out).backward()
        passes = False
    return float(loss.detach()), [p.grad.clone() for p in model.parameters()], passes


@pytest.mark.parametrize("settings", [
    dict(),
    dict(emu=True),
    dict(emu=True, emu_resample=False, beta=0.5),
    dict(emu="mixup"),
    dict(emu=True, loss="logistic"),
])
@pytest.mark.parametrize("model_params", [{}, {"remove_one_hop": True}, {"dependent": True}])
def test_passes_give_the_loss_and_gradients_of_one_propagation(settings, model_params):
    cfg = train_config(model="nbfnet", n_negatives=6, loss=settings.pop("loss", "bce"),
                       adversarial_temperature=1.0, **settings)
    whole, whole_grads, split_whole = _step(cfg, 2**30, **model_params)
    one, one_grads, split_one = _step(cfg, 1, **model_params)          # one query a pass
    three, three_grads, _ = _step(cfg, 3 * 4 * 12 * 2 * 20 * 4, **model_params)  # three queries a pass
    assert not split_whole and split_one
    for loss, grads in ((one, one_grads), (three, three_grads)):
        assert loss == pytest.approx(whole, rel=1e-6)  # the total is float32, as apply_step's
        for a, b in zip(grads, whole_grads):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_passes_with_both_sides_of_a_bernoulli_sampler():
    cfg = train_config(model="nbfnet", n_negatives=5, loss="bce", adversarial_temperature=1.0, emu=True)
    whole, whole_grads, _ = _step(cfg, 2**30, BernoulliSampler)
    one, one_grads, split = _step(cfg, 1, BernoulliSampler)
    assert split and one == pytest.approx(whole, rel=1e-6)
    for a, b in zip(one_grads, whole_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_a_fit_propagates_in_passes_when_a_batch_exceeds_the_budget(monkeypatch):
    kg = make_kg(n_entities=40, n_relations=8, n_triples=400, random_state=0)
    params = dict(model="nbfnet", dim=8, model_params={"n_layers": 2}, loss="bce", n_negatives=8, batch_size=16,
                  max_steps=1, emu=True, early_stopping=False, random_state=0)
    calls = []
    real = NBFNet.propagate

    def spy(self, anchor, *args, **kwargs):
        calls.append(anchor.shape[0])
        return real(self, anchor, *args, **kwargs)

    monkeypatch.setattr(NBFNet, "propagate", spy)
    whole = KGEmbedder(**params).fit(kg.train)
    assert calls == [16]
    calls.clear()
    per_query = 4 * memory.NBF_FLOATS_PER_NODE * 2 * 40 * 8
    monkeypatch.setattr(NBFNet, "pass_bytes", 5 * per_query)
    split = KGEmbedder(**params).fit(kg.train)
    assert calls == [5, 5, 5, 1]
    # one step: the same loss; the first Adam step moves every weight by about lr whatever its gradient,
    # so the weights after it agree to float32 noise only where the gradients are not near zero
    assert split.history_[0]["loss"] == pytest.approx(whole.history_[0]["loss"], rel=1e-5)
    assert np.isfinite(split.score_samples(kg.test)).all()


def test_the_memory_check_counts_one_pass_on_the_cpu():
    from types import SimpleNamespace

    cfg = SimpleNamespace(batch_size=32, n_negatives=32, emu=False, emu_resample=True)
    # WN18RR-sized: one query's activations (374 MB) exceed a pass, so a pass is one query
    cpu, what, _ = memory.activation_estimate(NBFNet, 40_943, 11, 86_835, cfg, 32, {"n_layers": 6}, "cpu")
    whole, _, _ = memory.activation_estimate(NBFNet, 40_943, 11, 86_835, cfg, 32, {"n_layers": 6}, "meta")
    layers = 4 * memory.NBF_FLOATS_PER_NODE * 6 * 40_943 * 32
    assert cpu - 5 * 32 * 40_943 == layers and whole - 5 * 32 * 40_943 == 32 * layers
    assert "1 of batch_size=32 queries a pass" in what

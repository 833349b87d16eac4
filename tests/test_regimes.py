"""1vsAll / KvsAll training, reciprocal relations, dropout, learning-rate schedules, presets (issue 16)."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from kgestimator import PRESETS, KGEmbedder
from kgestimator import lcwa
from kgestimator.data import dataset_dir
from kgestimator.lcwa import LCWAStep, kvsall_rows
from kgestimator.models import make_model
from kgestimator.schedules import LRSchedule, check_schedule
from conftest import train_config

REGIMES_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "regimes.py")

# a 5-entity graph: entities e0..e4, relations r0, r1
GRAPH = np.array([["e0", "r0", "e1"], ["e0", "r0", "e2"], ["e1", "r1", "e3"], ["e2", "r0", "e4"],
                  ["e3", "r1", "e0"], ["e4", "r0", "e1"], ["e2", "r1", "e3"]])


def _ids(est, triples):
    ent = {e: i for i, e in enumerate(est.entities_)}
    rel = {r: i for i, r in enumerate(est.relations_)}
    return np.array([[ent[h], rel[r], ent[t]] for h, r, t in triples])


def _logsumexp(x):
    m = x.max()
    return m + np.log(np.exp(x - m).sum())


def test_1vsall_loss_matches_the_hand_formula_on_a_5_entity_graph():
    # learning rate ~0: the weights after the step are the weights the loss was computed with
    est = KGEmbedder(model="distmult", dim=4, training="1vsall", batch_size=len(GRAPH), max_steps=1,
                     learning_rate=1e-12, random_state=0).fit(GRAPH)
    E = est.model_.entity.detach().double().numpy()
    R = est.model_.relation.detach().double().numpy()
    terms = []
    for h, r, t in _ids(est, GRAPH):
        tail_scores = (E[h] * R[r]) @ E.T            # (h, r, e) for every e
        head_scores = E @ (R[r] * E[t])              # (e, r, t) for every e
        terms.append(_logsumexp(tail_scores) - tail_scores[t])
        terms.append(_logsumexp(head_scores) - head_scores[h])
    assert E.shape[0] == 5
    assert est.history_[0]["loss"] == pytest.approx(np.mean(terms), rel=1e-5)


def test_kvsall_bce_loss_matches_the_hand_formula():
    est = KGEmbedder(model="distmult", dim=4, training="kvsall", loss="bce", label_smoothing=0.2,
                     batch_size=100, max_steps=1, learning_rate=1e-12, random_state=0).fit(GRAPH)
    E = est.model_.entity.detach().double().numpy()
    R = est.model_.relation.detach().double().numpy()
    ids = _ids(est, GRAPH)
    queries = {}
    for h, r, t in ids:
        queries.setdefault((h, r, 0), set()).add(t)
        queries.setdefault((t, r, 1), set()).add(h)
    terms = []
    for (a, r, side), answers in queries.items():
        s = (E[a] * R[r]) @ E.T                      # DistMult is symmetric in head and tail
        y = np.array([1.0 if e in answers else 0.0 for e in range(5)]) * 0.8 + 0.2 / 5
        terms.append(np.sum(np.logaddexp(0, s) - y * s))
    assert est.history_[0]["loss"] == pytest.approx(np.mean(terms), rel=1e-5)


def test_kvsall_targets_come_from_the_known_training_answers_only():
    train = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 0, 2], [1, 1, 4]])
    model = make_model("distmult", 5, 2, 4, 24.0, generator=torch.Generator().manual_seed(0))
    step = LCWAStep(model, train, train_config(training="kvsall"))
    rows = step.rows.tolist()
    # distinct queries, each once: (0, r0, ?), (3, r0, ?), (1, r1, ?), (?, r0, 1), (?, r0, 2), (?, r1, 4)
    assert sorted(rows) == sorted([[0, 0, 0], [3, 0, 0], [1, 1, 0], [1, 0, 1], [2, 0, 1], [4, 1, 1]])
    batch = torch.tensor([[0, 0, 0], [2, 0, 1], [4, 1, 1]])
    groups = step._groups(batch)
    labels, counts = step._labels(groups, batch.device)
    y = labels(0, 5)
    # tail query (0, r0): answers 1 and 2; head query (?, r0, 2): heads 0 and 3; (?, r1, 4): head 1
    assert y.tolist() == [[0, 1, 1, 0, 0], [1, 0, 0, 1, 0], [0, 1, 0, 0, 0]]
    assert counts.tolist() == [2, 2, 1]
    # chunked labels are the same columns
    assert torch.equal(torch.cat([labels(0, 2), labels(2, 5)], 1), y)


def test_kvsall_rows_of_a_fit_exclude_validation_answers():
    valid = np.array([["e0", "r0", "e3"]])
    est = KGEmbedder(model="distmult", dim=4, training="kvsall", n_epochs=1, random_state=0)
    est.fit(GRAPH, valid=valid)
    # the fitted model never saw e3 as a target of (e0, r0, ?): check what the step builds from train
    train_ids = torch.as_tensor(_ids(est, GRAPH))
    step = LCWAStep(est.model_, train_ids, train_config(training="kvsall"))
    e0, r0, e3 = (int(np.flatnonzero(est.entities_ == "e0")[0]), int(np.flatnonzero(est.relations_ == "r0")[0]),
                  int(np.flatnonzero(est.entities_ == "e3")[0]))
    labels, _ = step._labels(step._groups(torch.tensor([[e0, r0, 0]])), train_ids.device)
    assert labels(0, 5)[0, e3] == 0
    assert labels(0, 5)[0].sum() == 2


@pytest.mark.parametrize("model", ["distmult", "complex", "transe"])
@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_chunked_entity_axis_gives_the_same_loss_and_gradient(model, loss, monkeypatch):
    train = torch.tensor([[0, 0, 1], [0, 0, 2], [3, 0, 2], [1, 1, 4], [2, 1, 0]])
    results = []
    for budget in (lcwa.SCORE_ELEMENTS, 7):           # 7 scores: chunks of one entity
        monkeypatch.setattr(lcwa, "SCORE_ELEMENTS", budget)
        m = make_model(model, 5, 2, 3, 2.0, generator=torch.Generator().manual_seed(0))
        for training in ("1vsall", "kvsall"):
            step = LCWAStep(m, train, train_config(training=training, loss=loss, label_smoothing=0.1))
            m.zero_grad()
            value = step(step.rows, 0, torch.Generator().manual_seed(0))
            value.backward()
            results.append((float(value.detach()), m.entity.grad.clone(), m.relation.grad.clone()))
    for (v1, e1, r1), (v2, e2, r2) in zip(results[:2], results[2:]):
        assert v1 == pytest.approx(v2, rel=1e-6)
        torch.testing.assert_close(e1, e2, rtol=1e-5, atol=1e-7)
        torch.testing.assert_close(r1, r2, rtol=1e-5, atol=1e-7)


def test_emu_1vsall_mutated_scores_keep_the_positive_and_reduce_to_uls_without_mutation():
    train = torch.tensor([[0, 0, 1], [3, 0, 2], [1, 1, 4]])
    m = make_model("distmult", 5, 2, 3, 2.0, generator=torch.Generator().manual_seed(0))
    cfg = train_config(training="1vsall", emu=True, alpha=0.5, beta=0.2, mutation_ratio=0.7)
    step = LCWAStep(m, train, cfg)
    score, emu_score, _ = step._embedding_scores(step._groups(train), torch.Generator().manual_seed(0))
    s, e = score(0, 5), emu_score(0, 5)
    target = torch.cat([train[:, 2], train[:, 0]])
    rows = torch.arange(target.shape[0])
    # the positive mutated with itself is itself; the others did change
    torch.testing.assert_close(e[rows, target], s[rows, target])
    assert not torch.allclose(e, s)
    # mutation_ratio = 0: the EMU term is ULS over the vanilla scores, /(n - 1), plus alpha * vanilla
    cfg0 = train_config(training="1vsall", emu=True, alpha=0.5, beta=0.2, mutation_ratio=0.0)
    total = LCWAStep(m, train, cfg0)(train, 0, torch.Generator().manual_seed(0))
    logp = torch.log_softmax(s, 1)
    onehot = torch.nn.functional.one_hot(target, 5).bool()
    vanilla = -logp[onehot].mean()
    uls = (-logp[onehot] - 0.2 * logp.masked_fill(onehot, 0).sum(1)).mean() / 4
    assert float(total.detach()) == pytest.approx(float(uls.detach() + 0.5 * vanilla.detach()), rel=1e-5)


@pytest.mark.parametrize("model", ["complex", "transe"])
def test_reciprocal_head_queries_are_tail_queries_of_the_inverse_relation(model):
    est = KGEmbedder(model=model, dim=6, training="1vsall", reciprocal=True, n_epochs=3,
                     random_state=0).fit(GRAPH)
    m = est.model_
    n_rel = len(est.relations_)
    assert m.relation.shape[0] == 2 * n_rel
    queries = np.array([["r0", "e1"], ["r1", "e3"]])
    labels, scores = est.predict_topk(queries, k=5, direction="head", exclude_known=False)
    for (r, t), lab, sc in zip(queries, labels, scores):
        ri, ti = int(np.flatnonzero(est.relations_ == r)[0]), int(np.flatnonzero(est.entities_ == t)[0])
        with torch.no_grad():
            q = m.query(m.entity[ti], m.relation[ri + n_rel], "tail")
            expected = m.match(q.unsqueeze(0), m.entity).numpy()
            forward = m.match(m.query(m.entity[ti], m.relation[ri], "head").unsqueeze(0), m.entity).numpy()
        order = [int(np.flatnonzero(est.entities_ == e)[0]) for e in lab]
        np.testing.assert_allclose(sc, expected[order], rtol=1e-5, atol=1e-6)
        # the inverse relation's embedding is not the forward head query
        assert not np.allclose(expected, forward)


def test_reciprocal_model_survives_save_and_load(tmp_path):
    est = KGEmbedder(model="distmult", dim=4, reciprocal=True, n_epochs=2, random_state=0).fit(GRAPH)
    est.save(tmp_path / "m.kge")
    back = KGEmbedder.load(tmp_path / "m.kge")
    q = GRAPH[:3, 1:]
    np.testing.assert_allclose(back.predict_topk(q, k=3, direction="head")[1],
                               est.predict_topk(q, k=3, direction="head")[1], rtol=1e-6)


def test_regimes_are_reproducible_with_random_state():
    kw = dict(model="distmult", dim=8, training="1vsall", dropout=(0.3, 0.1), emu=True, reciprocal=True,
              lr_scheduler="cosine", n_epochs=4, batch_size=3, random_state=3)
    a, b = KGEmbedder(**kw).fit(GRAPH), KGEmbedder(**kw).fit(GRAPH)
    torch.testing.assert_close(a.model_.entity, b.model_.entity, rtol=0, atol=0)
    c = KGEmbedder(**{**kw, "random_state": 4}).fit(GRAPH)
    assert not torch.allclose(a.model_.entity, c.model_.entity)


def test_dropout_changes_training_but_not_scoring():
    kw = dict(model="distmult", dim=8, n_epochs=3, batch_size=4, random_state=0)
    plain = KGEmbedder(**kw).fit(GRAPH)
    dropped = KGEmbedder(**kw, dropout=0.5).fit(GRAPH)
    assert not torch.allclose(plain.model_.entity, dropped.model_.entity)
    # evaluation is deterministic: no dropout outside fit
    assert dropped.score_samples(GRAPH).tolist() == dropped.score_samples(GRAPH).tolist()


def test_plateau_schedule_lowers_the_rate_after_patience_evaluations():
    params = check_schedule("plateau", {"factor": 0.5, "patience": 1})
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.4)
    sched = LRSchedule("plateau", params, 0.4, 100)
    for score in (0.3, 0.5, 0.5, 0.49):   # best 0.5, then two evaluations without improvement
        sched.after_validation(score, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    cos = LRSchedule("cosine", check_schedule("cosine", None), 0.4, 100)
    cos.after_step(50, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)
    cos.after_step(100, opt)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0)


def test_plateau_in_a_fit_records_the_rate():
    est = KGEmbedder(model="distmult", dim=4, n_epochs=12, eval_every=1, lr_scheduler="plateau",
                     lr_scheduler_params={"factor": 0.5, "patience": 0}, learning_rate=0.05,
                     random_state=0).fit(GRAPH, valid=GRAPH[:2])
    rates = [r["lr"] for r in est.history_]
    assert rates[0] == pytest.approx(0.05)
    assert min(rates) < 0.05 and all(b <= a for a, b in zip(rates, rates[1:]))


def _invalid(name, accepted, value):
    """scikit-learn's InvalidParameterError for ``name``: what it accepts (a regex) and the value."""
    return rf"'{name}' parameter of KGEmbedder must be {accepted}\. Got {re.escape(repr(value))} instead"


@pytest.mark.parametrize("params, match", [
    (dict(training="2vsall"), _invalid("training", "a str among .*", "2vsall")),
    (dict(training="1vsall", label_smoothing=1.0),
     _invalid("label_smoothing", r"a float in the range \[0.0, 1.0\)", 1.0)),
    (dict(label_smoothing=0.1), "label_smoothing"),
    (dict(dropout=1.0), _invalid("dropout", r"a float in the range \[0.0, 1.0\) or a pair .*", 1.0)),
    (dict(dropout=(0.1,)), _invalid("dropout", ".*", (0.1,))),
    (dict(dropout=0.1, model="nbfnet"), "dropout"),
    (dict(reciprocal=1), _invalid("reciprocal", "an instance of 'bool'.*", 1)),
    (dict(lr_scheduler="step"), _invalid("lr_scheduler", r"a str among \{'plateau', 'cosine'\} or None", "step")),
    (dict(lr_scheduler="cosine", lr_scheduler_params={"patience": 2}), "lr_scheduler_params"),
    (dict(lr_scheduler_params={"factor": 0.5}), "lr_scheduler_params"),
    (dict(lr_scheduler="plateau", lr_scheduler_params={"factor": 2.0}), "factor"),
    (dict(lr_scheduler="plateau", lr_scheduler_params="{bad"),
     _invalid("lr_scheduler_params", ".*a JSON object string or None", "{bad")),
    (dict(lr_scheduler="cosine", optimizer="adagrad_then_adam"), "adagrad_then_adam"),
    (dict(training="1vsall", loss="logistic"), "loss"),
    (dict(training="1vsall", sampler="san"), "sampler"),
    (dict(training="kvsall", emu=True), "emu"),
    (dict(training="1vsall", emu="mixup"), "emu"),
])
def test_bad_regime_parameters_are_refused(params, match):
    with pytest.raises(ValueError, match=match):
        KGEmbedder(**params).fit(GRAPH)


def test_plateau_without_validation_is_refused():
    with pytest.raises(ValueError, match="validation"):
        KGEmbedder(lr_scheduler="plateau", n_epochs=1).fit(GRAPH)


def test_presets_build_estimators():
    assert {"libkge-fb15k237-distmult", "libkge-fb15k237-complex", "libkge-wn18rr-distmult",
            "libkge-wn18rr-complex", "kbc-fb15k237-complex-n3", "kbc-wn18rr-complex-n3"} <= set(PRESETS)
    for name, params in PRESETS.items():
        est = KGEmbedder(**params)
        est._check_params()
        assert est.get_params()["model"] == params["model"], name
    # a preset runs (a few steps on the toy graph)
    KGEmbedder(**{**PRESETS["kbc-fb15k237-complex-n3"], "max_steps": 2, "n_epochs": 1}).fit(GRAPH)


def test_kvsall_rows_are_distinct_queries():
    t = torch.tensor([[0, 0, 1], [0, 0, 1], [0, 0, 2]])
    assert kvsall_rows(t).tolist() == [[0, 0, 0], [1, 0, 1], [2, 0, 1]]


def test_nbfnet_trains_in_1vsall_with_emu():
    est = KGEmbedder(model="nbfnet", dim=8, model_params={"n_layers": 2}, training="1vsall", emu=True,
                     n_epochs=2, batch_size=4, random_state=0).fit(GRAPH)
    assert np.isfinite(est.history_[-1]["loss"])
    assert 0 < est.score(GRAPH) <= 1


def test_regimes_script_set_overrides_a_cell_parameter(tmp_path):
    try:
        dataset_dir("nations")
    except FileNotFoundError:
        pytest.skip("../shared/datasets/nations not found (set KGESTIMATOR_DATA)")
    cmd = [sys.executable, REGIMES_SCRIPT, "run", "nations-distmult-1vsall-emu", "--epochs", "1",
           "--results", str(tmp_path), "--tag", "t", "--set", "beta=0.01", "--set", "alpha=1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads((tmp_path / "nations-distmult-1vsall-emu@t.json").read_text())
    assert record["params"]["beta"] == 0.01 and record["params"]["alpha"] == 1
    # the fitted estimator used them: EMU's resolved values, not the cell's 'auto' ones
    assert record["emu_params"] == {"alpha": 1.0, "mutation_ratio": pytest.approx(0.61), "beta": 0.01}

    bad = subprocess.run(cmd[:-2] + ["--set", "beta"], capture_output=True, text=True, timeout=600)
    assert bad.returncode != 0 and "--set takes PARAM=VALUE, got 'beta'" in bad.stderr

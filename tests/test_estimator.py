"""KGEmbedder: fit/predict/score, validation messages, reproducibility, learning."""

import re

import numpy as np
import pytest
import torch

from conftest import FAST
from kgestimator import KGEmbedder, make_kg
from kgestimator.estimator import EMU_DEFAULTS


def test_fit_returns_self_and_sets_fitted_attributes(kg):
    est = KGEmbedder(**FAST, random_state=0)
    assert est.fit(kg.train) is est
    assert len(est.history_) == FAST["n_epochs"]
    assert set(kg.train[:, 0]) <= set(est.entities_)
    assert est.model_.entity.shape[0] == len(est.entities_)
    assert est.n_iter_ == len(est.history_)


@pytest.mark.parametrize("model", ["distmult", "complex", "transe", "rotate", "hake"])
@pytest.mark.parametrize("emu", [False, True, "mixup", "ls_only"])
def test_every_model_trains_with_every_emu_mode(kg, model, emu):
    est = KGEmbedder(model=model, emu=emu, **{**FAST, "n_epochs": 2}, random_state=0).fit(kg.train)
    losses = [h["loss"] for h in est.history_]
    assert all(np.isfinite(losses))
    assert 0.0 <= est.score(kg.test) <= 1.0


def test_bernoulli_sampler_trains(kg):
    est = KGEmbedder(sampler="bernoulli", **{**FAST, "n_epochs": 30}, random_state=0).fit(kg.train)
    p = est.sampler_.head_prob_
    assert p.shape == (len(est.relations_),) and torch.all((p >= 0) & (p <= 1))
    chance = np.mean(1.0 / np.arange(1, len(est.entities_) + 1))
    assert est.score(kg.test) > 3 * chance


def test_learns_planted_patterns_far_above_chance():
    kg = make_kg(random_state=1)
    est = KGEmbedder(model="distmult", dim=32, n_negatives=64, batch_size=500, n_epochs=40,
                     learning_rate=0.02, random_state=0).fit(kg.train, valid=kg.valid)
    metrics = est.evaluate(kg.test)
    chance = np.mean(1.0 / np.arange(1, len(est.entities_) + 1))
    assert metrics["mrr"] > 10 * chance
    assert metrics["hits@10"] > 0.5
    assert metrics["n_triples"] == len(kg.test) and metrics["n_unknown"] == 0
    assert set(metrics) >= {"mrr", "mr", "hits@1", "hits@3", "hits@10", "head", "tail"}


def test_same_random_state_same_history_and_scores(kg):
    a = KGEmbedder(**FAST, emu=True, random_state=7).fit(kg.train)
    b = KGEmbedder(**FAST, emu=True, random_state=7).fit(kg.train)
    assert [h["loss"] for h in a.history_] == [h["loss"] for h in b.history_]
    np.testing.assert_array_equal(a.score_samples(kg.test), b.score_samples(kg.test))
    c = KGEmbedder(**FAST, emu=True, random_state=8).fit(kg.train)
    assert [h["loss"] for h in a.history_] != [h["loss"] for h in c.history_]


def test_predict_topk_excludes_known_facts(fitted, kg):
    queries = kg.train[:20, :2]
    labels, scores = fitted.predict_topk(queries, k=5)
    assert labels.shape == (20, 5) and scores.shape == (20, 5)
    assert np.all(np.diff(scores, axis=1) <= 0)
    known = {tuple(t) for t in kg.train} | {tuple(t) for t in kg.valid}
    for (h, r), row in zip(queries, labels):
        assert not any((h, r, t) in known for t in row)
    labels_all, _ = fitted.predict_topk(queries, k=5, exclude_known=False)
    assert any(tuple(q) + (t,) in known for q, row in zip(queries, labels_all) for t in row)
    assert np.array_equal(fitted.predict(queries), labels[:, 0])


def test_predict_accepts_triples_and_head_direction(fitted, kg):
    by_pairs = fitted.predict(kg.test[:5, :2])
    by_triples = fitted.predict(kg.test[:5])
    assert np.array_equal(by_pairs, by_triples)
    heads = fitted.predict(kg.test[:5], direction="head")
    heads_pairs = fitted.predict(kg.test[:5, 1:], direction="head")
    assert np.array_equal(heads, heads_pairs)
    # the best head by predict agrees with brute-force scoring of every head
    r, t = kg.test[0, 1], kg.test[0, 2]
    cand = np.array([[e, r, t] for e in fitted.entities_])
    best = fitted.entities_[np.argmax(fitted.score_samples(cand))]
    assert fitted.predict([[r, t]], direction="head", exclude_known=False)[0] == best


def test_unknown_labels_in_predict_are_named(fitted):
    with pytest.raises(ValueError, match="unseen.*nobody"):
        fitted.predict([["nobody", fitted.relations_[0]]])
    with pytest.raises(ValueError, match="unseen"):
        fitted.score_samples([[fitted.entities_[0], "no_relation", fitted.entities_[1]]])


def test_unknown_entities_count_as_misses(fitted, kg):
    test = np.vstack([kg.test[:10], [["ghost", kg.test[0, 1], kg.test[0, 2]]]])
    with pytest.warns(UserWarning, match="1 triple"):
        m = fitted.evaluate(test)
    assert m["n_unknown"] == 1 and m["n_triples"] == 11
    base = fitted.evaluate(kg.test[:10])
    # the miss adds two worst ranks: MRR can only go down
    assert m["mrr"] < base["mrr"]
    assert m["mrr"] == pytest.approx((base["mrr"] * 20 + 2 / len(fitted.entities_)) / 22)


def test_k_validation(fitted):
    with pytest.raises(ValueError, match="k must be"):
        fitted.predict_topk([[fitted.entities_[0], fitted.relations_[0]]], k=len(fitted.entities_) + 1)


@pytest.mark.parametrize("param, value, accepted", [
    ("model", "transh", "a str among {'transe', 'distmult', 'complex', 'rotate', 'hake', 'nbfnet'}"),
    ("dim", 0, "an int in the range [1, inf) or None"),
    ("dim", 2.5, "an int in the range [1, inf) or None"),
    ("dim", True, "an int in the range [1, inf) or None"),
    ("n_negatives", -1, "an int in the range [1, inf) or None"),
    ("emu", "yes", "a str among {'mixup', 'ls_only'} or an instance of 'bool'"),
    ("emu", 1, "a str among {'mixup', 'ls_only'} or an instance of 'bool'"),
    ("alpha", -0.1, "a float in the range [0.0, inf) or a str among {'auto'}"),
    ("alpha", float("inf"), "a float in the range [0.0, inf) or a str among {'auto'}"),
    ("mutation_ratio", 1.5, "a float in the range [0.0, 1.0] or a str among {'auto'}"),
    ("beta", "high", "a float in the range [0.0, 1.0] or a str among {'auto'}"),
    ("loss", "hinge", "a str among {'ce', "),
    ("optimizer", "sgd", "a str among {'adam', 'adagrad', 'adagrad_then_adam'}"),
    ("learning_rate", 0, "a float in the range (0.0, inf)"),
    ("sampler", "nope", "a str among {'uniform', "),
    ("regularizer", "l1", "a str among {'n3', 'l3', 'l2'} or None"),
    ("device", "tpu:9", "'auto' or a device torch names ('cpu', 'cuda', 'cuda:N' or 'mps')"),
    ("compile", "always", "a str among {'auto'} or an instance of 'bool'"),
    ("uls", "yes", "an instance of 'bool' or an instance of 'numpy.bool"),
    ("dropout", (0.1, 1.0), "a float in the range [0.0, 1.0) or a pair (entity_rate, relation_rate) of floats"),
    ("lr_scheduler_params", "[1]", "an instance of 'dict', a JSON object string or None"),
])
def test_bad_parameters_are_named(kg, param, value, accepted):
    # scikit-learn's InvalidParameterError: the parameter, what it accepts and the value
    match = f"The '{param}' parameter of KGEmbedder must be {re.escape(accepted)}.* Got {re.escape(repr(value))} "
    with pytest.raises(ValueError, match=match):
        KGEmbedder(**{**FAST, param: value}).fit(kg.train)


def test_failed_refit_keeps_the_fitted_model(fitted, kg):
    before = fitted.score_samples(kg.test[:5])
    bad = np.array([["a", "b"]])
    from sklearn.base import clone

    est = clone(fitted).fit(kg.train)
    ref = est.score_samples(kg.test[:5])
    with pytest.raises(ValueError, match=r"shape \(n_triples, 3\).*got shape \(1, 2\)"):
        est.fit(bad)
    np.testing.assert_array_equal(est.score_samples(kg.test[:5]), ref)
    assert before.shape == (5,)


def test_emu_auto_resolves_to_table(kg):
    for model, (alpha, flag, beta) in EMU_DEFAULTS.items():
        est = KGEmbedder(**{**FAST, "n_epochs": 1}, model=model, emu=True).fit(kg.train[:200])
        assert est.emu_params_ == pytest.approx({"alpha": alpha, "mutation_ratio": 1 - flag, "beta": beta})
    est = KGEmbedder(**{**FAST, "n_epochs": 1}, emu=True, alpha=0.5, mutation_ratio=0.3, beta=0.2).fit(kg.train[:200])
    assert est.emu_params_ == {"alpha": 0.5, "mutation_ratio": 0.3, "beta": 0.2}


def test_emu_presets_name_the_paper_settings(kg):
    from kgestimator.estimator import EMU_PRESETS

    scripts = {"alpha": 0.11, "mutation_ratio": 0.61, "beta": 0.53}
    assert EMU_PRESETS["table5"]["distmult"] == {"alpha": 0.73, "mutation_ratio": pytest.approx(0.06), "beta": 0.25}
    assert EMU_PRESETS["table12"]["distmult"] == {"alpha": 0.11, "mutation_ratio": pytest.approx(0.086),
                                                 "beta": 0.53}
    assert all(p == pytest.approx(scripts) for p in EMU_PRESETS["scripts"].values())
    fits = {}
    for name in ("auto", "table5"):
        extra = {} if name == "auto" else EMU_PRESETS[name]["complex"]
        est = KGEmbedder(**{**FAST, "n_epochs": 1}, model="complex", emu=True, random_state=0, **extra)
        fits[name] = est.fit(kg.train[:200]).emu_params_
    # 'auto' (chosen on evidence): the scripts' setting for ComplEx, RotatE and HAKE, the same mutation
    # and label with alpha 0.25 for DistMult and TransE, Table 15 for NBFNet
    assert fits["auto"] == pytest.approx(scripts) == EMU_PRESETS["auto"]["complex"]
    assert EMU_PRESETS["auto"]["rotate"] == EMU_PRESETS["auto"]["hake"] == pytest.approx(scripts)
    assert EMU_PRESETS["auto"]["distmult"] == EMU_PRESETS["auto"]["transe"] == pytest.approx({**scripts, "alpha": 0.25})
    assert fits["table5"] == pytest.approx(EMU_PRESETS["table5"]["complex"]) != fits["auto"]
    assert EMU_PRESETS["auto"]["nbfnet"] == EMU_PRESETS["table5"]["nbfnet"]


def test_non_finite_loss_raises_clear_error(kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 50, "learning_rate": 1e6}, gamma=1e15, random_state=0)
    with pytest.raises(FloatingPointError, match="learning_rate"):
        est.fit(kg.train)


def test_early_stopping_restores_best_weights(kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 60}, early_stopping=True, eval_every=1, patience=2,
                     random_state=0).fit(kg.train, valid=kg.valid)
    evals = [h["valid_mrr"] for h in est.history_ if "valid_mrr" in h]
    assert len(est.history_) <= 60
    best = max(evals)
    assert est.evaluate(kg.valid)["mrr"] == pytest.approx(best, abs=1e-9)


def test_early_stopping_without_valid_holds_out_a_fraction(kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 3}, early_stopping=True, eval_every=1,
                     validation_fraction=0.2, random_state=0).fit(kg.train)
    assert all("valid_mrr" in h for h in est.history_)


def test_dataframe_input(kg):
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame(kg.train, columns=["head", "relation", "tail"])
    est = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(df)
    from_array = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(kg.train)
    # a frame is read as the same triples: the same fit, the same scores
    assert [h["loss"] for h in est.history_] == [h["loss"] for h in from_array.history_]
    assert est.score(pd.DataFrame(kg.test)) == from_array.score(kg.test) > 0


def test_integer_labels(kg):
    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, 30, 400), rng.integers(0, 3, 400), rng.integers(0, 30, 400)], 1)
    est = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(X)
    assert est.entities_.dtype.kind == "i"
    labels = est.predict(X[:3, :2])
    assert labels.dtype.kind == "i"


@pytest.mark.parametrize("options", [
    {"loss": "logistic"},
    {"loss": "self_adversarial", "adversarial_temperature": 0.5},
    {"regularizer": "n3", "reg_weight": 1e-3},
    {"regularizer": "l3", "reg_weight": 1e-6},
    {"optimizer": "adagrad", "learning_rate": 0.1},
    {"optimizer": "adagrad_then_adam", "learning_rate": 0.1},
    {"emu": True, "emu_normalize": False, "emu_resample": False, "uls": False},
    {"neg_chunk_size": 1},
])
def test_training_options_learn(kg, options):
    est = KGEmbedder(**{**FAST, "n_epochs": 40, "learning_rate": 0.05, **options}, random_state=0).fit(kg.train)
    assert all(np.isfinite(h["loss"]) for h in est.history_)
    chance = np.mean(1.0 / np.arange(1, len(est.entities_) + 1))
    assert est.score(kg.test) > 3 * chance


def test_regularizer_changes_the_loss(kg):
    plain = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(kg.train)
    reg = KGEmbedder(**{**FAST, "n_epochs": 1}, regularizer="n3", reg_weight=1.0, random_state=0).fit(kg.train)
    assert reg.history_[0]["loss"] > plain.history_[0]["loss"]


@pytest.mark.parametrize("training", ["negative_sampling", "1vsall"])
@pytest.mark.parametrize("regularizer", ["l2", "n3"])
def test_emu_weights_the_regularizer_by_alpha(kg, training, regularizer):
    # the first step's loss: the regulariser's share is reg_weight * R without EMU and
    # alpha * reg_weight * R with it (R is the same at the shared initialisation)
    def first_loss(**options):
        return KGEmbedder(**{**FAST, "n_epochs": 1}, max_steps=1, training=training, random_state=0,
                          **options).fit(kg.train).history_[0]["loss"]

    reg = dict(regularizer=regularizer, reg_weight=0.5)
    plain = first_loss(**reg) - first_loss()
    emu = dict(emu=True, alpha=0.25, mutation_ratio=0.5, beta=0.5)
    with_emu = first_loss(**emu, **reg) - first_loss(**emu)
    assert plain > 0
    assert with_emu == pytest.approx(0.25 * plain, rel=1e-3)


def test_max_steps_overrides_epochs(kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 100}, max_steps=7, random_state=0).fit(kg.train)
    assert est.history_[-1]["step"] == 7


@pytest.mark.slow
@pytest.mark.parametrize("model, emu", [("rotate", False), ("transe", True)])
def test_compiled_scoring_matches_eager(kg, model, emu):
    import warnings

    common = dict(model=model, emu=emu, **{**FAST, "n_epochs": 1}, random_state=0)
    eager = KGEmbedder(**common).fit(kg.train)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a machine without a compiler falls back with a warning
        compiled = KGEmbedder(**common, compile=True).fit(kg.train)
    assert compiled.history_[0]["loss"] == pytest.approx(eager.history_[0]["loss"], rel=1e-4)
    np.testing.assert_allclose(compiled.score_samples(kg.test), eager.score_samples(kg.test), rtol=1e-3, atol=1e-3)


def test_verbose_shows_a_progress_bar(kg, capsys):
    KGEmbedder(**{**FAST, "n_epochs": 2}, verbose=1, random_state=0).fit(kg.train, valid=kg.valid)
    err = capsys.readouterr().err
    assert "distmult" in err and "loss" in err


def test_device_auto_prefers_cuda(monkeypatch):
    from kgestimator._utils import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize("model", ["distmult", "hake"])
@pytest.mark.parametrize("optimizer", ["adam", "adagrad_then_adam"])
def test_sparse_row_updates_learn(kg, model, optimizer):
    lr = 0.2 if optimizer.startswith("adagrad") else 0.05  # Adagrad needs the larger rate, dense or sparse
    est = KGEmbedder(**{**FAST, "n_epochs": 40, "learning_rate": lr}, model=model, optimizer=optimizer,
                     sparse=True, emu=True, random_state=0).fit(kg.train)
    assert est.model_.sparse
    chance = np.mean(1.0 / np.arange(1, len(est.entities_) + 1))
    assert est.score(kg.test) > 3 * chance


def test_sparse_updates_touch_only_batch_rows():
    from kgestimator.models import MODELS
    from kgestimator.training import make_optimizer

    model = MODELS["distmult"](50, 3, 4, generator=torch.Generator().manual_seed(0))
    model.sparse = True
    before = model.entity.detach().clone()
    opt = make_optimizer("adam", model, 0.1, sparse=True)
    ids = torch.tensor([1, 7])
    model.score(model.entities(ids), model.relations(torch.tensor([0, 2])), model.entities(ids.flip(0))).sum().backward()
    assert model.entity.grad.is_sparse
    opt.step()
    changed = (model.entity.detach() != before).any(1).nonzero().squeeze(1).tolist()
    assert changed == [1, 7]


def test_sparse_with_full_table_l3_is_refused(kg):
    with pytest.raises(ValueError, match="'sparse'"):
        KGEmbedder(**FAST, sparse=True, regularizer="l3").fit(kg.train)


@pytest.mark.parametrize("name", ["adam", "adagrad"])
def test_dense_optimisers_use_the_fused_kernels_and_sparse_ones_do_not(name):
    from kgestimator.models import MODELS
    from kgestimator.training import make_optimizer

    model = MODELS["distmult"](10, 2, 4)
    assert make_optimizer(name, model, 0.01).defaults["fused"] is True
    sparse = make_optimizer(name, model, 0.01, sparse=True)
    inner = getattr(sparse, "optimizers", [sparse])
    assert not any(o.defaults.get("fused") for o in inner)


@pytest.mark.slow
@pytest.mark.parametrize("model", ["transe", "rotate", "hake"])
def test_compiled_ranking_matches_eager(kg, model):
    import warnings

    est = KGEmbedder(model=model, **{**FAST, "n_epochs": 2}, random_state=0).fit(kg.train)
    eager = est.evaluate(kg.test)
    eager_top = est.predict_topk(kg.test[:20, :2], k=5)
    est.set_params(compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a machine without a compiler falls back with a warning
        compiled = est.evaluate(kg.test)
        compiled_top = est.predict_topk(kg.test[:20, :2], k=5)
    for key in ("mrr", "hits@1", "hits@10", "mr"):
        assert compiled[key] == pytest.approx(eager[key], rel=1e-6)
    np.testing.assert_array_equal(compiled_top[0], eager_top[0])
    np.testing.assert_allclose(compiled_top[1], eager_top[1], rtol=1e-5, atol=1e-5)

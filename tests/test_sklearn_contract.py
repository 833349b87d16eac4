"""clone, get/set_params, GridSearchCV over the EMU knobs, Pipeline, scorers, persistence."""

import pickle

import joblib
import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_validate
from sklearn.pipeline import Pipeline

from conftest import FAST, train_config
from kgestimator import KGEmbedder, TripleKFold, make_hits_scorer, mrr_scorer
from kgestimator.samplers import BernoulliSampler, NSCachingSampler
from kgestimator.training import step_loss


def test_clone_and_params_roundtrip():
    est = KGEmbedder(model="rotate", emu=True, alpha=0.3, mutation_ratio=0.5, beta=0.2)
    cloned = clone(est)
    assert cloned.get_params() == est.get_params()
    cloned.set_params(alpha=0.9, sampler=BernoulliSampler())
    assert cloned.alpha == 0.9 and est.alpha == 0.3
    assert "sampler" in cloned.get_params()


def test_grid_search_over_emu_parameters(kg):
    grid = GridSearchCV(
        KGEmbedder(**{**FAST, "n_epochs": 2}, emu=True, random_state=0),
        {"alpha": [0.1, 0.5], "mutation_ratio": [0.4, 0.9], "beta": [0.2]},
        cv=TripleKFold(2, random_state=0), scoring={"mrr": mrr_scorer, "hits10": make_hits_scorer(10)},
        refit="mrr",
    ).fit(kg.train)
    assert len(grid.cv_results_["params"]) == 4
    assert np.all(np.isfinite(grid.cv_results_["mean_test_mrr"]))
    assert grid.best_estimator_.emu_params_["alpha"] == grid.best_params_["alpha"]
    # different EMU settings really train different models
    assert len(set(np.round(grid.cv_results_["mean_test_mrr"], 12))) > 1


def test_pipeline_routes_nested_parameters(kg):
    pipe = Pipeline([("kge", KGEmbedder(**{**FAST, "n_epochs": 1}, emu=True, random_state=0))])
    pipe.set_params(kge__alpha=0.42, kge__mutation_ratio=0.7)
    pipe.fit(kg.train)
    assert pipe.named_steps["kge"].emu_params_["alpha"] == 0.42
    assert 0 <= pipe.score(kg.test) <= 1
    assert pipe.predict(kg.test[:3, :2]).shape == (3,)


def test_grid_search_reaches_sampler_parameters(kg):
    # NSCaching's cache size changes which negatives training sees, hence the scores
    grid = GridSearchCV(KGEmbedder(**{**FAST, "n_epochs": 1}, sampler=NSCachingSampler(), random_state=0),
                        {"sampler__cache_size": [2, 20]}, cv=TripleKFold(2, random_state=0)).fit(kg.train)
    assert grid.best_estimator_.sampler_.cache_size == grid.best_params_["sampler__cache_size"]
    scores = grid.cv_results_["split0_test_score"]
    assert list(grid.cv_results_["param_sampler__cache_size"]) == [2, 20] and scores[0] != scores[1]


def test_cross_validate_with_scorers(kg):
    res = cross_validate(KGEmbedder(**FAST, random_state=0), kg.train, cv=TripleKFold(2, random_state=0),
                         scoring={"mrr": mrr_scorer, "h1": make_hits_scorer(1)})
    assert np.all(res["test_mrr"] >= res["test_h1"])


def test_joblib_pickle_roundtrip(fitted, kg, tmp_path):
    path = tmp_path / "model.joblib"
    joblib.dump(fitted, path)
    loaded = joblib.load(path)
    assert loaded.model_.entity.device.type == "cpu"
    np.testing.assert_array_equal(loaded.score_samples(kg.test), fitted.score_samples(kg.test))
    assert loaded.evaluate(kg.test)["mrr"] == pytest.approx(fitted.evaluate(kg.test)["mrr"])


def test_save_load_roundtrip(fitted, kg, tmp_path):
    path = tmp_path / "model.kge"
    fitted.save(path)
    loaded = KGEmbedder.load(path)
    assert loaded.get_params() == fitted.get_params()
    np.testing.assert_array_equal(loaded.entities_, fitted.entities_)
    np.testing.assert_array_equal(loaded.score_samples(kg.test), fitted.score_samples(kg.test))
    a, _ = loaded.predict_topk(kg.test[:5, :2], k=3)
    b, _ = fitted.predict_topk(kg.test[:5, :2], k=3)
    np.testing.assert_array_equal(a, b)
    assert loaded.history_ == fitted.history_


def test_load_refuses_code_execution(tmp_path):
    class Evil:
        def __reduce__(self):
            return (exec, ("open('%s', 'w').write('pwned')" % (tmp_path / "pwned"),))

    path = tmp_path / "evil.kge"
    with open(path, "wb") as fh:
        pickle.dump({"format": "kgestimator", "payload": Evil()}, fh)
    torch.save({"format": "kgestimator", "x": Evil()}, tmp_path / "evil2.kge")
    for p in (path, tmp_path / "evil2.kge"):
        with pytest.raises(ValueError, match="not a kgestimator model file|unsafe"):
            KGEmbedder.load(p)
    assert not (tmp_path / "pwned").exists()


def test_load_detects_truncation_and_tampering(fitted, tmp_path):
    path = tmp_path / "model.kge"
    fitted.save(path)
    data = path.read_bytes()
    (tmp_path / "short.kge").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="short.kge is not a kgestimator model file"):
        KGEmbedder.load(tmp_path / "short.kge")
    payload = torch.load(path, weights_only=True)
    payload["state"]["model.entity"][0, 0] += 1.0
    torch.save(payload, tmp_path / "tampered.kge")
    with pytest.raises(ValueError, match="checksum"):
        KGEmbedder.load(tmp_path / "tampered.kge")
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.kge")
    with pytest.raises(ValueError, match="format version 99"):
        KGEmbedder.load(tmp_path / "future.kge")


def test_failed_save_leaves_existing_file_intact(fitted, tmp_path, monkeypatch):
    path = tmp_path / "model.kge"
    fitted.save(path)
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.kge"]


def _step_losses(cfg):
    torch.manual_seed(0)
    from kgestimator.models import MODELS
    from kgestimator.samplers import UniformSampler

    triples = torch.stack([torch.randint(30, (64,)), torch.randint(3, (64,)), torch.randint(30, (64,))], 1)
    model = MODELS["complex"](30, 3, 8, generator=torch.Generator().manual_seed(0))
    sampler = UniformSampler().fit(triples, 30, 3)
    return step_loss(model, model.pairwise, sampler, cfg, triples, 0, torch.Generator().manual_seed(1))


def test_emu_with_zero_mutation_reproduces_vanilla_loss():
    vanilla = _step_losses(train_config(n_negatives=16, neg_chunk_size=8))
    # EMU term on the same, unmutated negatives with one-hot labels and alpha 0
    emu = _step_losses(train_config(n_negatives=16, neg_chunk_size=8, emu=True, mutation_ratio=0.0,
                                    emu_resample=False, uls=False, alpha=0.0, emu_normalize=False))
    torch.testing.assert_close(emu, vanilla)
    mutated = _step_losses(train_config(n_negatives=16, neg_chunk_size=8, emu=True, mutation_ratio=0.5,
                                         emu_resample=False, uls=False, alpha=0.0, emu_normalize=False))
    assert not torch.isclose(mutated, vanilla)

"""Issue 18: a failing call never costs a good model, a saved file always loads, search with checkpoints.

One test (or a few) per defect of the issue, numbered as there; each failed on the code before the fix.
"""

import io
import json
import os
import re
import sys
import threading
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import GridSearchCV

from conftest import FAST
from kgestimator import KGEmbedder, TripleKFold, cli, training
from kgestimator._cli_params import add_estimator_arguments, estimator_params
from kgestimator.checkpoint import RUN_PREFIX
from kgestimator.data import check_triples
from kgestimator.persistence import digest
from kgestimator.samplers import UniformSampler

TINY = dict(dim=4, n_negatives=8, batch_size=256, neg_chunk_size=8, n_epochs=2, random_state=0)


def _state(est):
    """Everything fitted, as comparable values."""
    return ({k: v.clone() for k, v in est.model_.state_dict().items()}, est.entities_.copy(),
            est.relations_.copy(),
            json.dumps([{k: v for k, v in h.items() if k != "seconds"} for h in est.history_]), est._known_ids.clone(), dict(est.emu_params_))


def _same_state(a, b):
    wa, ea, ra, ha, ka, pa = a
    wb, eb, rb, hb, kb, pb = b
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    np.testing.assert_array_equal(ea, eb)
    np.testing.assert_array_equal(ra, rb)
    assert ha == hb and torch.equal(ka, kb) and pa == pb


# ------------------------------------------------------------------ 1. transactional fit
@pytest.mark.parametrize("bad, error, names", [
    (dict(learning_rate=1e30, gamma=1e30), FloatingPointError, "Lower 'learning_rate' (it is 1e+30) or 'gamma'"),
    (dict(emu=True, alpha=float("inf")), ValueError, "'alpha'"),
    (dict(loss="self_adversarial", adversarial_temperature=float("inf")), ValueError, "'adversarial_temperature'"),
    (dict(regularizer="n3", reg_weight=float("inf")), ValueError, "'reg_weight'"),
    (dict(gamma=float("inf")), ValueError, "'gamma'"),
    (dict(gamma=1e39), ValueError, "'gamma'"),
])
def test_a_refit_that_fails_keeps_the_fitted_model(kg, bad, error, names):
    est = KGEmbedder(**TINY).fit(kg.train)
    before, score = _state(est), est.score(kg.test)
    with pytest.raises(error) as info:
        est.set_params(**bad).fit(kg.train)
    assert names in str(info.value)
    _same_state(_state(est), before)
    assert est.score(kg.test) == score
    if error is FloatingPointError:
        assert "left as it was before this fit (a fitted model)" in str(info.value)


def test_a_first_fit_that_diverges_leaves_the_estimator_unfitted(kg):
    est = KGEmbedder(**TINY, learning_rate=1e30, gamma=1e30)
    with pytest.raises(FloatingPointError, match=r"left as it was before this fit \(unfitted\)") as info:
        est.fit(kg.train)
    with pytest.raises(NotFittedError):
        est.predict(kg.test[:1, :2])
    # the last finite weights (here the initial ones) are not lost: a fitted copy travels in the error
    kept = info.value.estimator
    assert "copy fitted with the initial weights" in str(info.value)
    assert all(torch.isfinite(p).all() for p in kept.model_.parameters())
    assert kept.predict(kg.test[:3, :2]).shape == (3,) and kept.history_ == []


def test_a_fit_that_raises_anywhere_changes_nothing(kg, monkeypatch):
    est = KGEmbedder(**TINY).fit(kg.train)
    before = _state(est)

    def broken(*args, **kwargs):
        raise RuntimeError("out of memory, say")

    monkeypatch.setattr(training, "step_loss", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        est.set_params(dim=6).fit(kg.train[:500])
    _same_state(_state(est), before)


# ------------------------------------------------------------------ 2. save writes the fitted parameters
def test_save_writes_the_parameters_the_model_was_fitted_with(kg, tmp_path):
    est = KGEmbedder(**TINY).fit(kg.train)
    scores = est.score_samples(kg.test)
    est.set_params(dim=8)
    est.save(tmp_path / "a.kge")
    loaded = KGEmbedder.load(tmp_path / "a.kge")
    assert loaded.dim == 4
    np.testing.assert_array_equal(loaded.score_samples(kg.test), scores)
    est.set_params(model="transe", dim=4)
    est.save(tmp_path / "b.kge")
    loaded = KGEmbedder.load(tmp_path / "b.kge")
    assert loaded.model == "distmult"
    np.testing.assert_array_equal(loaded.score_samples(kg.test), scores)


def test_save_is_not_reached_by_set_params_on_a_sampler_object(kg, tmp_path):
    est = KGEmbedder(**TINY, sampler=UniformSampler()).fit(kg.train)
    est.set_params(sampler="san")
    est.save(tmp_path / "m.kge")
    assert isinstance(KGEmbedder.load(tmp_path / "m.kge").sampler, UniformSampler)


# ------------------------------------------------------------------ 3. NUL in numpy str arrays
def test_nul_inside_a_numpy_str_label_is_refused_like_for_lists():
    X = np.array([["a\x00b", "r", "c"], ["c", "r", "a\x00b"]])
    for given in (X, X.tolist(), X.astype(object)):
        with pytest.raises(ValueError, match="NUL character at row 0, column 0"):
            check_triples(given)
    with pytest.raises(ValueError, match="NUL"):
        KGEmbedder(n_epochs=1, dim=4).fit(X)
    # numpy's own padding is not a NUL label
    assert check_triples(np.array([["a", "rel", "ccc"]], dtype="U9")).tolist() == [["a", "rel", "ccc"]]


# ------------------------------------------------------------------ 4. checkpoint_dir under a search
class _Killed(BaseException):
    """A kill in the middle of a search (a BaseException: sklearn's error_score does not catch it)."""


def test_grid_search_with_checkpoint_dir_interrupted_and_rerun(kg, tmp_path, monkeypatch):
    params = dict(FAST, n_epochs=3, random_state=0)
    grid = {"dim": [4, 8]}
    cv = TripleKFold(3, random_state=0)
    real, steps = training.step_loss, {"n": 0, "kill": None}

    def step_loss(*args, **kwargs):
        steps["n"] += 1
        if steps["n"] == steps["kill"]:
            raise _Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(training, "step_loss", step_loss)
    reference = GridSearchCV(KGEmbedder(**params), grid, cv=cv, error_score="raise").fit(kg.train)
    total = steps["n"]  # training steps of the 2 x 3 fits and the refit

    steps.update(n=0, kill=total * 2 // 5)  # in the third fit
    est = KGEmbedder(**params, checkpoint_dir=tmp_path, checkpoint_every=2)
    with pytest.raises(_Killed):
        GridSearchCV(est, grid, cv=cv, error_score="raise").fit(kg.train)
    done = steps["kill"] - 1
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(RUN_PREFIX)]) >= 2
    steps.update(n=0, kill=None)
    rerun = GridSearchCV(est, grid, cv=cv, error_score="raise").fit(kg.train)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith(RUN_PREFIX)]) == 7  # a folder per fit
    # each fit resumed where its checkpoint was: finished fits took no step again, the
    # interrupted one lost at most the one step after its last checkpoint (every 2 steps)
    assert total - done <= steps["n"] <= total - done + 1
    for key in ("mean_test_score", "split0_test_score", "split1_test_score", "split2_test_score"):
        np.testing.assert_array_equal(rerun.cv_results_[key], reference.cv_results_[key])
    assert np.all(np.isfinite(rerun.cv_results_["mean_test_score"]))
    np.testing.assert_array_equal(rerun.best_estimator_.score_samples(kg.test),
                                  reference.best_estimator_.score_samples(kg.test))


def test_a_checkpoint_written_before_run_sub_folders_is_still_resumed(kg, tmp_path):
    params = dict(TINY, random_state=0, checkpoint_dir=tmp_path)
    first = KGEmbedder(**params).fit(kg.train)
    # the layout of older releases: checkpoint.pt directly in checkpoint_dir
    legacy = tmp_path / "checkpoint.pt"
    Path(first.checkpoint_path_).replace(legacy)
    again = KGEmbedder(**params).fit(kg.train)
    assert again.checkpoint_path_ == str(legacy) and again.history_ == first.history_  # returned, not retrained
    # another run does not touch it
    other = KGEmbedder(**{**params, "dim": 6}).fit(kg.train)
    assert Path(other.checkpoint_path_).parent.name.startswith(RUN_PREFIX)


# ------------------------------------------------------------------ 5. two fits on one run folder
class _Held(UniformSampler):
    """Stops the fit at its first step until released."""

    started, release = threading.Event(), threading.Event()

    def sides(self, batch, step, generator):
        _Held.started.set()
        _Held.release.wait(60)
        return super().sides(batch, step, generator)


def test_a_second_concurrent_fit_on_one_checkpoint_folder_is_refused(kg, tmp_path):
    params = dict(TINY, sampler=_Held(), checkpoint_dir=tmp_path, checkpoint_every=1)
    _Held.started.clear()
    _Held.release.clear()
    first, errors = KGEmbedder(**params), []
    thread = threading.Thread(target=lambda: errors.append(_run(first.fit, kg.train)))
    thread.start()
    try:
        assert _Held.started.wait(60)
        with pytest.raises(ValueError, match="Another fit is running on the checkpoint folder"):
            KGEmbedder(**params).fit(kg.train)
    finally:
        _Held.release.set()
        thread.join(60)
    assert errors == [None]
    # the lock goes with the fit: the same run can be fitted (here: returned) again
    again = KGEmbedder(**params).fit(kg.train)
    _same_state(_state(again), _state(first))


def _run(fn, *args):
    try:
        fn(*args)
    except Exception as exc:  # noqa: BLE001 - reported to the test thread
        return exc
    return None


# ------------------------------------------------------------------ 6, 7, 15. crafted files
@pytest.fixture(scope="module")
def model_file(kg, tmp_path_factory):
    est = KGEmbedder(**TINY).fit(kg.train)
    path = tmp_path_factory.mktemp("model") / "m.kge"
    est.save(path)
    return path


def _craft(path, target, meta_edit=None, state_edit=None, raw_metadata=None, top=None):
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    if meta_edit:
        meta_edit(meta)
    payload["metadata"] = raw_metadata if raw_metadata is not None else json.dumps(meta)
    if state_edit:
        state_edit(payload["state"])
    try:
        payload["checksum"] = digest(payload["metadata"], payload["state"])
    except Exception:  # noqa: BLE001 - a state the digest cannot read; the file is refused before it
        payload["checksum"] = "0"
    if top:
        top(payload)
    torch.save(payload, target)
    return target


def _nested(depth):
    obj = torch.zeros(1)
    for _ in range(depth):
        obj = [obj]
    return obj


@pytest.mark.parametrize("case, match", [
    ("sparse", "not a plain dense CPU tensor"),
    ("meta", "not a plain dense CPU tensor"),
    ("nested state", "nested more than"),
    ("nested metadata", "nested too deeply"),
    ("version True", "format version True"),
    ("version 1.0", "format version 1.0"),
])
def test_crafted_files_give_a_value_error_naming_the_problem(model_file, tmp_path, case, match):
    target = tmp_path / "crafted.kge"
    if case == "sparse":
        _craft(model_file, target, state_edit=lambda s: s.update(extra=torch.eye(3).to_sparse()))
    elif case == "meta":
        _craft(model_file, target, state_edit=lambda s: s.update(extra=torch.empty(3, device="meta")))
    elif case == "nested state":
        _craft(model_file, target, state_edit=lambda s: s.update(extra=_nested(200)))
    elif case == "nested metadata":
        _craft(model_file, target, raw_metadata="[" * 100_000 + "]" * 100_000)
    else:
        version = True if case == "version True" else 1.0
        _craft(model_file, target, top=lambda p: p.update(format_version=version))
    with pytest.raises(ValueError, match=match) as info:
        KGEmbedder.load(target)
    assert str(target) in str(info.value)


def test_load_checks_shapes_before_allocating(model_file, tmp_path, monkeypatch):
    import kgestimator.models as models

    target = _craft(model_file, tmp_path / "big.kge", meta_edit=lambda m: m["params"].update(dim=10**5))
    real, allocated = models.make_model, []

    def spy(*args, **kwargs):
        if torch.empty(0).device.type != "meta":
            allocated.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(models, "make_model", spy)
    import kgestimator.persistence as persistence

    if hasattr(persistence, "make_model"):  # imported at module level there
        monkeypatch.setattr(persistence, "make_model", spy)
    with pytest.raises(ValueError, match="weight 'entity' is torch.float32 of shape .* need torch.float32 of shape "
                                         r"\(\d+, 100000\)"):
        KGEmbedder.load(target)
    assert allocated == []  # the model of the metadata was never built in memory


def test_a_loaded_model_does_not_keep_the_savers_checkpoint_dir(kg, tmp_path, model_file):
    est = KGEmbedder(**TINY, checkpoint_dir=tmp_path / "ckpt").fit(kg.train)
    est.save(tmp_path / "m.kge")
    assert json.loads(torch.load(tmp_path / "m.kge", weights_only=True)["metadata"])["params"][
        "checkpoint_dir"] is None
    assert KGEmbedder.load(tmp_path / "m.kge").checkpoint_dir is None
    # a crafted (or older) file that names a folder: not carried into the loaded model
    target = _craft(model_file, tmp_path / "c.kge",
                    meta_edit=lambda m: m["params"].update(checkpoint_dir="/etc", checkpoint_every=3))
    loaded = KGEmbedder.load(target)
    assert loaded.checkpoint_dir is None and loaded.checkpoint_every is None


# ------------------------------------------------------------------ 8. fit in one thread, predict in another
def test_predict_during_a_refit_sees_one_fit_or_the_other(kg):
    # integer labels: the queries of the small graph are valid in both vocabularies
    rel = {r: i for i, r in enumerate(np.unique(kg.train[:, 1]))}
    full = np.array([[int(h[1:]), rel[r], int(t[1:])] for h, r, t in kg.train.tolist()])
    small = full[(full[:, 0] < 40) & (full[:, 2] < 40)]
    params = dict(TINY, n_epochs=1, batch_size=4096)
    a, b = KGEmbedder(**params).fit(small), KGEmbedder(**params).fit(full)
    queries = np.array([[h, r] for h, r, _ in small[:20].tolist()])
    expected = [a.predict_topk(queries, k=3, exclude_known=False), b.predict_topk(queries, k=3, exclude_known=False)]
    est, stop, seen, errors = KGEmbedder(**params).fit(small), threading.Event(), [], []

    def predict():
        while not stop.is_set():
            try:
                seen.append(est.predict_topk(queries, k=3, exclude_known=False))
            except Exception as exc:  # noqa: BLE001
                errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    threads = [threading.Thread(target=predict) for _ in range(2)]
    try:
        for t in threads:
            t.start()
        for i in range(30):
            est.fit(small if i % 2 else full)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        sys.setswitchinterval(interval)
    assert errors == [] and seen
    for labels, scores in seen:
        assert any(np.array_equal(labels, el) and np.array_equal(scores, es) for el, es in expected)


# ------------------------------------------------------------------ 9, 10. parameters and flags
@pytest.mark.parametrize("value", [-1, 2**40, 1.5, "0"])
def test_a_bad_random_state_is_named(kg, value):
    with pytest.raises(ValueError, match=r"'random_state' parameter of KGEmbedder must be an int in the range "
                                         rf"\[0, 4294967295\].* Got {re.escape(repr(value))} instead"):
        KGEmbedder(**{**TINY, "random_state": value}).fit(kg.train)


def test_cli_names_a_bad_random_state(tmp_path, capsys, kg):
    np.savetxt(tmp_path / "train.txt", kg.train, fmt="%s", delimiter="\t")
    with pytest.raises(SystemExit):
        cli.main(["train", str(tmp_path), "-o", str(tmp_path / "m.kge"), "--random-state", "-1"])
    err = capsys.readouterr().err
    assert "argument --random-state: must be an int in the range [0, 4294967295]" in err and "got '-1'" in err


@pytest.mark.parametrize("text", ["2024", "none", "true", "1e3"])
def test_cli_path_flags_take_the_string_as_it_is(text):
    import argparse

    parser = argparse.ArgumentParser()
    names = add_estimator_arguments(parser, KGEmbedder)
    params = estimator_params(parser.parse_args(["--checkpoint-dir", text, "--n-epochs", "3"]), names)
    assert params == {"checkpoint_dir": text, "n_epochs": 3}


# ------------------------------------------------------------------ 11. query files read like triples
@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    labels = ["a\u2028b", "c\x0cd", "e\x1cf", "g"]
    rows = [(labels[i % 4], "r", labels[(i + 1) % 4]) for i in range(8)]
    (root / "train.txt").write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")
    assert cli.main(["train", str(root), "-o", str(root / "m.kge"), "--quiet", "--dim", "4", "--n-epochs", "1",
                     "--threads", "1"]) == 0
    return root / "m.kge"


def _stdin(monkeypatch, data):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))


def test_cli_query_files_keep_labels_that_train_accepted(odd_model, tmp_path, capsys, monkeypatch):
    queries = tmp_path / "q.tsv"
    queries.write_bytes("a\u2028b\tr\nc\x0cd\tr\r\ne\x1cf\tr\n".encode("utf-8"))
    assert cli.main(["predict", str(odd_model), "--queries", str(queries), "-k", "1", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["head"] for r in rows] == ["a\u2028b", "c\x0cd", "e\x1cf"]
    # stdin: the byte-order mark is dropped, as in files
    _stdin(monkeypatch, "\ufeffa\u2028b\tr\n".encode("utf-8"))
    assert cli.main(["predict", str(odd_model), "--queries", "-", "-k", "1", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["head"] == "a\u2028b"


def test_cli_query_stdin_refuses_invalid_utf8(odd_model, capsys, monkeypatch):
    _stdin(monkeypatch, b"g\xff\tr\n")
    with pytest.raises(SystemExit) as info:
        cli.main(["predict", str(odd_model), "--queries", "-", "-k", "1"])
    assert info.value.code == 2
    assert "<stdin>, line 1: not valid UTF-8" in capsys.readouterr().err


# ------------------------------------------------------------------ 12. ambiguous DataFrame columns
@pytest.mark.parametrize("columns", [["Head", "head", "relation", "tail"], ["head", "head", "relation", "tail"],
                                     ["head", "relation", "tail", "TAIL"]])
def test_ambiguous_dataframe_columns_are_refused_by_name(columns):
    df = pd.DataFrame([["a", "b", "r", "c"]], columns=columns)
    with pytest.raises(ValueError, match="X: the DataFrame has 2 columns named '(head|tail)'"):
        check_triples(df)


# ------------------------------------------------------------------ 13. wrong path types
@pytest.mark.parametrize("path", [b"model.kge", None, 3])
def test_load_and_save_of_a_wrong_type_are_type_errors(path, kg):
    with pytest.raises(TypeError, match="must be a str or a path-like"):
        KGEmbedder.load(path)
    with pytest.raises(TypeError, match="must be a str or a path-like"):
        KGEmbedder(**TINY).fit(kg.train[:50]).save(path)


# ------------------------------------------------------------------ 14. umask
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX modes")
@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_saved_files_respect_the_umask(kg, tmp_path, umask):
    old = os.umask(umask)
    try:
        est = KGEmbedder(**TINY, checkpoint_dir=tmp_path / "ckpt").fit(kg.train[:200])
        est.save(tmp_path / "m.kge")
    finally:
        os.umask(old)
    want = 0o666 & ~umask
    assert os.stat(tmp_path / "m.kge").st_mode & 0o777 == want
    assert os.stat(est.checkpoint_path_).st_mode & 0o777 == want


# ------------------------------------------------------------------ 15. one rule for booleans
BOOLEANS = ("emu", "uls", "emu_normalize", "emu_resample", "early_stopping", "compile", "sparse")


@pytest.mark.parametrize("name", BOOLEANS)
def test_every_boolean_parameter_takes_numpy_bools_and_refuses_ints(kg, name, tmp_path):
    data = kg.train[:300]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        plain = KGEmbedder(**TINY, **{name: True}).fit(data)
        numpy = KGEmbedder(**TINY, **{name: np.True_}).fit(data)
    _same_state(_state(numpy), _state(plain))
    numpy.save(tmp_path / "m.kge")  # np.bool_ is not JSON: the saved parameters hold a plain bool
    assert KGEmbedder.load(tmp_path / "m.kge").get_params()[name] is True
    for bad in (1, 0, "true"):
        with pytest.raises(ValueError, match=f"'{name}' parameter"):
            KGEmbedder(**TINY, **{name: bad}).fit(data)
    KGEmbedder(distributed=np.False_, random_state=np.int64(3))._check_params()

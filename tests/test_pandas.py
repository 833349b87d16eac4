"""pandas: tidy top-k frames and DataFrame input read by column name."""

import numpy as np
import pytest

pd = pytest.importorskip("pandas")


def test_as_frame_is_tidy_and_matches_the_arrays(fitted, kg):
    queries = kg.test[:3, :2]
    labels, scores = fitted.predict_topk(queries, k=4)
    frame = fitted.predict_topk(queries, k=4, as_frame=True)
    assert list(frame.columns) == ["query", "head", "relation", "rank", "label", "score", "known"]
    assert len(frame) == 12
    assert frame["query"].tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert frame["rank"].tolist() == [1, 2, 3, 4] * 3
    assert frame["head"].tolist() == np.repeat(queries[:, 0], 4).tolist()
    assert frame["label"].tolist() == labels.ravel().tolist()
    np.testing.assert_allclose(frame["score"], scores.ravel())
    assert not frame["known"].any()
    # the default return is unchanged
    assert isinstance(fitted.predict_topk(queries, k=4), tuple)


def test_as_frame_flags_known_answers(fitted, kg):
    facts = np.concatenate([kg.train, kg.valid])
    head, rel = kg.train[0, :2]
    known = set(facts[(facts[:, 0] == head) & (facts[:, 1] == rel), 2])
    n = len(fitted.entities_)
    kept = fitted.predict_topk([[head, rel]], k=n, exclude_known=False, as_frame=True)
    assert len(kept) == n and set(kept.loc[kept["known"], "label"]) == known
    # excluded: the known answers are gone, not listed with a score of -inf
    dropped = fitted.predict_topk([[head, rel]], k=n, as_frame=True)
    assert len(dropped) == n - len(known) and not known & set(dropped["label"])


def test_as_frame_head_queries(fitted, kg):
    frame = fitted.predict_topk(kg.test[:2], k=3, direction="head", as_frame=True)
    assert list(frame.columns[:3]) == ["query", "relation", "tail"]
    labels, _ = fitted.predict_topk(kg.test[:2], k=3, direction="head")
    assert frame["label"].tolist() == labels.ravel().tolist()
    assert frame["tail"].tolist() == np.repeat(kg.test[:2, 2], 3).tolist()


def test_named_columns_in_any_order(fitted, kg):
    frame = pd.DataFrame(kg.test[:50], columns=["head", "relation", "tail"])
    shuffled = frame[["tail", "head", "relation"]].assign(source="x")  # extra columns are ignored
    assert fitted.score(shuffled) == pytest.approx(fitted.score(kg.test[:50]))
    np.testing.assert_allclose(fitted.score_samples(shuffled), fitted.score_samples(kg.test[:50]))
    upper = frame.rename(columns=str.upper)[["RELATION", "HEAD"]]
    assert (fitted.predict(upper) == fitted.predict(kg.test[:50, :2])).all()


def test_named_head_queries(fitted, kg):
    pairs = pd.DataFrame({"tail": kg.test[:5, 2], "relation": kg.test[:5, 1]})
    expected = fitted.predict(kg.test[:5], direction="head")
    assert (fitted.predict(pairs, direction="head") == expected).all()
    with pytest.raises(ValueError, match="tail queries need columns"):
        fitted.predict(pairs)


def test_unnamed_columns_stay_positional(fitted, kg):
    frame = pd.DataFrame(kg.test[:20], columns=["h", "r", "t"])
    assert fitted.score(frame) == pytest.approx(fitted.score(kg.test[:20]))


def test_fit_on_a_named_frame(kg):
    from kgestimator import KGEmbedder

    from conftest import FAST

    frame = pd.DataFrame(kg.train, columns=["head", "relation", "tail"])[["relation", "tail", "head"]]
    a = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(frame)
    b = KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(kg.train)
    np.testing.assert_allclose(a.score_samples(kg.test[:20]), b.score_samples(kg.test[:20]), rtol=1e-5)


def test_as_frame_without_pandas(fitted, kg, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"kgestimator\[pandas\]"):
        fitted.predict_topk(kg.test[:1, :2], as_frame=True)

"""Tests for kgestimator.data: validation, encoding, loading, make_kg."""

import re
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils import Bunch

import kgestimator.datasets as datasets_module
from kgestimator.data import (
    build_vocabulary,
    check_triples,
    dataset_dir,
    encode,
    load_dataset,
    load_triples,
    make_kg,
)

REPO_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def as_set(triples):
    return set(map(tuple, np.asarray(triples).tolist()))


# --------------------------------------------------------------------------
# check_triples
# --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "X, expected",
    [
        (np.array([["a", "r", "b"], ["b", "r", "c"]]), [["a", "r", "b"], ["b", "r", "c"]]),
        ([["a", "r", "b"], ["b", "r", "c"]], [["a", "r", "b"], ["b", "r", "c"]]),
        ([("a", "r", "b")], [["a", "r", "b"]]),
        (np.array([["a", "r", "b"]], dtype=object), [["a", "r", "b"]]),
        (pd.DataFrame({"h": ["a"], "rel": ["r"], "t": ["b"]}), [["a", "r", "b"]]),
        (pd.DataFrame({"h": ["a"], "rel": ["r"], "t": ["b"]}, dtype="category"), [["a", "r", "b"]]),
    ],
)
def test_check_triples_strings(X, expected):
    out = check_triples(X)
    assert isinstance(out, np.ndarray)
    assert out.dtype.kind == "U"
    assert out.shape == (len(expected), 3)
    assert out.tolist() == expected


@pytest.mark.parametrize(
    "X",
    [
        np.array([[0, 1, 2], [-3, 1, 7]]),
        np.array([[0, 1, 2], [-3, 1, 7]], dtype=np.int32),
        np.array([[0.0, 1.0, 2.0], [-3.0, 1.0, 7.0]]),
        [[0, 1, 2], [-3, 1, 7]],
        [[np.int16(0), 1, 2.0], [-3, np.uint8(1), 7]],
        pd.DataFrame({"h": [0, -3], "r": [1, 1], "t": [2, 7]}),
        pd.DataFrame({"h": pd.array([0, -3], dtype="Int64"), "r": [1, 1], "t": [2.0, 7.0]}),
    ],
)
def test_check_triples_integers(X):
    out = check_triples(X)
    assert out.dtype == np.int64
    assert out.tolist() == [[0, 1, 2], [-3, 1, 7]]


def test_check_triples_unsigned_ints():
    out = check_triples(np.array([[0, 1, 2]], dtype=np.uint8))
    assert out.dtype == np.int64 and out.tolist() == [[0, 1, 2]]


def test_check_triples_mixed_labels_become_strings():
    out = check_triples([[1, "likes", 2.0], ["1", "likes", "2"]])
    assert out.dtype.kind == "U"
    # 1, 1.0 and "1" are one label.
    assert out[0].tolist() == out[1].tolist() == ["1", "likes", "2"]


def test_check_triples_keeps_labels_exactly():
    out = check_triples([[" a", "r ", "NA"], ["null", "None", "nan"]])
    assert out.tolist() == [[" a", "r ", "NA"], ["null", "None", "nan"]]


def test_check_triples_never_object():
    for X in ([["a", 1, "b"]], np.array([[1, 2, 3]], dtype=object), [[1, 2, 3]]):
        assert check_triples(X).dtype != object


def test_check_triples_queries():
    pairs = check_triples([["a", "r"], ["b", "s"]], n_columns=2)
    assert pairs.shape == (2, 2) and pairs.dtype.kind == "U"
    # A tail column is dropped, even an unusable one.
    dropped = check_triples([["a", "r", None], ["b", "s", np.nan]], n_columns=2)
    assert dropped.tolist() == [["a", "r"], ["b", "s"]]
    ints = check_triples(np.arange(9).reshape(3, 3), n_columns=2)
    assert ints.shape == (3, 2) and ints.dtype == np.int64
    with pytest.raises(ValueError, match=r"\(n_queries, 2\).*got shape \(1, 4\)"):
        check_triples([["a", "r", "b", "c"]], n_columns=2)
    with pytest.raises(ValueError, match=r"\(n_triples, 3\).*got shape \(1, 2\)"):
        check_triples([["a", "r"]])
    with pytest.raises(ValueError, match="n_columns must be 2 or 3"):
        check_triples([["a", "r", "b"]], n_columns=4)


@pytest.mark.parametrize(
    "X, match",
    [
        (np.empty((0, 3)), r"X is empty \(shape \(0, 3\)\)"),
        ([], "X is empty"),
        (pd.DataFrame({"h": [], "r": [], "t": []}), "empty"),
        (np.zeros((2, 4)), r"shape \(n_triples, 3\).*got shape \(2, 4\)"),
        (np.zeros((2, 3, 1)), r"got shape \(2, 3, 1\)"),
        (np.array(["a", "r", "b"]), r"got shape \(3,\).*np.reshape\(X, \(1, -1\)\)"),
        ([["a", "r", "b"], ["c", "d"]], "rows have different lengths"),
        ([["a", "r", None]], r"missing value \(None\) at row 0, column 2 \(tail\)"),
        ([["a", "r", "b"], ["c", np.nan, "d"]], r"missing value \(nan\) at row 1, column 1 \(relation\)"),
        ([["a", "r", "b"], [pd.NA, "r", "d"]], r"missing value \(<NA>\) at row 1, column 0 \(head\)"),
        (pd.DataFrame({"h": ["a", None], "r": ["x", "y"], "t": ["b", "c"]}), "missing value.*row 1, column 0"),
        (np.array([[1.0, np.nan, 2.0]]), r"missing value \(NaN\) at row 0, column 1"),
        (np.array([[1.0, 2.0, 3.0], [1.5, 2.0, 3.0]]), r"non-integral.*1\.5 at row 1, column 0"),
        (np.array([[1.0, np.inf, 3.0]]), r"non-finite.*inf at row 0, column 1"),
        ([["a", "r", 2.5]], r"non-integral.*2\.5 at row 0, column 2"),
        ([[True, "r", "b"]], r"boolean label True at row 0, column 0"),
        (np.ones((1, 3), dtype=bool), "boolean"),
        ([["a", "", "b"]], r"empty-string label at row 0, column 1 \(relation\)"),
        (np.array([["a", "r", "b"], ["a", "r", ""]]), r"empty-string label at row 1, column 2"),
        ([[2**70, 1, 2]], "int64 range"),
        (np.full((1, 3), 2**64 - 1, dtype=np.uint64), "int64 range"),
    ],
)
def test_check_triples_value_errors(X, match):
    with pytest.raises(ValueError, match=match):
        check_triples(X)


@pytest.mark.parametrize(
    "X, match",
    [
        ({"h": "a", "r": "r", "t": "b"}, "array-like.*got dict"),
        ({("a", "r", "b")}, "array-like.*got set"),
        (frozenset(), "array-like.*got frozenset"),
        (5, "array-like.*got int"),
        ("a r b", "array-like.*got str"),
        (None, "array-like.*got NoneType"),
        ((x for x in "abc"), "array-like.*got generator"),
        ([[b"a", "r", "b"]], "unsupported type bytes at row 0, column 0"),
        ([["a", "r", object()]], "unsupported type object"),
        (np.array([[b"a", b"r", b"b"]]), "byte strings"),
    ],
)
def test_check_triples_type_errors(X, match):
    with pytest.raises(TypeError, match=match):
        check_triples(X)


def test_complex_labels_are_a_value_error():
    # scikit-learn's estimator checks expect ValueError("Complex data not supported")
    with pytest.raises(ValueError, match="Complex data not supported"):
        check_triples(np.zeros((1, 3), dtype=complex))


def test_sparse_input_is_refused():
    sparse = pytest.importorskip("scipy.sparse")
    with pytest.raises(TypeError, match="sparse input is not supported"):
        check_triples(sparse.csr_matrix(np.ones((2, 3))))


def test_check_triples_uses_name():
    with pytest.raises(ValueError, match="X_test is empty"):
        check_triples(np.empty((0, 3)), name="X_test")
    with pytest.raises(TypeError, match="queries must be"):
        check_triples({}, name="queries")


# --------------------------------------------------------------------------
# build_vocabulary and encode
# --------------------------------------------------------------------------


def test_build_vocabulary_strings():
    triples = check_triples([["b", "r2", "a"], ["c", "r1", "b"], ["b", "r2", "d"]])
    entities, relations = build_vocabulary(triples)
    np.testing.assert_array_equal(entities, ["a", "b", "c", "d"])
    np.testing.assert_array_equal(relations, ["r1", "r2"])
    assert entities.dtype.kind == "U" and relations.dtype.kind == "U"
    np.testing.assert_array_equal(entities, np.unique(triples[:, [0, 2]]))


def test_build_vocabulary_ints_and_unchecked_input():
    entities, relations = build_vocabulary([[5, 1, -2], [3, 0, 5]])
    assert entities.dtype == np.int64
    np.testing.assert_array_equal(entities, [-2, 3, 5])
    np.testing.assert_array_equal(relations, [0, 1])


def test_build_vocabulary_matches_np_unique_on_unicode():
    kg = make_kg(n_entities=60, n_triples=800, random_state=3)
    entities, relations = build_vocabulary(kg.train)
    np.testing.assert_array_equal(entities, np.unique(kg.train[:, [0, 2]]))
    np.testing.assert_array_equal(relations, np.unique(kg.train[:, 1]))


def test_encode_roundtrip_and_shape():
    triples = check_triples([["x", "r", "y"], ["y", "s", "z"], ["z", "r", "x"]])
    entities, relations = build_vocabulary(triples)
    ids, known = encode(triples[:, [0, 2]], entities)
    assert ids.shape == (3, 2) and ids.dtype == np.int64
    assert known.shape == (3, 2) and known.dtype == bool and known.all()
    np.testing.assert_array_equal(entities[ids], triples[:, [0, 2]])
    rel_ids, _ = encode(triples[:, 1], relations)
    np.testing.assert_array_equal(relations[rel_ids], triples[:, 1])


def test_encode_unknown_labels():
    vocab = np.array(["a", "c", "e"])
    ids, known = encode(np.array(["c", "b", "zz", "a", "e", "aa", ""]), vocab)
    np.testing.assert_array_equal(known, [True, False, False, True, True, False, False])
    np.testing.assert_array_equal(ids, [1, 0, 0, 0, 2, 0, 0])


def test_encode_ints():
    ids, known = encode(np.array([[7, -1], [3, 100]]), np.array([-1, 3, 7]))
    np.testing.assert_array_equal(ids, [[2, 0], [1, 0]])
    np.testing.assert_array_equal(known, [[True, True], [True, False]])


def test_encode_mixed_kinds():
    # Int values against a string vocabulary compare as decimal strings.
    ids, known = encode(np.array([1, 2]), np.array(["1", "a"]))
    np.testing.assert_array_equal(known, [True, False])
    np.testing.assert_array_equal(ids, [0, 0])
    # String values against an int vocabulary: decimal forms match.
    ids, known = encode(np.array(["17", "x", "-3", "017"]), np.array([-3, 2, 17]))
    np.testing.assert_array_equal(known, [True, False, True, False])
    np.testing.assert_array_equal(ids, [2, 0, 0, 0])
    # Lists and object arrays are accepted too.
    ids, known = encode(["b", "q"], np.array(["a", "b"]))
    np.testing.assert_array_equal(ids, [1, 0])
    np.testing.assert_array_equal(known, [True, False])


def test_encode_empty_vocabulary():
    ids, known = encode(np.array(["a", "b"]), np.array([], dtype=str))
    assert not known.any() and (ids == 0).all()


def test_encode_errors():
    with pytest.raises(ValueError, match="sorted"):
        encode(["a"], np.array(["b", "a"]))
    with pytest.raises(ValueError, match="sorted and hold unique"):
        encode(["a"], np.array(["a", "a"]))
    with pytest.raises(ValueError, match=r"1-D, got shape \(1, 2\)"):
        encode(["a"], np.array([["a", "b"]]))
    with pytest.raises(TypeError, match="values must hold string or integer"):
        encode(np.array([True]), np.array([0, 1]))


# --------------------------------------------------------------------------
# load_triples
# --------------------------------------------------------------------------


def write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding) if isinstance(text, str) else text)
    return path


def test_load_triples_basic(tmp_path):
    path = write(tmp_path / "t.txt", "a\tr\tb\nb\ts\tc\n")
    triples = load_triples(path)
    assert triples.shape == (2, 3) and triples.dtype.kind == "U"
    assert triples.tolist() == [["a", "r", "b"], ["b", "s", "c"]]
    # str paths work too.
    assert load_triples(str(path)).tolist() == triples.tolist()


def test_load_triples_blank_lines_crlf_and_no_final_newline(tmp_path):
    path = write(tmp_path / "t.txt", "\r\na\tr\tb\r\n\r\n   \n\t\nc\tr\td")
    assert load_triples(path).tolist() == [["a", "r", "b"], ["c", "r", "d"]]


def test_load_triples_keeps_special_labels(tmp_path):
    text = "NA\tnull\tnan\nNone\t#\t-1.5\n a b \tr\t\u00e9t\u00e9 \u6771\u4eac\n"
    triples = load_triples(write(tmp_path / "t.txt", text))
    assert triples.tolist() == [
        ["NA", "null", "nan"],
        ["None", "#", "-1.5"],
        [" a b ", "r", "\u00e9t\u00e9 \u6771\u4eac"],
    ]


def test_load_triples_bom_and_custom_sep(tmp_path):
    path = write(tmp_path / "t.csv", "\ufeffa,r,b\nc,r,d\n")
    assert load_triples(path, sep=",").tolist() == [["a", "r", "b"], ["c", "r", "d"]]


def test_load_triples_empty_file(tmp_path):
    triples = load_triples(write(tmp_path / "t.txt", "\n\n"))
    assert triples.shape == (0, 3) and triples.dtype.kind == "U"


@pytest.mark.parametrize(
    "text, match",
    [
        ("a\tr\tb\n\n  \nc\tr\n", r"bad\.txt, line 4: expected 3 fields.*found 2: 'c\\tr'"),
        ("a\tr\tb\nc\tr\td\te\n", r"bad\.txt, line 2: expected 3 fields.*found 4"),
        ("justone\n", r"line 1: .*found 1"),
        ("a\tr\tb\nc\t\td\n", r"bad\.txt, line 2: empty relation label \(field 2\)"),
        ("\n\na\tr\t\n", r"bad\.txt, line 3: empty tail label"),
    ],
)
def test_load_triples_malformed(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_triples(write(tmp_path / "bad.txt", text))


def test_load_triples_invalid_utf8(tmp_path):
    path = write(tmp_path / "bad.txt", b"a\tr\tb\nc\tr\t\xff\n")
    with pytest.raises(ValueError, match=r"bad\.txt, line 2: not valid UTF-8"):
        load_triples(path)


def test_load_triples_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.txt"))):
        load_triples(tmp_path / "nope.txt")


def test_load_triples_bad_sep(tmp_path):
    path = write(tmp_path / "t.txt", "a\tr\tb\n")
    with pytest.raises(ValueError, match="sep must be"):
        load_triples(path, sep="")


def test_load_triples_many_lines(tmp_path):
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, size=(50_000, 3))
    lines = "\n".join(f"e{h}\tr{r % 20}\te{t}" for h, r, t in ids.tolist())
    triples = load_triples(write(tmp_path / "big.txt", lines + "\n"))
    assert triples.shape == (50_000, 3)
    assert triples[123].tolist() == [f"e{ids[123, 0]}", f"r{ids[123, 1] % 20}", f"e{ids[123, 2]}"]


# --------------------------------------------------------------------------
# dataset_dir and load_dataset
# --------------------------------------------------------------------------


def make_dataset(folder, n_test=1):
    folder.mkdir(parents=True)
    write(folder / "train.txt", "a\tr\tb\nb\tr\tc\nc\ts\ta\n")
    write(folder / "valid.txt", "a\ts\tc\n")
    write(folder / "test.txt", "b\ts\ta\n" * n_test)
    return folder


def test_load_dataset_from_folder(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    ds = load_dataset(folder)
    assert isinstance(ds, Bunch)
    assert ds.name == "toy"
    assert ds.train.shape == (3, 3) and ds.valid.shape == (1, 3) and ds.test.shape == (1, 3)
    assert ds.valid.tolist() == [["a", "s", "c"]]
    assert load_dataset(str(folder)).train.tolist() == ds.train.tolist()


def test_load_dataset_by_name_through_env(tmp_path, monkeypatch):
    make_dataset(tmp_path / "root" / "toy")
    monkeypatch.setenv("KGESTIMATOR_DATA", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    assert dataset_dir() == (tmp_path / "root").resolve()
    assert dataset_dir("toy") == (tmp_path / "root" / "toy").resolve()
    assert load_dataset("toy").name == "toy"
    with pytest.raises(FileNotFoundError, match=r"dataset 'other' not found.*available: toy"):
        load_dataset("other")


def test_load_dataset_missing_split(tmp_path):
    folder = make_dataset(tmp_path / "toy")
    (folder / "test.txt").unlink()
    with pytest.raises(FileNotFoundError, match="has no test.txt"):
        load_dataset(folder)


def test_load_dataset_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        load_dataset(tmp_path / "nowhere")
    with pytest.raises(TypeError, match="path or a dataset name"):
        load_dataset(3)


def test_dataset_dir_env_not_a_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("KGESTIMATOR_DATA", str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="KGESTIMATOR_DATA="):
        dataset_dir()


def test_dataset_dir_relative_to_cwd(tmp_path, monkeypatch):
    monkeypatch.delenv("KGESTIMATOR_DATA", raising=False)
    make_dataset(tmp_path / "shared" / "datasets" / "toy")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert dataset_dir() == (tmp_path / "shared" / "datasets").resolve()
    assert load_dataset("toy").train.shape == (3, 3)


def test_dataset_dir_nothing_found(tmp_path, monkeypatch):
    monkeypatch.delenv("KGESTIMATOR_DATA", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    # Pretend the package lives in a checkout without a shared/ sibling.
    monkeypatch.setattr(datasets_module, "__file__", str(tmp_path / "a" / "b" / "kgestimator" / "datasets.py"))
    with pytest.raises(FileNotFoundError, match="set KGESTIMATOR_DATA to a folder") as info:
        dataset_dir("nations")
    # an installed copy (no pyproject.toml beside the package) never suggests a folder beside site-packages
    assert str(tmp_path / "shared") in str(info.value) and str(tmp_path / "a") not in str(info.value)


def test_dataset_dir_error_names_each_folder_once(tmp_path, monkeypatch):
    # a fresh clone run from its root: ../shared/datasets of the working directory and of
    # the repository are one folder, which the message used to list twice
    monkeypatch.delenv("KGESTIMATOR_DATA", raising=False)
    repo = tmp_path / "clone"
    (repo / "kgestimator").mkdir(parents=True)
    (repo / "pyproject.toml").write_text("")
    monkeypatch.chdir(repo)
    monkeypatch.setattr(datasets_module, "__file__", str(repo / "kgestimator" / "datasets.py"))
    with pytest.raises(FileNotFoundError) as info:
        dataset_dir()
    assert str(info.value).count(str(tmp_path / "shared" / "datasets")) == 1


@pytest.mark.parametrize(
    "name, sizes, n_entities, n_relations",
    [("nations", (1592, 199, 201), 14, 55), ("kinship", (8544, 1068, 1074), 104, 25)],
)
def test_load_real_dataset(name, sizes, n_entities, n_relations, monkeypatch):
    if "KGESTIMATOR_DATA" not in __import__("os").environ:
        if not REPO_DATASETS.is_dir():
            pytest.skip("../shared/datasets not found: set KGESTIMATOR_DATA")
        monkeypatch.setenv("KGESTIMATOR_DATA", str(REPO_DATASETS))
    try:
        dataset_dir(name)
    except FileNotFoundError:
        pytest.skip(f"{name} not in the datasets folder: set KGESTIMATOR_DATA")
    ds = load_dataset(name)
    assert ds.name == name
    assert (len(ds.train), len(ds.valid), len(ds.test)) == sizes
    assert ds.train.dtype.kind == "U"
    entities, relations = build_vocabulary(ds.train)
    assert (len(entities), len(relations)) == (n_entities, n_relations)
    for split in (ds.valid, ds.test):
        assert encode(split[:, [0, 2]], entities)[1].all()
        assert encode(split[:, 1], relations)[1].all()


# --------------------------------------------------------------------------
# make_kg
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kg():
    return make_kg(random_state=0)


def relations_of(kg, pattern):
    """Relation labels of a pattern, in relation-number order."""
    labels = [r for r, p in kg.patterns.items() if p == pattern]
    return sorted(labels, key=lambda r: int(r[1:].split("_")[0]))


def test_make_kg_shapes_and_labels(kg):
    assert kg.train.shape == (4800, 3)
    assert kg.valid.shape == (600, 3) and kg.test.shape == (600, 3)
    for split in (kg.train, kg.valid, kg.test):
        assert split.dtype.kind == "U" and split.ndim == 2
    everything = np.concatenate((kg.train, kg.valid, kg.test))
    assert all(re.fullmatch(r"e\d+", e) for e in np.unique(everything[:, [0, 2]]))
    assert all(re.fullmatch(r"r\d+_[a-z]+", r) for r in np.unique(everything[:, 1]))
    assert len(kg.entities) == 300 and len(kg.relations) == 8
    assert kg.patterns == {
        "r0_symmetric": "symmetric",
        "r1_inverse": "inverse",
        "r2_inverse": "inverse",
        "r3_compositional": "compositional",
        "r4_compositional": "compositional",
        "r5_compositional": "compositional",
        "r6_hierarchical": "hierarchical",
        "r7_hierarchical": "hierarchical",
    }


def test_make_kg_vocabulary_matches_train(kg):
    entities, relations = build_vocabulary(kg.train)
    np.testing.assert_array_equal(kg.entities, entities)
    np.testing.assert_array_equal(kg.relations, relations)
    for split in (kg.valid, kg.test):
        assert encode(split[:, [0, 2]], entities)[1].all()
        assert encode(split[:, 1], relations)[1].all()


def test_make_kg_no_duplicates(kg):
    sets = [as_set(s) for s in (kg.train, kg.valid, kg.test)]
    assert [len(s) for s in sets] == [4800, 600, 600]
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    everything = np.concatenate((kg.train, kg.valid, kg.test))
    assert not np.any(everything[:, 0] == everything[:, 2])


def test_make_kg_every_relation_is_tested(kg):
    tested = set(kg.test[:, 1]) | set(kg.valid[:, 1])
    # Only the two premises of the composition are never held out.
    assert set(kg.relations) - tested == {"r3_compositional", "r4_compositional"}


def test_make_kg_deterministic():
    a = make_kg(n_entities=80, n_triples=1000, random_state=7)
    b = make_kg(n_entities=80, n_triples=1000, random_state=7)
    c = make_kg(n_entities=80, n_triples=1000, random_state=8)
    for split in ("train", "valid", "test"):
        np.testing.assert_array_equal(a[split], b[split])
    assert as_set(a.train) != as_set(c.train)
    g1 = make_kg(n_entities=80, n_triples=1000, random_state=np.random.default_rng(1))
    g2 = make_kg(n_entities=80, n_triples=1000, random_state=np.random.default_rng(1))
    r1 = make_kg(n_entities=80, n_triples=1000, random_state=np.random.RandomState(1))
    r2 = make_kg(n_entities=80, n_triples=1000, random_state=np.random.RandomState(1))
    np.testing.assert_array_equal(g1.train, g2.train)
    np.testing.assert_array_equal(r1.test, r2.test)


def test_make_kg_symmetric_pattern(kg):
    (s,) = relations_of(kg, "symmetric")
    train = as_set(kg.train)
    everything = train | as_set(kg.valid) | as_set(kg.test)
    for h, r, t in np.concatenate((kg.valid, kg.test)).tolist():
        if r == s:
            assert (t, s, h) in train
    sym = [tuple(x) for x in kg.train.tolist() if x[1] == s]
    with_reverse = sum((t, r, h) in everything for h, r, t in sym)
    assert with_reverse >= len(sym) - 1  # at most one lone direction


def test_make_kg_inverse_pattern(kg):
    r, r_inv = relations_of(kg, "inverse")
    other = {r: r_inv, r_inv: r}
    train = as_set(kg.train)
    held_out = [x for x in np.concatenate((kg.valid, kg.test)).tolist() if x[1] in other]
    assert held_out
    for h, rel, t in held_out:
        assert (t, other[rel], h) in train


def test_make_kg_compositional_pattern(kg):
    r1, r2, r3 = relations_of(kg, "compositional")
    everything = np.concatenate((kg.train, kg.valid, kg.test))
    # r2 is functional and never held out.
    r2_facts = kg.train[kg.train[:, 1] == r2]
    assert len(np.unique(r2_facts[:, 0])) == len(r2_facts)
    assert (everything[:, 1] == r2).sum() == len(r2_facts)
    image = dict(zip(r2_facts[:, 0].tolist(), r2_facts[:, 2].tolist()))
    firsts = defaultdict(set)
    for h, _, t in kg.train[kg.train[:, 1] == r1].tolist():
        firsts[h].add(t)
    composed = everything[everything[:, 1] == r3]
    held_out = np.concatenate((kg.valid, kg.test))
    assert (held_out[:, 1] == r3).sum() > 0
    for a, _, c in composed.tolist():
        assert any(image.get(b) == c for b in firsts[a]), (a, c)


def test_make_kg_hierarchical_pattern(kg):
    is_a, has = relations_of(kg, "hierarchical")
    parents = defaultdict(set)
    for x, _, y in kg.train[kg.train[:, 1] == is_a].tolist():
        parents[x].add(y)

    def ancestors(x):
        seen, stack = set(), [x]
        while stack:
            for p in parents[stack.pop()]:
                if p not in seen:
                    seen.add(p)
                    stack.append(p)
        return seen

    props = defaultdict(set)
    for x, _, p in kg.train[kg.train[:, 1] == has].tolist():
        props[x].add(p)
    held_out = np.concatenate((kg.valid, kg.test)).tolist()
    n_is_a = n_has = 0
    for x, r, y in held_out:
        if r == is_a:
            n_is_a += 1
            assert y in ancestors(x)
            assert x not in ancestors(x)  # no cycles
        elif r == has:
            n_has += 1
            assert any(y in props[a] for a in ancestors(x))
    assert n_is_a > 0 and n_has > 0


def test_make_kg_noise():
    clean = make_kg(n_entities=100, n_triples=2000, random_state=0)
    noisy = make_kg(n_entities=100, n_triples=2000, noise=0.5, random_state=0)
    assert noisy.train.shape == clean.train.shape and noisy.test.shape == clean.test.shape
    sets = [as_set(s) for s in (noisy.train, noisy.valid, noisy.test)]
    assert sum(map(len, sets)) == 2000 and len(set.union(*sets)) == 2000
    entities, relations = build_vocabulary(noisy.train)
    assert encode(noisy.test[:, [0, 2]], entities)[1].all()
    assert encode(noisy.valid[:, 1], relations)[1].all()

    def symmetric_share(g):
        (s,) = relations_of(g, "symmetric")
        everything = as_set(g.train) | as_set(g.valid) | as_set(g.test)
        sym = [x for x in g.train.tolist() if x[1] == s]
        return np.mean([(t, r, h) in everything for h, r, t in sym])

    assert symmetric_share(clean) > 0.99
    assert symmetric_share(noisy) < 0.8


def test_make_kg_pattern_subsets():
    sym = make_kg(n_entities=50, n_relations=3, n_triples=600, patterns="symmetric", random_state=0)
    assert set(sym.patterns.values()) == {"symmetric"} and len(sym.relations) == 3
    hier = make_kg(n_entities=100, n_relations=3, n_triples=600, patterns=("hierarchical",), random_state=0)
    # Extra relations extend the one hierarchy with inherited relations.
    assert list(hier.patterns.values()) == ["hierarchical"] * 3
    inv = make_kg(n_entities=50, n_relations=3, n_triples=600, patterns=["inverse"], random_state=0)
    assert sorted(inv.patterns.values()) == ["inverse", "inverse", "typed"]
    assert not np.isin(inv.test[:, 1], [r for r, p in inv.patterns.items() if p == "typed"]).any()


def test_make_kg_split_sizes():
    g = make_kg(n_entities=60, n_triples=1000, valid_size=0, test_size=150, random_state=0)
    assert g.valid.shape == (0, 3) and g.test.shape == (150, 3) and g.train.shape == (850, 3)
    assert g.valid.dtype.kind == "U"


def test_make_kg_small_graph():
    g = make_kg(n_entities=10, n_relations=1, n_triples=10, patterns="symmetric", random_state=0)
    assert len(g.train) + len(g.valid) + len(g.test) == 10


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patterns": ("symmetric", "circular")}, r"unknown pattern\(s\) \['circular'\]"),
        ({"patterns": ("symmetric", "symmetric")}, "duplicates"),
        ({"patterns": ()}, "at least one of"),
        ({"n_relations": 4}, r"n_relations=4 is too small.*at least 8"),
        ({"n_entities": 5}, "n_entities must be at least 10"),
        ({"n_entities": 20}, r"n_entities=20 is too small.*at least 24"),
        ({"n_entities": 300.0}, "n_entities must be an int"),
        ({"n_triples": 50}, "n_triples=50 is too small for n_relations=8"),
        ({"n_relations": 0}, "n_relations must be at least 1"),
        ({"noise": 1.0}, r"noise must be a float in \[0, 1\)"),
        ({"noise": -0.1}, "noise must be"),
        ({"valid_size": 1.5}, "valid_size=1.5 must be a fraction"),
        ({"test_size": "0.1"}, "test_size must be a float"),
        ({"valid_size": 0.5, "test_size": 0.5}, "must leave training triples"),
        ({"valid_size": 0.3, "test_size": 0.3}, "only .* can be held out"),
        ({"n_relations": 2, "patterns": ("hierarchical",)}, "could only plant .* increase n_entities"),
    ],
)
def test_make_kg_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_kg(random_state=0, **kwargs)

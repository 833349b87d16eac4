"""Property tests of issue 18's promises, with the generators that found its defects.

* every input type is validated the same way: a numpy ``str`` array (NULs
  inside labels included, non-contiguous views included) gives what the same
  labels give as a list or an object array;
* ``save`` never writes a file that ``load`` refuses, and the file holds the
  parameters of the fit, whatever ``set_params`` did after it;
* a crafted (re-signed) file loads into a working model or is refused with a
  ``ValueError``, never another exception.

Run more cases with ``KGESTIMATOR_FUZZ=thorough`` (see conftest.py).
"""

import json
import warnings

import numpy as np
import pytest
import torch
from hypothesis import event, given, note
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conftest import fuzz_examples
from kgestimator import KGEmbedder
from kgestimator.data import check_triples
from kgestimator.persistence import FORMAT_VERSION, digest
from test_fuzz import TINY, Refused, expected_labels, label_rows, outcome, refused
from test_persistence import _assert_usable_or_refused

NUL_TEXT = st.text(st.characters(codec="utf-8"), max_size=4).flatmap(
    lambda s: st.sampled_from([s, "\x00" + s, s + "\x00", s[:1] + "\x00" + s[1:], s + "\x00x"]))


def _oracle(rows):
    try:
        return expected_labels(rows)
    except Refused:
        return None


# ------------------------------------------------------------ label dtypes
@st.composite
def str_arrays(draw):
    """A numpy unicode array of labels, sometimes a non-contiguous view of a wider one."""
    pool = draw(st.lists(NUL_TEXT, min_size=1, max_size=5))
    n = draw(st.integers(1, 6))
    rows = [[draw(st.sampled_from(pool)) for _ in range(3)] for _ in range(n)]
    arr = np.array(rows, dtype=f"U{draw(st.integers(1, 8))}" if draw(st.booleans()) else None)
    view = draw(st.sampled_from(["plain", "reversed columns", "every other row", "fortran"]))
    if view == "reversed columns":
        arr = np.ascontiguousarray(arr[:, ::-1])[:, ::-1]
    elif view == "every other row":
        arr = np.repeat(arr, 2, axis=0)[::2]
    elif view == "fortran":
        arr = np.asfortranarray(arr)
    return arr


@hsettings(max_examples=fuzz_examples(300))
@given(X=str_arrays())
def test_fuzz_str_arrays_are_validated_like_lists(X):
    # what numpy handed over (it drops trailing NULs itself when it builds the array)
    given_labels = X.tolist()
    expected = _oracle(given_labels)
    for container in (X, given_labels, X.astype(object)):
        out = outcome(lambda: check_triples(container))
        event(f"{type(container).__name__}: {'refused' if refused(out) else 'accepted'}")
        if expected is None:
            assert refused(out), f"accepted {given_labels!r} as {type(container).__name__}"
        else:
            assert not refused(out), out
            assert out.tolist() == expected


# ------------------------------------------------------- save after fit always loads
#: valid values a user may set after fit; none of them may reach the saved file
LATER = {"dim": [2, 8, 33], "model": ["transe", "complex", "rotate", "hake"], "gamma": [1.0, 100.0],
         "sampler": ["bernoulli", "san"], "n_negatives": [4, 64], "emu": [True, "mixup", np.True_],
         "loss": ["logistic", "bce"], "random_state": [1, None], "checkpoint_dir": ["/somewhere"],
         "model_params": ['{"nonsense": 1}'], "sparse": [np.True_], "n_epochs": [3]}


@hsettings(max_examples=fuzz_examples(60))
@given(data=label_rows(max_rows=10), later=st.dictionaries(st.sampled_from(sorted(LATER)), st.integers(0, 10),
                                                            max_size=4),
       bools=st.sampled_from([{}, {"uls": np.True_}, {"emu": np.True_}, {"compile": np.False_}]))
def test_fuzz_save_after_set_params_always_loads_the_fitted_model(tmp_path_factory, data, later, bools):
    rows, X, kind = data
    est = KGEmbedder(**TINY, **bools)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = outcome(lambda: est.fit(X))
    if refused(got):
        event("fit refused")
        return
    fitted_params = est.get_params(deep=False)
    scores = est.score_samples(X)
    est.set_params(**{name: LATER[name][i % len(LATER[name])] for name, i in later.items()})
    note(f"set_params: {later}")
    path = tmp_path_factory.mktemp("saved") / "m.kge"
    est.save(path)
    loaded = KGEmbedder.load(path)  # a file save wrote always loads
    event("saved and loaded")
    for name, value in fitted_params.items():
        want = None if name == "checkpoint_dir" else (bool(value) if isinstance(value, np.bool_) else value)
        assert loaded.get_params(deep=False)[name] == want, name
    np.testing.assert_array_equal(loaded.score_samples(X), scores)


# ------------------------------------------------------------ crafted files
def _nest(value, depth, kind):
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


TENSORS = {
    "sparse": lambda: torch.eye(3).to_sparse(),
    "sparse csr": lambda: torch.eye(3).to_sparse_csr(),
    "meta": lambda: torch.empty(2, 2, device="meta"),
    "quantized": lambda: torch.quantize_per_tensor(torch.ones(2), 0.1, 0, torch.qint8),
    "bool": lambda: torch.ones(3, dtype=torch.bool),
    "huge dim": lambda: torch.zeros(1, 0),
}


@st.composite
def structural_edits(draw):
    """Edits that change the file's structure rather than its values (the crafted-file fuzz of
    test_persistence changes values)."""
    return draw(st.lists(st.one_of(
        st.tuples(st.just("tensor"), st.sampled_from(sorted(TENSORS)), st.sampled_from(["extra", "model.entity"])),
        st.tuples(st.just("nest state"), st.sampled_from([1, 5, 40, 2000]), st.sampled_from(["list", "dict"])),
        st.tuples(st.just("nest meta"), st.sampled_from([1, 40, 5000, 100_000]), st.sampled_from(["list", "dict"])),
        st.tuples(st.just("version"), st.sampled_from([True, 1.0, np.int64(1), "1", FORMAT_VERSION]), st.none()),
        st.tuples(st.just("dim"), st.sampled_from([1, 5, 10**5, 10**7, 10**12]), st.none()),
        st.tuples(st.just("entities"), st.sampled_from([1, 2, 10**5]), st.none()),
    ), min_size=1, max_size=3))


@hsettings(max_examples=fuzz_examples(100))
@given(edits=structural_edits())
def test_fuzz_structurally_crafted_files_load_or_give_a_value_error(saved, tmp_path_factory, edits):
    _, path, _, test = saved
    payload = torch.load(path, weights_only=True)
    meta, state, raw_meta = json.loads(payload["metadata"]), payload["state"], None
    for what, a, b in edits:
        if what == "tensor":
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # beta / deprecated tensor kinds: what a forger may use
                state[b] = TENSORS[a]()
        elif what == "nest state":
            state["extra"] = _nest(torch.zeros(1), a, b)
        elif what == "nest meta":
            raw_meta = ("[" * a + "]" * a) if b == "list" else ('{"k":' * a + "1" + "}" * a)
        elif what == "version":
            payload["format_version"] = a
        elif what == "dim":
            meta["params"]["dim"] = a
        else:
            meta["entities"]["values"] = [f"e{i}" for i in range(a)]
    payload["metadata"] = raw_meta if raw_meta is not None else json.dumps(meta)
    try:
        payload["checksum"] = digest(payload["metadata"], state)
    except Exception:  # noqa: BLE001 - a state the checksum cannot read: load must refuse it before
        payload["checksum"] = "unreadable"
    target = tmp_path_factory.mktemp("crafted") / "m.kge"
    try:
        torch.save(payload, target)
    except Exception:  # noqa: BLE001 - torch cannot write this (e.g. too deep to pickle): nothing to load
        event("torch.save refused it")
        return
    _assert_usable_or_refused(target, test)


@pytest.fixture(scope="module")
def saved(tmp_path_factory, kg):
    from test_persistence import Saved

    est = KGEmbedder(**TINY).fit(kg.train)
    path = tmp_path_factory.mktemp("model") / "model.kge"
    est.save(path)
    return Saved((est, path, path.read_bytes(), kg.test[:5]))

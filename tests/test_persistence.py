"""Safe model files: no code runs on load; corrupt, tampered, crafted or foreign files are refused."""

import json
import os
import pickle
import warnings

import joblib
import numpy as np
import pytest
import torch
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from conftest import FAST, fuzz_examples
from kgestimator import KGEmbedder
from kgestimator.persistence import FORMAT_VERSION, digest


class Payload:
    """Unpickling this creates a marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class Saved(tuple):
    """``(estimator, path, file bytes, test triples)`` with a short repr for hypothesis reports."""

    def __repr__(self):
        return "<a saved model>"


@pytest.fixture(scope="module")
def saved(tmp_path_factory, kg):
    est = KGEmbedder(**{**FAST, "n_epochs": 2}, random_state=0).fit(kg.train, valid=kg.valid)
    path = tmp_path_factory.mktemp("model") / "model.kge"
    est.save(path)
    return Saved((est, path, path.read_bytes(), kg.test[:5]))


@pytest.mark.parametrize("writer", ["pickle", "torch.save", "joblib", "inside-a-model-file"])
def test_files_that_run_code_are_refused_without_running_it(saved, tmp_path, writer):
    _, path, _, _ = saved
    marker = tmp_path / "code-ran"
    evil, target = Payload(marker), tmp_path / "evil.kge"
    if writer == "pickle":
        target.write_bytes(pickle.dumps({"format": "kgestimator", "x": evil}))
    elif writer == "torch.save":
        torch.save({"format": "kgestimator", "x": evil}, target)
    elif writer == "joblib":
        joblib.dump(evil, target)
    else:  # a genuine model file with one more entry that runs code
        payload = torch.load(path, weights_only=True)
        payload["state"]["extra"] = evil
        torch.save(payload, target)
    with pytest.raises(ValueError, match="refuses to unpickle it because unpickling can run arbitrary code") as info:
        KGEmbedder.load(target)
    assert "weights_only=False" not in str(info.value)  # torch's advice, not to be passed on
    assert not marker.exists()
    # the payload does work when unpickled: the test above proves something
    pickle.loads(pickle.dumps(evil))
    assert marker.exists()


def test_truncated_files_are_refused(saved, tmp_path):
    _, _, data, _ = saved
    for cut in (0, 1, 100, len(data) // 2, len(data) - 1):
        (tmp_path / "cut.kge").write_bytes(data[:cut])
        with pytest.raises(ValueError, match="not a kgestimator model file.* corrupt"):
            KGEmbedder.load(tmp_path / "cut.kge")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.kge"):
        KGEmbedder.load(tmp_path / "nothing.kge")


@pytest.mark.parametrize("version, match", [
    (FORMAT_VERSION + 1, "written by a newer kgestimator: upgrade"),
    (0, "written by an older kgestimator: load it with that release"),
    ("1", "format version '1'"),
    (None, "format version None"),
])
def test_other_format_versions_get_a_clear_message(saved, tmp_path, version, match):
    _, path, _, _ = saved
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = version
    torch.save(payload, tmp_path / "other.kge")
    with pytest.raises(ValueError, match=match):
        KGEmbedder.load(tmp_path / "other.kge")


def test_checksum_covers_metadata_and_every_tensor(saved, tmp_path):
    _, path, _, _ = saved
    for tamper in ("metadata", "tensor", "new key"):
        payload = torch.load(path, weights_only=True)
        if tamper == "metadata":
            payload["metadata"] = payload["metadata"].replace('"dim": 16', '"dim": 17')
        elif tamper == "tensor":
            payload["state"]["known_ids"][0, 0] += 1
        else:
            payload["state"]["model.extra"] = torch.zeros(1)
        torch.save(payload, tmp_path / "t.kge")
        with pytest.raises(ValueError, match="failed its checksum"):
            KGEmbedder.load(tmp_path / "t.kge")


# ------------------------------------------------------------------ fuzzing
def _resign(payload):
    """A crafted file: whoever edits it can recompute the checksum."""
    payload["checksum"] = digest(payload["metadata"], payload["state"])


def _assert_usable_or_refused(path, test):
    try:
        loaded = KGEmbedder.load(path)
    except ValueError as exc:
        event("refused")
        assert str(path) in str(exc)
        return None
    except Exception as exc:  # noqa: BLE001
        pytest.fail(f"{type(exc).__name__}: {exc}")
    event("loaded")
    # whatever loads must work: predictions never crash, scores are finite
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        triples = np.stack([loaded.entities_[:3], loaded.relations_[:3].repeat(1)[:3] if len(loaded.relations_) >= 3
                            else np.resize(loaded.relations_, 3), loaded.entities_[-3:]], 1)
        assert np.all(np.isfinite(loaded.score_samples(triples)))
        loaded.predict_topk(triples[:, :2], k=1, exclude_known=False)
        loaded.evaluate(test)
    return loaded


@hsettings(max_examples=fuzz_examples(150))
@given(edits=st.lists(st.tuples(st.integers(0, 10**9), st.sampled_from(["flip", "cut", "insert"]),
                                st.binary(min_size=1, max_size=4)), min_size=1, max_size=3))
def test_fuzz_corrupt_bytes(saved, tmp_path_factory, edits):
    est, _, data, test = saved
    data = bytearray(data)
    for pos, kind, blob in edits:
        pos %= len(data)
        if kind == "flip":
            data[pos] ^= blob[0] or 1
        elif kind == "cut":
            del data[pos:]
        else:
            data[pos:pos] = blob
        if not data:
            break
    path = tmp_path_factory.mktemp("corrupt") / "model.kge"
    path.write_bytes(bytes(data))
    loaded = _assert_usable_or_refused(path, test)
    if loaded is not None:  # the bytes that changed did not matter: the checksum vouches for the content
        for k, v in est.model_.state_dict().items():
            assert torch.equal(loaded.model_.state_dict()[k], v)


JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**20) | st.floats() | st.text(max_size=4),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                                        max_size=3), max_leaves=6)


@st.composite
def crafted_edits(draw):
    """Edits a forger might make to a model file before re-signing it."""
    edits = []
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["param", "meta", "labels", "tensor", "drop tensor", "known_ids"]))
        edits.append((where, draw(st.text(max_size=12)), draw(JSON_VALUES), draw(st.integers(-5, 100))))
    return edits


@hsettings(max_examples=fuzz_examples(150))
@given(edits=crafted_edits(), param=st.sampled_from(["dim", "model", "gamma", "sampler", "random_state", "emu",
                                                     "n_negatives", "device", "checkpoint_dir", "unknown"]),
       meta_key=st.sampled_from(["params", "entities", "relations", "history", "emu_params"]))
def test_fuzz_crafted_but_signed_files(saved, tmp_path_factory, edits, param, meta_key):
    _, path, _, test = saved
    payload = torch.load(path, weights_only=True)
    meta = json.loads(payload["metadata"])
    state = payload["state"]
    for where, text, value, number in edits:
        if where == "param" and isinstance(meta.get("params"), dict):
            meta["params"][param] = value
        elif where == "meta":
            meta[meta_key] = value
        elif where == "labels" and isinstance(meta.get("entities"), dict) and isinstance(
                meta["entities"].get("values"), list):
            values = meta["entities"]["values"]
            meta["entities"]["values"] = values[: number % (len(values) + 1)] + ([text] if number % 2 else [])
        elif where == "tensor" and state:
            key = sorted(state)[number % len(state)]
            state[key] = torch.full((number % 4, 2), float(number) if number % 3 else float("inf"))
        elif where == "drop tensor" and state:
            state.pop(sorted(state)[number % len(state)], None)
        elif where == "known_ids":
            state["known_ids"] = torch.tensor([[number, 0, 0]] * (1 + number % 3), dtype=torch.long)
    payload["metadata"] = json.dumps(meta)
    _resign(payload)
    target = tmp_path_factory.mktemp("crafted") / "model.kge"
    torch.save(payload, target)
    _assert_usable_or_refused(target, test)


@pytest.mark.parametrize("legacy, walks", [(False, "restarted"), (True, "chained")])
def test_a_file_from_before_san_walks_loads_with_the_walks_it_trained_with(kg, tmp_path, legacy, walks):
    from kgestimator.samplers import SANSampler

    est = KGEmbedder(**{**FAST, "n_epochs": 1}, sampler=SANSampler(n_random_walks=5, walks=walks),
                     random_state=0).fit(kg.train)
    est.save(tmp_path / "new.kge")
    payload = torch.load(tmp_path / "new.kge", weights_only=True)
    meta = json.loads(payload["metadata"])
    sampler_params = meta["params"]["sampler"]["params"]
    # what an older kgestimator wrote: the flag, always, and no `walks`
    del sampler_params["walks"]
    sampler_params["legacy_chained_walks"] = legacy
    payload["metadata"] = json.dumps(meta)
    _resign(payload)
    torch.save(payload, tmp_path / "old.kge")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loaded = KGEmbedder.load(tmp_path / "old.kge")
    assert loaded.sampler.walks == walks and loaded.sampler.legacy_chained_walks is None
    np.testing.assert_allclose(loaded.score(kg.test[:20]), est.score(kg.test[:20]))

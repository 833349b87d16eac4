"""The train / evaluate / predict / list commands, on a small generated graph written as TSV."""

import inspect
import json
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kgestimator import KGEmbedder, cli, make_kg
from kgestimator._cli_params import parse_value

SMALL = ["--dim", "8", "--n-negatives", "8", "--batch-size", "256", "--n-epochs", "2",
         "--random-state", "0", "--threads", "1"]


def _write_tsv(path, triples):
    path.write_text("".join("\t".join(row) + "\n" for row in triples.tolist()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def graph():
    return make_kg(n_entities=60, n_relations=8, n_triples=1500, random_state=0)


@pytest.fixture(scope="module")
def folder(graph, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    for split in ("train", "valid", "test"):
        _write_tsv(root / f"{split}.txt", graph[split])
    return root


@pytest.fixture(scope="module")
def model_file(folder, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "model.kge"
    previous = torch.get_num_threads()
    try:
        assert cli.main(["train", str(folder), "-o", str(path), "--quiet", *SMALL]) == 0
    finally:
        torch.set_num_threads(previous)
    return path


def _fails(argv, capsys, *fragments):
    """Run ``argv``; assert exit status 2, one line on stderr containing every fragment."""
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---------------------------------------------------------------------- flags
def test_every_estimator_parameter_is_a_documented_flag():
    parser = cli.build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    flags = {opt for action in train._actions for opt in action.option_strings}
    names = [n for n in inspect.signature(KGEmbedder.__init__).parameters if n != "self"]
    assert set(KGEmbedder().get_params()) == set(names)
    table = KGEmbedder._parameter_table
    # callbacks take objects, which a flag cannot give (train --tracker builds them)
    assert [n for n in names if table[n].flag is None] == ["callbacks"]
    assert {"--" + n.replace("_", "-") for n in names if table[n].flag is not None} <= flags
    assert "--callbacks" not in flags and "--tracker" in flags
    helps = {opt: action.help for action in train._actions for opt in action.option_strings}
    # the help is the table's first sentence, inline markup read as plain text
    assert helps["--sampler"].startswith("'uniform' (alternating head/tail corruption)")
    assert "an object from kgestimator.samplers whose" in helps["--sampler"]
    assert helps["--dim"] == ("Embedding dimension (complex dimensions for ComplEx, RotatE and HAKE; the width of "
                              "every layer for NBFNet). [int or None, default=None]")


def test_flags_follow_the_estimators_signature(monkeypatch):
    from numbers import Real

    from sklearn.base import BaseEstimator
    from sklearn.utils._param_validation import Interval

    from kgestimator._cli_params import estimator_params
    from kgestimator._parameters import Parameter

    class Toy(BaseEstimator):
        """Toy."""

        _parameter_table = {"shiny": Parameter("float", (Interval(Real, 0, 1, closed="both"),), "A new knob.",
                                               "Second sentence."),
                            "emu": Parameter("bool", ("boolean",), "A switch.")}

        def __init__(self, shiny=0.5, emu=False):
            self.shiny = shiny
            self.emu = emu

    monkeypatch.setattr(cli, "_estimator_class", lambda: Toy)
    parser = cli.build_parser()
    args = parser.parse_args(["train", "data.tsv", "-o", "m.kge", "--shiny", "0.25", "--emu"])
    assert estimator_params(args, args.param_names) == {"shiny": 0.25, "emu": True}
    args = parser.parse_args(["train", "data.tsv", "-o", "m.kge"])
    assert estimator_params(args, args.param_names) == {}  # the estimator's defaults apply
    help_text = " ".join(parser._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "--shiny VALUE A new knob. [float, default=0.5]" in help_text
    assert "--dim" not in help_text
    # values are checked against the parameter's constraints as they are read, naming the flag
    with pytest.raises(cli.CommandError, match=r"argument --shiny: must be a float in the range \[0.0, 1.0\]; "
                                               r"got '2'"):
        parser.parse_args(["train", "data.tsv", "-o", "m.kge", "--shiny", "2"])


@pytest.mark.parametrize("text, value", [
    ("true", True), ("False", False), ("none", None), ("12", 12), ("0.5", 0.5), ("1e-3", 1e-3),
    ("auto", "auto"), ("mixup", "mixup"),
])
def test_parse_value(text, value):
    assert parse_value(text) == value and type(parse_value(text)) is type(value)


def test_python_spelling_of_flags_is_accepted(folder, tmp_path, capsys):
    path = tmp_path / "m.kge"
    assert cli.main(["train", str(folder / "train.txt"), "-o", str(path), "--quiet", *SMALL,
                     "--n_epochs=1", "--learning_rate", "0.05"]) == 0
    est = KGEmbedder.load(path)
    assert est.n_epochs == 1 and est.learning_rate == 0.05 and est.n_iter_ == 1


# ---------------------------------------------------------------------- train
def test_train_writes_a_safe_model_and_reports_metrics(folder, tmp_path, capsys):
    path = tmp_path / "emu.kge"
    status = cli.main(["train", str(folder), "-o", str(path), *SMALL, "--emu", "--alpha", "0.3",
                       "--mutation-ratio", "0.5", "--beta", "0.4", "--model", "transe", "--eval-every", "1",
                       "--progress", "log"])
    assert status == 0
    out, err = capsys.readouterr()
    est = KGEmbedder.load(path)
    assert (est.model, est.emu, est.dim, est.random_state) == ("transe", True, 8, 0)
    assert est.emu_params_ == {"alpha": 0.3, "mutation_ratio": 0.5, "beta": 0.4}
    assert "trained transe + EMU on 1200 triples" in out and f"model written to {path}" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("valid ", "test "))}
    assert set(rows) == {"valid", "test"}
    assert float(rows["test"][1]) == pytest.approx(est.score(make_kg(
        n_entities=60, n_relations=8, n_triples=1500, random_state=0).test), abs=1e-4)
    # --progress log: one log line per epoch on stderr, with the validation MRR of that epoch
    epoch_lines = [line for line in err.splitlines() if " epoch " in line]
    assert len(epoch_lines) == 2 and all("valid_mrr=" in line for line in epoch_lines)
    assert logging.getLogger("kgestimator").handlers[-1].__class__ is logging.NullHandler


@pytest.mark.parametrize("terminal, argv, bar, lines", [
    (False, [], False, 0),  # a log file or CI: nothing per epoch
    (True, [], True, 0),  # a terminal: the bar
    (True, ["--quiet"], False, 0),
    (True, ["--progress", "log"], False, 2),
    (False, ["--progress", "bar"], True, 0),
    (True, ["--verbose", "0"], False, 0),  # an explicit --verbose decides
])
def test_train_progress_defaults_to_a_bar_on_a_terminal_only(folder, tmp_path, capsys, monkeypatch,
                                                             terminal, argv, bar, lines):
    monkeypatch.setattr("sys.stderr.isatty", lambda: terminal)
    assert cli.main(["train", str(folder / "train.txt"), "-o", str(tmp_path / "m.kge"), *SMALL, *argv]) == 0
    err = capsys.readouterr().err
    assert ("loss=" in err and ("epoch/s" in err or "s/epoch" in err)) == bar  # tqdm's postfix and rate
    assert len([line for line in err.splitlines() if " epoch " in line and "/2:" in line]) == lines
    assert KGEmbedder.load(tmp_path / "m.kge").verbose == (0 if "--verbose" in argv else KGEmbedder().verbose)


def test_train_verbose_shows_a_bar_instead_of_epoch_lines(folder, tmp_path, capsys):
    cli.main(["train", str(folder / "train.txt"), "-o", str(tmp_path / "m.kge"), *SMALL, "--verbose", "1"])
    err = capsys.readouterr().err
    assert "epoch" in err and "loss=" in err  # tqdm's postfix
    assert not [line for line in err.splitlines() if " epoch 1/2:" in line]


@pytest.mark.parametrize("threads, expected", [([], 1), (["--threads", "2"], 2)])
def test_train_threads_default_to_one_on_small_graphs(folder, tmp_path, capsys, monkeypatch, threads, expected):
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    argv = ["train", str(folder / "train.txt"), "-o", str(tmp_path / "m.kge"), "--quiet", *SMALL[:-2], *threads]
    assert cli.main(argv) == 0
    assert calls[0] == expected and len(calls) == 2  # set for the fit, then restored


def test_train_on_a_single_file_has_no_metrics(folder, tmp_path, capsys):
    cli.main(["train", str(folder / "train.txt"), "-o", str(tmp_path / "m.kge"), "--quiet", *SMALL])
    out = capsys.readouterr().out
    assert "filtered metrics" not in out and "model written to" in out


@pytest.mark.parametrize("extra, fragments", [
    (["--dim", "abc"], ["kgestimator train: error:", "argument --dim: must be an int in the range [1, inf)", "'abc'"]),
    (["--mutation-ratio", "1.5"], ["argument --mutation-ratio: must be a float in the range [0.0, 1.0]", "'1.5'"]),
    (["--model", "nosuch"], ["argument --model: must be a str among {'transe', ", "'nosuch'"]),
    (["--sampler", "nosuch"], ["argument --sampler: must be a str among {'uniform', ", "'nosuch'"]),
    (["--emu", "maybe"], ["argument --emu: must be a str among {'mixup', 'ls_only'}", "'maybe'"]),
    (["--device", "not-a-device"], ["argument --device: must be 'auto' or a device", "'not-a-device'"]),
    (["--dropout", "1.0"], ["argument --dropout: must be a float in the range [0.0, 1.0)", "'1.0'"]),
    (["--model-params", "{nope"], ["argument --model-params: must be", "a JSON object string", "'{nope'"]),
    (["--sparse", "--regularizer", "l3"], ["The 'sparse' parameter cannot be True with regularizer='l3'"]),
    (["--no-such-flag", "1"], ["unrecognized arguments: --no-such-flag"]),
])
def test_train_bad_flag_values(folder, tmp_path, capsys, extra, fragments):
    _fails(["train", str(folder), "-o", str(tmp_path / "m.kge"), *extra], capsys, *fragments)
    assert not (tmp_path / "m.kge").exists()


def test_train_missing_inputs(folder, tmp_path, capsys):
    _fails(["train", str(tmp_path / "nothing.tsv"), "-o", "m.kge"], capsys, "no such file or folder")
    _fails(["train", str(tmp_path), "-o", "m.kge"], capsys, "has no train.txt")
    _fails(["train", str(folder), "-o", str(tmp_path / "no" / "m.kge")], capsys, "no folder")
    _fails(["train", str(folder), "-o", "m.kge", "--valid", str(tmp_path / "v.txt")], capsys, "no such file")
    bad = tmp_path / "bad.tsv"
    bad.write_text("a\tr\n")
    _fails(["train", str(bad), "-o", "m.kge"], capsys, "bad.tsv, line 1: expected 3 fields")
    empty = tmp_path / "empty.tsv"
    empty.write_text("\n")
    _fails(["train", str(empty), "-o", "m.kge"], capsys, "holds no triples")


def test_train_unknown_dataset_name(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("KGESTIMATOR_DATA", str(tmp_path))
    _fails(["train", "nosuchdataset", "-o", "m.kge"], capsys, "nor a known dataset", "nosuchdataset")


# ---------------------------------------------------------------------- predict
def test_predict_table_matches_predict_topk(model_file, graph, capsys):
    est = KGEmbedder.load(model_file)
    queries = graph.test[:2, :2]
    argv = ["predict", str(model_file), "-k", "3"]
    for head, rel in queries:
        argv += ["--query", head, rel]
    assert cli.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["head", "relation", "rank", "label", "score"]
    labels, scores = est.predict_topk(queries, k=3)
    body = [line.split() for line in lines[2:]]
    assert body[0][:2] == list(queries[0]) and body[3][:2] == list(queries[1])
    assert [row[-2] for row in body] == labels.ravel().tolist()
    np.testing.assert_allclose([float(row[-1]) for row in body], scores.ravel(), atol=1e-4)


def test_predict_from_file_tsv_and_json(model_file, graph, tmp_path, capsys):
    est = KGEmbedder.load(model_file)
    queries = _write_tsv(tmp_path / "q.tsv", graph.test[:4])  # the third column is ignored
    assert cli.main(["predict", str(model_file), "--queries", str(queries), "-k", "2", "--format", "tsv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split("\t") == ["query", "head", "relation", "rank", "label", "score", "known"]
    assert [line.split("\t")[4] for line in lines[1:]] == est.predict_topk(graph.test[:4], k=2)[0].ravel().tolist()

    assert cli.main(["predict", str(model_file), "--queries", str(queries), "-k", "2", "--format", "json",
                     "--direction", "head", "--include-known"]) == 0
    records = json.loads(capsys.readouterr().out)
    labels, _ = est.predict_topk(graph.test[:4], k=2, direction="head", exclude_known=False)
    assert [r["label"] for r in records] == labels.ravel().tolist()
    assert set(records[0]) == {"query", "relation", "tail", "rank", "label", "score", "known"}
    assert records[0]["tail"] == graph.test[0, 2] and isinstance(records[0]["known"], bool)


def test_predict_excludes_known_facts_unless_asked(model_file, graph, capsys):
    head, rel = graph.train[0, :2]
    facts = np.concatenate([graph.train, graph.valid])  # the model was fitted with valid.txt
    known_tails = set(facts[(facts[:, 0] == head) & (facts[:, 1] == rel), 2])
    n_entities = len(KGEmbedder.load(model_file).entities_)
    cli.main(["predict", str(model_file), "-q", head, rel, "-k", str(n_entities), "--format", "json"])
    records = json.loads(capsys.readouterr().out)
    assert known_tails and not known_tails & {r["label"] for r in records}
    assert len(records) == n_entities - len(known_tails)
    cli.main(["predict", str(model_file), "-q", head, rel, "-k", "5", "--include-known", "--format", "json"])
    records = json.loads(capsys.readouterr().out)
    assert all(r["known"] == (r["label"] in known_tails) for r in records)
    cli.main(["predict", str(model_file), "-q", head, rel, "-k", str(n_entities)])
    note = capsys.readouterr().out.splitlines()[-1]
    assert note.startswith(f"({len(known_tails)} of the {n_entities} answers asked for are known facts")


def test_predict_errors(model_file, tmp_path, capsys):
    model = str(model_file)
    _fails(["predict", model, "-q", "nosuchentity", "r0_symmetric"], capsys,
           "unknown entity 'nosuchentity' in query 1", "the model knows")
    _fails(["predict", model, "-q", "e1", "nosuchrel"], capsys, "unknown relation 'nosuchrel'")
    _fails(["predict", model], capsys, "no queries")
    _fails(["predict", str(tmp_path / "none.kge"), "-q", "a", "b"], capsys, "no such model file")
    _fails(["predict", model, "-q", "e1", "r0_symmetric", "-k", "0"], capsys, "-k")
    _fails(["predict", model, "-q", "e1", "r0_symmetric", "-k", "100000"], capsys, "only")
    _fails(["predict", model, "-q", "e1", "r0_symmetric", "--format", "xml"], capsys, "invalid choice")
    garbage = tmp_path / "garbage.kge"
    garbage.write_bytes(b"not a model")
    _fails(["predict", str(garbage), "-q", "a", "b"], capsys, "not a kgestimator model file")
    ragged = tmp_path / "ragged.tsv"
    ragged.write_text("e1\tr0_symmetric\ne2\n")
    _fails(["predict", model, "--queries", str(ragged)], capsys, "line 2: expected 2 tab-separated fields")


# ---------------------------------------------------------------------- evaluate, list
def test_evaluate_formats_agree_with_the_estimator(model_file, folder, graph, capsys):
    expected = KGEmbedder.load(model_file).evaluate(graph.test)
    assert cli.main(["evaluate", str(model_file), str(folder)]) == 0  # a folder: its test.txt
    table = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:7]}
    assert float(table["mrr"][0]) == pytest.approx(expected["mrr"], abs=1e-4)
    assert float(table["hits@10"][2]) == pytest.approx(expected["tail"]["hits@10"], abs=1e-4)
    cli.main(["evaluate", str(model_file), str(folder / "test.txt"), "--format", "json"])
    assert json.loads(capsys.readouterr().out)["mrr"] == pytest.approx(expected["mrr"])


def test_evaluate_counts_unseen_labels_as_misses(model_file, tmp_path, capsys):
    test = tmp_path / "t.tsv"
    test.write_text("e1\tr0_symmetric\tnewcomer\n")
    assert cli.main(["evaluate", str(model_file), str(test)]) == 0
    out, err = capsys.readouterr()
    assert "1 with unseen labels count as misses" in out and err == ""
    n_entities = len(KGEmbedder.load(model_file).entities_)
    assert float(out.splitlines()[2].split()[1]) == pytest.approx(1 / n_entities, abs=1e-4)  # the worst rank


def test_list_names_every_registered_component(capsys):
    from kgestimator.estimator import LOSSES
    from kgestimator.models import MODELS
    from kgestimator.samplers import SAMPLERS

    assert cli.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    entries = {line.split()[0] for line in lines if line.startswith("  ")}
    assert entries == set(MODELS) | set(SAMPLERS) | set(LOSSES)
    assert all(len(line.split()) > 1 for line in lines if line.startswith("  "))  # each has a description


def test_list_reads_the_same_entries_as_the_imported_registries(monkeypatch, capsys):
    from kgestimator import _catalog

    for _, module, name in _catalog.SECTIONS:
        read, imported = _catalog.registry(module, name), _catalog.imported_registry(module, name)
        assert list(read.items()) == list(imported.items())  # same keys, order, classes, summaries
    # where the source cannot be read, list falls back to the imported registries
    assert cli.main(["list"]) == 0
    expected = capsys.readouterr().out
    monkeypatch.setattr(_catalog, "_module_file", lambda module: Path("/nonexistent") / module)
    assert cli.main(["list"]) == 0
    assert capsys.readouterr().out == expected


def test_list_names_each_model_class_once(capsys):
    assert cli.main(["list"]) == 0
    out = capsys.readouterr().out
    assert "  nbfnet" in out and "NBFNet: NBFNet:" not in out
    assert re.search(r"^  transe\s+TransE: ", out, re.M)


@pytest.mark.parametrize("argv", [["--help"], ["list"], ["demo", "--help"], ["--version"]])
def test_help_and_list_do_not_import_torch(argv):
    # torch and scikit-learn take seconds to import; these commands need neither
    code = ("import sys\nfrom kgestimator import cli\ntry:\n    cli.main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'sklearn', 'scipy') if m in sys.modules))" % (argv,))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_closed_pipe_is_not_an_error(monkeypatch, capsys):
    class ClosedPipe:
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

        def flush(self):
            pass

    monkeypatch.setattr("sys.stdout", ClosedPipe())
    with pytest.raises(SystemExit) as info:
        cli.main(["list"])
    assert info.value.code == 141
    assert capsys.readouterr().err == ""


def test_lazy_package_still_reaches_names_and_submodules():
    # the package imports its modules on first use; what an eager import gave must still work
    code = ("import sys, kgestimator\nassert 'torch' not in sys.modules\n"
            "assert 'transe' in kgestimator.models.MODELS and kgestimator.KGEmbedder.__name__ == 'KGEmbedder'\n"
            "assert set(kgestimator.__all__) <= set(dir(kgestimator))\n"
            "try:\n    kgestimator.nosuch\nexcept AttributeError:\n    print('ok')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"

"""The parameter table: one entry per parameter, read alike by the docstring, the validation and the CLI."""

import ast
import inspect

import numpy as np
import pytest
from sklearn.utils._param_validation import InvalidParameterError
from sklearn.utils.estimator_checks import check_param_validation

from kgestimator import KGEmbedder, cli
from kgestimator._cli_params import plain
from kgestimator.callbacks import Callback
from kgestimator._parameters import MARKER, PARAMETERS

NAMES = [n for n in inspect.signature(KGEmbedder.__init__).parameters if n != "self"]
DEFAULTS = {n: p.default for n, p in inspect.signature(KGEmbedder.__init__).parameters.items() if n != "self"}


def test_every_parameter_has_exactly_one_entry_and_the_other_way_round():
    assert list(PARAMETERS) == NAMES  # same names, same order (dict keys cannot repeat)
    assert KGEmbedder._parameter_table is PARAMETERS
    assert list(KGEmbedder._parameter_constraints) == NAMES
    assert set(KGEmbedder().get_params(deep=False)) == set(NAMES)


def test_the_docstring_parameters_are_the_table():
    docscrape = pytest.importorskip("numpydoc.docscrape")
    assert MARKER not in KGEmbedder.__doc__
    section = docscrape.NumpyDocString(KGEmbedder.__doc__)["Parameters"]
    assert [p.name for p in section] == NAMES
    for p in section:
        entry = PARAMETERS[p.name]
        assert p.type == f"{entry.type}, default={DEFAULTS[p.name]!r}"  # the default from the signature
        assert " ".join(" ".join(p.desc).split()) == entry.text
    # the sections after Parameters are still there
    assert docscrape.NumpyDocString(KGEmbedder.__doc__)["Attributes"]


def test_the_choices_of_a_type_line_are_the_ones_accepted():
    for name, entry in PARAMETERS.items():
        if entry.type.startswith("{"):
            listed = ast.literal_eval(entry.type)
            assert all(entry.accepts(value) for value in listed), name
            strings = {o for c in entry.constraints if hasattr(c, "options") for o in c.options}
            assert strings <= listed, (name, strings - listed)


def test_every_default_satisfies_its_constraints():
    assert [n for n in NAMES if not PARAMETERS[n].accepts(DEFAULTS[n])] == []


@pytest.mark.parametrize("name, good, bad", [
    ("alpha", ["auto", 0.0, 3, np.float32(0.5)], ["Auto", -1e-9, float("inf"), float("nan"), True]),
    ("mutation_ratio", ["auto", 0.0, 1.0], [1.01, None]),
    ("dim", [None, 1, np.int64(64)], [0, 2.0, True, "8"]),
    ("batch_size", [None, 5], [0]),
    ("n_negatives", [None, 5], [-1]),
    ("model_params", [None, {}, {"init_scale": 1e-3}, '{"init_scale": 1e-3}'], ["[1]", "{x", 3, [1]]),
    ("lr_scheduler_params", [None, '{"factor": 0.5}'], ['"factor"', "null"]),
    ("dropout", [0.0, 0.5, (0.1, 0.2), [0.0, 0.3]], [1.0, (0.1,), (0.1, 1.0), "0.1"]),
    ("emu", [False, True, np.True_, "mixup", "ls_only"], [1, 0, "true", None]),
    ("device", ["auto", "cpu", "cuda", "cuda:1", "mps"], ["meta", "xpu", "tpu:9", "cuda:x", None, 0]),
    ("random_state", [None, 0, 2**32 - 1, np.random.RandomState(0)], [-1, 2**32, 1.5, True]),
    ("checkpoint_dir", [None, "runs", __import__("pathlib").Path("runs")], [3]),
    ("callbacks", [None, [], [Callback()], (Callback(),)],
     [[object()], [type("C", (), {"on_fit_end": lambda s, e: None})], Callback(), "x"]),
])
def test_constraints_accept_and_refuse(name, good, bad):
    entry = PARAMETERS[name]
    assert [v for v in good if not entry.accepts(v)] == []
    assert [v for v in bad if entry.accepts(v)] == []


def test_a_bad_value_is_scikit_learns_error_naming_parameter_and_value(kg):
    with pytest.raises(InvalidParameterError, match=r"The 'n_epochs' parameter of KGEmbedder must be an int in "
                                                    r"the range \[1, inf\)\. Got 0 instead\.") as info:
        KGEmbedder(n_epochs=0).fit(kg.train)
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_scikit_learns_own_parameter_check_passes():
    # a constraint for every parameter; a value of no valid type, or just outside an interval or the
    # options, raises InvalidParameterError from fit (before X is even looked at)
    check_param_validation("KGEmbedder", KGEmbedder())


def test_the_cli_help_is_the_tables_first_sentence():
    parser = cli.build_parser(["train"])
    train = parser._subparsers._group_actions[0].choices["train"]
    helps = {action.dest[len("param_"):]: action.help for action in train._actions
             if action.dest.startswith("param_")}
    assert list(helps) == [n for n in NAMES if PARAMETERS[n].flag is not None]
    for name, text in helps.items():
        entry = PARAMETERS[name]
        assert text == f"{plain(entry.summary)} [{entry.type}, default={DEFAULTS[name]!r}]".replace("%", "%%")


def test_plain_reads_inline_markup():
    assert plain("``'a'`` or :mod:`kgestimator.samplers` and :class:`~x.Y`.") == "'a' or kgestimator.samplers and ~x.Y."
    assert plain(":func:`f` first") == "f first"
    assert plain("no markup: a:b") == "no markup: a:b"

"""Property-based tests of the command line: any argv ends in exit status 0, or 2
with one line on stderr, never a traceback or another exception.

``kgestimator.cli.main(argv)`` runs in-process. Training is made tiny (a small
generated graph, two epochs at most) so that the argv that parse can run for real.
"""

import contextlib
import io
import os
import re

import pytest
from hypothesis import event, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import kgestimator.datasets
import kgestimator.estimator
from conftest import fuzz_examples
from kgestimator import cli

OPTIONS = ["--seed", "--models", "--epochs", "--fast", "--device", "--threads"]
VALUES = ["distmult", "transe,complex", "DistMult, hake", ",", "", "rotate,rotate", "nosuch", "cpu", "auto",
          "cuda", "cuda:0", "meta", "xpu", "cpu:0", "0", "1", "2", "-1", "1.5", "nan", " 1", "1e3", "0x10",
          str(2**32), str(2**70), str(os.cpu_count() + 1), "10000000"]


class _Quick(kgestimator.estimator.KGEmbedder):
    """The demo's estimator, capped at two epochs: --epochs 10**9 is a long run, not a bug."""

    def fit(self, X, y=None, valid=None):
        self.n_epochs = min(self.n_epochs, 2)
        return super().fit(X, y, valid)


@pytest.fixture(scope="module", autouse=True)
def tiny_demo():
    make_kg = kgestimator.datasets.make_kg
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kgestimator.datasets, "make_kg",
                   lambda random_state: make_kg(n_entities=30, n_relations=8, n_triples=150,
                                                random_state=random_state))
        mp.setattr(kgestimator.estimator, "KGEmbedder", _Quick)
        small = dict(dim=2, n_negatives=2, batch_size=64)
        mp.setattr(cli, "DEMO_CONFIGS", {name: {**cfg, **small} for name, cfg in cli.DEMO_CONFIGS.items()})
        mp.setattr(cli, "FAST_OVERRIDES", {**cli.FAST_OVERRIDES, **small})
        yield


def run(argv):
    """``(status, stdout, stderr)`` of ``main(argv)``; fails on any other exception."""
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = cli.main(argv)
    except SystemExit as exc:
        status = exc.code
    except BaseException as exc:  # noqa: BLE001 - anything else escaping main() is the bug
        pytest.fail(f"main({argv!r}) raised {type(exc).__name__}: {exc}")
    return status, out.getvalue(), err.getvalue()


def check(argv):
    status, out, err = run(argv)
    assert status in (0, 2), (argv, status)
    assert "Traceback" not in out + err
    if status == 2:
        assert out == "" and err.startswith("kgestimator") and len(err.strip().splitlines()) == 1, (argv, err)
    elif "--help" not in argv and "-h" not in argv and "--version" not in argv:
        assert err == "", (argv, err)
    return status, out


#: any token soup
argv_soup = st.lists(st.sampled_from(["demo", "--help", "-h", "--version", "--no-such", "-"] + OPTIONS + VALUES)
                     | st.text(max_size=6), max_size=8)


@st.composite
def demo_argv(draw):
    """``demo`` with options that mostly parse, so the demo runs for real."""
    argv = ["demo"]
    for option in draw(st.lists(st.sampled_from(OPTIONS), max_size=4, unique=True)):
        argv.append(option)
        if option == "--fast":
            continue
        good = {"--seed": st.integers(0, 2**32 + 5).map(str),
                "--models": st.lists(st.sampled_from(list(cli.DEMO_CONFIGS)), min_size=1, max_size=2).map(",".join),
                "--epochs": st.integers(1, 10**9).map(str),
                "--device": st.sampled_from(["cpu", "auto", "cpu:0"]),
                "--threads": st.integers(1, os.cpu_count()).map(str)}[option]
        argv.append(draw(st.one_of(good, good, good, good, st.sampled_from(VALUES))))
    return argv


@hsettings(max_examples=fuzz_examples(150))
@given(argv=argv_soup)
def test_fuzz_cli_any_argv(argv):
    event(f"exit status {check(argv)[0]}")


@hsettings(max_examples=fuzz_examples(40))
@given(argv=demo_argv())
def test_fuzz_cli_demo_runs(argv):
    status, out = check(argv)
    event(f"exit status {status}")
    if status == 0:
        # the run used what was asked for
        args = dict(zip(argv[1::2], argv[2::2])) if "--fast" not in argv else {}
        if "--epochs" in args:
            assert f"n_epochs={int(args['--epochs'])}" in out
        rows = [line for line in out.splitlines() if re.match(r"^\w+\s+uniform", line)]
        assert rows and all(re.search(r"\s0\.\d{3}\s", row) for row in rows)


@pytest.mark.parametrize("argv", [
    ["demo", "--threads", "10000000"],
    ["demo", "--device", "meta"],
    ["demo", "--device", "cuda:7"],
    ["demo", "--seed", str(2**40)],
])
def test_arguments_found_by_fuzzing_exit_2(argv):
    status, _ = check(argv)
    assert status == 2

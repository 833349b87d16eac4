"""Progress reporting: a tqdm bar with ``verbose``, the ``kgestimator`` logger otherwise."""

import logging

from conftest import FAST

from kgestimator import KGEmbedder


def test_logger_gets_one_record_per_epoch(kg, caplog, capsys):
    with caplog.at_level(logging.INFO, logger="kgestimator"):
        KGEmbedder(**{**FAST, "n_epochs": 3}, eval_every=2, random_state=0).fit(kg.train, valid=kg.valid)
    messages = [r.getMessage() for r in caplog.records if r.name == "kgestimator"]
    assert messages[0].startswith(f"fit distmult: {len(kg.train)} triples")
    epochs = [m for m in messages if " epoch " in m]
    assert [m.split(" epoch ")[1].split(":")[0] for m in epochs] == ["1/3", "2/3", "3/3"]
    # the validation MRR appears on the epochs where it was computed (every 2, and the last)
    assert ["valid_mrr=" in m for m in epochs] == [False, True, True]
    assert capsys.readouterr().err == ""  # no bar, and nothing printed without a logging set-up


def test_bar_shows_loss_and_the_last_validation_mrr(kg, capsys, caplog):
    with caplog.at_level(logging.INFO, logger="kgestimator"):
        KGEmbedder(**{**FAST, "n_epochs": 2}, verbose=1, random_state=0).fit(kg.train, valid=kg.valid)
    err = capsys.readouterr().err
    assert "distmult" in err and "2/2" in err and "loss=" in err and "valid_mrr=" in err
    assert not [r for r in caplog.records if " epoch " in r.getMessage()]  # the bar replaces the records


def test_bar_keeps_the_last_mrr_between_evaluations(monkeypatch):
    import tqdm.auto

    from kgestimator._progress import epoch_progress

    postfixes = []

    class Bar:
        def __init__(self, **kwargs):
            pass

        def update(self, n):
            pass

        def set_postfix(self, fields):
            postfixes.append(dict(fields))

        def close(self):
            pass

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    with epoch_progress("m", verbose=1, total=3) as progress:
        progress({"epoch": 1, "loss": 2.0, "seconds": 0.1})
        progress({"epoch": 2, "loss": 1.5, "seconds": 0.1, "valid_mrr": 0.25})
        progress({"epoch": 3, "loss": 1.25, "seconds": 0.1})
    assert postfixes == [{"loss": 2.0}, {"loss": 1.5, "valid_mrr": 0.25}, {"loss": 1.25, "valid_mrr": 0.25}]


def test_library_logging_is_silent_by_default(kg, capsys):
    KGEmbedder(**{**FAST, "n_epochs": 1}, random_state=0).fit(kg.train)
    assert capsys.readouterr() == ("", "")

"""benchmarks/emu_defaults.py: which cells a command trains and which it shares with an identical setting."""

import json
import os
import sys
from types import SimpleNamespace

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import emu_defaults  # noqa: E402


def _run(monkeypatch, tmp_path, model, settings, trained):
    def fake_cell(dataset, model, setting, seed, data, config="default"):
        trained.append(setting)
        return {"dataset": dataset, "model": model, "setting": setting, "seed": seed, "config": config,
                "test": {"mrr": 0.5}, "fit_seconds": 1.0}

    monkeypatch.setattr(emu_defaults, "RESULTS", str(tmp_path))
    monkeypatch.setattr(emu_defaults, "run_cell", fake_cell)
    monkeypatch.setattr(emu_defaults, "load", lambda name: ("train", "valid", "test"))
    emu_defaults.run(SimpleNamespace(datasets=["g"], models=[model], settings=settings, seeds=[0],
                                     config="default"))


def _cell(tmp_path, model, setting):
    return json.load(open(os.path.join(tmp_path, f"g__{model}__{setting}__seed0.json")))


def test_auto_trains_even_when_its_identical_setting_is_not_in_the_command(monkeypatch, tmp_path):
    # ComplEx's 'auto' is the scripts' setting; `--settings off,auto` once skipped it, waiting on 'scripts'
    trained = []
    _run(monkeypatch, tmp_path, "complex", ["off", "auto"], trained)
    assert trained == ["off", "auto"]
    assert "same_as" not in _cell(tmp_path, "complex", "auto")
    # a later command asking for the identical setting shares the cell instead of training it again
    _run(monkeypatch, tmp_path, "complex", ["scripts"], trained)
    assert trained == ["off", "auto"]
    assert _cell(tmp_path, "complex", "scripts")["same_as"] == "auto"


def test_distinct_settings_each_train(monkeypatch, tmp_path):
    # TransE's 'auto' (alpha 0.25) is not the scripts' setting (alpha 0.11), but Table 5's is
    trained = []
    _run(monkeypatch, tmp_path, "transe", ["table5", "scripts", "auto"], trained)
    assert trained == ["table5", "auto"]
    assert _cell(tmp_path, "transe", "scripts")["same_as"] == "table5"

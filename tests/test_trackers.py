"""Trackers (kgestimator.trackers): what each writes, read back with the tracker's own reader."""

import csv
import warnings

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError

from kgestimator import KGEmbedder, cli
from kgestimator.trackers import CSVTracker, MLflowTracker, TensorBoardTracker

from conftest import FAST

PARAMS = dict(FAST, n_epochs=4, eval_every=2, random_state=0)


def _fit(kg, tracker, **extra):
    est = KGEmbedder(**PARAMS, callbacks=[tracker], **extra).fit(kg.train, valid=kg.valid)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # test triples with entities unseen in training
        metrics = est.evaluate(kg.test)
    tracker.log_test_metrics(metrics)
    return est, metrics


def _check_model_file(path, est, kg):
    loaded = KGEmbedder.load(path)
    np.testing.assert_allclose(loaded.score_samples(kg.train[:5]), est.score_samples(kg.train[:5]), rtol=1e-6)


def _epochs(est, key):
    return {r["epoch"]: r[key] for r in est.history_ if key in r}


# ---------------------------------------------------------------------- CSV
def test_csv_tracker(kg, tmp_path):
    tracker = CSVTracker(tmp_path / "runs", run_name="first")
    with pytest.raises(NotFittedError):
        tracker.log_test_metrics({"mrr": 0.5})
    est, metrics = _fit(kg, tracker)
    assert tracker.path_ == tmp_path / "runs" / "first" / "metrics.csv"
    with open(tracker.path_, newline="") as f:
        rows = list(csv.DictReader(f))
    params = {r["name"]: r["value"] for r in rows if r["kind"] == "param"}
    assert params["model"] == "distmult" and params["dim"] == "16" and "callbacks" not in params
    metric = {}
    for r in rows:
        if r["kind"] == "metric":
            metric.setdefault(r["name"], {})[int(r["step"])] = float(r["value"])
    assert metric["loss"] == _epochs(est, "loss")  # exact: written with repr
    assert metric["valid_mrr"] == _epochs(est, "valid_mrr") and sorted(metric["valid_mrr"]) == [2, 4]
    assert metric["test_mrr"] == {4: metrics["mrr"]}
    assert metric["test_hits_at_10"] == {4: metrics["hits@10"]}
    assert metric["test_head_mrr"] == {4: metrics["head"]["mrr"]}
    _check_model_file(tmp_path / "runs" / "first" / "model.kge", est, kg)


# ---------------------------------------------------------------------- TensorBoard
def test_tensorboard_tracker_event_file_reads_back(kg, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tracker = TensorBoardTracker(tmp_path / "tb", log_model=True)
    est, metrics = _fit(kg, tracker)
    assert tracker.run_dir_.parent == tmp_path / "tb" and tracker.run_dir_.name.startswith("distmult-")
    events = EventAccumulator(str(tracker.run_dir_))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"loss", "seconds", "valid_mrr", "test_mrr"} <= set(scalars)

    def read(tag):
        return {e.step: e.value for e in events.Scalars(tag)}

    loss = read("loss")
    assert sorted(loss) == [1, 2, 3, 4]
    np.testing.assert_allclose([loss[e] for e in range(1, 5)], [r["loss"] for r in est.history_], rtol=1e-6)
    valid = read("valid_mrr")
    assert sorted(valid) == [2, 4]
    assert valid[4] == pytest.approx(_epochs(est, "valid_mrr")[4], rel=1e-6)
    assert read("test_mrr") == {4: pytest.approx(metrics["mrr"], rel=1e-6)}
    (params,) = events.Tensors("params/text_summary")
    assert b"| model | distmult |" in params.tensor_proto.string_val[0]
    _check_model_file(tracker.run_dir_ / "model.kge", est, kg)


# ---------------------------------------------------------------------- MLflow
@pytest.fixture(autouse=True)
def no_mlflow_telemetry(monkeypatch):
    # tests send nothing anywhere: MLflow 3 reports usage over the network unless told not to
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    # MLflow 3.7+ keeps the folder store for those who opt in: the local, server-less store
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    return (tmp_path / "mlruns").as_uri()


def test_mlflow_tracker_leaves_a_run_with_metrics(kg, mlflow_uri):
    from mlflow.tracking import MlflowClient

    tracker = MLflowTracker(mlflow_uri, experiment_name="kg-tests", run_name="run-a", tags={"purpose": "test"})
    est, metrics = _fit(kg, tracker)
    client = MlflowClient(mlflow_uri)
    run = client.get_run(tracker.run_id_)
    assert run.info.status == "FINISHED" and run.info.run_name == "run-a"
    assert run.data.tags["purpose"] == "test"
    assert client.get_experiment(run.info.experiment_id).name == "kg-tests"
    assert run.data.params["model"] == "distmult" and run.data.params["n_epochs"] == "4"

    def history(key):
        return {m.step: m.value for m in client.get_metric_history(tracker.run_id_, key)}

    assert history("loss") == pytest.approx(_epochs(est, "loss"))
    assert history("valid_mrr") == pytest.approx(_epochs(est, "valid_mrr"))
    assert history("test_mrr") == {4: pytest.approx(metrics["mrr"])}
    assert history("test_hits_at_1") == {4: pytest.approx(metrics["hits@1"])}
    artifacts = [a.path for a in client.list_artifacts(tracker.run_id_)]
    assert artifacts == ["model.kge"]
    local = client.download_artifacts(tracker.run_id_, "model.kge", str(kg_dir(mlflow_uri)))
    _check_model_file(local, est, kg)


@pytest.mark.slow  # MLflow builds its database schema: about 15 s
def test_mlflow_tracker_with_a_local_sqlite_store(kg, tmp_path, monkeypatch):
    """The store MLflow recommends, as the mlflow extra (with SQLAlchemy and Alembic) opens it."""
    pytest.importorskip("mlflow")
    pytest.importorskip("sqlalchemy")
    pytest.importorskip("alembic")
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = MLflowTracker(uri, artifact_location=(tmp_path / "artifacts").as_uri())
    est, metrics = _fit(kg, tracker)
    client = MlflowClient(uri)
    assert client.get_run(tracker.run_id_).info.status == "FINISHED"
    assert {m.step: m.value for m in client.get_metric_history(tracker.run_id_, "loss")} == pytest.approx(
        _epochs(est, "loss"))
    assert client.get_run(tracker.run_id_).data.metrics["test_mrr"] == pytest.approx(metrics["mrr"])
    assert (tmp_path / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()


def kg_dir(uri):
    from pathlib import Path
    from urllib.parse import urlparse

    path = Path(urlparse(uri).path).parent / "downloaded"
    path.mkdir(exist_ok=True)
    return path


def test_mlflow_run_of_a_failed_fit_is_marked_failed(kg, mlflow_uri):
    from mlflow.tracking import MlflowClient

    class Boom:
        def on_epoch_end(self, est, record):
            raise RuntimeError("boom")

    tracker = MLflowTracker(mlflow_uri, log_model=False)
    with pytest.raises(RuntimeError, match="boom"):
        KGEmbedder(**PARAMS, callbacks=[tracker, Boom()]).fit(kg.train)
    assert MlflowClient(mlflow_uri).get_run(tracker.run_id_).info.status == "FAILED"


def test_each_clone_logs_its_own_run(kg, mlflow_uri):
    from sklearn.base import clone

    est = KGEmbedder(**dict(PARAMS, n_epochs=1), callbacks=[MLflowTracker(mlflow_uri, log_model=False)])
    a, b = clone(est).fit(kg.train), clone(est).fit(kg.train)
    assert a.callbacks[0].run_id_ != b.callbacks[0].run_id_
    assert not hasattr(est.callbacks[0], "run_id_")


def test_missing_package_is_named(kg, monkeypatch, tmp_path):
    import builtins

    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    est = KGEmbedder(**PARAMS, callbacks=[TensorBoardTracker(tmp_path)])
    with pytest.raises(ImportError, match=r"pip install 'kgestimator\[tensorboard\]'"):
        est.fit(kg.train)
    assert not hasattr(est, "model_")


# ---------------------------------------------------------------------- CLI
def _write_splits(kg, folder):
    folder.mkdir()
    for split in ("train", "valid", "test"):
        (folder / f"{split}.txt").write_text("".join("\t".join(r) + "\n" for r in kg[split].tolist()))
    return folder


SMALL = ["--dim", "8", "--n-negatives", "8", "--batch-size", "256", "--n-epochs", "2", "--random-state", "0",
         "--threads", "1", "--quiet"]


def test_cli_tracker_mlflow_and_csv(kg, tmp_path, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    data = _write_splits(kg, tmp_path / "data")
    argv = ["train", str(data), "-o", str(tmp_path / "m.kge"), "--tracker", "mlflow", "--tracker", "csv",
            "--tracking-uri", mlflow_uri, "--log-dir", str(tmp_path / "csv")] + SMALL
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    run_id = out.split("MLflowTracker: MLflow run ")[1].split()[0]
    client = MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert sorted(m.step for m in client.get_metric_history(run_id, "loss")) == [1, 2]
    test_line = next(line for line in out.splitlines() if line.startswith("test "))
    assert run.data.metrics["test_mrr"] == pytest.approx(float(test_line.split()[1]), abs=5e-5)
    assert "valid_final_mrr" in run.data.metrics
    (run_dir,) = (tmp_path / "csv").iterdir()
    assert (run_dir / "metrics.csv").read_text().count("metric,") >= 2 + 1  # 2 losses, test metrics


def test_cli_tracker_without_its_package(kg, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(cli.TRACKER_PACKAGES, "mlflow", "no_such_package_kgestimator")
    data = _write_splits(kg, tmp_path / "data")
    with pytest.raises(SystemExit) as info:
        cli.main(["train", str(data), "-o", str(tmp_path / "m.kge"), "--tracker", "mlflow"] + SMALL)
    assert info.value.code == 2
    assert "--tracker mlflow needs no_such_package_kgestimator" in capsys.readouterr().err
    assert not (tmp_path / "m.kge").exists()

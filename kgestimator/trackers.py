"""Experiment trackers: callbacks (:mod:`kgestimator.callbacks`) that record a fit.

Each tracker logs, for every fit it is given to (``KGEmbedder(callbacks=[...])``):

- the estimator's parameters, at the start;
- per epoch, the training ``loss`` and the epoch's ``seconds`` (step = epoch),
  and ``valid_mrr`` where it was evaluated;
- the model file written by :meth:`KGEmbedder.save <kgestimator.KGEmbedder.save>`
  (``log_model=True``): an MLflow artifact, or ``model.kge`` in the run's
  folder for TensorBoard and CSV;
- final test metrics, by :meth:`log_test_metrics` after the fit
  (``tracker.log_test_metrics(est.evaluate(test))``).

A fit that fails after it began marks its MLflow run ``FAILED``. Every fit gets
a run of its own, named ``run_name`` or ``<model>-<date>-<time>-<random>``; in a
search each clone of the estimator has its own tracker (a fresh copy built from
the same parameters), so each candidate fit is a run.

The packages are optional: ``mlflow`` (the ``mlflow`` extra; ``mlflow-skinny``
is enough) and ``tensorboard`` (the ``tensorboard`` extra, read through
``torch.utils.tensorboard``); the CSV tracker needs nothing.
"""

import csv
import math
import numbers
import tempfile
import time
import uuid
import warnings
from pathlib import Path

from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError

from .callbacks import Callback

__all__ = ["MLflowTracker", "TensorBoardTracker", "CSVTracker", "TRACKERS"]

_PARAM_CHARS = 500  # MLflow's limit is 6,000; a longer repr says nothing more to a reader


def _param_text(value):
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= _PARAM_CHARS else text[:_PARAM_CHARS - 3] + "..."


def _numeric(mapping, skip=()):
    """The finite real entries of ``mapping`` as floats, bools and the keys in ``skip`` left out."""
    out = {}
    for key, value in mapping.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, numbers.Real):
            continue
        if math.isfinite(float(value)):
            out[key] = float(value)
    return out


def _flat(metrics, prefix=""):
    """``{'head': {'hits@1': x}}`` -> ``{'head_hits_at_1': x}``: MLflow refuses '@' in names."""
    out = {}
    for key, value in metrics.items():
        name = prefix + str(key).replace("@", "_at_")
        out.update(_flat(value, name + "_") if isinstance(value, dict) else {name: value})
    return out


class _Tracker(BaseEstimator, Callback):
    """What the trackers share; a subclass implements ``_open``, ``_log_params``, ``_log``,
    ``_log_file`` and ``_close``. BaseEstimator gives ``get_params``, hence clones built
    afresh from the parameters, never sharing a run."""

    def _run_name(self, est):
        if self.run_name is not None:
            return str(self.run_name)
        return f"{est.model}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"

    def on_fit_begin(self, est):
        self._last_epoch = 0
        self._open(est, self._run_name(est))
        params = est.get_params(deep=False)
        params.pop("callbacks", None)
        self._log_params({name: _param_text(value) for name, value in params.items()})

    def on_epoch_end(self, est, record):
        self._last_epoch = record["epoch"]
        self._log(_numeric(record, skip=("epoch", "step", "valid_mrr")), record["epoch"])

    def on_validation(self, est, record):
        self._log(_numeric(record, skip=("epoch", "step", "loss", "seconds")), record["epoch"])

    def on_fit_end(self, est):
        if est.history_:
            self._last_epoch = est.history_[-1]["epoch"]
        try:
            if self.log_model:
                with tempfile.TemporaryDirectory() as tmp:
                    path = Path(tmp) / "model.kge"
                    try:
                        est.save(path)
                    except (ValueError, TypeError) as exc:  # e.g. a custom sampler, which save refuses
                        warnings.warn(f"{type(self).__name__}: the model file is not logged: {exc}",
                                      UserWarning, stacklevel=2)
                    else:
                        self._log_file(path)
        finally:
            self._close("FINISHED")

    def on_exception(self, est, error):
        if self._is_open():
            self._close("FAILED")

    def log_test_metrics(self, metrics, prefix="test_"):
        """Log final metrics of the last fit, e.g. ``est.evaluate(test)``, at its last epoch.

        Parameters
        ----------
        metrics : dict
            Metric name -> value, as :meth:`KGEmbedder.evaluate` returns them:
            nested dicts are flattened (``head`` -> ``head_mrr``), ``@`` is
            written ``_at_`` (``hits@10`` -> ``hits_at_10``, as MLflow wants),
            and entries that are not finite numbers are left out.
        prefix : str, default="test_"
            Put before each name (``mrr`` -> ``test_mrr``).

        Returns
        -------
        self
        """
        if not hasattr(self, "_last_epoch") or self._is_open():
            raise NotFittedError(f"{type(self).__name__}.log_test_metrics logs into the run of a finished "
                                 "fit; call it after fit")
        values = {f"{prefix}{name}": value for name, value in _numeric(_flat(metrics)).items()}
        self._log_final(values, self._last_epoch)
        return self

    def __getstate__(self):
        # an open writer, file or client does not pickle, and a copy must not share it
        state = super().__getstate__()
        for name in ("_writer", "_file", "_mlflow"):
            state.pop(name, None)
        return state


class MLflowTracker(_Tracker):
    """Log each fit as an MLflow run.

    Parameters
    ----------
    tracking_uri : str, default=None
        Where the runs go, e.g. ``"sqlite:///mlflow.db"``, a server's
        ``"http://..."``, or a folder's ``"file:///..."`` (MLflow 3.7 and later
        refuse a folder store unless ``MLFLOW_ALLOW_FILE_STORE=true``). None:
        MLflow's default (``MLFLOW_TRACKING_URI``).
    experiment_name : str, default="kgestimator"
        Experiment of the runs, created when missing.
    run_name : str, default=None
        Name of each run; None: ``<model>-<date>-<time>-<random>``.
    tags : dict, default=None
        Tags of each run.
    artifact_location : str, default=None
        Artifact root of the experiment when this tracker creates it (None:
        MLflow's default, which for a database store is ``./mlruns`` in the
        working directory).
    log_model : bool, default=True
        Log the model file (``model.kge``, :meth:`KGEmbedder.save`) as an artifact.

    Attributes
    ----------
    run_id_ : str
        The MLflow run of the last fit.
    experiment_id_ : str

    Examples
    --------
    >>> tracker = MLflowTracker("sqlite:///mlflow.db")  # doctest: +SKIP
    >>> est = KGEmbedder(callbacks=[tracker]).fit(data.train, valid=data.valid)  # doctest: +SKIP
    >>> tracker.log_test_metrics(est.evaluate(data.test))  # doctest: +SKIP
    """

    def __init__(self, tracking_uri=None, experiment_name="kgestimator", run_name=None, tags=None,
                 artifact_location=None, log_model=True):
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self.run_name = run_name
        self.tags = tags
        self.artifact_location = artifact_location
        self.log_model = log_model

    def _new_client(self):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise ImportError("MLflowTracker needs mlflow: pip install 'kgestimator[mlflow]'") from None
        return MlflowClient(self.tracking_uri)

    def _open(self, est, name):
        client = self._new_client()
        experiment = client.get_experiment_by_name(self.experiment_name)
        self.experiment_id_ = (experiment.experiment_id if experiment is not None else
                               client.create_experiment(self.experiment_name,
                                                        artifact_location=self.artifact_location))
        tags = {str(k): str(v) for k, v in (self.tags or {}).items()}
        self.run_id_ = client.create_run(self.experiment_id_, run_name=name, tags=tags).info.run_id
        self._mlflow = client

    def _is_open(self):
        return getattr(self, "_mlflow", None) is not None

    def _log_params(self, params):
        from mlflow.entities import Param

        self._mlflow.log_batch(self.run_id_, params=[Param(k, v) for k, v in params.items()])

    def _log(self, values, step, client=None):
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        (client or self._mlflow).log_batch(self.run_id_, metrics=[Metric(k, v, now, step)
                                                                   for k, v in values.items()])

    def _log_file(self, path):
        self._mlflow.log_artifact(self.run_id_, str(path))

    def _close(self, status):
        if self._is_open():
            client, self._mlflow = self._mlflow, None
            client.set_terminated(self.run_id_, status)

    def _log_final(self, values, step):
        self._log(values, step, client=self._new_client())


class _FolderTracker(_Tracker):
    """A tracker writing into ``<folder>/<run name>/``, which it creates."""

    def _open(self, est, name):
        run_dir = Path(self._root()).expanduser() / name
        run_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir_ = run_dir
        self._start()

    def _log_file(self, path):
        (self.run_dir_ / path.name).write_bytes(Path(path).read_bytes())


class TensorBoardTracker(_FolderTracker):
    """Log each fit as TensorBoard scalars (``tensorboard --logdir <log_dir>``).

    Parameters
    ----------
    log_dir : str or path-like, default="runs"
        Folder of the runs; each fit writes into ``<log_dir>/<run name>/``.
    run_name : str, default=None
        Each run's folder name; None: ``<model>-<date>-<time>-<random>``.
    log_model : bool, default=True
        Write the model file (``model.kge``) into the run's folder.

    Attributes
    ----------
    run_dir_ : pathlib.Path
        The folder of the last fit's event file.

    Notes
    -----
    Scalars are named ``loss``, ``seconds``, ``valid_mrr`` and, from
    :meth:`log_test_metrics`, ``test_mrr`` etc.; the parameters are a
    ``params`` text entry (a Markdown table).
    """

    def __init__(self, log_dir="runs", run_name=None, log_model=True):
        self.log_dir = log_dir
        self.run_name = run_name
        self.log_model = log_model

    def _root(self):
        return self.log_dir

    @staticmethod
    def _writer_class():
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ImportError("TensorBoardTracker needs tensorboard: pip install 'kgestimator[tensorboard]'") \
                from None
        return SummaryWriter

    def _start(self):
        self._writer = self._writer_class()(str(self.run_dir_))

    def _is_open(self):
        return getattr(self, "_writer", None) is not None

    def _log_params(self, params):
        rows = "\n".join(f"| {k} | {v.replace('|', '/')} |" for k, v in params.items())
        self._writer.add_text("params", "| parameter | value |\n| --- | --- |\n" + rows, 0)

    def _log(self, values, step, writer=None):
        for name, value in values.items():
            (writer or self._writer).add_scalar(name, value, step)
        (writer or self._writer).flush()

    def _close(self, status):
        if self._is_open():
            writer, self._writer = self._writer, None
            writer.close()

    def _log_final(self, values, step):
        writer = self._writer_class()(str(self.run_dir_))
        try:
            self._log(values, step, writer)
        finally:
            writer.close()


class CSVTracker(_FolderTracker):
    """Log each fit to a CSV file, ``<directory>/<run name>/metrics.csv``.

    The file has the columns ``kind`` (``param`` or ``metric``), ``step`` (the
    epoch; empty for a parameter), ``name`` and ``value``, one row per value,
    written as the fit goes (a crash keeps the finished epochs). For a table of
    epochs: ``df[df.kind == "metric"].pivot(index="step", columns="name", values="value")``.

    Parameters
    ----------
    directory : str or path-like, default="kgestimator-runs"
        Folder of the runs.
    run_name : str, default=None
        Each run's folder name; None: ``<model>-<date>-<time>-<random>``.
    log_model : bool, default=True
        Write the model file (``model.kge``) into the run's folder.

    Attributes
    ----------
    run_dir_ : pathlib.Path
        The folder of the last fit.
    path_ : pathlib.Path
        Its ``metrics.csv``.
    """

    HEADER = ("kind", "step", "name", "value")

    def __init__(self, directory="kgestimator-runs", run_name=None, log_model=True):
        self.directory = directory
        self.run_name = run_name
        self.log_model = log_model

    def _root(self):
        return self.directory

    def _start(self):
        self.path_ = self.run_dir_ / "metrics.csv"
        self._file = open(self.path_, "w", newline="", encoding="utf-8")
        self._rows([self.HEADER])

    def _is_open(self):
        return getattr(self, "_file", None) is not None

    def _rows(self, rows, file=None):
        file = file or self._file
        csv.writer(file).writerows(rows)
        file.flush()

    def _log_params(self, params):
        self._rows([("param", "", k, v) for k, v in params.items()])

    def _log(self, values, step, file=None):
        self._rows([("metric", step, k, repr(v)) for k, v in values.items()], file)

    def _close(self, status):
        if self._is_open():
            file, self._file = self._file, None
            file.close()

    def _log_final(self, values, step):
        with open(self.path_, "a", newline="", encoding="utf-8") as file:
            self._log(values, step, file)


#: ``kgestimator train --tracker NAME`` -> tracker class
TRACKERS = {"mlflow": MLflowTracker, "tensorboard": TensorBoardTracker, "csv": CSVTracker}

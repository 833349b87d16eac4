"""The ``kgestimator`` command (also ``python -m kgestimator``).

Subcommands live in :data:`COMMANDS` (name -> ``(help, add_arguments, run)``), so
a new command is one more entry:

- ``train``: fit a :class:`~kgestimator.KGEmbedder` on a TSV file or a dataset
  folder (every estimator parameter is a flag) and write a model file with the
  safe format of :meth:`~kgestimator.KGEmbedder.save`;
- ``evaluate``: filtered ranking metrics of a model file on test triples;
- ``predict``: the top-k tails, heads or relations of queries given as arguments or in a file,
  or conformal answer sets with a coverage guarantee (``--coverage``);
- ``embed``: the entity (or relation) vectors of a model file as a TSV file, label first;
- ``list``: the models, negative samplers and losses;
- ``demo``: a few models with and without EMU on a generated graph (no download).

Every user error is one line on stderr and exit status 2, with no traceback.
"""

import argparse
import contextlib
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

# the rest of the package (torch, scikit-learn) is imported inside the commands, so that
# `kgestimator --help` and argument errors answer at once
from ._cli_params import add_estimator_arguments, estimator_params

#: per-model demo settings on ``make_kg(random_state=seed)`` (about 4,800 training
#: triples, 300 entities): the library's own defaults (d=100, 256 negatives, batch
#: 1000, Adam at 0.01, 50 epochs), so the demo shows what ``KGEmbedder(model=...,
#: emu=True)`` gives, at seconds to a minute a fit on one CPU core. The smaller
#: models the demo used before (d=32-64, 32-64 negatives) were too small for this
#: graph: every EMU setting lost there (BENCHMARKS.md §8). EMU parameters stay at
#: ``'auto'`` (EMU_DEFAULTS).
DEMO_CONFIGS = {name: dict(dim=100, n_negatives=256, batch_size=1000, learning_rate=0.01, n_epochs=50)
                for name in ("distmult", "transe", "complex", "rotate", "hake")}
#: ``--fast``: a smoke run (seconds in all), not a meaningful comparison
FAST_OVERRIDES = dict(dim=16, n_negatives=16, learning_rate=0.05, n_epochs=5)
DEFAULT_MODELS = "distmult,transe"

EMU_LINE = (
    "EMU (Embedding MUtation, Takamoto et al., TMLR 2025) copies a random fraction "
    "(mutation_ratio) of each negative's coordinates from the positive, giving hard "
    "negatives close to it; a second cross-entropy term with Unbounded Label Smoothing "
    "(label beta) keeps them a soft margin log(1/beta) below the positive, and alpha "
    "weighs the usual loss on plain negatives."
)


class CommandError(Exception):
    """A user error: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr and exit status 2."""

    def error(self, message):
        raise CommandError(f"{self.prog}: error: {message}")


# ---------------------------------------------------------------------- helpers
def _int_at_least(low, what):
    """An argparse type: an int >= ``low``."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < low:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_nonnegative_int = _int_at_least(0, "non-negative")


def _thread_count(text):
    """An argparse type: threads in [1, CPU count]; torch crashes on huge counts."""
    value = _positive_int(text)
    limit = os.cpu_count() or 1
    if value > limit:
        raise argparse.ArgumentTypeError(f"expected at most {limit} (the number of CPUs), got {text!r}")
    return value


def _model_list(text):
    names = [name.strip().lower() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("expected a comma-separated list of models, got nothing")
    unknown = [name for name in names if name not in DEMO_CONFIGS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown model(s) {', '.join(map(repr, unknown))}; choose from {', '.join(DEMO_CONFIGS)}")
    return list(dict.fromkeys(names))  # drop repeats, keep order


def _format_table(header, rows):
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(header, widths)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(lines)


def _error(args, message):
    return CommandError(f"kgestimator {args.command}: error: {message}")


@contextlib.contextmanager
def _torch_session(args, device, threads):
    """Check that ``device`` exists and run with ``threads`` torch threads (None: unchanged)."""
    import torch

    from ._utils import resolve_device

    try:
        resolve_device(device)
    except ValueError as exc:
        raise _error(args, f"--device {device}: {exc}") from None
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)  # main() may run inside a larger program


@contextlib.contextmanager
def _log_to_stderr(enabled):
    """Show the ``kgestimator`` logger's INFO records (one per epoch) on stderr."""
    logger = logging.getLogger("kgestimator")
    if not enabled:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    previous = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)


def _threads_argument(parser, default, why=""):
    parser.add_argument("--threads", type=_thread_count, default=default,
                        help=f"CPU threads for torch (default: {default}{why})")


#: below this many training triples, ``train --threads`` defaults to one thread:
#: small graphs gain little from more, and on a busy machine extra threads made
#: training several times slower (nations: 27 s with torch's default, about 5 s with one)
ONE_THREAD_BELOW = 50_000


def _threads(text):
    return text if text == "auto" else _thread_count(text)


@contextlib.contextmanager
def _process_group(est):
    """Under ``--distributed``, leave the process group that ``fit`` joined when the command ends."""
    failed = True
    try:
        yield
        failed = False
    finally:
        if est.distributed:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                # ranks that leave together: destroying the group while a peer still works can
                # abort gloo's threads; after a failure the peers may never arrive, so no barrier
                if not failed:
                    dist.barrier()
                dist.destroy_process_group()


# ---------------------------------------------------------------------- files
def _read_triples(args, path):
    from .datasets import load_triples

    path = Path(path)
    if not path.is_file():
        raise _error(args, f"no such file: {path}" if not path.exists() else f"{path} is a folder, not a file")
    triples = load_triples(path)  # errors name the file and the line
    if not len(triples):
        raise _error(args, f"{path} holds no triples")
    return triples


def _read_splits(args, source, splits, download=False):
    """``{split: triples}`` from a TSV file, a folder or a dataset name.

    A file gives the first of ``splits``. A folder gives the ``<split>.txt``
    (or ``.tsv.gz``) files it holds, the first of ``splits`` being required; a
    bare name such as ``nations`` is looked up as :func:`kgestimator.load_dataset`
    does (the datasets folder, the bundled datasets, the download cache, and a
    download when ``download``).
    """
    from .dataset_registry import split_file
    from .datasets import find_named_dataset

    path = Path(source)
    if path.is_file():
        return {splits[0]: _read_triples(args, path)}
    if not path.is_dir():
        if len(path.parts) != 1 or path.suffix:
            raise _error(args, f"no such file or folder: {source}")
        try:
            path = find_named_dataset(source, download=download)
        except FileNotFoundError as exc:
            raise _error(args, f"{source} is no file or folder here, nor a known dataset: {exc}") from None
        except (ValueError, ImportError, OSError) as exc:  # a failed download or checksum
            raise _error(args, f"cannot download {source}: {exc}") from None
    files = {split: split_file(path, split) for split in splits}
    if files[splits[0]] is None:
        raise _error(args, f"folder {path} has no {splits[0]}.txt")
    return {split: _read_triples(args, file) for split, file in files.items() if file is not None}


def _read_queries(args, path):
    """Rows of a tab-separated query file (``-``: stdin), all of 2 or all of 3 fields.

    Read exactly as ``train`` reads triples (:func:`kgestimator.datasets.text_lines`):
    UTF-8 with an optional byte-order mark, lines ended by ``\\n``, ``\\r\\n`` or ``\\r`` only.
    """
    from .datasets import text_lines

    if path == "-":
        data, name = sys.stdin.buffer.read(), "<stdin>"
    else:
        if not Path(path).is_file():
            raise _error(args, f"no such queries file: {path}")
        data, name = Path(path).read_bytes(), path
    try:
        lines = text_lines(data, name)
    except ValueError as exc:
        raise _error(args, str(exc)) from None
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) not in (2, 3) or (rows and len(fields) != len(rows[0])):
            want = len(rows[0]) if rows else "2 or 3"
            raise _error(args, f"{name}, line {number}: expected {want} tab-separated fields, "
                               f"found {len(fields)}: {line[:80]!r}")
        rows.append(fields)
    if not rows:
        raise _error(args, f"{name} holds no queries")
    return rows


def _load_model(args):
    from .estimator import KGEmbedder

    if not Path(args.model).is_file():
        raise _error(args, f"no such model file: {args.model}")
    return KGEmbedder.load(args.model)  # a ValueError names foreign or corrupt files


# ---------------------------------------------------------------------- output
FORMATS = ("table", "tsv", "json")


def _cell(value, digits=4):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _write(columns, fmt, out, digits=4):
    """Write a dict of equal-length columns as an aligned table, TSV or a JSON list of records."""
    names = list(columns)
    rows = [dict(zip(names, values)) for values in zip(*(_plain(columns[n]) for n in names))]
    if fmt == "json":
        json.dump(rows, out, indent=2)
        print(file=out)
    elif fmt == "tsv":
        print("\t".join(names), file=out)
        for row in rows:
            print("\t".join(_cell(row[n], 6) if isinstance(row[n], float) else _cell(row[n])
                            for n in names), file=out)
    else:
        print(_format_table(names, [[_cell(row[n], digits) for n in names] for row in rows]), file=out)


def _plain(values):
    """Python scalars (JSON-ready) from a numpy array or a list."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def _format_argument(parser):
    parser.add_argument("--format", choices=FORMATS, default="table",
                        help="output as an aligned table, tab-separated values with a header, "
                             "or JSON records (default: table)")


# ---------------------------------------------------------------------- train
def _train_arguments(parser):
    parser.add_argument("data", metavar="DATA",
                        help="training triples: a tab-separated file (head, relation, tail a line), "
                             "a folder with train.txt (and optionally valid.txt, test.txt), or "
                             "a dataset name such as nations")
    parser.add_argument("-o", "--output", required=True, metavar="MODEL",
                        help="model file to write (the safe format of KGEmbedder.save)")
    parser.add_argument("--valid", metavar="FILE",
                        help="validation triples (default: DATA's valid.txt): filtered out of later "
                             "rankings, and used by --early-stopping and the per-epoch validation MRR")
    parser.add_argument("--test", metavar="FILE",
                        help="test triples to evaluate after training (default: DATA's test.txt)")
    parser.add_argument("--threads", type=_threads, default="auto",
                        help=f"CPU threads for torch (default: auto, i.e. 1 below {ONE_THREAD_BELOW:,} "
                             "training triples, where more threads gain little and slow down sharply on "
                             "a busy machine; torch's default above)")
    parser.add_argument("--progress", choices=PROGRESS, default="auto",
                        help="training progress on stderr: a bar with the loss and validation MRR, "
                             "one log line per epoch, or nothing (default: auto, i.e. a bar when stderr "
                             "is a terminal, nothing otherwise, so logs and CI output stay short)")
    parser.add_argument("--quiet", action="store_true", help="the same as --progress none")
    parser.add_argument("--download", action="store_true",
                        help="download DATA when it is a known dataset with no copy here (FB15k-237, WN18RR, "
                             "codex-s, codex-m, countries_s1..3), checking each file's SHA-256")
    parser.add_argument("--tracker", action="append", choices=list(TRACKER_PACKAGES), default=[],
                        help="log parameters, per-epoch loss and validation MRR, test metrics and the model "
                             "file to MLflow, TensorBoard or a CSV file (repeatable)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI for --tracker mlflow (default: MLflow's, MLFLOW_TRACKING_URI)")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="folder of the runs of --tracker tensorboard (default: runs) and --tracker csv "
                             "(default: kgestimator-runs)")
    parser.usage = ("kgestimator train DATA -o MODEL [--valid FILE] [--test FILE] [--tracker NAME] "
                    "[--PARAMETER VALUE ...]")
    parser.set_defaults(param_names=add_estimator_arguments(parser, _estimator_class()))


#: --tracker name -> the module it needs
TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboard", "csv": None}


def _trackers(args):
    """The trackers of ``--tracker``, their packages checked before any training."""
    import importlib.util

    from .trackers import TRACKERS

    trackers = []
    for name in dict.fromkeys(args.tracker):
        package = TRACKER_PACKAGES[name]
        if package is not None and importlib.util.find_spec(package) is None:
            raise _error(args, f"--tracker {name} needs {package}: pip install 'kgestimator[{name}]'")
        if name == "mlflow":
            trackers.append(TRACKERS[name](tracking_uri=args.tracking_uri))
        else:
            trackers.append(TRACKERS[name](args.log_dir) if args.log_dir else TRACKERS[name]())
    return trackers


def _estimator_class():
    from .estimator import KGEmbedder

    return KGEmbedder


def _checked_estimator(args):
    """The estimator of the flags, its parameters checked before any data is read.

    Each flag's value passed its parameter's constraints as it was read; what is
    left to fail here are the rules that span several parameters.
    """
    est = _estimator_class()(**estimator_params(args, args.param_names))
    try:
        est._check_params()
    except (ValueError, TypeError) as exc:
        raise _error(args, str(exc)) from None
    return est


#: the values of ``train --progress``
PROGRESS = ("auto", "bar", "log", "none")


def _progress_mode(args):
    """``'bar'``, ``'log'`` or ``'none'`` from ``--progress``, ``--quiet`` and whether stderr is a terminal."""
    if args.quiet:
        return "none"
    if args.progress != "auto":
        return args.progress
    if "verbose" in estimator_params(args, args.param_names):  # an explicit --verbose decides (0: nothing, >0: bar)
        return "none"
    return "bar" if sys.stderr.isatty() else "none"


#: the ranking metrics shown by train and evaluate
METRICS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


def _metrics_columns(named_metrics):
    columns = {"split": list(named_metrics)}
    for key in METRICS:
        columns[key] = [m[key] for m in named_metrics.values()]
    columns["unseen"] = [m["n_unknown"] for m in named_metrics.values()]
    return columns


def _evaluate_quietly(est, triples, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the unseen count is reported in the table
        return est.evaluate(triples, **kwargs)


def _train(args, out):
    est = _checked_estimator(args)
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        raise _error(args, f"cannot write the model to {output}: "
                           + ("it is a folder" if output.is_dir() else f"no folder {output.parent}"))
    trackers = _trackers(args)
    if trackers:
        est.set_params(callbacks=trackers)
    splits = _read_splits(args, args.data, ("train", "valid", "test"), download=args.download)
    for split in ("valid", "test"):
        if getattr(args, split) is not None:
            splits[split] = _read_triples(args, getattr(args, split))

    threads = args.threads
    if threads == "auto":
        threads = 1 if len(splits["train"]) < ONE_THREAD_BELOW else None
    progress, verbose = _progress_mode(args), est.verbose
    # the bar is the estimator's verbose mode, its log lines the quiet one; the model file
    # keeps the verbose the user gave, not the one chosen for this terminal
    est.set_params(verbose=max(1, verbose) if progress == "bar" else 0 if progress == "log" else verbose)
    with _torch_session(args, est.device, threads), _log_to_stderr(progress == "log"), _process_group(est):
        t0 = time.perf_counter()
        est.fit(splits["train"], valid=splits.get("valid"))
        seconds = time.perf_counter() - t0
        est.set_params(verbose=verbose)
        if est.distributed_ is not None and est.distributed_["rank"] != 0:
            return 0  # under torchrun, rank 0 evaluates, writes the model and reports
        est.save(output)
        metrics = {split: _evaluate_quietly(est, splits[split]) for split in ("valid", "test")
                   if split in splits}
        for tracker in trackers:
            for split, values in metrics.items():
                tracker.log_test_metrics(values, prefix=f"{split}_final_" if split == "valid" else "test_")
    what = est.model + ("" if est.emu is False else " + EMU" if est.emu is True else f" + emu={est.emu}")
    print(f"trained {what} on {len(splits['train'])} triples ({len(est.entities_)} entities, "
          f"{len(est.relations_)} relations): {est.n_iter_} epochs in {seconds:.1f} s", file=out)
    if est.distributed_ is not None:
        report = est.distributed_
        print(f"data-parallel on {report['world_size']} ranks ({report['backend']}): "
              + ", ".join(f"rank {r} {v:,.0f}" for r, v in enumerate(report["triples_per_second"]))
              + f" triples/s; {report['total_triples_per_second']:,.0f} in all", file=out)
    if metrics:
        print("filtered metrics, both directions, realistic ranks:", file=out)
        _write(_metrics_columns(metrics), "table", out)
    print(f"model written to {output}", file=out)
    for tracker in trackers:
        where = (f"MLflow run {tracker.run_id_}" if hasattr(tracker, "run_id_") else str(tracker.run_dir_))
        print(f"{type(tracker).__name__}: {where}", file=out)
    return 0


# ---------------------------------------------------------------------- evaluate
def _evaluate_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file written by kgestimator train")
    parser.add_argument("test", metavar="TRIPLES",
                        help="triples to rank: a tab-separated file, or a folder (its test.txt)")
    parser.add_argument("--filter", metavar="FILE", action="append", default=[],
                        help="more known triples to filter out of the rankings (repeatable); "
                             "the training and validation triples of the model always are")
    _format_argument(parser)


def _evaluate(args, out):
    import numpy as np

    est = _load_model(args)
    triples = _read_splits(args, args.test, ("test",))["test"]
    extra = [_read_triples(args, path) for path in args.filter]
    m = _evaluate_quietly(est, triples, filter_triples=np.concatenate(extra) if extra else None)
    keys = METRICS
    if args.format == "json":
        json.dump(m, out, indent=2)
        print(file=out)
        return 0
    _write({"metric": list(keys), "both": [m[k] for k in keys], "head": [m["head"][k] for k in keys],
            "tail": [m["tail"][k] for k in keys]}, args.format, out)
    if args.format == "table":
        print(f"{m['n_triples']} triples ranked against {len(est.entities_)} entities (filtered, realistic "
              f"ranks); {m['n_unknown']} with unseen labels count as misses", file=out)
    return 0


# ---------------------------------------------------------------------- predict
def _predict_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file written by kgestimator train")
    parser.add_argument("-q", "--query", nargs=2, action="append", default=[], metavar=("HEAD", "RELATION"),
                        help="one query (repeatable): HEAD RELATION for tail prediction, "
                             "RELATION TAIL with --direction head, HEAD TAIL with --direction relation")
    parser.add_argument("--queries", metavar="FILE",
                        help="tab-separated queries, one a line, as for --query (a third column "
                             "holding the answer to find is ignored); '-' reads stdin")
    parser.add_argument("-k", type=_positive_int, default=None, help="answers per query (default: 10)")
    parser.add_argument("--direction", choices=("tail", "head", "relation"), default="tail",
                        help="predict tails of (head, relation), heads of (relation, tail) or relations "
                             "of (head, tail) (default: tail)")
    parser.add_argument("--include-known", action="store_true",
                        help="keep answers that are training or validation facts (left out by default)")
    parser.add_argument("--coverage", type=_fraction, default=None, metavar="C",
                        help="instead of the top k, a split-conformal answer set per query that holds the "
                             "true answer with probability C (e.g. 0.9); needs --calibration")
    parser.add_argument("--calibration", metavar="FILE",
                        help="held-out true triples (not used in training) that calibrate --coverage")
    parser.add_argument("--nonconformity", choices=("score", "rank"), default="score",
                        help="conformal score of --coverage: softmax probability (sets adapt to each query) "
                             "or filtered rank (default: score)")
    parser.add_argument("--seed", type=_nonnegative_int, default=0,
                        help="seed of the tie-breaking draws of --nonconformity rank (default: 0)")
    _format_argument(parser)


def _check_labels(args, est, queries):
    """A one-line error naming the first label of the queries the model has never seen."""
    from .data import encode

    roles = {"tail": ("head", "relation"), "head": ("relation", "tail"), "relation": ("head", "tail")}[args.direction]
    for number, query in enumerate(queries, 1):
        for role, label in zip(roles, query):
            vocab = est.relations_ if role == "relation" else est.entities_
            if not encode([label], vocab)[1][0]:
                kind = "relation" if role == "relation" else "entity"
                shown = ", ".join(map(str, vocab[:3].tolist()))
                raise _error(args, f"unknown {kind} {label!r} in query {number} ({' '.join(query)}); "
                                   f"the model knows {len(vocab)} {kind.replace('y', 'ie')}s, e.g. {shown}")


def _predict(args, out):
    from .estimator import topk_columns

    est = _load_model(args)
    queries = [list(q) for q in args.query]
    if args.queries is not None:
        rows = _read_queries(args, args.queries)
        if len(rows[0]) == 3:  # drop the column holding the answer to find
            keep = {"tail": (0, 1), "head": (1, 2), "relation": (0, 2)}[args.direction]
            rows = [[r[j] for j in keep] for r in rows]
        queries += rows
    if not queries:
        raise _error(args, "no queries: give --query HEAD RELATION (repeatable) or --queries FILE")
    _check_labels(args, est, queries)
    if args.coverage is not None:
        return _predict_sets(args, est, queries, out)
    if args.calibration is not None:
        raise _error(args, "--calibration calibrates --coverage; give --coverage C too")
    args.k = 10 if args.k is None else args.k
    n_cand, what = ((len(est.relations_), "relations") if args.direction == "relation"
                    else (len(est.entities_), "entities"))
    if args.k > n_cand:
        raise _error(args, f"-k {args.k}: the model has only {n_cand} {what}")
    exclude = not args.include_known
    columns = topk_columns(*est._predict_topk(queries, args.k, args.direction, exclude, True),
                           args.direction, exclude)
    if args.format == "table":
        first = columns["rank"] == 1  # a query's labels once, on its first row
        for name in ("head", "relation", "tail"):
            if name in columns:
                columns[name] = [v if f else "" for v, f in zip(columns[name].tolist(), first)]
        del columns["query"]
        if not args.include_known:
            del columns["known"]
    _write(columns, args.format, out)
    if args.format == "table" and exclude:
        short = len(queries) * args.k - len(columns["rank"])
        if short:
            print(f"({short} of the {len(queries) * args.k} answers asked for are known facts, left out; "
                  "--include-known lists them)", file=out)
    return 0


def _fraction(text):
    """An argparse type: a float in (0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}")
    return value


def _predict_sets(args, est, queries, out):
    """``predict --coverage``: calibrate on ``--calibration`` and print each query's answer set."""
    import numpy as np

    for flag, bad in (("-k", args.k is not None), ("--include-known", args.include_known),
                      ("--direction relation", args.direction == "relation")):
        if bad:
            raise _error(args, f"{flag} does not go with --coverage (sets of entities, known facts left out)")
    if args.calibration is None:
        raise _error(args, "--coverage needs --calibration FILE: held-out true triples not used in training")
    held_out = _read_triples(args, args.calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.calibrate_sets(held_out, nonconformity=args.nonconformity, random_state=args.seed)
    query_labels, labels, scores = est._predict_set(queries, args.coverage, args.direction, args.seed)
    sizes = np.array([len(x) for x in labels])
    anchor, rel = query_labels[:, 0], query_labels[:, 1]
    names = ("head", "relation") if args.direction == "tail" else ("tail", "relation")
    columns = {"query": np.repeat(np.arange(len(labels)), sizes),
               names[0]: np.repeat(anchor, sizes), names[1]: np.repeat(rel, sizes),
               "rank": np.concatenate([np.arange(1, n + 1) for n in sizes]) if sizes.sum() else np.zeros(0, int),
               "label": np.concatenate(labels) if sizes.sum() else np.zeros(0, str),
               "score": np.concatenate(scores) if sizes.sum() else np.zeros(0)}
    if args.direction == "head":
        columns = {k: columns[k] for k in ("query", "relation", "tail", "rank", "label", "score")}
    if args.format == "table":
        first = columns["rank"] == 1
        for name in ("head", "relation", "tail"):
            if name in columns:
                columns[name] = [v if f else "" for v, f in zip(columns[name].tolist(), first)]
        del columns["query"]
    _write(columns, args.format, out)
    if args.format == "table":
        print(f"conformal sets at coverage {args.coverage:g} ({args.nonconformity}, calibrated on "
              f"{est.conformal_['n_calibration']} held-out triples): sizes {', '.join(map(str, sizes))}", file=out)
    return 0


# ---------------------------------------------------------------------- embed
def _embed_arguments(parser):
    parser.add_argument("model", metavar="MODEL", help="model file written by kgestimator train")
    parser.add_argument("-o", "--output", required=True, metavar="FILE",
                        help="TSV file to write: one line per label, the label then its vector's values")
    parser.add_argument("--relations", action="store_true",
                        help="write the relation vectors instead of the entity vectors")


def _embed(args, out):
    import tempfile

    est = _load_model(args)
    output = Path(args.output)
    if output.is_dir() or not output.parent.is_dir():
        raise _error(args, f"cannot write to {output}: "
                           + ("it is a folder" if output.is_dir() else f"no folder {output.parent}"))
    try:
        table = est.relation_embeddings_ if args.relations else est.entity_embeddings_
    except AttributeError as exc:
        raise _error(args, str(exc)) from None
    labels = est.relations_ if args.relations else est.entities_
    # a temporary file renamed into place: a failure never leaves a half-written file
    fd, tmp = tempfile.mkstemp(dir=output.parent, prefix=".kgestimator-", suffix=".tsv")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            for label, row in zip(labels.tolist(), table):
                fh.write(str(label) + "\t" + "\t".join(f"{v:.9g}" for v in row.tolist()) + "\n")
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    what = "relation" if args.relations else "entity"
    print(f"wrote {len(labels)} {what} vectors of {table.shape[1]} values to {output}", file=out)
    return 0


# ---------------------------------------------------------------------- list
def _list_arguments(parser):
    pass


def _list(args, out):
    from ._catalog import SECTIONS
    from ._catalog import entries as read_registry

    sections = {}
    for title, module, name in SECTIONS:
        lines = sections[title] = {}
        for key, (cls, text) in read_registry(module, name).items():
            # models are listed with their class name, unless the summary starts with it already
            named = name == "MODELS" and not text.startswith(f"{cls}:")
            lines[key] = f"{cls}: {text}" if named else text
    width = max(len(name) for entries in sections.values() for name in entries)
    for title, entries in sections.items():
        print(title, file=out)
        for name, text in entries.items():
            print(f"  {name.ljust(width)}  {text}", file=out)
    print("EMU is switched on with --emu (see kgestimator train --help: --alpha, --mutation-ratio, --beta)",
          file=out)
    return 0


# ---------------------------------------------------------------------- demo
def _demo_arguments(parser):
    parser.add_argument("--seed", type=_nonnegative_int, default=0,
                        help="seed of the generated graph and of every model (default: 0)")
    parser.add_argument("--models", type=_model_list, default=_model_list(DEFAULT_MODELS),
                        metavar="LIST",
                        help=f"comma-separated models among {', '.join(DEMO_CONFIGS)} "
                             f"(default: {DEFAULT_MODELS})")
    parser.add_argument("--epochs", type=_positive_int, default=None,
                        help="training epochs for every model (default: per model, 40-50)")
    parser.add_argument("--fast", action="store_true",
                        help="tiny models (dim 16, 16 negatives, 5 epochs): a smoke test of a few seconds")
    parser.add_argument("--device", default="auto",
                        help="'auto' (CUDA when available), 'cpu' or 'cuda[:N]' (default: auto)")
    _threads_argument(parser, 1, "; the demo's tensors are too small to gain from more, and "
                                 "extra threads slow down sharply on a busy machine")


def _demo(args, out):
    with _torch_session(args, args.device, args.threads):
        return _run_demo(args, out)


def _run_demo(args, out):
    from .datasets import make_kg
    from .estimator import KGEmbedder

    kg = make_kg(random_state=args.seed)
    n_entities = len(kg.entities)
    # expected MRR of a random ranking over all entities: H_n / n
    chance = sum(1.0 / k for k in range(1, n_entities + 1)) / n_entities

    configs = {}
    for name in args.models:
        cfg = dict(DEMO_CONFIGS[name])
        if args.fast:
            cfg.update(FAST_OVERRIDES)
        if args.epochs is not None:
            cfg["n_epochs"] = args.epochs
        configs[name] = cfg

    print("kgestimator demo: link prediction on a generated graph, uniform vs uniform + EMU negatives",
          file=out)
    print(f"graph: make_kg(random_state={args.seed}): {n_entities} entities, {len(kg.relations)} "
          f"relations ({', '.join(sorted(set(kg.patterns.values())))}); "
          f"{len(kg.train)} train / {len(kg.valid)} valid / {len(kg.test)} test triples", file=out)
    print(f"config: seed={args.seed} device={args.device} threads={args.threads}"
          f"{' fast' if args.fast else ''}", file=out)
    for name, cfg in configs.items():
        print(f"  {name}: " + " ".join(f"{k}={v}" for k, v in cfg.items()), file=out)
    out.flush()

    # the first fit of a process pays one-off set-up costs (about a second on
    # CPU); a tiny warm-up fit keeps them out of the timings below
    KGEmbedder(dim=8, n_negatives=8, n_epochs=1, emu=True, device=args.device,
               random_state=args.seed).fit(kg.train[:500])

    rows, results = [], {}
    for name, cfg in configs.items():
        for emu in (False, True):
            est = KGEmbedder(model=name, emu=emu, device=args.device, random_state=args.seed, **cfg)
            t0 = time.perf_counter()
            est.fit(kg.train, valid=kg.valid)
            seconds = time.perf_counter() - t0
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                m = est.evaluate(kg.test)
            p = est.emu_params_
            emu_params = (f"{p['alpha']:.2f} / {p['mutation_ratio']:.2f} / {p['beta']:.2f}"
                          if emu else "-")
            rows.append([name, "uniform+EMU" if emu else "uniform", emu_params, f"{m['mrr']:.3f}",
                         f"{m['hits@1']:.3f}", f"{m['hits@10']:.3f}", f"{seconds:.1f}"])
            results.setdefault(name, []).append((m["mrr"], seconds, emu_params))

    _print_demo_results(rows, results, chance, out)
    return 0


def _print_demo_results(rows, results, chance, out):
    print(file=out)
    header = ["model", "method", "alpha / mutation_ratio / beta", "MRR", "Hits@1", "Hits@10", "fit s"]
    print(_format_table(header, rows), file=out)
    print(f"\nFiltered test metrics, both directions, realistic ranks; a random ranking scores "
          f"MRR {chance:.3f}. EMU parameters are the 'auto' defaults of each model.",
          file=out)
    print(EMU_LINE, file=out)
    for name, ((mrr_off, s_off, _), (mrr_on, s_on, params)) in results.items():
        print(emu_verdict(name, mrr_off, mrr_on, s_on / max(s_off, 1e-9), params), file=out)


#: test MRR differences below this are read as no difference (the demo's seed-to-seed spread is larger)
EMU_NOISE = 0.005


def emu_verdict(model, mrr_off, mrr_on, time_ratio, params):
    """One sentence on what EMU did in a demo row, and why when it did not help."""
    cost = f"the EMU fit took {time_ratio:.1f}x as long (a second pass over mutated negatives)"
    if mrr_on > mrr_off + EMU_NOISE:
        return f"{model}: EMU raised test MRR by {mrr_on - mrr_off:.3f} ({mrr_off:.3f} -> {mrr_on:.3f}); {cost}."
    change = ("made no difference beyond noise" if mrr_on >= mrr_off - EMU_NOISE
              else f"lowered test MRR by {mrr_off - mrr_on:.3f}")
    return (f"{model}: EMU {change} here ({mrr_off:.3f} -> {mrr_on:.3f}); {cost}. Its 'auto' values "
            f"(alpha / mutation_ratio / beta = {params}) were chosen at the library's default sizes on other "
            "graphs (BENCHMARKS.md section 8), and EMU acts as a regulariser: it costs MRR where the model is "
            "too small for its graph (on make_kg(random_state=0) every EMU setting lost at d=32) and its best values "
            "depend on the graph and the configuration: tune alpha, mutation_ratio and beta on your own graph "
            "(GridSearchCV; examples/plot_grid_search_emu.py).")


#: subcommand name -> (help, add_arguments(parser), run(args, out) -> exit status)
COMMANDS = {
    "train": ("train a model on a TSV file or a dataset folder and write a model file",
              _train_arguments, _train),
    "evaluate": ("filtered ranking metrics (MRR, MR, Hits@k) of a model file on test triples",
                 _evaluate_arguments, _evaluate),
    "predict": ("top-k tails, heads or relations of queries, known facts left out, or answer sets "
                "with a coverage guarantee (--coverage)", _predict_arguments, _predict),
    "embed": ("write the entity (or relation) vectors of a model file as TSV, label first",
              _embed_arguments, _embed),
    "list": ("the models, negative samplers and losses", _list_arguments, _list),
    "demo": ("train DistMult and TransE with and without EMU on a generated graph "
             "and print their test metrics", _demo_arguments, _demo),
}


def build_parser(commands=None):
    """The ``kgestimator`` argument parser, one subparser per entry of :data:`COMMANDS`.

    Parameters
    ----------
    commands : iterable of str, optional
        The subcommands whose arguments are added (all when None). Every
        subcommand is listed either way; ``main`` adds only the one it runs,
        because ``train``'s flags come from the estimator and importing it
        costs seconds (torch, scikit-learn) that ``--help`` and ``list`` need not pay.
    """
    from . import __version__

    wanted = set(COMMANDS if commands is None else commands)
    parser = _Parser(prog="kgestimator",
                     description="Knowledge-graph embedding with EMU negatives "
                                 "(scikit-learn estimators).")
    parser.add_argument("--version", action="version", version=f"kgestimator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if name in wanted:
            add_arguments(subparser)
    return parser


def _command_of(argv):
    """The subcommand named in ``argv`` (the first word not starting with '-'), or None."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv=None):
    """Run the ``kgestimator`` command line.

    Parameters
    ----------
    argv : list of str, optional
        Arguments without the program name; ``sys.argv[1:]`` when None.

    Returns
    -------
    status : int
        0 on success. Errors print one line on stderr and raise
        ``SystemExit(2)`` (``--help`` and ``--version`` raise ``SystemExit(0)``).
    """
    argv = _dashed(sys.argv[1:] if argv is None else list(argv))
    prefix = "kgestimator"
    try:
        args = build_parser([_command_of(argv)]).parse_args(argv)
        if args.command is None:
            raise CommandError(f"kgestimator: choose a command: {', '.join(COMMANDS)} "
                               "(see kgestimator --help)")
        prefix = f"kgestimator {args.command}"
        return COMMANDS[args.command][2](args, sys.stdout)
    except CommandError as exc:
        message = str(exc)
    except BrokenPipeError:
        _silence_stdout()  # the reader left (`kgestimator list | head -1`): not an error to report
        raise SystemExit(141) from None  # 128 + SIGPIPE, as for other command-line tools
    except (ValueError, TypeError, RuntimeError, OSError, ArithmeticError) as exc:
        message = f"{prefix}: error: {exc}"
    except KeyboardInterrupt:
        print("kgestimator: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    print(" ".join(message.split()), file=sys.stderr)  # always one line
    raise SystemExit(2)


def _silence_stdout():
    """Point stdout at /dev/null so that the interpreter's final flush does not fail again."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a non-file object
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _dashed(argv):
    """``--n_epochs`` -> ``--n-epochs``: the Python spelling of a parameter works as a flag too."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            return out + argv[i:]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            arg = name.replace("_", "-") + eq + value
        out.append(arg)
    return out


if __name__ == "__main__":
    sys.exit(main())

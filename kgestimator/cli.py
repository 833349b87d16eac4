"""The ``kgestimator`` command (also ``python -m kgestimator``).

Subcommands live in :data:`COMMANDS` (name -> ``(add_arguments, run)``), so a new
command is one more entry. Every error is one line on stderr and exit status 2,
with no traceback.

``kgestimator demo`` trains a few models on a generated graph (no download),
with uniform negatives and with uniform + EMU negatives, and prints their
filtered test metrics.
"""

import argparse
import os
import sys
import time
import warnings

#: per-model demo settings on ``make_kg(random_state=seed)`` (about 4,800 training
#: triples, 300 entities), chosen so that each fit takes seconds on one CPU core
#: and ends far above chance. EMU parameters stay at ``'auto'`` (EMU_DEFAULTS).
DEMO_CONFIGS = {
    "distmult": dict(dim=64, n_negatives=64, batch_size=500, learning_rate=0.01, n_epochs=50),
    "transe": dict(dim=64, gamma=6.0, n_negatives=64, batch_size=500, learning_rate=0.01, n_epochs=50),
    "complex": dict(dim=32, n_negatives=64, batch_size=500, learning_rate=0.01, n_epochs=50),
    "rotate": dict(dim=32, gamma=6.0, n_negatives=32, batch_size=500, learning_rate=0.01, n_epochs=40),
    "hake": dict(dim=32, gamma=6.0, n_negatives=32, batch_size=500, learning_rate=0.01, n_epochs=40),
}
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
    parser.add_argument("--threads", type=_thread_count, default=1,
                        help="CPU threads for torch (default: 1; the demo's tensors are too "
                             "small to gain from more, and extra threads slow down sharply "
                             "on a busy machine)")


def _demo(args, out):
    import torch

    from ._utils import resolve_device

    device = resolve_device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CommandError(f"kgestimator demo: error: --device {args.device}: CUDA is not available "
                           "on this machine; use --device cpu")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run_demo(args, out)
    finally:
        torch.set_num_threads(previous_threads)  # main() may run inside a larger program


def _run_demo(args, out):
    from .data import make_kg
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

    rows = []
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

    print(file=out)
    header = ["model", "method", "alpha / mutation_ratio / beta", "MRR", "Hits@1", "Hits@10", "fit s"]
    print(_format_table(header, rows), file=out)
    print(f"\nFiltered test metrics, both directions, realistic ranks; a random ranking scores "
          f"MRR {chance:.3f}. EMU parameters are the 'auto' defaults of each model.",
          file=out)
    print(EMU_LINE, file=out)
    return 0


#: subcommand name -> (help, add_arguments(parser), run(args, out) -> exit status)
COMMANDS = {
    "demo": ("train DistMult and TransE with and without EMU on a generated graph "
             "and print their test metrics", _demo_arguments, _demo),
}


def build_parser():
    """The ``kgestimator`` argument parser, one subparser per entry of :data:`COMMANDS`."""
    from . import __version__

    parser = _Parser(prog="kgestimator",
                     description="Knowledge-graph embedding with EMU negatives "
                                 "(scikit-learn estimators).")
    parser.add_argument("--version", action="version", version=f"kgestimator {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, add_arguments, _) in COMMANDS.items():
        add_arguments(sub.add_parser(name, help=help_text, description=help_text))
    return parser


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
    try:
        args = build_parser().parse_args(argv)
        if args.command is None:
            raise CommandError(f"kgestimator: choose a command: {', '.join(COMMANDS)} "
                               "(see kgestimator --help)")
        return COMMANDS[args.command][2](args, sys.stdout)
    except CommandError as exc:
        message = str(exc)
    except (ValueError, TypeError, RuntimeError, OSError, ArithmeticError) as exc:
        message = f"kgestimator: error: {exc}"
    except KeyboardInterrupt:
        print("kgestimator: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    print(" ".join(message.split()), file=sys.stderr)  # always one line
    raise SystemExit(2)


if __name__ == "__main__":
    sys.exit(main())

"""Command-line flags for every estimator parameter, from its signature and its parameter table.

The signature of ``cls.__init__`` gives the names and defaults, and
``cls._parameter_table`` (``kgestimator._parameters.PARAMETERS`` for
``KGEmbedder``) gives each one's help, constraints and kind of flag, so a new
parameter becomes a flag (``n_epochs`` -> ``--n-epochs``) with no change here.
A value is read as the first of its literal (``true``/``false``, ``none``, a
number) and its text that the parameter's constraints accept, and refused at
parse time with the constraints' words otherwise, so the error names the flag;
path flags take the text as it is (``--checkpoint-dir 2024`` is the folder
``2024``). This module imports nothing heavy: ``kgestimator --help`` stays fast.
"""

import argparse
import inspect

_TRUE, _FALSE, _NONE = ("true", "yes", "on"), ("false", "no", "off"), ("none", "null")


def parse_value(text):
    """A flag value as a Python value: bool, None, int, float or the string itself."""
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    if low in _NONE:
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def flag(name):
    return "--" + name.replace("_", "-")


def plain(text):
    """Inline reStructuredText as plain text for help: ````x```` and ``:role:`x``` become ``x``."""
    parts = text.replace("``", "`").split("`")
    for i in range(0, len(parts) - 1, 2):  # the text before each marked-up span
        before, space, role = parts[i].rpartition(" ")
        if len(role) > 2 and role[0] == ":" and role[-1] == ":":
            parts[i] = before + space
    return "".join(parts)


def value_parser(entry):
    """An argparse type for the parameter of table entry ``entry``: parse, then check its constraints."""

    def parse(text):
        for value in (text,) if entry.flag == "path" else (parse_value(text), text):
            if entry.accepts(value):
                return value
        raise argparse.ArgumentTypeError(f"must be {entry.describe()}; got {text!r}")

    return parse


def add_estimator_arguments(parser, cls):
    """One ``--name`` flag per parameter of ``cls`` with a flag in its table, in an argument group.

    Returns the names. Flags that are not given are absent from the parsed
    namespace, so the estimator's own defaults apply. Parameters whose default
    is a bool may be given bare (``--early-stopping`` means ``--early-stopping true``).
    """
    group = parser.add_argument_group(
        f"{cls.__name__} parameters",
        "every estimator parameter, as --name-with-dashes VALUE (true/false, none, a number "
        "or a string), checked as it is read")
    table = cls._parameter_table
    names = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD) or table[name].flag is None:
            continue
        entry = table[name]
        help_text = f"{plain(entry.summary)} [{entry.type}, default={param.default!r}]"
        extra = dict(nargs="?", const=True) if isinstance(param.default, bool) else {}
        group.add_argument(flag(name), dest=f"param_{name}", type=value_parser(entry),
                           default=argparse.SUPPRESS, metavar="VALUE", help=help_text.replace("%", "%%"),
                           **extra)
        names.append(name)
    return names


def estimator_params(args, names):
    """The parameters given on the command line, as keyword arguments."""
    return {name: getattr(args, f"param_{name}") for name in names if hasattr(args, f"param_{name}")}

"""Command-line flags for every estimator parameter, generated from the estimator itself.

The signature of ``KGEmbedder.__init__`` gives the names and defaults, and its
numpydoc docstring gives the help text, so a new parameter becomes a flag
(``n_epochs`` -> ``--n-epochs``) with no change here. Values are parsed as
literals (``true``/``false``, ``none``, numbers, else the string) and checked
by the estimator's own validation, which names the parameter; path-valued
parameters (``path-like`` in their docstring type) take the string as it is,
so ``--checkpoint-dir 2024`` is the folder ``2024``.
"""

import argparse
import inspect
import re

_ENTRY = re.compile(r"^    (\w+(?:, \w+)*) : (.+)$")
#: parameters that take objects, not values (``train --tracker`` gives callbacks)
NOT_FLAGS = ("callbacks",)
_TRUE, _FALSE, _NONE = ("true", "yes", "on"), ("false", "no", "off"), ("none", "null")


def parameter_docs(cls):
    """``{name: (type line, description)}`` from the numpydoc Parameters section of ``cls``."""
    doc = inspect.cleandoc(cls.__doc__ or "")
    section = re.search(r"^Parameters\n-+\n(.*?)(?:^\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    docs, current = {}, []
    for line in (section.group(1) if section else "").splitlines():
        line = "    " + line  # cleandoc removed the class-level indent
        match = _ENTRY.match(line)
        if match:
            current = []
            for name in match.group(1).split(", "):
                docs[name] = (match.group(2), current)
        elif line.startswith("        "):
            current.append(line.strip())
    return {name: (kind, " ".join(text)) for name, (kind, text) in docs.items()}


def _first_sentence(text):
    text = re.sub(r":\w+:`([^`]*)`", r"\1", text).replace("``", "")
    # a sentence ends at a period before a capital or the end ("Eq. 12" goes on)
    match = re.match(r"(.+?\.)(?:\s+(?=[A-Z'])|$)", text)
    return match.group(1) if match else text


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


def add_estimator_arguments(parser, cls):
    """One ``--name`` flag per parameter of ``cls``, in an argument group; returns the names.

    Flags that are not given are absent from the parsed namespace, so the
    estimator's own defaults apply. Parameters whose default is a bool may be
    given bare (``--early-stopping`` means ``--early-stopping true``).
    """
    group = parser.add_argument_group(
        f"{cls.__name__} parameters",
        "every estimator parameter, as --name-with-dashes VALUE (true/false, none, a number "
        "or a string); the estimator checks the values")
    docs = parameter_docs(cls)
    names = []
    for name, param in inspect.signature(cls.__init__).parameters.items():
        if name in NOT_FLAGS or name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        kind, text = docs.get(name, ("", ""))
        help_text = " ".join(part for part in (_first_sentence(text), f"[{kind}]" if kind else
                                               f"[default={param.default!r}]") if part)
        extra = dict(nargs="?", const=True) if isinstance(param.default, bool) else {}
        parse = str if "path-like" in kind else parse_value
        group.add_argument(flag(name), dest=f"param_{name}", type=parse,
                           default=argparse.SUPPRESS, metavar="VALUE", help=help_text.replace("%", "%%"),
                           **extra)
        names.append(name)
    return names


def estimator_params(args, names):
    """The parameters given on the command line, as keyword arguments."""
    return {name: getattr(args, f"param_{name}") for name in names if hasattr(args, f"param_{name}")}


def flag_message(message):
    """Rewrite the estimator's "The 'n_epochs' parameter" as "--n-epochs" in an error message."""
    return re.sub(r"The '(\w+)' parameter", lambda m: flag(m.group(1)), message)

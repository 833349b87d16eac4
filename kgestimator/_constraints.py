"""scikit-learn parameter constraints beyond scikit-learn's own, and their wording.

The estimator's parameters are checked by scikit-learn's
``BaseEstimator._validate_params`` against ``_parameter_constraints``
(``sklearn.utils._param_validation``). Two rules need more than scikit-learn
writes: counts and rates that refuse bools (``True`` is an ``Integral``, never
a dimension here), and rules given as a predicate (a JSON object string, a
device name). ``make_constraint`` passes through only instances of
scikit-learn's own constraint classes (1.4 to 1.9), so both subclass one.
"""

from sklearn.utils._param_validation import Interval, Options, StrOptions, make_constraint


def options(names):
    """``StrOptions`` of ``names`` that lists them in the order given (a set prints in hash order,
    another one in every process); a dict's keys are the set-like ``Options`` needs."""
    return StrOptions(dict.fromkeys(names).keys())


class Range(Interval):
    """scikit-learn's ``Interval``, refusing bools (``dim=True`` is a mistake, not 1)."""

    def is_satisfied_by(self, val):
        return not isinstance(val, bool) and super().is_satisfied_by(val)


class Rule(Options):
    """A single-parameter rule as a predicate and the words that describe what it accepts."""

    def __init__(self, test, description):
        super().__init__(object, set())
        self.test, self.description = test, description

    def is_satisfied_by(self, val):
        return bool(self.test(val))

    def __str__(self):
        return self.description


def accepts(constraints, value):
    """Whether ``value`` satisfies one of ``constraints`` (as ``_validate_params`` decides)."""
    return any(make_constraint(c).is_satisfied_by(value) for c in constraints)


def describe(constraints):
    """What ``constraints`` accept, in the words of scikit-learn's ``InvalidParameterError``."""
    words = [str(c) for c in map(make_constraint, constraints) if not c.hidden]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"

"""Small helpers: device choice, seeding, compiling."""

import numbers
import os
import sys
import warnings

import numpy as np
import torch
import sklearn.utils as sklearn_utils
from sklearn.utils import check_random_state


def resolve_device(device):
    """``'auto'`` -> CUDA when present, else CPU; else a CPU, CUDA or MPS device that exists here.

    torch accepts device names it cannot use ('meta', 'xpu', 'cuda' without
    CUDA) and fails later with assertions or obscure errors; they are refused here.
    """
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; "
                         f"got {device!r}.") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"The 'device' parameter is {device!r} but CUDA is not available on this "
                             "machine; use 'cpu' or 'auto'.")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"The 'device' parameter is {device!r} but this machine has "
                             f"{torch.cuda.device_count()} CUDA device(s).")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"The 'device' parameter is {device!r} but MPS is not available on this machine.")
    elif dev.type != "cpu":
        raise ValueError(f"The 'device' parameter must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'; got "
                         f"{device!r} (torch knows it, kgestimator cannot train on it).")
    return dev


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
#: frames between a user's call and ours that are not the user's line: scikit-learn's method
#: wrappers (``set_output``, ``available_if``) and the standard library's decorators
_SKLEARN_UTILS_DIR = os.path.dirname(os.path.abspath(sklearn_utils.__file__)) + os.sep
_WRAPPER_FILES = ("contextlib.py", "functools.py")


def _is_library_frame(filename):
    return (filename.startswith(_PACKAGE_DIR + os.sep) or filename.startswith(_SKLEARN_UTILS_DIR)
            or os.path.basename(filename) in _WRAPPER_FILES)


def warn_at_caller(message, category=UserWarning):
    """``warnings.warn`` attributed to the first frame outside kgestimator and the wrappers around it.

    A fixed ``stacklevel`` names the right line only on the call path it was
    counted for; ``fit``, ``fit_transform`` (through scikit-learn's ``set_output``
    wrapper) and ``GridSearchCV`` reach the same check through different depths.
    """
    frame, level = sys._getframe(1), 2  # stacklevel 2 is warn_at_caller's caller
    while frame.f_back is not None and _is_library_frame(frame.f_code.co_filename):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, category, stacklevel=level)


def resolve_mixed_precision(setting, device):
    """Whether training steps run under bfloat16 autocast on ``device`` (``mixed_precision``).

    bfloat16 keeps float32's exponent range, so no loss scaling is needed (float16
    would need a ``GradScaler``); ``'auto'`` turns it on only on CUDA devices that
    support it, where it roughly halves the memory traffic of the scoring products.
    """
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported()
    else:
        supported = device.type == "cpu"
    if isinstance(setting, str) and setting == "auto":
        return device.type == "cuda" and supported
    if setting and not supported:
        raise ValueError(f"The 'mixed_precision' parameter is True but bfloat16 autocast is not available on "
                         f"{device}; use mixed_precision=False or 'auto'.")
    if setting and device.type == "cpu" and not cpu_has_bf16_products():
        # measured on an AVX2-only 2-core EPYC: the kbc DistMult step on FB15k-237, 17 ms in float32, 243 ms here
        warn_at_caller("mixed_precision=True on a CPU without bfloat16 matrix instructions (AVX-512 BF16 or "
                       "AMX): the products are emulated and a training step can be 10x slower than in float32; "
                       "use mixed_precision=False on this machine.")
    return bool(setting)


def cpu_has_bf16_products():
    """Whether oneDNN runs bfloat16 matrix products natively on this CPU (AVX-512 BF16 or AMX)."""
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if probe is None else bool(probe())


def make_generator(random_state, device):
    """A torch generator on ``device`` seeded from ``random_state`` (None, int or RandomState)."""
    seed = int(check_random_state(random_state).randint(0, 2**31 - 1))
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen, seed


def to_numpy(t):
    return t.detach().cpu().numpy() if torch.is_tensor(t) else np.asarray(t)


def check_number(name, value, low, high=None, integer=False, low_open=False, owner=None, finite=False):
    """Raise a ValueError naming the parameter unless ``value`` is a number in range.

    ``finite=True`` refuses ``inf`` too (and, given ``high``, anything above it).
    """
    kind = numbers.Integral if integer else numbers.Real
    ok = isinstance(value, kind) and not isinstance(value, (bool, np.bool_))
    if ok:
        ok = (value > low if low_open else value >= low) and (high is None or value <= high)
        ok = ok and not (finite and not np.isfinite(float(value)))
    if not ok:
        bracket = "(" if low_open else "["
        top = high if high is not None else ("inf)" if finite else "inf")
        rng = f"{bracket}{low}, {top}" + ("" if str(top).endswith(")") else "]")
        what = "an int" if integer else ("a finite number" if finite and high is None else "a number")
        prefix = f"{owner}: the" if owner else "The"
        raise ValueError(f"{prefix} {name!r} parameter must be {what} in {rng}; got {value!r}.")


def as_bool(value):
    """``np.bool_`` as a Python bool, anything else unchanged.

    Every boolean parameter follows one rule: ``True``/``False`` or numpy's
    ``np.True_``/``np.False_`` (what a grid built with numpy holds), never
    ``1``, ``0`` or a string.
    """
    return bool(value) if isinstance(value, np.bool_) else value


def check_bool(name, value, owner=None):
    """Raise a ValueError naming the parameter unless ``value`` is a bool (``np.bool_`` included)."""
    if not isinstance(value, (bool, np.bool_)):
        prefix = f"{owner}: the" if owner else "The"
        raise ValueError(f"{prefix} {name!r} parameter must be a bool; got {value!r}.")


def check_choice(name, value, choices, owner=None):
    """Raise a ValueError naming the parameter unless ``value`` is one of ``choices``."""
    # strict: 1 is not True and 0 is not False; np.True_ is True (see as_bool)
    value = as_bool(value)
    if not any(value is c or (c is not None and isinstance(value, type(c)) and value == c)
               for c in choices):
        prefix = f"{owner}: the" if owner else "The"
        raise ValueError(f"{prefix} {name!r} parameter must be one of {list(choices)}; got {value!r}.")


def compiled(fn, dynamic=False):
    """``torch.compile(fn)`` that falls back to eager, with a warning, if compiling fails."""
    fast = torch.compile(fn, dynamic=dynamic)
    state = {"ok": True}

    def call(*args):
        if state["ok"]:
            try:
                return fast(*args)
            except Exception as exc:  # no C++ compiler, unsupported backend, ...
                state["ok"] = False
                warnings.warn(f"torch.compile failed ({type(exc).__name__}: {exc}); "
                              "continuing uncompiled.", RuntimeWarning, stacklevel=2)
        return fn(*args)

    return call

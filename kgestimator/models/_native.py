"""The C kernels (``_distance.c``, ``_nbf.c``): built once per machine with the system's C compiler, called through ctypes.

``torch.compile`` fuses RotatE's forward distance into one loop, but its
backward pass either materialises a ``(C, c, N, d)`` weight tensor (compiling
the broadcast score: 102 MB a step side) or makes two more passes with a square
root and a division in each; on one CPU core the compiled forward and backward
took 60-74 ms for FB15k-237's step side (1000 x 256 x 100 complex coordinates).
The hand-written kernels vectorise over candidates, never store an
intermediate and recompute the distance once in the backward pass.

Each library (:data:`SOURCES`: the distances above, and NBFNet's fused
message passing, whose wrappers are in ``_nbf.py``) is compiled on first use
(a few seconds) into a per-user folder under the system's temporary directory
(``KGESTIMATOR_KERNEL_DIR`` overrides it), named by a digest of the source,
the compiler and this CPU, so a machine never loads a library built for
another. Where no compiler works, :func:`library` returns None and the
callers take the eager path.
"""

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

import torch

_DIR = os.path.dirname(os.path.abspath(__file__))
#: vectorised for this CPU (512-bit vectors where it has them); sums may be reassociated (vector
#: reductions) but NaN and infinities keep their IEEE meaning (no -ffast-math, whose finite-math
#: assumption would let a NaN distance pass as finite past the trainer's non-finite check); the
#: second set for compilers that refuse the first
_FLAGS = (["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp-simd", "-fno-math-errno",
           "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros"],
          ["-O3", "-fopenmp-simd", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
           "-fno-signed-zeros"])
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}

#: per library name: the loaded libraries and why one failed to build (tests replace the whole dict)
_state = {"libs": {}, "errors": {}, "pool": None, "pid": None}
_lock = threading.Lock()


def _compiler():
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise RuntimeError("no C compiler found (set CC)")
    return shutil.which(cc) or cc


def _cache_dir():
    path = os.environ.get("KGESTIMATOR_KERNEL_DIR") or os.path.join(
        tempfile.gettempdir(), f"kgestimator_kernels_{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    if hasattr(os, "getuid") and os.stat(path).st_uid != os.getuid():
        raise RuntimeError(f"kernel folder {path} belongs to another user")
    return path


def _digest(source, cc, flags):
    with open(source, "rb") as f:
        h = hashlib.sha256(f.read())
    stat = os.stat(cc) if os.path.exists(cc) else None
    for part in (cc, str(stat.st_mtime_ns if stat else ""), " ".join(flags), platform.machine(),
                 torch.backends.cpu.get_cpu_capability(), _cpu_flags()):
        h.update(part.encode())
    return h.hexdigest()[:20]


def _cpu_flags():
    # -march=native code must never run on another CPU model (a home folder shared by a cluster)
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return ""


def _build(name):
    source, signatures = SOURCES[name]
    source = os.path.join(_DIR, source)
    cc, folder, errors = _compiler(), _cache_dir(), []
    for flags in _FLAGS:
        path = os.path.join(folder, f"{name}-{_digest(source, cc, flags)}.so")
        if not os.path.exists(path):
            tmp = f"{path}.{os.getpid()}.tmp"
            done = subprocess.run([cc, *flags, "-shared", "-fPIC", "-o", tmp, source],
                                  capture_output=True, text=True, timeout=300)
            if done.returncode != 0:
                errors.append(done.stderr.strip()[-500:])
                continue
            os.replace(tmp, path)  # atomic: a concurrent process loads a whole library or builds its own
        lib = ctypes.CDLL(path)
        for fn, (lead, n_ptr, n_int) in signatures.items():
            for sfx in _SUFFIX.values():
                getattr(lib, f"{fn}_{sfx}").argtypes = ([ctypes.c_int64] * lead + [ctypes.c_void_p] * n_ptr
                                                        + [ctypes.c_int64] * n_int)
        return lib
    raise RuntimeError(f"compiling the {name} kernels failed: " + " | ".join(errors))


#: the libraries: name -> (C source in this folder, {entry point: (leading int flags, pointers,
#: trailing ints)} as argument counts; each entry point exists per floating type, ``_f32`` / ``_f64``)
SOURCES = {
    "distance": ("_distance.c", {"distance_forward": (1, 6, 8), "distance_backward": (1, 9, 8),
                                 "sparse_forward": (1, 9, 7), "sparse_backward": (1, 12, 7)}),
    "nbf": ("_nbf.c", {"nbf_forward": (0, 12, 9), "nbf_backward": (0, 15, 9)}),
}


def library(name="distance"):
    """The loaded kernel library ``name`` (:data:`SOURCES`), or None where it cannot be built (the reason: :func:`error`)."""
    with _lock:
        if _state["libs"].get(name) is None and _state["errors"].get(name) is None:
            try:
                _state["libs"][name] = _build(name)
            except (OSError, RuntimeError, subprocess.SubprocessError) as exc:
                _state["errors"][name] = f"{type(exc).__name__}: {exc}"
        return _state["libs"].get(name)


def error(name="distance"):
    """Why :func:`library` returned None for ``name`` (None while it has not failed)."""
    return _state["errors"].get(name)


def supports(*tensors):
    """Whether the kernels take these tensors: CPU, float32 or float64, one dtype."""
    t = tensors[0]
    return t.device.type == "cpu" and t.dtype in _SUFFIX and all(x.dtype == t.dtype for x in tensors)


def usable(name, warned, kernels, fallback, *tensors):
    """Whether library ``name`` runs for ``tensors``: they suit it and it builds.

    A library that cannot be built warns once per ``warned`` set (the calling
    module's), naming ``kernels`` and the ``fallback`` that runs instead.
    """
    if not supports(*tensors):
        return False
    if library(name) is None:
        if "build" not in warned:
            warned.add("build")
            warnings.warn(f"The {kernels} could not be built ({error(name)}); continuing with {fallback}.",
                          RuntimeWarning, stacklevel=4)
        return False
    return True


def _ptr(t):
    return None if t is None else t.data_ptr()


def _pool(n):
    # one pool per process (a forked child starts its own); ctypes releases the GIL during each call
    with _lock:
        if _state["pid"] != os.getpid() or _state["pool"]._max_workers < n:
            _state["pool"], _state["pid"] = ThreadPoolExecutor(max_workers=n), os.getpid()
        return _state["pool"]


def run_parts(fn, parts):
    """``fn(*part)`` for every part, on torch's thread count (the calling thread takes the first)."""
    if len(parts) == 1:
        fn(*parts[0])
        return
    futures = [_pool(len(parts) - 1).submit(fn, *p) for p in parts[1:]]
    fn(*parts[0])
    for f in futures:
        f.result()


def split(n, parts):
    """``parts`` contiguous ``(begin, end)`` ranges covering ``range(n)``, none empty."""
    parts = max(1, min(parts, n))
    step = -(-n // parts)
    return [(b, min(n, b + step)) for b in range(0, n, step)]


def _threads(work):
    # below about 200k coordinates a thread costs more than it saves
    return min(torch.get_num_threads(), max(1, work // 200_000))


def _split_gradients(R, N, threads, call, *shapes, dtype):
    """Run ``call(r0, r1, j0, j1, *buffers)`` over chunk ranges, or candidate ranges with per-part buffers.

    Returns the buffers (zeroed, then accumulated by the kernel): with fewer
    chunks than threads each candidate range gets its own and they are summed
    in a fixed order, so a run is reproducible at a given thread count.
    """
    if R >= threads:
        bufs = [torch.zeros(s, dtype=dtype) for s in shapes]
        run_parts(lambda a, b: call(a, b, 0, N, *bufs), split(R, threads))
        return bufs
    ranges = split(N, threads)
    parts = [[torch.zeros(s, dtype=dtype) for s in shapes] for _ in ranges]
    run_parts(lambda p, a, b: call(0, R, a, b, *parts[p]), [(p, a, b) for p, (a, b) in enumerate(ranges)])
    return [sum(bs[1:], bs[0]) for bs in zip(*parts)]


def forward(hake, q, cand_t, pos, mask_t, mask_stride, out_p, out_m, d):
    """Fill ``out_p`` (and HAKE's ``out_m``) ``(R, c, N)``: ``distance_forward`` of ``_distance.c``."""
    lib, (R, c), N = library(), q.shape[:2], cand_t.shape[2]
    fn = getattr(lib, f"distance_forward_{_SUFFIX[q.dtype]}")
    args = [int(hake), _ptr(q), _ptr(cand_t), _ptr(pos), _ptr(mask_t), _ptr(out_p), _ptr(out_m), c, N, d, mask_stride]
    rows = R * c
    threads = _threads(rows * N * d)
    if rows >= threads:
        run_parts(lambda a, b: fn(*args, a, b, 0, N), split(rows, threads))
    else:
        run_parts(lambda a, b: fn(*args, 0, rows, a, b), split(N, threads))


def backward(hake, grad_p, grad_m, q, cand_t, pos, mask_t, mask_stride, d):
    """``(grad q, grad cand_t, grad pos or None)`` of :func:`forward`'s outputs."""
    lib, (R, c), N = library(), q.shape[:2], cand_t.shape[2]
    fn = getattr(lib, f"distance_backward_{_SUFFIX[q.dtype]}")
    g_t = torch.zeros_like(cand_t)  # candidate ranges write disjoint columns: shared by the parts
    head = [int(hake), _ptr(grad_p), _ptr(grad_m), _ptr(q), _ptr(cand_t), _ptr(pos), _ptr(mask_t)]

    def call(r0, r1, j0, j1, g_q, g_pos=None):
        fn(*head, _ptr(g_q), _ptr(g_t), _ptr(g_pos), c, N, d, mask_stride, r0, r1, j0, j1)

    shapes = [q.shape] if pos is None else [q.shape, pos.shape]
    bufs = _split_gradients(R, N, _threads(R * c * N * d), call, *shapes, dtype=q.dtype)
    return bufs[0], g_t, bufs[1] if pos is not None else None


def sparse_forward(hake, q_t, dp_t, cand, lists, out_p_t, out_m_t, d):
    """Fill ``out_p_t`` (and ``out_m_t``) ``(R, N, c)``: ``sparse_forward`` of ``_distance.c``."""
    lib, (R, c), N = library(), (q_t.shape[0], q_t.shape[2]), cand.shape[1]
    fn = getattr(lib, f"sparse_forward_{_SUFFIX[q_t.dtype]}")
    args = [int(hake), _ptr(q_t), _ptr(dp_t), _ptr(cand), *map(_ptr, lists), _ptr(out_p_t), _ptr(out_m_t), c, N, d]
    threads = _threads(R * c * N * d)
    if R >= threads:
        run_parts(lambda a, b: fn(*args, a, b, 0, N), split(R, threads))
    else:
        run_parts(lambda a, b: fn(*args, 0, R, a, b), split(N, threads))


def sparse_backward(hake, grad_p_t, grad_m_t, q_t, dp_t, cand, lists, d):
    """``(grad q_t, grad dp_t or None, grad cand)`` of :func:`sparse_forward`'s outputs."""
    lib, (R, c), N = library(), (q_t.shape[0], q_t.shape[2]), cand.shape[1]
    fn = getattr(lib, f"sparse_backward_{_SUFFIX[q_t.dtype]}")
    g_cand = torch.zeros_like(cand)  # candidate ranges write disjoint rows
    head = [int(hake), _ptr(grad_p_t), _ptr(grad_m_t), _ptr(q_t), _ptr(dp_t), _ptr(cand), *map(_ptr, lists)]

    def call(r0, r1, j0, j1, g_q, g_dp=None):
        fn(*head, _ptr(g_q), _ptr(g_dp), _ptr(g_cand), c, N, d, r0, r1, j0, j1)

    shapes = [q_t.shape] if dp_t is None else [q_t.shape, dp_t.shape]
    bufs = _split_gradients(R, N, _threads(R * c * N * d), call, *shapes, dtype=q_t.dtype)
    return bufs[0], bufs[1] if dp_t is not None else None, g_cand

"""How many torch threads one ``fit`` uses, and putting the caller's setting back.

torch's intra-op pool defaults to every core of the machine. That is right for
one fit alone and wrong when several fits share a machine: two Dask workers on
a 16-core host, each running a fit with 16 threads, put 32 busy threads on 16
cores and both slow down (on 2 cores, the whole test suite took 9x longer with
torch's default than with one thread).

Policy of ``KGEmbedder(n_threads=None)``:

* outside a Dask worker, torch's setting is left alone (the caller owns it);
* inside a Dask worker, the fit takes the worker's share of the host. The
  cluster declares that share in ``OMP_NUM_THREADS``: Dask's nanny sets it to 1
  in every worker process (``distributed.nanny.pre-spawn-environ``), and raising
  it there is how an administrator gives each task more cores. When it is unset
  (threaded workers, ``processes=False``), the share is the host's usable cores
  divided by the tasks the worker runs at once.

joblib's ``inner_max_num_threads`` would be the natural knob, but joblib applies
it to the loky backend only (its Dask backend ignores it); under loky, joblib
already sets ``OMP_NUM_THREADS`` in the workers and torch reads it at import.
"""

import contextlib
import os
import sys

import torch


def usable_cores():
    """CPU cores this process may run on (affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def dask_worker():
    """The Dask worker running this code, or None (never imports ``distributed`` itself)."""
    if "distributed" not in sys.modules:  # no worker can exist without it being imported
        return None
    try:
        from distributed import get_worker

        return get_worker()
    except (ImportError, ValueError):  # ValueError: not inside a worker task
        return None


def worker_share(worker):
    """Torch threads one task of ``worker`` should use (see the module docstring)."""
    declared = os.environ.get("OMP_NUM_THREADS", "")
    if declared.isdigit() and int(declared) > 0:
        return int(declared)
    return max(1, usable_cores() // max(1, int(getattr(worker, "nthreads", 1))))


def fit_threads(n_threads):
    """Torch threads for a fit: ``n_threads``, the Dask worker's share, or None (leave as is)."""
    if n_threads is not None:
        # more threads than cores only oversubscribes; the same value may be sent to
        # every machine of a heterogeneous cluster, so clip rather than refuse
        return min(int(n_threads), usable_cores())
    worker = dask_worker()
    return None if worker is None else worker_share(worker)


@contextlib.contextmanager
def torch_threads(n_threads):
    """Run the block with ``n_threads`` torch threads (None: unchanged), then restore the caller's."""
    if n_threads is None:
        yield
        return
    # torch's setting is per process: in a threaded Dask worker (processes=False) fits that
    # overlap share it, and one that ends first restores its caller's value under the other;
    # worker processes with one thread each (Dask's default with a nanny) never overlap
    previous = torch.get_num_threads()
    torch.set_num_threads(n_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)

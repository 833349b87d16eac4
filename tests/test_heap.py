"""Large freed blocks kept in glibc's heap during fit and evaluate (kgestimator._heap)."""

import ctypes
import os

import numpy as np
import pytest
import torch

from kgestimator import KGEmbedder, _heap
from kgestimator.datasets import make_kg

BIG = 16 * 2**20  # floats: 64 MB, above glibc's largest mmap threshold (32 MB)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _mallinfo2():
    libc = _heap.glibc()
    if libc is None or not hasattr(libc, "mallinfo2"):
        pytest.skip("needs glibc >= 2.33 (mallinfo2) to see where malloc takes its blocks")
    libc.mallinfo2.restype = _MallInfo2
    return libc.mallinfo2


def mmapped_while_alive(n=BIG):
    """Bytes of mmapped chunks a ``torch.empty(n)`` added while it was alive."""
    info = _mallinfo2()
    before = info().hblkhd
    x = torch.empty(n)
    x.fill_(1.0)
    during = info().hblkhd
    del x
    return during - before


@pytest.fixture(autouse=True)
def _on(monkeypatch):
    monkeypatch.delenv("KGESTIMATOR_KEEP_FREED_MEMORY", raising=False)


def test_a_large_block_comes_from_the_heap_inside_and_is_mmapped_outside():
    assert mmapped_while_alive() >= BIG * 4
    with _heap.freed_blocks_kept():
        assert mmapped_while_alive() == 0
    # glibc's defaults are back: the next large block is mmapped again
    assert mmapped_while_alive() >= BIG * 4


def _resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_exit_hands_the_freed_pages_back():
    if _heap.glibc() is None or not os.path.exists("/proc/self/statm"):
        pytest.skip("glibc on Linux only")
    with _heap.freed_blocks_kept():
        x = torch.ones(BIG)
        del x
        kept = _resident_bytes()  # the freed 64 MB stays resident, ready for the next block
        assert mmapped_while_alive() == 0
    assert _resident_bytes() < kept - BIG * 2  # malloc_trim returned it to the kernel


def test_nested_uses_restore_at_the_outermost_exit():
    with _heap.freed_blocks_kept():
        with _heap.freed_blocks_kept():
            pass
        assert mmapped_while_alive() == 0  # the inner exit did not put mmap back
    assert mmapped_while_alive() >= BIG * 4


def test_turned_off_by_the_environment(monkeypatch):
    monkeypatch.setenv("KGESTIMATOR_KEEP_FREED_MEMORY", "0")
    assert not _heap.enabled()
    with _heap.freed_blocks_kept():
        assert mmapped_while_alive() >= BIG * 4


class _Probe:
    """A callback that allocates a large block during training and records where it came from."""

    def __init__(self):
        self.mmapped = []

    def on_epoch_end(self, est, record):
        self.mmapped.append(mmapped_while_alive())


def test_fit_trains_with_freed_blocks_kept_and_restores_after():
    X = make_kg(n_entities=30, n_relations=8, n_triples=300, random_state=0).train
    probe = _Probe()
    est = KGEmbedder(model="distmult", dim=8, n_epochs=2, batch_size=100, n_negatives=4, random_state=0,
                     callbacks=[probe]).fit(X)
    assert probe.mmapped == [0, 0]
    assert mmapped_while_alive() >= BIG * 4
    est.evaluate(X[:20])  # evaluation uses it too and restores after
    assert mmapped_while_alive() >= BIG * 4


def test_the_same_fit_with_and_without(monkeypatch):
    X = make_kg(n_entities=30, n_relations=8, n_triples=300, random_state=0).train
    params = dict(model="complex", dim=8, n_epochs=3, batch_size=100, n_negatives=4, random_state=0)
    on = KGEmbedder(**params).fit(X)
    monkeypatch.setenv("KGESTIMATOR_KEEP_FREED_MEMORY", "0")
    off = KGEmbedder(**params).fit(X)
    np.testing.assert_array_equal(on.transform(X), off.transform(X))


def test_kept_only_with_headroom_for_the_need(monkeypatch):
    monkeypatch.setattr(_heap, "available_bytes", lambda device: 10 * 2**30)
    assert _heap.affordable(2 * 2**30)
    assert not _heap.affordable(3 * 2**30)  # 4 x 3 GB > 10 GB free
    with _heap.freed_blocks_kept(3 * 2**30):
        assert mmapped_while_alive() >= BIG * 4
    monkeypatch.setattr(_heap, "available_bytes", lambda device: None)
    assert not _heap.affordable(0)  # free memory unknown: glibc's defaults


def test_a_fit_without_headroom_keeps_glibc_defaults(monkeypatch):
    X = make_kg(n_entities=30, n_relations=8, n_triples=300, random_state=0).train
    monkeypatch.setattr(_heap, "available_bytes", lambda device: 1000)  # less than 4 x the tables of any fit
    probe = _Probe()
    KGEmbedder(model="distmult", dim=8, n_epochs=1, batch_size=100, n_negatives=4, random_state=0,
               callbacks=[probe]).fit(X)
    assert probe.mmapped[0] >= BIG * 4

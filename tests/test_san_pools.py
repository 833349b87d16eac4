"""benchmarks/san_pools.py: pool statistics of restarted against chained SAN walks."""

import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "benchmarks"))
import san_pools  # noqa: E402


def test_restarted_pools_stay_local_and_chained_ones_do_not():
    # a path 0 - 1 - ... - 29: a restarted 3-step walk from 0 ends within 3 hops,
    # 1,000 chained walks wander along the whole path
    n = 30
    train = np.array([(i, 0, i + 1) for i in range(n - 1)], dtype=np.int64)
    held_out = np.array([(0, 0, 20), (29, 0, 5), (0, 0, 3)], dtype=np.int64)
    restarted = san_pools.pool_stats(train, held_out, n, 1, chained=False, seed=0)
    chained = san_pools.pool_stats(train, held_out, n, 1, chained=True, seed=0)
    # only (0, 0, 3), both sides, is in reach: 3-step walks on a path end at an odd distance
    assert restarted["held_out_answers_in_pool"] == 2 / 6
    assert restarted["pool_size_mean"] <= 4
    assert chained["pool_size_mean"] > 3 * restarted["pool_size_mean"]
    assert chained["held_out_answers_in_pool"] > restarted["held_out_answers_in_pool"]


def test_in_pool_reads_each_anchor_row():
    indptr = np.array([0, 2, 2, 5])
    indices = np.array([1, 4, 0, 2, 3])
    got = san_pools.in_pool(indptr, indices, np.array([0, 0, 1, 2, 2]), np.array([4, 2, 0, 3, 1]))
    assert got.tolist() == [True, False, False, True, False]

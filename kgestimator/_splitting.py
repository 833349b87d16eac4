"""Randomness and coverage helpers of splits: ``model_selection``'s folds and ``make_kg``'s holdout.

Their own module, below both :mod:`kgestimator.model_selection` and
:mod:`kgestimator.datasets`, so that neither imports the other's privates.
"""

import numpy as np
from sklearn.utils import check_random_state



def check_rng(random_state):
    """A numpy Generator from None, an int, a RandomState or a Generator.

    A RandomState is consumed (as scikit-learn does), so repeated calls with
    the same instance differ while an int always gives the same stream.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    seed = check_random_state(random_state).randint(np.iinfo(np.int32).max, size=4)
    return np.random.default_rng(seed)


def keep_covered(ids, out, movable, priority, n_entities, n_relations, max_iter=10):
    """Move triples back in until every entity and relation of ``out`` stays in.

    Parameters
    ----------
    ids : ndarray of shape (n, 3)
        Integer triples.
    out : ndarray of bool of shape (n,)
        Triples held out of the "in" set (a test fold, removed triples, ...).
    movable : ndarray of bool of shape (n,)
        Out triples allowed to go back in.
    priority : ndarray of shape (n,)
        Lower values go back first, so the choice can be random or stable.

    Returns
    -------
    out : ndarray of bool of shape (n,)
        A copy of `out` in which, for every entity or relation that occurs
        in an out triple but in no in triple, one movable out triple holding
        it went back in (when one exists).
    """
    out = out.copy()
    for _ in range(max_iter):
        inside = ~out
        ent_count = np.bincount(ids[inside, 0], minlength=n_entities)
        ent_count += np.bincount(ids[inside, 2], minlength=n_entities)
        rel_count = np.bincount(ids[inside, 1], minlength=n_relations)
        out_idx = np.flatnonzero(out)
        h, r, t = ids[out_idx, 0], ids[out_idx, 1], ids[out_idx, 2]
        keys = np.concatenate((h, t, r + n_entities))
        stranded = np.concatenate((ent_count[h] == 0, ent_count[t] == 0, rel_count[r] == 0))
        if not stranded.any():
            break
        owners = np.tile(out_idx, 3)
        candidate = stranded & movable[owners]
        if not candidate.any():
            break
        keys, owners = keys[candidate], owners[candidate]
        order = np.argsort(priority[owners], kind="stable")
        keys, owners = keys[order], owners[order]
        # One triple per stranded label suffices: the in set only grows, so
        # nothing covered before becomes stranded.
        _, first = np.unique(keys, return_index=True)
        out[owners[first]] = False
    return out

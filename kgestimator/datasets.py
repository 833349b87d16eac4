"""Datasets: triple files, the benchmark datasets folder, and synthetic graphs (``make_kg``).

Like :mod:`sklearn.datasets`: loaders return arrays of ``(head, relation, tail)``
labels (or a :class:`~sklearn.utils.Bunch` of splits); checking and encoding
triples is :mod:`kgestimator.data`'s job.
"""

import gzip
import numbers
import os
from itertools import compress, repeat
from pathlib import Path

import numpy as np
from sklearn.utils import Bunch

from ._splitting import check_rng, keep_covered
from .dataset_registry import SPLITS, find_dataset, split_file

__all__ = ["load_triples", "load_dataset", "dataset_dir", "find_named_dataset", "make_kg", "DATA_ENV_VAR"]

DATA_ENV_VAR = "KGESTIMATOR_DATA"
_COLUMNS = ("head", "relation", "tail")


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def text_lines(data, name):
    """The lines of UTF-8 bytes as :func:`load_triples` reads them (also for query files).

    A byte-order mark is dropped; ``\\n``, ``\\r\\n`` and ``\\r`` end lines and
    nothing else does (``str.splitlines`` would also break at U+2028, form
    feeds and the like, which are valid inside labels). Invalid UTF-8 and NUL
    characters raise a ValueError naming ``name`` and the 1-based line.
    """
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{name}, line {line}: not valid UTF-8 ({exc.reason})") from None
    # universal newlines: a lone "\r" (old Mac files, a CRLF file cut after
    # its "\r") ends a line instead of becoming part of a label
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if "\x00" in text:
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise ValueError(
            f"{name}, line {line}: NUL character; the file is binary or not "
            "UTF-8 text (UTF-16?)"
        )
    return text.split("\n")


def load_triples(path, *, sep="\t"):
    """Read triples from a UTF-8 text file, one ``head sep relation sep tail`` a line.

    Parameters
    ----------
    path : str or path-like
        File to read.  ``\\n``, ``\\r\\n`` and ``\\r`` line endings and a
        UTF-8 byte-order mark are accepted; a name ending in ``.gz`` is read
        as gzip-compressed.
    sep : str, default="\\t"
        Field separator.

    Returns
    -------
    triples : ndarray of shape (n_triples, 3)
        Unicode array of labels, in file order.  Labels are kept exactly
        (``"NA"``, ``"null"`` and surrounding spaces included).  A file
        without triples gives an array of shape ``(0, 3)``.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If a non-blank line does not have exactly three fields, a field is
        empty, or the file is not valid UTF-8 text (invalid bytes, NUL
        characters); the message names the file and the 1-based line number.

    Notes
    -----
    Lines that are empty or hold only whitespace are skipped.
    """
    if not isinstance(sep, str) or not sep or "\n" in sep or "\r" in sep:
        raise ValueError(f"sep must be a non-empty string without newlines, got {sep!r}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"triples file not found: {path}")
    data = path.read_bytes()
    if path.suffix == ".gz":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a valid gzip file ({exc})") from None
    lines = text_lines(data, path)
    n_lines = len(lines)
    blank = np.fromiter(map(str.isspace, lines), dtype=bool, count=n_lines)
    blank |= np.fromiter(map(len, lines), dtype=np.int64, count=n_lines) == 0
    n_seps = np.fromiter(map(str.count, lines, repeat(sep)), dtype=np.int64, count=n_lines)
    malformed = ~blank & (n_seps != 2)
    if malformed.any():
        i = int(np.argmax(malformed))
        shown = lines[i] if len(lines[i]) <= 120 else lines[i][:117] + "..."
        raise ValueError(
            f"{path}, line {i + 1}: expected 3 fields (head, relation, tail) "
            f"separated by {sep!r}, found {n_seps[i] + 1}: {shown!r}"
        )
    keep = ~blank
    if not keep.any():
        return np.empty((0, 3), dtype="U1")
    # One join/split over the whole file instead of splitting line by line.
    fields = sep.join(compress(lines, keep)).split(sep)
    width = max(1, max(map(len, fields)))
    triples = np.array(fields, dtype=f"U{width}").reshape(-1, 3)
    empty = triples == ""
    if empty.any():
        row, col = divmod(int(np.argmax(empty.ravel())), 3)
        line = int(np.flatnonzero(keep)[row]) + 1
        raise ValueError(
            f"{path}, line {line}: empty {_COLUMNS[col]} label (field {col + 1})"
        )
    return triples


def dataset_dir(name=None):
    """Folder holding the benchmark datasets, or one dataset in it.

    The datasets root is, in order of preference:

    1. the ``KGESTIMATOR_DATA`` environment variable, when set;
    2. ``../shared/datasets`` relative to the current working directory;
    3. ``../shared/datasets`` relative to the repository root (the folder
       that holds the ``kgestimator`` package), when the package runs from a
       source checkout rather than an installed copy.

    Parameters
    ----------
    name : str, default=None
        Dataset name, e.g. ``"nations"`` or ``"FB15k-237"``.

    Returns
    -------
    path : pathlib.Path
        The datasets root, or ``root / name`` when `name` is given.

    Raises
    ------
    FileNotFoundError
        If no datasets root exists, or it holds no dataset called `name`.
    """
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        root = Path(env).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(
                f"{DATA_ENV_VAR}={env!r} is not a directory; point it at the "
                "folder that holds the datasets"
            )
    else:
        candidates = [Path.cwd() / ".." / "shared" / "datasets"]
        repository = Path(__file__).resolve().parents[1]
        if (repository / "pyproject.toml").is_file():  # a source checkout, not site-packages
            candidates.append(repository.parent / "shared" / "datasets")
        # from the repository root both candidates are one folder: name it once
        candidates = list(dict.fromkeys(c.resolve() for c in candidates))
        root = next((c for c in candidates if c.is_dir()), None)
        if root is None:
            tried = " or ".join(map(str, candidates))
            raise FileNotFoundError(
                f"no datasets folder: {DATA_ENV_VAR} is not set and there is no {tried}; "
                f"set {DATA_ENV_VAR} to a folder holding one sub-folder per dataset "
                "(<name>/train.txt, valid.txt, test.txt), or pass a dataset folder's path"
            )
    root = root.resolve()
    if name is None:
        return root
    if not isinstance(name, (str, os.PathLike)) or not str(name):
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    path = root / name
    if not path.is_dir():
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise FileNotFoundError(
            f"dataset {str(name)!r} not found in {root} (available: "
            f"{', '.join(available) or 'none'}); set {DATA_ENV_VAR} to use "
            "another datasets folder"
        )
    return path


def load_dataset(directory, *, download=False):
    """Load the train, valid and test splits of a dataset.

    Parameters
    ----------
    directory : str or path-like
        Folder holding the three files (``train.txt``, ``valid.txt``,
        ``test.txt``, or ``.tsv``/``.tsv.gz``/``.txt.gz``), or the bare name of
        a dataset when no such folder exists relative to the working directory.
        A name is looked up, in order, in the datasets folder of
        :func:`dataset_dir` (``KGESTIMATOR_DATA``), among the datasets bundled
        with the package (``"nations"``, ``"kinship"``, ``"umls"``), and in the
        download cache (:mod:`kgestimator.dataset_registry`).
    download : bool, default=False
        When no copy of a named dataset is found, download it (``"FB15k-237"``,
        ``"WN18RR"``, ``"codex-s"``, ``"codex-m"``, ``"countries_s1"`` to
        ``"countries_s3"``), checking each file's pinned SHA-256, into
        ``$KGESTIMATOR_CACHE`` (default ``~/.cache/kgestimator``). Needs
        ``pooch`` (the ``download`` extra).

    Returns
    -------
    dataset : sklearn.utils.Bunch
        ``train``, ``valid`` and ``test`` arrays of shape (n, 3) as returned
        by :func:`load_triples`, and ``name``, the folder's name.

    Raises
    ------
    FileNotFoundError
        If the folder or one of the three files is missing, or no source has a
        named dataset (the message says where datasets come from).
    """
    if not isinstance(directory, (str, os.PathLike)):
        raise TypeError(
            f"directory must be a path or a dataset name, got {type(directory).__name__}"
        )
    path = Path(directory)
    if not path.is_dir():
        if path.is_absolute() or len(path.parts) != 1:
            raise FileNotFoundError(f"dataset folder not found: {path}")
        path = find_named_dataset(str(directory), download=download)
    splits = {}
    for split in SPLITS:
        file = split_file(path, split)
        if file is None:
            raise FileNotFoundError(f"dataset folder {path} has no {split}.txt")
        splits[split] = load_triples(file)
    return Bunch(**splits, name=path.name)


def find_named_dataset(name, *, download=False):
    """The folder of a dataset named ``name``: see :func:`load_dataset` for the order of the sources."""
    try:
        root = dataset_dir()
    except FileNotFoundError:
        if os.environ.get(DATA_ENV_VAR):
            raise  # the user's setting is wrong: say so rather than fall back
        root = None
    return find_dataset(name, root, download=download)


# --------------------------------------------------------------------------
# Synthetic knowledge graphs
# --------------------------------------------------------------------------

_PATTERN_SIZES = {"symmetric": 1, "inverse": 2, "compositional": 3, "hierarchical": 2}
# Generation order: rigid patterns first, so that the flexible ones (which
# hit any count exactly) absorb what the rigid ones could not produce.
_GENERATION_ORDER = ("hierarchical", "compositional", "typed", "inverse", "symmetric")
_MAX_HOLDOUT_PER_RELATION = 0.75
_MIN_TRIPLES_PER_RELATION = 10
_SPARSITY = 4  # domains are sized to hold this many times the pairs drawn


def make_kg(
    n_entities=300,
    n_relations=8,
    n_triples=6000,
    *,
    patterns=("symmetric", "inverse", "compositional", "hierarchical"),
    noise=0.0,
    valid_size=0.1,
    test_size=0.1,
    random_state=None,
):
    """Generate a small knowledge graph with planted relational patterns.

    Entities fall into latent types and every relation links a few types,
    so the graph has structure an embedding can learn.  Each held-out
    (valid or test) triple can be inferred from training triples through
    its relation's pattern:

    - ``"symmetric"`` (1 relation ``s``): pairs of entities of one type are
      linked both ways; for a held-out ``(b, s, a)``, ``(a, s, b)`` is in
      train.
    - ``"inverse"`` (2 relations ``r``, ``r'``): every ``(a, r, b)`` comes
      with ``(b, r', a)``; only one of the two is ever held out.
    - ``"compositional"`` (3 relations ``r1``, ``r2``, ``r3``): ``r2`` maps
      each entity of a small hub type to one entity of another type and
      ``r3 = r1 o r2``; held-out ``(a, r3, c)`` have ``(a, r1, b)`` and
      ``(b, r2, c)`` in train.
    - ``"hierarchical"`` (2 relations ``is_a``, ``has``): a class tree
      (top classes, one class per latent type, two subclasses each) with
      entities attached to a subclass of their type; ``is_a`` is transitive
      and ``has`` (one property entity per class) is inherited down the
      tree.  Held-out triples are implied facts (``(x, is_a, ancestor)``,
      inherited properties) whose direct facts are in train.

    Relations left over once every requested pattern has its relations go,
    cycling through the requested patterns, to further symmetric, inverse
    or compositional groups, or to further inherited relations of the one
    hierarchy (``is_a`` stays its first relation).  Any that still fit no
    group become ``"typed"`` relations, which only follow the type
    structure and are never held out.

    Parameters
    ----------
    n_entities : int, default=300
        Number of entities to draw from.  In very sparse graphs a few may
        end up in no triple; the labels are renumbered so the entities used
        are always ``e0 ... e{m-1}``.
    n_relations : int, default=8
        Number of relations.  Must hold every requested pattern (1 for
        symmetric, 2 for inverse, 3 for compositional, 2 for hierarchical).
    n_triples : int, default=6000
        Total number of triples over train, valid and test.
    patterns : sequence of str, default=("symmetric", "inverse", \
"compositional", "hierarchical")
        Patterns to plant, in the order their relations are numbered.  The
        relations of one pattern group have consecutive numbers, in the
        order given above (e.g. ``r1``, ``r2``, then ``r3 = r1 o r2``).
    noise : float, default=0.0
        Fraction of training triples replaced by uniformly random triples
        (never duplicates, and never so that a valid or test entity
        disappears from train).  Noise may remove the premises of held-out
        triples, which is its point.
    valid_size, test_size : float or int, default=0.1
        Size of the validation and test splits, as a fraction of
        `n_triples` or as a number of triples.
    random_state : int, RandomState instance, Generator or None, default=None
        Seed for reproducible graphs.

    Returns
    -------
    kg : sklearn.utils.Bunch
        ``train``, ``valid``, ``test``: unicode arrays of shape (n, 3) with
        labels such as ``"e17"`` and ``"r0_symmetric"``, shuffled, with no
        duplicate triple within or across splits and every entity and
        relation of valid and test present in train;
        ``entities`` and ``relations``: sorted label arrays;
        ``patterns``: dict mapping each relation label to its pattern name.

    Raises
    ------
    ValueError
        For invalid parameters, or when `n_triples` distinct triples (or
        the requested held-out triples) cannot be planted on `n_entities`.

    Examples
    --------
    >>> kg = make_kg(n_entities=100, n_triples=2000, random_state=0)
    >>> kg.train.shape, kg.test.shape
    ((1600, 3), (200, 3))
    """
    pattern_list = _validate_make_kg(n_entities, n_relations, n_triples, patterns, noise)
    n_valid = _resolve_size(valid_size, n_triples, "valid_size")
    n_test = _resolve_size(test_size, n_triples, "test_size")
    if n_valid + n_test >= n_triples:
        raise ValueError(
            f"valid_size + test_size ({n_valid} + {n_test} triples) must leave "
            f"training triples out of n_triples={n_triples}"
        )
    rng = check_rng(random_state)

    groups = _allocate_groups(pattern_list, n_relations)
    space = _EntitySpace(
        rng, n_entities, hierarchical=any(p == "hierarchical" for p, _ in groups)
    )
    facts, derived = _plant_groups(rng, space, groups, n_triples)

    split = _holdout(rng, facts, derived, n_valid, n_test, n_relations)
    if noise > 0:
        facts, split = _add_noise(rng, facts, split, noise, n_relations)
    return _to_labelled_bunch(rng, facts, split, groups)


def _validate_make_kg(n_entities, n_relations, n_triples, patterns, noise):
    for name, value, low in (
        ("n_entities", n_entities, 10),
        ("n_relations", n_relations, 1),
        ("n_triples", n_triples, 1),
    ):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool):
            raise ValueError(f"{name} must be an int, got {value!r}")
        if value < low:
            raise ValueError(f"{name} must be at least {low}, got {value}")
    if n_triples < _MIN_TRIPLES_PER_RELATION * n_relations:
        raise ValueError(
            f"n_triples={n_triples} is too small for n_relations={n_relations}: "
            f"need at least {_MIN_TRIPLES_PER_RELATION} triples per relation "
            f"({_MIN_TRIPLES_PER_RELATION * n_relations})"
        )
    if isinstance(patterns, str):
        patterns = (patterns,)
    try:
        pattern_list = list(patterns)
    except TypeError:
        raise ValueError(f"patterns must be a sequence of pattern names, got {patterns!r}") from None
    if not pattern_list:
        raise ValueError(
            f"patterns must name at least one of {sorted(_PATTERN_SIZES)}"
        )
    unknown = [p for p in pattern_list if p not in _PATTERN_SIZES]
    if unknown:
        raise ValueError(
            f"unknown pattern(s) {unknown[:5]}; valid patterns are "
            f"{sorted(_PATTERN_SIZES)}"
        )
    if len(set(pattern_list)) != len(pattern_list):
        raise ValueError(f"patterns contains duplicates: {pattern_list}")
    needed = sum(_PATTERN_SIZES[p] for p in pattern_list)
    if n_relations < needed:
        raise ValueError(
            f"n_relations={n_relations} is too small for patterns "
            f"{tuple(pattern_list)}: they need at least {needed} relations"
        )
    if not isinstance(noise, numbers.Real) or isinstance(noise, bool) or not 0 <= noise < 1:
        raise ValueError(f"noise must be a float in [0, 1), got {noise!r}")
    return pattern_list


def _resolve_size(size, n, name):
    """Number of triples for a split given as a fraction or a count."""
    if isinstance(size, bool) or not isinstance(size, numbers.Real):
        raise ValueError(f"{name} must be a float in [0, 1) or an int, got {size!r}")
    if isinstance(size, numbers.Integral):
        if not 0 <= size < n:
            raise ValueError(f"{name}={size} must be in [0, {n}) triples")
        return int(size)
    if not 0 <= size < 1:
        raise ValueError(f"{name}={size} must be a fraction in [0, 1)")
    return int(round(size * n))


def _allocate_groups(patterns, n_relations):
    """``[pattern, n_relations_of_group]`` of every group, in relation order."""
    groups = [[p, _PATTERN_SIZES[p]] for p in patterns]
    remaining = n_relations - sum(size for _, size in groups)
    hierarchy = next((g for g in groups if g[0] == "hierarchical"), None)
    i = 0
    while remaining > 0:
        if not any(p == "hierarchical" or _PATTERN_SIZES[p] <= remaining for p in patterns):
            groups.extend(["typed", 1] for _ in range(remaining))
            break
        pattern = patterns[i % len(patterns)]
        i += 1
        if pattern == "hierarchical":
            # One class tree is enough: a repeat adds an inherited relation.
            hierarchy[1] += 1
            remaining -= 1
        elif _PATTERN_SIZES[pattern] <= remaining:
            groups.append([pattern, _PATTERN_SIZES[pattern]])
            remaining -= _PATTERN_SIZES[pattern]
    return groups


def _proportional(total, weights):
    """Split an int ``total`` proportionally to ``weights`` (largest remainder)."""
    weights = np.asarray(weights, dtype=np.float64)
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    short = total - counts.sum()
    if short:
        counts[np.argsort(counts - exact, kind="stable")[:short]] += 1
    return counts


class _EntitySpace:
    """Entity ids split into latent types (plus hierarchy classes/properties)."""

    def __init__(self, rng, n_entities, hierarchical):
        self.rng = rng
        self.n_types = int(np.clip(n_entities // 40, 2, 12))
        k = self.n_types
        if hierarchical:
            self.n_top = max(2, k // 3)
            n_classes = self.n_top + 3 * k
            n_reserved = 2 * n_classes  # a class node and its property
        else:
            self.n_top = n_classes = n_reserved = 0
        self.n_instances = n_entities - n_reserved
        if self.n_instances < 4 * k:
            raise ValueError(
                f"n_entities={n_entities} is too small for these patterns: "
                f"need at least {n_reserved + 4 * k}"
            )
        types = rng.permutation(np.arange(self.n_instances) % k)
        self.members = [np.flatnonzero(types == j) for j in range(k)]
        self.type_of = types
        self.classes = np.arange(self.n_instances, self.n_instances + n_classes)
        self.properties = self.classes + n_classes
        self.n_entities = n_entities
        self._usage = np.zeros(k)
        self.groups_left = 1

    def min_types(self):
        """Types the current group should take so no type is left unused."""
        unused = int(np.sum(self._usage == 0))
        return -(-unused // max(self.groups_left, 1))

    def order(self):
        """Types from least to most used, ties broken at random."""
        return np.lexsort((self.rng.random(self.n_types), self._usage))

    def use(self, types):
        self._usage[np.asarray(types, dtype=np.int64)] += 1

    def union(self, types):
        return np.sort(np.concatenate([self.members[j] for j in types]))

    @property
    def all_instances(self):
        return np.arange(self.n_instances)

    def pick_domains(self, n_pairs):
        """Head and tail entity pools of a relation that should hold n_pairs."""
        order = self.order()
        d_min = -(-self.min_types() // 2)
        for d in range(1, self.n_types // 2 + 1):
            heads, tails = self.union(order[:d]), self.union(order[d : 2 * d])
            if d >= d_min and heads.size * tails.size >= _SPARSITY * n_pairs:
                self.use(order[: 2 * d])
                return heads, tails
        if heads.size * tails.size >= n_pairs:
            self.use(order[: 2 * d])
            return heads, tails
        return self.all_instances, self.all_instances


def _sample_pairs(rng, heads, tails, n, *, unordered=False):
    """Up to n distinct (head, tail) pairs, head != tail, in random order.

    With ``unordered=True`` the pairs are unordered pairs of ``heads``
    (``tails`` is ignored), returned as ``(min, max)``.
    """
    heads = np.asarray(heads, dtype=np.int64)
    tails = heads if unordered else np.asarray(tails, dtype=np.int64)
    if unordered:
        capacity = heads.size * (heads.size - 1) // 2
    else:
        capacity = heads.size * tails.size - np.intersect1d(heads, tails).size
    n = int(min(n, capacity))
    if n <= 0:
        return np.empty((0, 2), dtype=np.int64)
    if 3 * n >= capacity:
        # Dense request: enumerating every pair beats rejection sampling.
        if unordered:
            i, j = np.triu_indices(heads.size, 1)
            pairs = np.column_stack((heads[i], heads[j]))
        else:
            pairs = np.column_stack(
                (np.repeat(heads, tails.size), np.tile(tails, heads.size))
            )
            pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        return pairs[rng.choice(len(pairs), size=n, replace=False)]
    base = int(max(heads.max(), tails.max())) + 1
    keys = np.empty(0, dtype=np.int64)
    while keys.size < n:
        m = int(1.25 * (n - keys.size)) + 16
        h = heads[rng.integers(heads.size, size=m)]
        t = tails[rng.integers(tails.size, size=m)]
        ok = h != t
        h, t = h[ok], t[ok]
        if unordered:
            h, t = np.minimum(h, t), np.maximum(h, t)
        keys = np.unique(np.concatenate((keys, h * base + t)))
    # The distinct keys of i.i.d. draws form a uniform random subset, so a
    # uniform choice among them is a uniform choice among all pairs.
    keys = rng.choice(keys, size=n, replace=False)
    return np.column_stack((keys // base, keys % base))


def _triples(heads, relation, tails):
    heads = np.asarray(heads, dtype=np.int64)
    return np.column_stack((heads, np.full(heads.size, relation, dtype=np.int64), tails))


def _plant_symmetric(rng, space, relations, target):
    (rel,) = relations
    n_pairs = -(-target // 2)
    order = space.order()
    capacities = np.array([m.size * (m.size - 1) // 2 for m in space.members])[order]
    cumulative = np.cumsum(capacities)
    d = max(int(np.searchsorted(cumulative, _SPARSITY * n_pairs)) + 1, space.min_types())
    if d <= len(order):
        blocks = [space.members[j] for j in order[:d]]
        space.use(order[:d])
    elif cumulative[-1] >= n_pairs:
        blocks = list(space.members)
        space.use(order)
    else:
        # Too dense for within-type pairs: let pairs cross types.
        blocks = [space.all_instances]
    caps = [b.size * (b.size - 1) // 2 for b in blocks]
    counts = _proportional(min(n_pairs, sum(caps)), caps)
    pairs = np.concatenate(
        [_sample_pairs(rng, b, None, c, unordered=True) for b, c in zip(blocks, counts)]
    )
    pairs = pairs[rng.permutation(len(pairs))]
    flip = rng.random(len(pairs)) < 0.5
    a = np.where(flip, pairs[:, 1], pairs[:, 0])
    b = np.where(flip, pairs[:, 0], pairs[:, 1])
    n_derived = min(len(pairs), target - len(pairs))
    facts = np.concatenate((_triples(a, rel, b), _triples(b[:n_derived], rel, a[:n_derived])))
    return facts, np.arange(len(facts)) >= len(pairs)


def _plant_inverse(rng, space, relations, target):
    rel, inv = relations
    n_pairs = -(-target // 2)
    heads, tails = space.pick_domains(n_pairs)
    pairs = _sample_pairs(rng, heads, tails, n_pairs)
    a, b = pairs[:, 0], pairs[:, 1]
    forward, backward = _triples(a, rel, b), _triples(b, inv, a)
    # Which direction is the premise is random, so both relations get
    # held-out triples.
    flip = (rng.random(len(pairs)) < 0.5)[:, None]
    base = np.where(flip, backward, forward)
    implied = np.where(flip, forward, backward)
    n_derived = min(len(pairs), target - len(pairs))
    facts = np.concatenate((base, implied[:n_derived]))
    return facts, np.arange(len(facts)) >= len(pairs)


def _plant_typed(rng, space, relations, target):
    (rel,) = relations
    heads, tails = space.pick_domains(target)
    pairs = _sample_pairs(rng, heads, tails, target)
    return _triples(pairs[:, 0], rel, pairs[:, 1]), np.zeros(len(pairs), dtype=bool)


def _plant_compositional(rng, space, relations, target):
    r1, r2, r3 = relations
    order = space.order()
    d_min = space.min_types() - 2
    hub_type, range_type = order[0], order[1]
    hub = space.members[hub_type]
    hub = np.sort(rng.choice(hub, size=min(hub.size, max(2, target // 4)), replace=False))
    targets = space.members[range_type]
    space.use(order[:2])
    # r2 is functional (each hub entity has exactly one image), so r3's
    # facts follow from r1's by a single lookup.
    image = np.zeros(space.n_entities, dtype=np.int64)
    image[hub] = targets[rng.integers(targets.size, size=hub.size)]
    r2_facts = _triples(hub, r2, image[hub])
    wanted = max(target - hub.size, 1)

    rest = order[2:]
    sizes = np.cumsum([space.members[j].size for j in rest]) if len(rest) else np.array([0])
    d = max(int(np.searchsorted(sizes * hub.size, _SPARSITY * wanted)) + 1, d_min)
    if len(rest) and d <= len(rest):
        heads = space.union(rest[:d])
        space.use(rest[:d])
    elif len(rest) and sizes[-1] * hub.size >= wanted:
        heads = space.union(rest)
        space.use(rest)
    else:
        heads = space.all_instances
    pool = _sample_pairs(rng, heads, hub, wanted)
    a, c = pool[:, 0], image[pool[:, 1]]
    # Count the new r3 facts each r1 fact brings, then keep the shortest
    # prefix of the (random) r1 pool that reaches the target exactly.
    usable = np.flatnonzero(a != c)
    _, first = np.unique(a[usable] * space.n_entities + c[usable], return_index=True)
    new_r3 = np.zeros(len(pool), dtype=bool)
    new_r3[usable[first]] = True
    totals = hub.size + np.arange(1, len(pool) + 1) + np.cumsum(new_r3)
    n_r1 = min(int(np.searchsorted(totals, target)) + 1, len(pool))
    keep3 = np.flatnonzero(new_r3[:n_r1])
    if hub.size + n_r1 + keep3.size > target and keep3.size > 1:
        keep3 = rng.permutation(keep3)[: target - hub.size - n_r1]
    facts = np.concatenate(
        (r2_facts, _triples(a[:n_r1], r1, pool[:n_r1, 1]), _triples(a[keep3], r3, c[keep3]))
    )
    return facts, np.arange(len(facts)) >= hub.size + n_r1


def _plant_hierarchical(rng, space, relations, target):
    is_a, inherited = relations[0], relations[1:]
    k, n_top = space.n_types, space.n_top
    tops = space.classes[:n_top]
    type_classes = space.classes[n_top : n_top + k]
    subclasses = space.classes[n_top + k :]  # subclass j refines type j // 2
    top_of = np.zeros(space.n_entities, dtype=np.int64)
    top_of[type_classes] = tops[rng.permutation(k) % n_top]
    tc_of = np.zeros(space.n_entities, dtype=np.int64)
    tc_of[subclasses] = np.repeat(type_classes, 2)
    top_of[subclasses] = top_of[tc_of[subclasses]]
    # Each inherited relation gives every class its own property (distinct
    # along any path, so inherited facts never collide with direct ones).
    props = []
    for _ in inherited:
        prop = np.zeros(space.n_entities, dtype=np.int64)
        prop[space.classes] = rng.permutation(space.properties)
        props.append(prop)

    s, tc = subclasses, type_classes
    base = [_triples(s, is_a, tc_of[s]), _triples(tc, is_a, top_of[tc])]
    implied = [_triples(s, is_a, top_of[s])]
    for rel, prop in zip(inherited, props):
        base += [
            _triples(s, rel, prop[s]),
            _triples(tc, rel, prop[tc]),
            _triples(tops, rel, prop[tops]),
        ]
        implied += [
            _triples(s, rel, prop[tc_of[s]]),
            _triples(s, rel, prop[top_of[s]]),
            _triples(tc, rel, prop[top_of[tc]]),
        ]
    n_class_facts = sum(map(len, base)) + sum(map(len, implied))

    # An instance has one direct is_a fact, two implied ones and inherits
    # three properties (subclass, type class, top class) per relation.
    per_instance = 3 + 3 * len(inherited)
    n_inst = int(np.clip(-(-(target - n_class_facts) // per_instance), 0, space.n_instances))
    x = rng.permutation(space.n_instances)[:n_inst]
    sub = subclasses[2 * space.type_of[x] + rng.integers(2, size=n_inst)]
    base += [_triples(x, is_a, sub)]
    implied += [_triples(x, is_a, tc_of[sub]), _triples(x, is_a, top_of[sub])]
    for rel, prop in zip(inherited, props):
        implied += [
            _triples(x, rel, prop[sub]),
            _triples(x, rel, prop[tc_of[sub]]),
            _triples(x, rel, prop[top_of[sub]]),
        ]
    base, implied = np.concatenate(base), np.concatenate(implied)
    n_implied = int(np.clip(target - len(base), 0, len(implied)))
    implied = implied[rng.permutation(len(implied))[:n_implied]]
    facts = np.concatenate((base, implied))
    return facts, np.arange(len(facts)) >= len(base)


_PLANTERS = {
    "symmetric": _plant_symmetric,
    "inverse": _plant_inverse,
    "compositional": _plant_compositional,
    "hierarchical": _plant_hierarchical,
    "typed": _plant_typed,
}


def _plant_groups(rng, space, groups, n_triples):
    """Plant every group; return integer facts and their "implied" mask."""
    patterns = [p for p, _ in groups]
    sizes = [size for _, size in groups]
    first_relation = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    targets = _proportional(n_triples, sizes)
    order = sorted(range(len(groups)), key=lambda g: _GENERATION_ORDER.index(patterns[g]))
    all_facts, all_derived = [], []
    carry = 0
    for i, g in enumerate(order):
        space.groups_left = len(order) - i
        target = int(targets[g] + carry)
        if target < 2 * sizes[g]:
            raise ValueError(
                f"n_triples={n_triples} is too small for the requested patterns "
                f"on n_entities={space.n_entities}; increase n_triples"
            )
        relations = range(first_relation[g], first_relation[g] + sizes[g])
        facts, derived = _PLANTERS[patterns[g]](rng, space, relations, target)
        carry = target - len(facts)
        all_facts.append(facts)
        all_derived.append(derived)
    facts, derived = np.concatenate(all_facts), np.concatenate(all_derived)
    if len(facts) != n_triples:
        raise ValueError(
            f"could only plant {len(facts)} distinct triples of n_triples="
            f"{n_triples} with n_entities={space.n_entities} and "
            f"n_relations={sum(sizes)}; increase "
            "n_entities or n_relations, or lower n_triples"
        )
    return facts, derived


def _holdout(rng, facts, derived, n_valid, n_test, n_relations):
    """Split codes: 0 train, 1 valid, 2 test; only implied facts are held out."""
    candidates = rng.permutation(np.flatnonzero(derived))
    rel = facts[candidates, 1]
    # Rank of each candidate within its relation, in the shuffled order, so
    # that a quarter of every relation stays in train.
    by_rel = np.argsort(rel, kind="stable")
    sorted_rel = rel[by_rel]
    rank = np.empty(len(candidates), dtype=np.int64)
    rank[by_rel] = np.arange(len(candidates)) - np.searchsorted(sorted_rel, sorted_rel)
    sizes = np.bincount(facts[:, 1], minlength=n_relations)
    cap = np.floor(_MAX_HOLDOUT_PER_RELATION * sizes)
    eligible = rank < cap[rel]
    n_eligible = np.bincount(rel[eligible], minlength=n_relations)
    n_hold = n_valid + n_test
    if n_hold > n_eligible.sum():
        raise ValueError(
            f"valid_size + test_size ask for {n_hold} held-out triples but "
            f"only {n_eligible.sum()} of the {len(facts)} planted triples can "
            "be held out while staying inferable from train; lower "
            "valid_size or test_size"
        )
    # Quotas proportional to relation sizes (among relations that have
    # inferable triples) keep one relation from dominating the test set;
    # what a relation cannot supply goes to the others.
    quota = np.zeros(n_relations, dtype=np.int64)
    while quota.sum() < n_hold:
        spare = n_eligible - quota
        weights = sizes * (spare > 0)
        quota += np.minimum(_proportional(n_hold - quota.sum(), weights), spare)
    # Reshuffle: the first ranks of small-quota relations cluster early in
    # `candidates`, which would bias the valid/test cut below.
    chosen = rng.permutation(candidates[rank < quota[rel]])
    split = np.zeros(len(facts), dtype=np.int8)
    split[chosen[:n_valid]] = 1
    split[chosen[n_valid:]] = 2
    return split


def _add_noise(rng, facts, split, noise, n_relations):
    """Replace a fraction of the training facts by random, unseen triples."""
    train = np.flatnonzero(split == 0)
    n_noise = int(round(noise * len(train)))
    if n_noise == 0:
        return facts, split
    n_entities = int(facts[:, [0, 2]].max()) + 1
    removed = np.zeros(len(facts), dtype=bool)
    removed[rng.choice(train, size=n_noise, replace=False)] = True
    # Removed triples and held-out triples must keep their labels in train.
    out = removed | (split > 0)
    out = keep_covered(
        facts, out, removed, rng.random(len(facts)), n_entities, n_relations
    )
    removed &= out
    entities = np.unique(facts[:, [0, 2]])
    base = n_relations * n_entities
    existing = facts[:, 0] * base + facts[:, 1] * n_entities + facts[:, 2]
    keys = np.empty(0, dtype=np.int64)
    n_new = int(removed.sum())
    while keys.size < n_new:
        m = 2 * (n_new - keys.size) + 16
        h = entities[rng.integers(entities.size, size=m)]
        t = entities[rng.integers(entities.size, size=m)]
        r = rng.integers(n_relations, size=m)
        new = (h * base + r * n_entities + t)[h != t]
        new = new[~np.isin(new, existing)]
        keys = np.unique(np.concatenate((keys, new)))
    keys = rng.choice(keys, size=n_new, replace=False)
    noisy = np.column_stack((keys // base, (keys % base) // n_entities, keys % n_entities))
    facts = np.concatenate((facts[~removed], noisy))
    split = np.concatenate((split[~removed], np.zeros(n_new, dtype=np.int8)))
    return facts, split


def _to_labelled_bunch(rng, facts, split, groups):
    used = np.unique(facts[:, [0, 2]])
    # Renumber the used entities at random so labels reveal neither the
    # latent types nor the hierarchy's class nodes.
    new_id = np.zeros(int(used.max()) + 1, dtype=np.int64)
    new_id[used] = rng.permutation(used.size)
    entity_labels = np.array([f"e{i}" for i in range(used.size)], dtype=str)
    relation_pattern = [p for p, size in groups for _ in range(size)]
    relation_labels = np.array(
        [f"r{i}_{p}" for i, p in enumerate(relation_pattern)], dtype=str
    )
    labelled = np.column_stack(
        (
            entity_labels[new_id[facts[:, 0]]],
            relation_labels[facts[:, 1]],
            entity_labels[new_id[facts[:, 2]]],
        )
    )
    parts = {}
    for code, name in enumerate(("train", "valid", "test")):
        idx = rng.permutation(np.flatnonzero(split == code))
        parts[name] = labelled[idx]
    return Bunch(
        **parts,
        entities=np.sort(entity_labels),
        relations=np.sort(relation_labels),
        patterns=dict(zip(relation_labels.tolist(), relation_pattern)),
    )

"""Where a dataset named by :func:`kgestimator.load_dataset` comes from.

Three sources, tried after the user's own datasets folder (``KGESTIMATOR_DATA``,
see :func:`kgestimator.data.dataset_dir`):

1. the small datasets bundled with the package (:data:`BUNDLED`: nations,
   kinship, UMLS; gzip-compressed TSV files in ``kgestimator/bundled``, whose
   ``LICENSES.md`` records each one's origin and licence);
2. the download cache (:func:`cache_dir`), holding datasets downloaded before;
3. a download, only when asked for (``download=True``): the files of
   :data:`REMOTE`, each checked against its pinned SHA-256 by ``pooch`` (the
   ``download`` extra), into the cache.

This module reads no other part of the package, so it can move with the
dataset code.
"""

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BUNDLED", "REMOTE", "SPLITS", "CACHE_ENV_VAR", "bundled_dir", "cache_dir", "download_dataset",
           "find_dataset", "split_file"]

SPLITS = ("train", "valid", "test")
CACHE_ENV_VAR = "KGESTIMATOR_CACHE"
BUNDLED_DIR = Path(__file__).resolve().parent / "bundled"

#: name -> description of the datasets shipped inside the package
BUNDLED = {
    "nations": "Nations (Kemp et al. 2006): 14 countries, 55 relations, 1,592/199/201 triples",
    "kinship": "Kinship (Kemp et al. 2006, Alyawarra): 104 people, 25 relations, 8,544/1,068/1,074 triples",
    "umls": "UMLS semantic network (Kemp et al. 2006): 135 concepts, 46 relations, 5,216/652/661 triples",
}

#: the file endings a split may have, tried in this order ("train.txt" first, as in the
#: usual dataset folders; the bundled copies are gzip-compressed TSV)
_ENDINGS = (".txt", ".tsv", ".tsv.gz", ".txt.gz")


@dataclass(frozen=True)
class RemoteDataset:
    """A downloadable dataset: one URL and SHA-256 per split, and where it comes from."""

    urls: dict
    sha256: dict
    source: str


# Pinned to commits, so a URL always serves the bytes its hash was taken from. The
# hashes were computed from those commits' files; FB15k-237's and WN18RR's are also the
# hashes of the copies in the project's shared datasets folder (tests/test_datasets.py
# checks them against it).
_KGDATASETS = "https://raw.githubusercontent.com/ZhenfengLei/KGDatasets/3f8c12defd62c94cc512a693228906b019ff73b9"
_CODEX = "https://raw.githubusercontent.com/tsafavi/codex/3132e426c2a6b643b70bad679905a3a6270be440/data/triples"


def _remote(base, sha256, source):
    return RemoteDataset({split: f"{base}/{split}.txt" for split in SPLITS}, dict(zip(SPLITS, sha256)), source)


_COUNTRIES_VALID = "f4b27648148a44f87e627140ec3a02ca4c884c32d348591147ca72f1d6fff5b0"
_COUNTRIES_TEST = "262ca5ae5ed3aa1927026e0f258cc52b10830185b93465b93b9360727e719158"
_KGD_SOURCE = "ZhenfengLei/KGDatasets (no licence stated), from the paper cited in LICENSES.md"

#: name -> :class:`RemoteDataset`, for ``load_dataset(name, download=True)``
REMOTE = {
    "FB15k-237": _remote(f"{_KGDATASETS}/FB15k-237", (
        "6e4c2782169af21e9743f3b1d200886f5d595bf6bc504ec1351720949c5cdfae",
        "cf6309010852f6a8d47a45df830a426415d1ee6f7a3970a8376ff1fb81db4a5c",
        "5711cf41623ceb4eacc50eb6108a3ca6565c7492e3caaf82a3e355cc660d1574"), _KGD_SOURCE),
    "WN18RR": _remote(f"{_KGDATASETS}/WN18RR", (
        "038612e783c215ee5f3ca9fbfca27b8d0739be1028fe4ee7c174aecf0b83d5df",
        "453ce7202afa58094a04d2b1560ee2b02660f1c260b32ce6651c8ccedd1028ab",
        "0383bceaaa1096cf3c03ec021ed0048068e2355dbfc0239b292cefdac821cec5"), _KGD_SOURCE),
    "countries_s1": _remote(f"{_KGDATASETS}/Countries/Countries_S1", (
        "5256bf3fc4181d7e87d819571e3acfa5425fc5af365b9ebe5c113740534ca561", _COUNTRIES_VALID,
        _COUNTRIES_TEST), _KGD_SOURCE),
    "countries_s2": _remote(f"{_KGDATASETS}/Countries/Countries_S2", (
        "84c8f310fa076f902760f0909716b13bc0853a105ab9e0145e4e5135d855f68a", _COUNTRIES_VALID,
        _COUNTRIES_TEST), _KGD_SOURCE),
    "countries_s3": _remote(f"{_KGDATASETS}/Countries/Countries_S3", (
        "80a8e3a26aff58b78fd5a453ec2a37591466bad621df8d05185f26763b663a0c", _COUNTRIES_VALID,
        _COUNTRIES_TEST), _KGD_SOURCE),
    "codex-s": _remote(f"{_CODEX}/codex-s", (
        "64f93b7f314f3936a6f65739721429db3f6a7c8f5a1e1104ec3bb544f7434f59",
        "3831c0e57daef03c3a18cdd1a72e370b496f696c5218883d35c7d2ab8a6a772c",
        "27127fcb34688c4778e88a39ef3c9b540807da846021e9d9685660ac1838aca1"), "tsafavi/codex (MIT)"),
    "codex-m": _remote(f"{_CODEX}/codex-m", (
        "d99c3437ab51690391a26d96976adf6e5494dba7ef6902e77000551bfa566556",
        "11c323096367354940846b9ed940c5dabddc1d20a70474222babe7e7fd28b28d",
        "0575ce05e4ce915e395bb4f708e8df9547989dd4c8c71407cbfd78c19daffcf7"), "tsafavi/codex (MIT)"),
}


def _canonical(name, names):
    """``name`` as spelled in ``names`` (case-insensitive), or None."""
    return next((known for known in names if known.lower() == name.lower()), None)


def split_file(folder, split):
    """The file of ``split`` in ``folder`` (``train.txt``, ``train.tsv.gz``, ...), or None."""
    return next((folder / f"{split}{end}" for end in _ENDINGS if (folder / f"{split}{end}").is_file()), None)


def bundled_dir(name):
    """The folder of a bundled dataset (case-insensitive name), or None."""
    known = _canonical(name, BUNDLED)
    return None if known is None else BUNDLED_DIR / known


def cache_dir():
    """Folder of downloaded datasets: ``$KGESTIMATOR_CACHE``, else ``$XDG_CACHE_HOME/kgestimator``
    (``~/.cache/kgestimator``)."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "kgestimator"


def _complete(folder):
    return folder.is_dir() and all(split_file(folder, split) is not None for split in SPLITS)


def download_dataset(name, *, root=None, mirror=None):
    """Download a dataset of :data:`REMOTE`, checking each file's SHA-256.

    Files already there are checked and kept; a file whose hash differs is
    downloaded again, and a download whose hash differs is deleted and raises.

    Parameters
    ----------
    name : str
        A key of :data:`REMOTE` (case-insensitive), e.g. ``"FB15k-237"``.
    root : str or path-like, default=None
        Folder to download into (a subfolder per dataset); None: :func:`cache_dir`.
    mirror : str, default=None
        Base URL serving ``{mirror}/{name}/{split}.txt`` with the same bytes,
        instead of the upstream URLs (a local mirror, or a test server).

    Returns
    -------
    folder : pathlib.Path
        The folder holding ``train.txt``, ``valid.txt`` and ``test.txt``.

    Raises
    ------
    ValueError
        If `name` is not downloadable, or a downloaded file's SHA-256 differs
        from the pinned one.
    ImportError
        If ``pooch`` is not installed (``pip install 'kgestimator[download]'``).
    """
    known = _canonical(str(name), REMOTE)
    if known is None:
        raise ValueError(f"no download is known for dataset {name!r}; downloadable: {', '.join(REMOTE)}")
    try:
        import pooch
    except ImportError:
        raise ImportError("downloading datasets needs pooch: pip install 'kgestimator[download]'") from None
    entry = REMOTE[known]
    folder = Path(root).expanduser() / known if root is not None else cache_dir() / known
    for split in SPLITS:
        url = entry.urls[split] if mirror is None else f"{mirror.rstrip('/')}/{known}/{split}.txt"
        pooch.retrieve(url, known_hash=f"sha256:{entry.sha256[split]}", fname=f"{split}.txt", path=folder,
                       progressbar=False)
    return folder


def find_dataset(name, root=None, *, download=False):
    """The folder of the dataset called ``name``.

    Parameters
    ----------
    name : str
        Dataset name.
    root : pathlib.Path, default=None
        The user's datasets folder (``KGESTIMATOR_DATA`` or ``../shared/datasets``),
        tried first, with the name spelled exactly; None when there is none.
    download : bool, default=False
        Download a dataset of :data:`REMOTE` when no copy is found.

    Raises
    ------
    FileNotFoundError
        If no source has the dataset; the message says where datasets come from.
    """
    if root is not None and (root / name).is_dir():
        return root / name
    bundled = bundled_dir(name)
    if bundled is not None:
        return bundled
    known = _canonical(name, REMOTE)
    if known is not None:
        if _complete(cache_dir() / known):
            return cache_dir() / known
        if download:
            return download_dataset(known)
    if root is None:
        where = "KGESTIMATOR_DATA is not set and no ../shared/datasets folder was found"
    else:
        available = sorted(p.name for p in root.iterdir() if p.is_dir())
        where = f"not in the datasets folder {root} (available: {', '.join(available) or 'none'})"
    fetch = (f"download it with load_dataset({known!r}, download=True) (kgestimator train --download)"
             if known is not None else f"downloadable with download=True: {', '.join(REMOTE)}")
    raise FileNotFoundError(
        f"dataset {name!r} not found: {where}. Datasets come from a folder you pass (with train, valid "
        f"and test files), the datasets folder in the KGESTIMATOR_DATA environment variable, the copies "
        f"bundled with kgestimator ({', '.join(BUNDLED)}), or a download with a SHA-256 check into "
        f"{cache_dir()}: {fetch}.")

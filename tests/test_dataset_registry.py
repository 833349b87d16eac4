"""Where load_dataset finds a named dataset: the bundled copies, the user's folder, the
download cache and SHA-256-checked downloads (from a file server on 127.0.0.1, never the
internet)."""

import functools
import glob
import gzip
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from kgestimator import cli, load_dataset
from kgestimator import datasets as datasets_module
from kgestimator import dataset_registry as registry
from kgestimator.data import build_vocabulary, load_triples

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} not found (the project's shared datasets)")

SIZES = {"nations": ((1592, 199, 201), 14, 55), "kinship": ((8544, 1068, 1074), 104, 25),
         "umls": ((5216, 652, 661), 135, 46)}


@pytest.fixture
def no_local_datasets(tmp_path, monkeypatch):
    """As for a user of a plain pip install: no KGESTIMATOR_DATA, no ../shared, an empty cache."""
    monkeypatch.delenv("KGESTIMATOR_DATA", raising=False)
    monkeypatch.setenv("KGESTIMATOR_CACHE", str(tmp_path / "cache"))
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(datasets_module, "__file__", str(tmp_path / "a" / "b" / "kgestimator" / "datasets.py"))
    return tmp_path


@pytest.fixture
def file_server(tmp_path, monkeypatch):
    """``(root, url)``: an HTTP server on 127.0.0.1 serving the folder ``root``."""
    root = tmp_path / "served"
    root.mkdir()
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------------- bundled
@pytest.mark.parametrize("name", sorted(SIZES))
def test_bundled_dataset_needs_no_setting(name, no_local_datasets):
    sizes, n_entities, n_relations = SIZES[name]
    ds = load_dataset(name)
    assert ds.name == name
    assert (len(ds.train), len(ds.valid), len(ds.test)) == sizes
    entities, relations = build_vocabulary(ds.train)
    assert (len(entities), len(relations)) == (n_entities, n_relations)
    assert load_dataset(name.upper()).train.tolist() == ds.train.tolist()  # names are case-insensitive


@needs_shared
@pytest.mark.parametrize("name", ["nations", "kinship"])
def test_bundled_copies_hold_the_shared_triples(name):
    for split in registry.SPLITS:
        bundled = load_triples(registry.BUNDLED_DIR / name / f"{split}.tsv.gz")
        shared = load_triples(SHARED / name / f"{split}.txt")
        assert bundled.tolist() == shared.tolist(), f"{name}/{split} differs from {SHARED}"


def test_bundled_files_are_package_data():
    """Every bundled file matches a package-data pattern, so a wheel carries it."""
    tomllib = pytest.importorskip("tomllib", reason="tomllib is in the standard library from Python 3.11")
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["kgestimator"]
    package = REPO / "kgestimator"
    covered = {Path(p) for pattern in patterns for p in glob.glob(str(package / pattern))}
    files = {p for p in registry.BUNDLED_DIR.rglob("*") if p.is_file()}
    assert files and files <= covered, sorted(map(str, files - covered))
    assert {p.parent.name for p in files if p.suffix == ".gz"} == set(registry.BUNDLED)
    assert (registry.BUNDLED_DIR / "LICENSES.md") in covered
    assert not list(registry.BUNDLED_DIR.rglob("*.txt"))  # compressed only


def test_user_folder_comes_before_the_bundled_copy(tmp_path, monkeypatch):
    root = tmp_path / "root"
    (root / "nations").mkdir(parents=True)
    for split in registry.SPLITS:
        (root / "nations" / f"{split}.txt").write_text("a\tr\tb\n")
    monkeypatch.setenv("KGESTIMATOR_DATA", str(root))
    assert load_dataset("nations").train.tolist() == [["a", "r", "b"]]
    # a dataset the user's folder lacks still comes from the package
    assert load_dataset("umls").train.shape == (5216, 3)


def test_gzip_files_load_and_corrupt_ones_are_named(tmp_path):
    good = tmp_path / "train.tsv.gz"
    good.write_bytes(gzip.compress(b"a\tr\tb\nb\tr\tc\n"))
    assert load_triples(good).tolist() == [["a", "r", "b"], ["b", "r", "c"]]
    bad = tmp_path / "bad.tsv.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match=r"bad\.tsv\.gz: not a valid gzip file"):
        load_triples(bad)


def test_unknown_dataset_error_says_where_datasets_come_from(no_local_datasets):
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("nosuchdataset")
    message = str(info.value)
    for part in ("'nosuchdataset' not found", "KGESTIMATOR_DATA", "bundled", "nations, kinship, umls",
                 "download=True", "FB15k-237", "SHA-256"):
        assert part in message, (part, message)


def test_remote_dataset_is_not_downloaded_by_default(no_local_datasets):
    with pytest.raises(FileNotFoundError, match=r"load_dataset\('WN18RR', download=True\)"):
        load_dataset("wn18rr")
    assert not (no_local_datasets / "cache").exists()


def test_cli_trains_a_bundled_dataset(no_local_datasets, capsys):
    argv = ["train", "nations", "-o", "m.kge", "--dim", "8", "--n-negatives", "8", "--n-epochs", "1",
            "--random-state", "0", "--quiet"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    assert "on 1592 triples (14 entities, 55 relations)" in out and "test" in out
    assert Path("m.kge").is_file()


def test_cli_unknown_dataset_says_where_datasets_come_from(no_local_datasets, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "nosuchdataset", "-o", "m.kge"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "nosuchdataset" in err and "KGESTIMATOR_DATA" in err
    assert "bundled with kgestimator (nations, kinship, umls)" in err


# ---------------------------------------------------------------------- downloads
@pytest.fixture
def toy_remote(file_server, monkeypatch):
    """A registry entry whose upstream URLs point at the local server, and its triples."""
    pytest.importorskip("pooch")
    root, url = file_server
    (root / "upstream").mkdir()
    triples = {"train": "a\tr\tb\nb\tr\tc\n", "valid": "a\tr\tc\n", "test": "c\tr\ta\n"}
    for split, text in triples.items():
        (root / "upstream" / f"{split}.txt").write_text(text)
    entry = registry.RemoteDataset({s: f"{url}/upstream/{s}.txt" for s in registry.SPLITS},
                                   {s: _sha256(root / "upstream" / f"{s}.txt") for s in registry.SPLITS},
                                   "test")
    monkeypatch.setitem(registry.REMOTE, "toy-remote", entry)
    return root, url, triples


def test_download_checks_hashes_and_fills_the_cache(no_local_datasets, toy_remote):
    root, url, triples = toy_remote
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("toy-remote")
    ds = load_dataset("toy-remote", download=True)
    assert ds.name == "toy-remote" and ds.train.tolist() == [["a", "r", "b"], ["b", "r", "c"]]
    cached = no_local_datasets / "cache" / "toy-remote"
    assert sorted(p.name for p in cached.iterdir()) == ["test.txt", "train.txt", "valid.txt"]
    # the server gone, the cache answers without download=True
    for split in registry.SPLITS:
        (root / "upstream" / f"{split}.txt").unlink()
    assert load_dataset("toy-remote").valid.tolist() == [["a", "r", "c"]]


def test_download_with_a_wrong_hash_raises_and_keeps_nothing(no_local_datasets, toy_remote, tmp_path):
    root, url, _ = toy_remote
    (root / "upstream" / "valid.txt").write_text("tampered\tr\tc\n")
    with pytest.raises(ValueError, match="(?i)hash"):
        registry.download_dataset("toy-remote", root=tmp_path / "dl")
    assert not (tmp_path / "dl" / "toy-remote" / "valid.txt").exists()
    # an incomplete folder is not taken for the dataset
    with pytest.raises(FileNotFoundError, match="download=True"):
        load_dataset("toy-remote")


def test_download_from_a_mirror(no_local_datasets, toy_remote, tmp_path):
    root, url, triples = toy_remote
    (root / "mirror" / "toy-remote").mkdir(parents=True)
    for split, text in triples.items():
        (root / "mirror" / "toy-remote" / f"{split}.txt").write_text(text)
    (root / "upstream" / "train.txt").unlink()  # the mirror, not upstream, must serve
    folder = registry.download_dataset("toy-remote", root=tmp_path / "dl", mirror=f"{url}/mirror/")
    assert folder == tmp_path / "dl" / "toy-remote"
    assert load_dataset(folder).test.tolist() == [["c", "r", "a"]]


def test_cli_download_flag(no_local_datasets, toy_remote, capsys):
    argv = ["train", "toy-remote", "-o", "m.kge", "--dim", "4", "--n-negatives", "1", "--n-epochs", "1", "--quiet"]
    with pytest.raises(SystemExit):
        cli.main(argv)
    assert "--download" in capsys.readouterr().err
    assert cli.main(argv + ["--download"]) == 0
    assert "on 2 triples (3 entities, 1 relations)" in capsys.readouterr().out
    assert (no_local_datasets / "cache" / "toy-remote" / "train.txt").is_file()


def test_download_of_an_unknown_name():
    with pytest.raises(ValueError, match="no download is known for dataset 'nope'.*FB15k-237"):
        registry.download_dataset("nope")


@needs_shared
@pytest.mark.parametrize("name", ["WN18RR", "FB15k-237"])
def test_pinned_hashes_match_the_shared_copies(name, file_server, tmp_path):
    """The registry's SHA-256 of FB15k-237 and WN18RR are those of the shared files, served as a mirror."""
    pytest.importorskip("pooch")
    root, url = file_server
    (root / name).symlink_to(SHARED / name, target_is_directory=True)
    folder = registry.download_dataset(name, root=tmp_path / "dl", mirror=url)
    for split in registry.SPLITS:
        assert _sha256(folder / f"{split}.txt") == registry.REMOTE[name].sha256[split]
    assert len(np.unique(load_triples(folder / "valid.txt")[:, 1])) > 1


def test_registry_urls_are_pinned():
    for name, entry in registry.REMOTE.items():
        assert set(entry.urls) == set(entry.sha256) == set(registry.SPLITS), name
        for split, link in entry.urls.items():
            assert link.startswith("https://") and len(entry.sha256[split]) == 64, (name, split)
            # a branch name could change the bytes under the hash; a commit cannot
            assert any(len(part) == 40 for part in link.split("/")), link

"""CLI: embed, predict --direction relation, predict --coverage."""

import numpy as np
import pytest

from kgestimator import KGEmbedder, cli, make_kg


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    kg = make_kg(n_entities=50, n_relations=8, n_triples=1200, random_state=2)
    d = tmp_path_factory.mktemp("cli17")
    est = KGEmbedder(dim=8, n_negatives=8, n_epochs=3, batch_size=256, random_state=0).fit(kg.train)
    est.save(d / "model.kge")
    for split in ("valid", "test"):
        with open(d / f"{split}.txt", "w") as fh:
            for h, r, t in getattr(kg, split).tolist():
                fh.write(f"{h}\t{r}\t{t}\n")
    return d, est, kg


def test_embed_writes_labels_and_vectors(files, capsys):
    d, est, _ = files
    assert cli.main(["embed", str(d / "model.kge"), "-o", str(d / "vectors.tsv")]) == 0
    lines = (d / "vectors.tsv").read_text().splitlines()
    assert len(lines) == len(est.entities_)
    labels = [line.split("\t")[0] for line in lines]
    values = np.array([[float(v) for v in line.split("\t")[1:]] for line in lines])
    assert labels == [str(e) for e in est.entities_]
    np.testing.assert_array_equal(values.astype(np.float32), est.entity_embeddings_)
    assert cli.main(["embed", str(d / "model.kge"), "-o", str(d / "rel.tsv"), "--relations"]) == 0
    assert len((d / "rel.tsv").read_text().splitlines()) == len(est.relations_)
    with pytest.raises(SystemExit):
        cli.main(["embed", str(d / "model.kge"), "-o", str(d / "no" / "such" / "v.tsv")])
    assert "no folder" in capsys.readouterr().err


def test_predict_relation_direction(files, capsys):
    d, est, kg = files
    h, _, t = kg.test[0].tolist()
    capsys.readouterr()
    assert cli.main(["predict", str(d / "model.kge"), "-q", h, t, "--direction", "relation", "-k", "3",
                     "--format", "tsv"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0][:4] == ["query", "head", "tail", "rank"]
    expected, _ = est.predict_topk([[h, t]], k=3, direction="relation")
    assert [r[rows[0].index("label")] for r in rows[1:]] == expected[0].tolist()
    with pytest.raises(SystemExit):
        cli.main(["predict", str(d / "model.kge"), "-q", h, t, "--direction", "relation", "-k", "99"])
    assert "relations" in capsys.readouterr().err


def test_predict_coverage_sets(files, capsys):
    d, est, kg = files
    h, r, _ = kg.test[0].tolist()
    capsys.readouterr()
    assert cli.main(["predict", str(d / "model.kge"), "-q", h, r, "--coverage", "0.9", "--calibration",
                     str(d / "valid.txt"), "--format", "tsv"]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    est.calibrate_sets(kg.valid, random_state=0)
    expected = est.predict_set([[h, r]], coverage=0.9, random_state=0)[0]
    assert [row[rows[0].index("label")] for row in rows[1:]] == expected.tolist()
    for bad in (["--coverage", "0.9"], ["--coverage", "1.5", "--calibration", str(d / "valid.txt")],
                ["--coverage", "0.9", "-k", "3", "--calibration", str(d / "valid.txt")]):
        with pytest.raises(SystemExit):
            cli.main(["predict", str(d / "model.kge"), "-q", h, r, *bad])
        assert capsys.readouterr().err.count("\n") == 1

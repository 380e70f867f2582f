"""CQ500 as an external test set (Liu et al. 2023, Figure 6): reads.csv, the five labels, the scores,
the series choice and the manifest of a CQ500-layout folder."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from datamodules.crossdl.head_ct.cq500 import (
    CQ500Error,
    build_cq500_manifest,
    cq500_scores,
    cq500_truth,
    majority_table,
    read_reads,
)
from datamodules.crossdl.head_ct.datamodule import CHECKED_OK
from datamodules.synthetic.datasets.cq500_phantoms import write_cq500_phantoms
from reportsup.contracts.labels.crossdl import LabelSpace
from tests.conftest import SMALL_CT

SPACE = LabelSpace()


@pytest.fixture(scope="module")
def cq500_dir(tmp_path_factory):
    return write_cq500_phantoms(tmp_path_factory.mktemp("cq500"), **SMALL_CT)


def _reads(tmp_path, rows: dict[str, dict[str, tuple[int, int, int]]]):
    """reads.csv with every CQ500 column; ``rows``: name -> {finding: (R1, R2, R3)} (others 0)."""
    from datamodules.crossdl.head_ct.cq500 import READ_FINDINGS, READERS

    table = []
    for name, marks in rows.items():
        row = {"name": name, "Category": "B1"}
        for k, reader in enumerate(READERS):
            row.update({f"{reader}:{f}": marks.get(f, (0, 0, 0))[k] for f in READ_FINDINGS})
        table.append(row)
    path = tmp_path / "reads.csv"
    pd.DataFrame(table).to_csv(path, index=False)
    return path


def test_labels_are_the_readers_majority_and_extraparenchymal_their_union(tmp_path):
    path = _reads(
        tmp_path,
        {
            "CQ500-CT-0": {"ICH": (1, 1, 0), "SDH": (1, 1, 0), "BleedLocation-Left": (0, 1, 1)},
            # SDH and EDH each marked by one reader only: no majority for either, so not extraparenchymal
            "CQ500-CT-1": {"ICH": (1, 0, 0), "SDH": (1, 0, 0), "EDH": (0, 1, 0), "IPH": (1, 1, 1)},
            "CQ500-CT-2": {"IVH": (0, 1, 1), "BleedLocation-Right": (1, 0, 1)},
        },
    )
    truth = cq500_truth(majority_table(read_reads(path)).set_index("name"))
    assert truth.to_dict("index") == {
        "CQ500-CT-0": {
            "intracranial": 1,
            "intraparenchymal": 0,
            "extraparenchymal": 1,
            "left": 1,
            "right": 0,
        },
        "CQ500-CT-1": {
            "intracranial": 0,
            "intraparenchymal": 1,
            "extraparenchymal": 0,
            "left": 0,
            "right": 0,
        },
        "CQ500-CT-2": {
            "intracranial": 0,
            "intraparenchymal": 0,
            "extraparenchymal": 1,
            "left": 0,
            "right": 1,
        },
    }


def test_bad_reads_name_the_column_or_row_and_the_fix(tmp_path):
    path = _reads(tmp_path, {"CQ500-CT-0": {}, "CQ500-CT-1": {}})
    table = pd.read_csv(path)
    table.drop(columns=["R2:BleedLocation-Left"]).to_csv(path, index=False)
    with pytest.raises(CQ500Error, match=r"missing reader column\(s\) \['R2:BleedLocation-Left'\]"):
        read_reads(path)
    table.assign(**{"R3:IPH": [0, 2]}).to_csv(path, index=False)
    with pytest.raises(
        CQ500Error, match=r"row 3 \(CQ500-CT-1\), column 'R3:IPH' = 2; reader labels are 0 or 1"
    ):
        read_reads(path)
    table.assign(name=["CQ500-CT-0", "CQ500-CT-0"]).to_csv(path, index=False)
    with pytest.raises(CQ500Error, match="'CQ500-CT-0' appears twice"):
        read_reads(path)
    with pytest.raises(CQ500Error, match="reads.csv not found"):
        read_reads(tmp_path / "nowhere.csv")


def test_scores_are_hyperdensity_maxima_and_sides_their_hemispheres_regions():
    n_r, n_t = len(SPACE.anatomical_regions), len(SPACE.types)
    region_max = np.zeros((3, n_r, n_t))
    scan_max = np.zeros((3, n_t))
    types = {t: j for j, t in enumerate(SPACE.types)}
    regions = {r: i for i, r in enumerate(SPACE.anatomical_regions)}
    # scan 0: extraparenchymal hyperdensity in the left frontal lobe
    scan_max[0, types["extraparenchymal_hyperdensity"]] = 0.8
    region_max[0, regions["left_frontal_lobe"], types["extraparenchymal_hyperdensity"]] = 0.7
    # scan 1: intraparenchymal hyperdensity in the brain stem (midline: neither side), a right hypodensity
    scan_max[1, types["intraparenchymal_hyperdensity"]] = 0.9
    region_max[1, regions["brain_stem"], types["intraparenchymal_hyperdensity"]] = 0.9
    region_max[1, regions["right_cerebellum"], types["intraparenchymal_hypodensity"]] = 0.95
    # scan 2: both hyperdensities, the right lateral ventricle's the larger side score
    scan_max[2, [types["intraparenchymal_hyperdensity"], types["extraparenchymal_hyperdensity"]]] = [0.3, 0.6]
    region_max[2, regions["right_lateral_ventricle"], types["extraparenchymal_hyperdensity"]] = 0.6
    region_max[2, regions["left_basal_ganglia"], types["intraparenchymal_hyperdensity"]] = 0.3
    scores = cq500_scores(scan_max, region_max, SPACE)
    expected = [[0.8, 0.0, 0.8, 0.7, 0.0], [0.9, 0.9, 0.0, 0.0, 0.0], [0.6, 0.3, 0.6, 0.3, 0.6]]
    assert np.allclose(scores.to_numpy(), expected)
    with pytest.raises(ValueError, match="do not fit the label space"):
        cq500_scores(scan_max, region_max[:, :5], SPACE)


def test_manifest_takes_one_soft_tissue_series_per_scan_with_the_majority(cq500_dir):
    manifest, report = build_cq500_manifest(cq500_dir)
    assert manifest["scan_id"].tolist() == [f"CQ500-CT-{i}" for i in range(8)]
    # "CT BONE" is a bone reconstruction, "CT 1mm" farther from 5 mm than the 6.4 mm phantom series
    assert set(manifest["series"]) == {"CT 5mm"} and (manifest["scan_check"] == CHECKED_OK).all()
    reasons = report.loc[report["status"] == "not chosen"].groupby("series")["reason"].first()
    assert reasons["CT BONE"].startswith("bone reconstruction") and "closer" in reasons["CT 1mm"]
    # reader 3 contradicts the others on every odd scan: the majority is the phantoms' truth
    truth = cq500_truth(manifest)
    assert truth["intraparenchymal"].tolist() == [0, 1, 0, 0, 1, 0, 0, 1]
    assert truth["extraparenchymal"].tolist() == [0, 0, 1, 0, 1, 0, 1, 0]
    assert truth["left"].tolist() == [0, 1, 0, 0, 1, 0, 1, 0]
    assert truth["right"].tolist() == [0, 0, 1, 0, 1, 0, 1, 1]
    # the 1 mm series is chosen when the target is thin
    thin, _ = build_cq500_manifest(cq500_dir, target_thickness_mm=1.0)
    assert set(thin["series"]) == {"CT 1mm"}


def test_folder_and_reads_that_do_not_match_name_the_scan_and_the_fix(cq500_dir, tmp_path):
    root = tmp_path / "cq500"
    shutil.copytree(cq500_dir, root, ignore=shutil.ignore_patterns("CQ500CT[3-7] *"))
    reads = pd.read_csv(cq500_dir / "reads.csv")
    reads.iloc[[0, 1, 3]].to_csv(root / "reads.csv", index=False)  # scan 2 has no row, row 3 no scan
    with pytest.raises(CQ500Error) as err:
        build_cq500_manifest(root)
    message = str(err.value)
    assert "CQ500CT2 CQ500CT2 has no row in" in message and "expected name CQ500-CT-2" in message
    assert "row 4 (CQ500-CT-3) has no scan folder" in message and "missing=skip" in message
    manifest, report = build_cq500_manifest(root, missing="skip")
    assert manifest["scan_id"].tolist() == ["CQ500-CT-0", "CQ500-CT-1"]
    assert {"no reads.csv row", "no scan folder"} <= set(report["status"])
    # no usable series: only the bone reconstruction is left
    for series in ("CT 5mm", "CT 1mm"):
        shutil.rmtree(root / "CQ500CT0 CQ500CT0" / "Unknown Study" / series)
    with pytest.raises(CQ500Error, match=r"CQ500-CT-0 .*no usable series \(CT BONE: bone reconstruction"):
        build_cq500_manifest(root)
    reads.iloc[[0]].to_csv(root / "reads.csv", index=False)
    shutil.rmtree(root / "CQ500CT1 CQ500CT1")
    shutil.rmtree(root / "CQ500CT2 CQ500CT2")
    with pytest.raises(CQ500Error, match="no scan with a reads.csv row and a usable series"):
        build_cq500_manifest(root, missing="skip")


def test_datamodule_tests_a_cq500_holdout_alone_from_a_built_manifest(cq500_dir, tmp_path):
    from datamodules.crossdl.head_ct.datamodule import HeadCTDataModule
    from datamodules.crossdl.head_ct.manifest import ManifestError

    manifest, _ = build_cq500_manifest(cq500_dir)
    path = tmp_path / "cq500_manifest.csv"
    manifest.drop(columns=[c for c in manifest if c.startswith("cq500_majority__")]).to_csv(path, index=False)
    spec = {"manifest_path": str(path), "reads_csv": str(cq500_dir / "reads.csv")}
    kwargs = {"spatial_size": (32, 32, 16), "cache_dir": str(tmp_path / "cache")}
    with pytest.raises(ManifestError, match="needs the model's intensity statistics"):
        HeadCTDataModule(None, holdouts={"cq500": spec}, **kwargs).setup()
    dm = HeadCTDataModule(None, holdouts={"cq500": spec}, intensity_stats={"mean": 0.0, "std": 1.0}, **kwargs)
    dm.setup()
    assert dm.test_set_names == ["cq500"] and dm.cq500_sets == {"cq500"}
    # scan labels: the hyperdensity types from the majority, the hypodensity types unknown (NaN)
    scan = np.stack([dm.datasets["cq500"][i]["scan_labels"] for i in range(8)])
    assert scan[:, 0].tolist() == [0, 1, 0, 0, 1, 0, 0, 1] and np.isnan(scan[:, 2:]).all()
    with pytest.raises(ManifestError, match="only tests its hold-outs"):
        dm.train_dataloader()
    # a scan of the manifest without a reads.csv row
    pd.read_csv(cq500_dir / "reads.csv").iloc[1:].to_csv(tmp_path / "reads.csv", index=False)
    spec["reads_csv"] = str(tmp_path / "reads.csv")
    dm = HeadCTDataModule(None, holdouts={"cq500": spec}, intensity_stats={"mean": 0.0, "std": 1.0}, **kwargs)
    with pytest.raises(CQ500Error, match=r"scan 'CQ500-CT-0' \(row 2\) has no row in .*reads\.csv"):
        dm.setup()

"""Issue 21, "Done when": a mixed DICOM export through the whole head-CT path, every series accounted for.

PACS export (phantom series in several layouts, a real MR series, a scout, a real SR, a bone-kernel
reconstruction, a series with shuffled InstanceNumbers, a 1 mm reconstruction, a cut file, a DICOMDIR)
-> ``reportsup-scan-manifest`` -> ``reportsup-pair-reports`` -> ``reportsup-check-scans`` ->
``reportsup-register-atlas`` -> ``train.py experiment=damil_multiscale`` (a short run at a small grid) ->
``reportsup-damil-predict`` with DICOM SEG / Parametric Map / SR outputs read back with highdicom.

The test builds the table a user would build from the commands' own outputs (one row per series of the
export: where it left the path, or the files it ended in) and asserts that no series is unaccounted for.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pandas as pd
import pydicom
import pytest

from tests.conftest import run_train, single_run_dir


def _run(*args: str, cwd: Path) -> str:
    bin_dir = Path(sys.executable).parent
    done = subprocess.run(
        [str(bin_dir / args[0]), *args[1:]], capture_output=True, text=True, timeout=1800, cwd=cwd
    )
    assert done.returncode == 0, f"{args[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


@pytest.mark.slow
def test_a_mixed_pacs_export_goes_from_raw_dicom_to_dicom_results(tmp_path):
    from datamodules.synthetic.datasets.ct_scans import write_atlases
    from datamodules.synthetic.datasets.mixed_export import MIXED_SHAPE, MIXED_SPACING, write_mixed_export

    export = tmp_path / "export"
    truth = write_mixed_export(export, seed=0, n_extra_patients=11, reports_path=tmp_path / "reports.csv")
    write_atlases(tmp_path / "atlas_data", MIXED_SHAPE, MIXED_SPACING, 0, seed=0)

    # 1. raw export -> manifest (+ skipped_series.csv), headers only
    _run("reportsup-scan-manifest", str(export), "--out", "work/manifest.csv", "--no-progress", cwd=tmp_path)
    kept = pd.read_csv(tmp_path / "work" / "manifest.csv")
    skipped = pd.read_csv(tmp_path / "work" / "skipped_series.csv")
    # 2. nearest report within 24 h; 3. validation with the labels (the shuffled series is sorted, not refused)
    _run(
        "reportsup-pair-reports", "work/manifest.csv", "reports.csv", "--out-dir", "work/paired", cwd=tmp_path
    )
    out = _run(
        "reportsup-check-scans",
        "work/paired/paired_manifest.csv",
        "--out-dir",
        "work/checked",
        "--labels",
        "reports.csv",
        "--decode",
        cwd=tmp_path,
    )
    checked = pd.read_csv(tmp_path / "work" / "checked" / "checked_manifest.csv")
    quarantined_path = tmp_path / "work" / "checked" / "quarantine.csv"
    quarantined = (
        pd.read_csv(quarantined_path) if quarantined_path.exists() else pd.DataFrame(columns=["scan_id"])
    )
    assert (checked["reordered"] > 0).sum() == 1, out  # the shuffled series: kept, stacked by position
    # 4. the atlas's regions onto every scan
    atlas = "average_ct=atlas_data/atlas/average_ct.nii.gz,atlas_data/atlas/average_ct_regions.nii.gz"
    _run(
        "reportsup-register-atlas",
        "work/checked/checked_manifest.csv",
        "--atlas",
        atlas,
        "--out-dir",
        "work/registered",
        "--max-iterations",
        "32",
        "--workers",
        "2",
        cwd=tmp_path,
    )
    registered = tmp_path / "work" / "registered" / "manifest_registered.csv"
    # 5. a short DaMIL training on the registered scans (small grid and network: the path, not the numbers)
    run_train(
        "experiment=damil_multiscale",
        f"data.manifest_path={registered}",
        f"data.labels_path={tmp_path / 'reports.csv'}",
        "data.spatial_size=[32,32,16]",
        "data.split.fractions=[0.6,0.2,0.2]",
        "model.network.base_filters=4",
        "trainer.max_epochs=1",
        "trainer.precision=32",
        "callbacks.evaluator.n_bootstrap=20",
        f"paths.output_dir={tmp_path / 'runs'}",
        f"paths.data_dir={tmp_path / 'cache'}",
    )
    run = single_run_dir(tmp_path / "runs", "damil_multiscale")
    splits = pd.read_csv(run / "splits.csv")
    # 6. prediction on every registered scan, with the DICOM outputs
    ckpt = next((run / "checkpoints").glob("*.ckpt"))
    _run("reportsup-damil-predict", str(ckpt), str(registered), "--out-dir", "work/predicted", cwd=tmp_path)
    predicted = pd.read_csv(tmp_path / "work" / "predicted" / "predictions.csv")

    # The accounting table: one row per series or file group of the export.
    by_uid = kept.set_index("series_instance_uid")
    rows = []
    for t in truth.itertuples():
        row = {"path": t.path, "description": t.description, "expected": t.expected}
        if t.expected == "skipped":
            hit = skipped[
                (skipped["series_instance_uid"].astype(str) == str(t.series_instance_uid))
                if isinstance(t.series_instance_uid, str) and t.series_instance_uid
                else skipped["reason"].eq(t.reason)
            ]
            row["fate"] = f"skipped: {hit['reason'].iloc[0]}" if len(hit) else "UNACCOUNTED"
            row["expected_reason"] = t.reason
        else:
            scan_id = (
                by_uid.loc[t.series_instance_uid, "scan_id"]
                if t.series_instance_uid in by_uid.index
                else None
            )
            if scan_id is None:
                row["fate"] = "UNACCOUNTED"
            elif scan_id in set(quarantined["scan_id"]):
                row["fate"] = "quarantined"
            elif scan_id in set(predicted["scan_id"]):
                split = splits.loc[splits["id"] == scan_id, "split"]
                dicom = tmp_path / "work" / "predicted" / "dicom" / scan_id
                has = all((dicom / f).exists() for f in ("seg.dcm", "sr.dcm"))
                row["fate"] = (
                    f"{split.iloc[0] if len(split) else 'not in split'} split of the run, predicted"
                    + (", DICOM SEG/PM/SR" if has else ", NO DICOM")
                )
                row["scan_id"] = scan_id
            else:
                row["fate"] = "UNACCOUNTED"
        rows.append(row)
    table = pd.DataFrame(rows)
    print(table.to_string())
    assert not table["fate"].str.contains("UNACCOUNTED|NO DICOM|not in split").any(), table.to_string()
    skipped_rows = table[table["expected"] == "skipped"]
    assert (skipped_rows["fate"] == "skipped: " + skipped_rows["expected_reason"]).all(), table.to_string()
    assert {"bone_window", "localizer", "non_image", "not_ct", "too_few_slices", "unreadable"} <= set(
        skipped["reason"]
    )
    assert len(predicted) == len(kept) == (table["expected"] == "kept").sum()

    # The DICOM results of the shuffled series load with highdicom on the source slices' geometry.
    shuffled = checked.loc[checked["reordered"] > 0].iloc[0]
    dicom = tmp_path / "work" / "predicted" / "dicom" / shuffled["scan_id"]
    source = [pydicom.dcmread(f, stop_before_pixels=True) for f in Path(shuffled["image"]).iterdir()]
    if not source[0].get("ImagePositionPatient"):  # a link folder resolves to the files themselves
        raise AssertionError(shuffled["image"])
    positions = {tuple(round(float(v), 3) for v in s.ImagePositionPatient) for s in source}
    seg = hd.seg.segread(dicom / "seg.dcm")
    assert seg.FrameOfReferenceUID == source[0].FrameOfReferenceUID
    frames = {
        tuple(round(float(v), 3) for v in f.PlanePositionSequence[0].ImagePositionPatient)
        for f in seg.PerFrameFunctionalGroupsSequence
    }
    assert frames == positions
    assert len(list(dicom.glob("pm_*.dcm"))) == 4  # one Parametric Map per abnormality type
    for pm_file in dicom.glob("pm_*.dcm"):
        pm = pydicom.dcmread(pm_file)
        assert int(pm.NumberOfFrames) == len(source)
        assert np.isfinite(pm.pixel_array).all()
    sr = hd.sr.srread(dicom / "sr.dcm")
    evidence = {
        str(item.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    assert {str(s.SOPInstanceUID) for s in source} <= evidence  # the SR cites every source slice
    (tmp_path / "accounting.csv").write_text(table.to_csv(index=False))

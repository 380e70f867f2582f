"""Label tables that name every index of the DaMIL NIfTI outputs (issue 21, item 4).

``maps/<scan_id>_regions.nii.gz`` holds integers (0 = none, i + 1 = anatomical region i of the label
space, Liu et al. 2023, Tables S4/S5) and ``maps/<scan_id>_abnormality.nii.gz`` one channel per
abnormality type (last axis, the label space's type order). Without a table a viewer shows "label 7"
and "component 2"; these files give the names:

* ``regions.itksnap.txt``: ITK-SNAP label description file (*Segmentation > Import Label Descriptions*);
* ``regions.ctbl``: 3D Slicer colour table (load it, then pick it as the label map's colour node);
* ``abnormality_channels.tsv`` / ``.json``: channel index -> type name (the multi-channel map).

One set per ``maps/`` folder: every map there comes from one model and so one label space.
The NIfTI files also name their own contents (header ``descrip`` and a JSON comment extension,
:func:`region_header_names` / :func:`abnormality_header_names`), so a map copied alone still says what it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

from reportsup.contracts.labels.crossdl import LabelSpace

ITKSNAP_FILE = "regions.itksnap.txt"
SLICER_FILE = "regions.ctbl"
CHANNELS_TSV = "abnormality_channels.tsv"
CHANNELS_JSON = "abnormality_channels.json"


def region_colors(space: LabelSpace) -> list[tuple[int, int, int]]:
    """One distinct RGB (0-255) per anatomical region, the same in the tables and the DICOM SEG."""
    cmap = matplotlib.colormaps["tab20"]
    return [
        tuple(int(round(255 * c)) for c in cmap(i % cmap.N)[:3])  # type: ignore[misc]
        for i in range(len(space.anatomical_regions))
    ]


def region_index_names(space: LabelSpace) -> list[tuple[int, str]]:
    """(value, name) for every value the region map can hold: 0 = none, i + 1 = region i."""
    return [(0, "none"), *((i + 1, r) for i, r in enumerate(space.anatomical_regions))]


def region_header_names(space: LabelSpace) -> dict[str, object]:
    """What the region map's NIfTI header says about its values (``descrip`` + the full table)."""
    return {
        "descrip": f"DaMIL regions: 0 none, i+1 region i (see {ITKSNAP_FILE})",
        "labels": {str(value): name for value, name in region_index_names(space)},
    }


def abnormality_header_names(space: LabelSpace) -> dict[str, object]:
    """What the abnormality maps' NIfTI header says about its channels (last axis)."""
    return {
        "descrip": "DaMIL probabilities, last axis: " + ",".join(space.types),
        "axis": -1,
        "channels": {str(j): t for j, t in enumerate(space.types)},
    }


def _slicer_name(name: str) -> str:
    """Slicer's colour table splits lines on white space: a name must be one token."""
    return "_".join(name.split())


def write_label_tables(space: LabelSpace, maps_dir: Path) -> dict[str, Path]:
    """Write the ITK-SNAP and 3D Slicer tables of the region map and the channel table of the
    abnormality maps into ``maps_dir``; returns their paths by kind."""
    maps_dir.mkdir(parents=True, exist_ok=True)
    colors = [(0, 0, 0), *region_colors(space)]
    names = region_index_names(space)

    itk = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# reportsup DaMIL predicted regions (<scan_id>_regions.nii.gz)",
        "# Columns = Index, R, G, B, A, VIS, MSH, LABEL",
        "################################################",
    ]
    for (value, name), (r, g, b) in zip(names, colors, strict=True):
        # index 0 is ITK-SNAP's "clear" label: transparent and hidden
        alpha, vis = (0, 0) if value == 0 else (1, 1)
        label = name.replace('"', "'")  # the label is a quoted string in ITK-SNAP's format
        itk.append(f'{value:5d} {r:5d} {g:4d} {b:4d} {alpha:8d} {vis:2d} {vis:2d}    "{label}"')
    (maps_dir / ITKSNAP_FILE).write_text("\n".join(itk) + "\n")

    # Slicer's colour-table format (Colors module, .ctbl / .txt): "index name R G B A".
    slicer = [
        "# Color table file regions.ctbl (reportsup DaMIL predicted regions)",
        f"# {len(names)} values",
    ]
    for (value, name), (r, g, b) in zip(names, colors, strict=True):
        slicer.append(f"{value} {_slicer_name(name)} {r} {g} {b} {0 if value == 0 else 255}")
    (maps_dir / SLICER_FILE).write_text("\n".join(slicer) + "\n")

    channels = [
        {"channel": j, "type": t, "description": t.replace("_", " ") + " probability (0-1)"}
        for j, t in enumerate(space.types)
    ]
    tsv = [
        "channel\ttype\tdescription",
        *(f"{c['channel']}\t{c['type']}\t{c['description']}" for c in channels),
    ]
    (maps_dir / CHANNELS_TSV).write_text("\n".join(tsv) + "\n")
    (maps_dir / CHANNELS_JSON).write_text(
        json.dumps({"file": "<scan_id>_abnormality.nii.gz", "axis": -1, "channels": channels}, indent=2)
        + "\n"
    )
    return {
        "itksnap": maps_dir / ITKSNAP_FILE,
        "slicer": maps_dir / SLICER_FILE,
        "channels_tsv": maps_dir / CHANNELS_TSV,
        "channels_json": maps_dir / CHANNELS_JSON,
    }

"""Synthetic data written once, also when several processes (DDP ranks) ask for it at the same time."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest

from datamodules.synthetic.writing import MARKER, write_once


def _slow_write(folder: Path) -> None:
    (folder / "part1.csv").write_text("a\n1\n")
    time.sleep(0.5)  # a second process arriving now sees files but no marker yet
    (folder / "part2.csv").write_text("b\n2\n")


def _rank(out: str, results) -> None:
    try:
        results.put("wrote" if write_once(out, "sig", _slow_write) else "reused")
    except Exception as err:  # noqa: BLE001 - reported to the parent
        results.put(f"error: {err}")


def test_concurrent_ranks_write_once_and_reuse(tmp_path):
    out = tmp_path / "data"
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_rank, args=(str(out), results)) for _ in range(3)]
    for i, p in enumerate(procs):
        p.start()
        if i == 0:
            time.sleep(0.2)  # the others arrive while the first is writing
    for p in procs:
        p.join(30)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["reused", "reused", "wrote"]
    assert (out / MARKER).read_text() == "sig" and (out / "part2.csv").exists()


def test_a_folder_the_generator_did_not_make_is_refused(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my data")
    with pytest.raises(FileExistsError, match="not written by the synthetic generator"):
        write_once(out, "sig", _slow_write)
    assert (out / "notes.txt").read_text() == "my data"

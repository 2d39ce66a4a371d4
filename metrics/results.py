"""Results of an evaluation: the summary table printed by test.py, the rows of results.csv and
the atomic writing of results.json / results.csv (non-finite values become null / empty cells).
"""
from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import shutil
from typing import Dict, List, Optional, Tuple

import numpy as np

from common.diskfull import DiskFullError, is_disk_full
from datasets.protocols import ALL_BUCKET


RESULTS_FORMAT = "exegan-eval-v1"


def summary_means(result: dict, bucket: str = ALL_BUCKET) -> Dict[str, float]:
    """``{metric: mean over repeats}`` of one bucket (what the training loop logs)."""
    return {k: v["mean"] for k, v in result["summary"][bucket].items()}


def _fmt(v: float, digits: int = 4) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else str(v)


def format_summary(result: dict, digits: int = 4) -> str:
    """A plain-text table: one row per bucket, ``mean ± std`` per metric."""
    summary = result["summary"]
    metrics = [m for m in dict.fromkeys(k for b in summary.values() for k in b)
               if m != "n_images"]
    lines = ["bucket   " + "  ".join(f"{m:>22}" for m in metrics)]
    for bucket, vals in summary.items():
        cells = []
        for m in metrics:
            s = vals.get(m)
            cells.append(f"{_fmt(s['mean'], digits) + ' ± ' + _fmt(s['std'], digits):>22}"
                         if s else f"{'-':>22}")
        lines.append(f"{bucket:<8} " + "  ".join(cells))
    return "\n".join(lines)


def results_rows(result: dict) -> Tuple[List[str], List[dict]]:
    """(header, rows) of results.csv: per bucket a ``mean`` and a ``std`` row, then one row per
    repeat (with its seeds)."""
    summary = result["summary"]
    metrics = list(dict.fromkeys(k for b in summary.values() for k in b))
    header = ["bucket", "stat", "repeat", "seed", "mask_seed"] + metrics
    rows = []
    for bucket, vals in summary.items():
        for stat in ("mean", "std"):
            rows.append({"bucket": bucket, "stat": stat, "repeat": "", "seed": "",
                         "mask_seed": "", **{m: vals[m][stat] for m in metrics if m in vals}})
    for rep in result["repeats"]:
        for bucket, vals in rep["results"].items():
            rows.append({"bucket": bucket, "stat": "repeat", "repeat": rep["repeat"],
                         "seed": rep["seed"], "mask_seed": rep["mask_seed"],
                         **{m: vals[m] for m in metrics if m in vals}})
    return header, rows


def remove_unfinished(out_dir: str, existed: bool) -> None:
    """After a failed run: without results.json, what a results directory holds (nothing, or
    some saved images) is no result, so none is left behind; an --out that existed empty
    before stays, empty."""
    shutil.rmtree(out_dir, ignore_errors=True)
    if existed:
        os.makedirs(out_dir, exist_ok=True)
    logging.getLogger("exegan.test").info("removed the unfinished results directory %s", out_dir)


def _write_atomic(path: str, text: str) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if is_disk_full(e):
            raise DiskFullError(path, len(text.encode("utf-8")), "free some space there (or pass "
                                "another --out) and run the evaluation again") from None
        raise


#: What a non-finite number becomes in results.json (``null``) and results.csv (an empty cell).
NON_FINITE_NOTE = ("null in results.json / an empty cell in results.csv: a value that is not a "
                   "finite number, listed under non_finite with what it was (+inf: e.g. PSNR of "
                   "an exact reconstruction; nan: e.g. FID of a bucket with one image)")


def _finite(obj, path: str = "", found: Optional[Dict[str, str]] = None):
    """A copy of ``obj`` with every non-finite float replaced by None (strict JSON); ``found``
    collects ``{"a.b.0": "+inf" | "-inf" | "nan"}``."""
    if isinstance(obj, dict):
        return {k: _finite(v, f"{path}.{k}" if path else str(k), found) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v, f"{path}.{i}", found) for i, v in enumerate(obj)]
    if isinstance(obj, (float, np.floating)) and not math.isfinite(obj):
        if found is not None:
            found[path] = "nan" if math.isnan(obj) else ("+inf" if obj > 0 else "-inf")
        return None
    return obj


def write_results(out_dir: str, result: dict) -> None:
    found: Dict[str, str] = {}
    doc = _finite({"format": RESULTS_FORMAT, "summary": result["summary"],
                   "repeats": result["repeats"], "protocol": result["protocol"]}, "", found)
    doc["non_finite"] = found
    doc["non_finite_note"] = NON_FINITE_NOTE
    # Strict JSON (no NaN / Infinity tokens, which most JSON parsers outside Python reject).
    _write_atomic(os.path.join(out_dir, "results.json"),
                  json.dumps(doc, indent=2, allow_nan=False) + "\n")
    header, rows = results_rows(result)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=header, lineterminator="\n")
    w.writeheader()
    w.writerows({k: ("" if v is None else v) for k, v in _finite(row).items()} for row in rows)
    _write_atomic(os.path.join(out_dir, "results.csv"), buf.getvalue())
    if "pairs" in result:
        buf = io.StringIO()
        fields = ["repeat", "bucket", "index", "image", "exemplar", "mask", "batch"]
        if any("completion" in p for p in result["pairs"]):
            fields.append("completion")
        w = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        w.writerows(result["pairs"])
        _write_atomic(os.path.join(out_dir, "pairs.csv"), buf.getvalue())

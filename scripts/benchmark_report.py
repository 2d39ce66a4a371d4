"""The benchmark's results (``scripts/benchmark.py``): the figures derived from a variant's phase
medians (images/s, the amortised iteration with lazy regularisation, peak memory), several
rounds of one variant pooled into one result, each variant's speed-up over the baseline, and the
printed table.
"""
from __future__ import annotations

import os
import statistics
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from scripts.benchmark_variants import PHASES  # noqa: E402


def derive(result: dict) -> None:
    """images/s and the amortised iteration (lazy regularisation: R1 every d_reg_every steps,
    path length every g_reg_every steps) from a variant's phase medians."""
    ph, c = result["phases"], result["config"]
    B = c["batch"]
    d = {}
    med = {k: v["median_s"] for k, v in ph.items()}
    if "iteration" in med:
        d["iteration_images_per_s"] = B / med["iteration"]
    if all(k in med for k in ("prep", "d_main", "g_main", "ema")):
        am = med["prep"] + med["d_main"] + med["g_main"] + med["ema"]
        if "d_reg" in med:
            am += med["d_reg"] / c["d_reg_every"]
        if "g_reg" in med:
            am += med["g_reg"] / c["g_reg_every"]
        d["amortised_iteration_s"] = am
        d["amortised_images_per_s"] = B / am
    nb = result.get("infer_batch", B)
    if "inference" in med:
        d["inference_images_per_s"] = nb / med["inference"]
    if "inference_g" in med:
        d["inference_g_images_per_s"] = nb / med["inference_g"]
    peaks = [v["peak_rss_mib"] for v in ph.values() if v.get("peak_rss_mib") is not None]
    if peaks:
        d["peak_rss_mib"] = max(peaks)
    cuda = [v["cuda_max_allocated_mib"] for v in ph.values() if "cuda_max_allocated_mib" in v]
    if cuda:
        d["cuda_max_allocated_mib"] = max(cuda)
    result["derived"] = d


def merge_rounds(results: list) -> dict:
    """One variant's results from several rounds (processes) -> one result whose phase times are
    all the rounds' timed runs together (median over all of them, peak memory the maximum)."""
    ok = [r for r in results if r.get("status") == "ok"]
    if len(ok) <= 1:
        return ok[0] if ok else results[0]
    out = dict(ok[0])
    out["rounds"] = len(ok)
    out["load_avg_start"] = [r["load_avg_start"] for r in ok]
    out["load_avg_end"] = [r["load_avg_end"] for r in ok]
    out["errors"] = {k: v for r in ok for k, v in r.get("errors", {}).items()}
    phases = {}
    for name in PHASES:
        runs = [r["phases"][name] for r in ok if name in r.get("phases", {})]
        if not runs:
            continue
        times = [t for m in runs for t in m["times_s"]]
        merged = {"median_s": statistics.median(times), "min_s": min(times), "times_s": times,
                  "first_warmup_s": [m.get("first_warmup_s") for m in runs],
                  "round_medians_s": [m["median_s"] for m in runs]}
        for key in ("peak_rss_mib", "cuda_max_allocated_mib", "rss_start_mib"):
            vals = [m[key] for m in runs if m.get(key) is not None]
            if vals:
                merged[key] = max(vals)
        phases[name] = merged
    out["phases"] = phases
    derive(out)
    return out



def ratios(variants: dict, baseline: str) -> dict:
    """Speed-up of every variant's phases over the baseline: baseline median / variant median."""
    base = variants.get(baseline, {}).get("phases", {})
    out = {}
    for name, v in variants.items():
        r = {}
        for p, m in v.get("phases", {}).items():
            if p in base and m["median_s"] > 0:
                r[p] = base[p]["median_s"] / m["median_s"]
        bd, vd = variants.get(baseline, {}).get("derived", {}), v.get("derived", {})
        if "amortised_iteration_s" in bd and "amortised_iteration_s" in vd:
            r["amortised_iteration"] = bd["amortised_iteration_s"] / vd["amortised_iteration_s"]
        if bd.get("peak_rss_mib") and vd.get("peak_rss_mib"):
            r["peak_rss"] = vd["peak_rss_mib"] / bd["peak_rss_mib"]  # memory: variant / baseline
        out[name] = r
    return out


def format_table(report: dict) -> str:
    variants = report["variants"]
    names = list(variants)
    baseline = names[0]
    rat = report["ratios"]
    rows = [["phase"] + names]
    for p in PHASES:
        if not any(p in variants[n].get("phases", {}) or p in variants[n].get("errors", {}) for n in names):
            continue
        row = [p]
        for n in names:
            v = variants[n]
            if p in v.get("phases", {}):
                cell = f"{v['phases'][p]['median_s'] * 1000:.0f} ms"
                if n != baseline and p in rat.get(n, {}):
                    cell += f" (x{rat[n][p]:.2f})"
            elif v.get("status") != "ok":
                cell = v.get("status", "?")
            else:
                cell = "error" if p in v.get("errors", {}) else "-"
            row.append(cell)
        rows.append(row)
    extra = [("amortised iter", "amortised_iteration_s", lambda x: f"{x * 1000:.0f} ms", "amortised_iteration"),
             ("iter images/s", "iteration_images_per_s", lambda x: f"{x:.3f}", None),
             ("infer images/s", "inference_images_per_s", lambda x: f"{x:.2f}", None),
             ("G_ema images/s", "inference_g_images_per_s", lambda x: f"{x:.2f}", None),
             ("peak RSS", "peak_rss_mib", lambda x: f"{x:.0f} MiB", "peak_rss"),
             ("CUDA max alloc", "cuda_max_allocated_mib", lambda x: f"{x:.0f} MiB", None)]
    for label, key, fmt, rkey in extra:
        if not any(key in variants[n].get("derived", {}) for n in names):
            continue
        row = [label]
        for n in names:
            d = variants[n].get("derived", {})
            cell = fmt(d[key]) if key in d else "-"
            if rkey and n != baseline and rkey in rat.get(n, {}):
                cell += f" (x{rat[n][rkey]:.2f})"
            row.append(cell)
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    s = report["settings"]
    head = (f"EXE-GAN benchmark: {s['device']}, size {s['size']}, batch {s['batch']}, "
            f"{s['repeats']} timed runs after {s['warmup']} warm-up x {s['rounds']} round(s) (median); ratios = speed-up "
            f"over '{baseline}' (peak RSS: variant / baseline)"
            + ("; variants interleaved in one process" if report.get("interleaved") else ""))
    out = [head] + lines
    for n in names:
        for p, e in variants[n].get("errors", {}).items():
            out.append(f"  [{n}] {p}: {e}")
        if variants[n].get("status") == "skipped":
            out.append(f"  [{n}] skipped: {variants[n].get('reason')}")
        if variants[n].get("status") == "error":
            out.append(f"  [{n}] error: {variants[n].get('error')}")
        if variants[n].get("settings", {}).get("compile"):
            firsts = {p: m.get("first_warmup_s") for p, m in variants[n].get("phases", {}).items()}
            out.append(f"  [{n}] first (compiling) call per phase: " + ", ".join(
                f"{p} {t if isinstance(t, (int, float)) else max(x for x in t if x):.1f} s"
                for p, t in firsts.items() if t))
    if report.get("data"):
        out.append("data loading (images/s by DataLoader workers): " + ", ".join(
            f"{w}: {v['images_per_s']:.1f}" for w, v in report["data"].items()))
    return "\n".join(out)

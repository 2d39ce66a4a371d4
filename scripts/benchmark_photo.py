#!/usr/bin/env python
"""The cost of ``--align`` (inference/photo.py), quoted in docs/benchmarks.md:

* **overhead at 2 megapixels**: one aligned photo round trip - detect the photo's face, align photo
  and hole, detect and align the exemplar, inpaint the crop, warp back and blend (feather 4) - against
  the plain inpaint of the same aligned crop (``inference.roundtrip.inpaint_one`` on a 256 x 256
  face), both with the released architectures at full size (random weights; the time does not
  depend on them);
* **24 megapixels**: ``scripts/inpaint.py --align`` on a 6000 x 4000 JPEG in a child process, its
  wall time and peak resident memory, next to the same command on a 0.5-megapixel photo (what
  PyTorch, the networks and the detector cost on their own).

    python scripts/benchmark_photo.py                      # writes runs/bench/photo_cpu.json
    python scripts/benchmark_photo.py --repeats 1 --no-24mp   # quick

The photos are scikit-image's astronaut (a public-domain NASA portrait) enlarged with Lanczos.
Each time is the median of ``--repeats`` runs after one warm-up run.
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from typing import Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from skimage import data  # noqa: E402

from common.cli import DefaultsHelpFormatter  # noqa: E402
from inference.detect import make_detector  # noqa: E402
from inference.photo import align_exemplar, align_photo  # noqa: E402
from inference.roundtrip import inpaint_one, prepare  # noqa: E402
from models.exegan import EXEGAN  # noqa: E402
from models.generator import Generator  # noqa: E402
from models.psp import StyleEncoder  # noqa: E402
from scripts.benchmark_measure import machine_info, measure, write_report  # noqa: E402

SIZE = 256


def full_size_model(seed: int = 0):
    """EXEGAN at 256 px with the released architectures (StyleGAN2 generator, pSp IR-SE50 encoder)."""
    torch.manual_seed(seed)
    g = Generator(SIZE)
    enc = StyleEncoder(start=g.exemplar_start, n=g.n_exemplar, n_styles=max(18, g.n_latent),
                       style_dim=g.style_dim)
    enc.set_latent_avg(torch.randn(enc.n_styles, enc.style_dim) * 0.1)
    return EXEGAN(g.eval(), enc.eval())


def photo_of(width: int, height: int, mirror: bool = False):
    """(photo [H, W, 3] uint8, hole [H, W] bool over nose and mouth): the astronaut enlarged so that
    the photo's short side is the portrait's side, centred, edges repeated."""
    a = data.astronaut()[:, ::-1] if mirror else data.astronaut()
    side = min(width, height)
    big = np.asarray(Image.fromarray(np.ascontiguousarray(a)).resize((side, side), Image.LANCZOS))
    top, left = (height - side) // 2, (width - side) // 2
    photo = np.pad(big, ((top, height - side - top), (left, width - side - left), (0, 0)), mode="edge")
    k = side / 512
    hole = np.zeros((height, width), bool)
    yy, xx = np.ogrid[0:height, 0:width]
    cx = left + (512 - 225 if mirror else 225) * k
    hole[((xx - cx) / (24 * k)) ** 2 + ((yy - top - 132 * k) / (20 * k)) ** 2 < 1] = True
    return photo, hole


def overhead(model, detector, repeats: int) -> dict:
    """Round trip through the aligned crop vs the plain inpaint of that crop, 2 MP photo."""
    photo, hole = photo_of(1632, 1224)
    exemplar, _ = photo_of(1024, 1024, mirror=True)
    faces = detector(photo)
    ex_face = detector(exemplar)[0]
    prep = align_photo(photo, hole, faces, SIZE, feather=4)
    crop_prep = prepare(prep.crop, prep.crop_hole, SIZE)
    ex_tensor = align_exemplar(exemplar, ex_face, SIZE)[0]

    def plain():
        with torch.no_grad():
            return inpaint_one(model, crop_prep, ex_tensor, samples=1, seed=0, truncation=1.0)

    def round_trip():
        with torch.no_grad():
            p = align_photo(photo, hole, detector(photo), SIZE, feather=4)
            ex = align_exemplar(exemplar, detector(exemplar)[0], SIZE)[0]
            return inpaint_one(model, p, ex, samples=1, seed=0, truncation=1.0)

    completed = model.complete(prep.image[None], prep.mask[None], model.encode_exemplars(ex_tensor[None]),
                               seed=0)[0]
    parts = {"detect_photo": measure(lambda: detector(photo), torch.device("cpu"), repeats, 1),
             "align_photo": measure(lambda: align_photo(photo, hole, faces, SIZE, feather=4),
                                    torch.device("cpu"), repeats, 1),
             "detect_exemplar": measure(lambda: detector(exemplar), torch.device("cpu"), repeats, 1),
             "align_exemplar": measure(lambda: align_exemplar(exemplar, ex_face, SIZE),
                                       torch.device("cpu"), repeats, 1),
             "warp_back_and_blend": measure(lambda: prep.paste(completed), torch.device("cpu"), repeats, 1)}
    # Interleaved so that load from elsewhere on the machine falls on both alike.
    t_plain, t_rt = [], []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        plain()
        t1 = time.perf_counter()
        round_trip()
        t2 = time.perf_counter()
        t_plain.append(t1 - t0)
        t_rt.append(t2 - t1)
    t_plain, t_rt = float(np.median(t_plain[1:])), float(np.median(t_rt[1:]))
    return {"photo": "1632x1224 (2.0 MP)", "exemplar": "1024x1024", "hole_pixels": int(hole.sum()),
            "plain_inpaint_s": t_plain, "round_trip_s": t_rt, "overhead": t_rt / t_plain - 1,
            "parts_median_s": {k: v["median_s"] for k, v in parts.items()}}


def cli_run(width: int, height: int, files: dict, tmp: str, threads: int) -> dict:
    """``scripts/inpaint.py --align`` on a width x height JPEG in a child process: wall time, peak RSS."""
    photo, hole = photo_of(width, height)
    name = f"photo_{width}x{height}"
    Image.fromarray(photo).save(os.path.join(tmp, name + ".jpg"), quality=92)
    Image.fromarray(hole.astype(np.uint8) * 255).save(os.path.join(tmp, name + "_mask.png"))
    del photo, hole
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "inpaint.py"), "--ckpt", files["ckpt"], "--psp",
           files["psp"], "--image", os.path.join(tmp, name + ".jpg"), "--mask",
           os.path.join(tmp, name + "_mask.png"), "--exemplar", files["exemplar"], "--align", "--feather", "4",
           "--out", os.path.join(tmp, "out_" + name)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The child's own peak (VmHWM of its address space after exec): its rusage would also count
    # the pages it shared with this (large) process between fork and exec.
    peak = 0
    while child.poll() is None:
        peak = max(peak, _vm_hwm_kib(child.pid))
        time.sleep(0.02)
    wall = time.perf_counter() - t0
    err = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if child.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{err}")
    out = os.path.join(tmp, "out_" + name, name + "_sample0.png")
    with Image.open(out) as img:
        assert img.size == (width, height)
    return {"photo": f"{width}x{height} ({width * height / 1e6:.1f} MP)", "wall_s": wall,
            "peak_rss_mib": peak / 1024}


def _vm_hwm_kib(pid: int) -> int:
    """Peak resident set of a running process (kB), 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def save_files(model, tmp: str) -> dict:
    """The full-size model as files in the released formats (a bare generator state dict, the pSp dict)."""
    ckpt, psp = os.path.join(tmp, "exe.pt"), os.path.join(tmp, "psp.pt")
    torch.save({"g_ema": model.generator.state_dict()}, ckpt)
    enc = model.style_encoder
    torch.save({"opts": {"encoder_type": "GradualStyleEncoder"},
                "state_dict": {f"encoder.{k}": v for k, v in enc.state_dict().items()},
                "latent_avg": enc.latent_avg.clone()}, psp)
    exemplar = os.path.join(tmp, "exemplar.jpg")
    Image.fromarray(photo_of(1024, 1024, mirror=True)[0]).save(exemplar, quality=92)
    return {"ckpt": ckpt, "psp": psp, "exemplar": exemplar}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsHelpFormatter)
    p.add_argument("--repeats", type=int, default=3, help="timed runs per figure")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    p.add_argument("--no-24mp", action="store_true", help="skip the 24-megapixel child-process run")
    p.add_argument("--out", default=os.path.join("runs", "bench", "photo_cpu.json"), help="JSON report")
    return p


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    model = full_size_model()
    detector = make_detector("cpu")
    report = {"machine": machine_info(torch.device("cpu")), "model_size": SIZE,
              "overhead_2mp": overhead(model, detector, args.repeats)}
    o = report["overhead_2mp"]
    print(f"2 MP photo: plain inpaint of the aligned crop {o['plain_inpaint_s']:.2f} s, aligned round trip "
          f"{o['round_trip_s']:.2f} s, overhead {100 * o['overhead']:.1f} %")
    for k, v in o["parts_median_s"].items():
        print(f"  {k:22s} {1000 * v:7.1f} ms")
    if not args.no_24mp:
        with tempfile.TemporaryDirectory() as tmp:
            files = save_files(model, tmp)
            report["cli_small"] = cli_run(816, 612, files, tmp, args.threads)
            report["cli_24mp"] = cli_run(6000, 4000, files, tmp, args.threads)
        for k in ("cli_small", "cli_24mp"):
            r = report[k]
            print(f"inpaint.py --align, {r['photo']}: {r['wall_s']:.1f} s, peak RSS {r['peak_rss_mib']:.0f} MiB")
    report["peak_rss_self_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"wrote {write_report(report, args.out)}")
    return report


if __name__ == "__main__":
    main()

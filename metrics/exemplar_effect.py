"""The "exemplar effect" of the demo: does the filled hole take the exemplar's attributes?

EXE-GAN's claim is that the completed region takes on the exemplar's attributes. On the
built-in demo faces (``datasets.demo``) every attribute is recorded and every face can be drawn
again with one attribute changed, which turns the claim into two numbers:

* **hole change** - the mean absolute difference (8-bit levels, 0-255) inside the hole between
  the completion with the face's own image as exemplar and with another face as exemplar, same
  z and noise. A generator that ignores its exemplar scores 0. For scale, the same figure
  between two z's with the same exemplar is reported next to it (``z change``).
* **attribute agreement** - for a test face ``a``, another face ``b`` as exemplar and an
  attribute ``k`` (hair colour, eye colour, glasses) on which they differ, draw ``a`` twice
  without sensor noise: as it is (``original``) and with ``b``'s value of ``k``
  (``counterfactual``). Inside the hole, on the pixels where the two drawings differ by more
  than ``MIN_DIFF`` (the pixels that show ``k``), the completion *follows the exemplar* when it
  is closer (sum of squared differences) to the counterfactual than to the original. Pixels
  where the drawings agree add the same amount to both distances, so only ``k``'s pixels
  decide. Cases where ``k`` shows on fewer than ``MIN_PIXELS`` hole pixels are skipped.
  As a control the same test is run on the completion with ``a``'s own image as exemplar: a
  generator that reads its exemplar follows the (wrong) counterfactual there rarely.

The hole of the measurement is :func:`attribute_hole`: a box over the top of the head, the
brows and the eyes (hair colour, eye colour and glasses all show there), the same for every face.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

from datasets.face_drawing import draw_face

ATTRIBUTES = ("hair_color", "eye_color", "glasses")
MIN_DIFF = 0.08      # per-pixel max channel difference ([0, 1] units) that counts as "shows k"
MIN_PIXELS = 2       # fewest such hole pixels for a case to count
HOLE_BOX = (0.10, 0.56, 0.20, 0.80)  # (top, bottom, left, right) of attribute_hole, unit coordinates


def attribute_hole(size: int) -> torch.Tensor:
    """[1, size, size] float mask (1 = hole): rows [0.10, 0.56), columns [0.20, 0.80) of the image,
    i.e. the hair above the forehead, the brows, the eyes and glasses of a demo face."""
    top, bottom, left, right = (int(round(v * size)) for v in HOLE_BOX)
    m = torch.zeros(1, size, size)
    m[:, top:bottom, left:right] = 1
    return m


def follows_exemplar(completed: np.ndarray, original: np.ndarray, counterfactual: np.ndarray,
                     hole: np.ndarray, *, min_diff: float = MIN_DIFF,
                     min_pixels: int = MIN_PIXELS) -> Optional[bool]:
    """Whether ``completed`` shows the counterfactual's attribute rather than the original's.

    Args:
        completed, original, counterfactual: [H, W, 3] (or [3, H, W], all alike) in [0, 1].
        hole: [H, W] (or [1, H, W]) with 1 / True inside the hole.
    Returns:
        True when the completion is closer to ``counterfactual`` than to ``original`` over the
        hole pixels where the two differ by more than ``min_diff`` (max over channels); False
        when it is closer to ``original`` (ties count as False); None when fewer than
        ``min_pixels`` hole pixels differ (the attribute does not show in the hole).
    """
    c, o, f = (np.asarray(a, np.float64) for a in (completed, original, counterfactual))
    if not c.shape == o.shape == f.shape or c.ndim != 3:
        raise ValueError(f"completed, original and counterfactual must be alike [H, W, 3] or "
                         f"[3, H, W] images, got {c.shape}, {o.shape}, {f.shape}.")
    channel_axis = 0 if c.shape[0] == 3 and c.shape[-1] != 3 else -1
    h = np.asarray(hole).astype(bool)
    h = h.reshape(h.shape[-2:])
    shows = (np.abs(f - o).max(axis=channel_axis) > min_diff) & h
    if int(shows.sum()) < min_pixels:
        return None
    cc, oo, ff = (np.moveaxis(a, channel_axis, -1)[shows] for a in (c, o, f))
    return float(((cc - ff) ** 2).sum()) < float(((cc - oo) ** 2).sum())


@dataclass
class ExemplarEffect:
    """The figures of :func:`measure` (see the module docstring)."""
    n_images: int
    hole_change: float                  # 8-bit levels, own exemplar vs another face's
    z_change: float                     # 8-bit levels, two z's with the same exemplar
    follows: Dict[str, List[int]] = field(default_factory=dict)    # attr -> [hits, cases]
    control: Dict[str, List[int]] = field(default_factory=dict)    # attr -> [hits, cases], own face

    def rate(self, attr: str, control: bool = False) -> Optional[float]:
        hits, n = (self.control if control else self.follows).get(attr, (0, 0))
        return hits / n if n else None

    def overall(self, control: bool = False) -> Optional[float]:
        table = self.control if control else self.follows
        hits = sum(v[0] for v in table.values())
        n = sum(v[1] for v in table.values())
        return hits / n if n else None

    def to_dict(self) -> dict:
        return {"n_images": self.n_images, "hole_change": self.hole_change,
                "z_change": self.z_change, "follows": self.follows, "control": self.control,
                "follows_rate": self.overall(), "control_rate": self.overall(control=True)}

    def lines(self) -> List[str]:
        """Human-readable summary, one figure per line."""
        out = [f"hole change when the exemplar is swapped: {self.hole_change:.1f} / 255 "
               f"(two z's, same exemplar: {self.z_change:.1f} / 255; {self.n_images} test faces)"]
        for attr in self.follows:
            hits, n = self.follows[attr]
            ch, cn = self.control.get(attr, (0, 0))
            if n:
                out.append(f"{attr:<10}: the hole follows the exemplar in {hits}/{n} swaps "
                           f"({100 * hits / n:.0f}%); with the face's own image as exemplar "
                           f"{ch}/{cn} ({100 * ch / max(cn, 1):.0f}%)")
            else:
                out.append(f"{attr:<10}: no test pair differs in it inside the hole")
        return out


def measure(complete: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor],
            attributes: Sequence[dict], images: torch.Tensor, size: int, *,
            draw: Optional[Callable[[dict, int], np.ndarray]] = None, seed: int = 0,
            batch: int = 16, attrs: Sequence[str] = ATTRIBUTES) -> ExemplarEffect:
    """Measure the exemplar effect of a model on demo faces.

    Args:
        complete: ``complete(images, masks, exemplars, seed) -> completed``, all [B, C, S, S] in
            [-1, 1] (e.g. ``lambda x, m, e, s: model.inpaint(x, m, e, seed=s)`` of an EXEGAN);
            one ``seed`` gives one z / noise draw for the whole batch.
        attributes: the recorded attributes of each test face (``datasets.demo`` manifest
            entries), in the order of ``images``.
        images: [N, 3, S, S] in [-1, 1], the test faces (N >= 2).
        size: S.
        draw: ``draw(attrs, size) -> [S, S, 3] float in [0, 1]``, the noise-free drawing of a
            face (default: ``datasets.face_drawing.draw_face`` with noise 0).
    Face ``i`` takes face ``N - 1 - i`` as the other exemplar (the test protocol's "reverse"
    pairing; with N odd the middle face is skipped).
    """
    if draw is None:
        def draw(a: dict, s: int) -> np.ndarray:
            img = draw_face(a, s, np.random.default_rng(0), noise=0.0)
            return np.asarray(img, np.float64) / 255.0
    n = images.shape[0]
    if n < 2 or len(attributes) != n:
        raise ValueError(f"measure needs >= 2 test faces with one attribute record each, got "
                         f"{n} images and {len(attributes)} records.")
    pairs = [(i, n - 1 - i) for i in range(n) if i != n - 1 - i]
    hole = attribute_hole(size)
    follows = {a: [0, 0] for a in attrs}
    control = {a: [0, 0] for a in attrs}
    swap_diffs, z_diffs = [], []
    for lo in range(0, len(pairs), batch):
        chunk = pairs[lo:lo + batch]
        a_idx = torch.tensor([p[0] for p in chunk])
        b_idx = torch.tensor([p[1] for p in chunk])
        x = images[a_idx]
        m = hole.expand(len(chunk), 1, size, size)
        own = complete(x, m, images[a_idx], seed)
        other = complete(x, m, images[b_idx], seed)
        own_z2 = complete(x, m, images[a_idx], seed + 1)
        to8 = lambda t: (t.clamp(-1, 1) + 1) * 127.5  # noqa: E731
        per = m.sum(dim=(1, 2, 3)) * 3
        swap_diffs += ((to8(own) - to8(other)).abs() * m).sum(dim=(1, 2, 3)).div(per).tolist()
        z_diffs += ((to8(own) - to8(own_z2)).abs() * m).sum(dim=(1, 2, 3)).div(per).tolist()
        own01 = ((own.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        other01 = ((other.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu().numpy()
        for k, (i, j) in enumerate(chunk):
            orig_attrs = attributes[i]
            original = None
            for attr in attrs:
                if orig_attrs[attr] == attributes[j][attr]:
                    continue
                if original is None:
                    original = draw(orig_attrs, size)
                swapped = copy.deepcopy(orig_attrs)
                swapped[attr] = attributes[j][attr]
                cf = draw(swapped, size)
                verdict = follows_exemplar(other01[k], original, cf, hole[0].numpy())
                if verdict is None:
                    continue
                follows[attr][0] += int(verdict)
                follows[attr][1] += 1
                control[attr][0] += int(follows_exemplar(own01[k], original, cf, hole[0].numpy()))
                control[attr][1] += 1
    return ExemplarEffect(n_images=len(pairs), hole_change=float(np.mean(swap_diffs)),
                          z_change=float(np.mean(z_diffs)), follows=follows, control=control)

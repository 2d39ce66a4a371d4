"""scripts/demo.py's last part: the exemplar-effect figures, the exemplar grid, and the printed
inpaint.py / style_mix.py commands, which must run as printed (from the repository root)."""
import json
import os

import numpy as np
from PIL import Image

from datasets.demo import make_demo_faces
from scripts import demo, inpaint, style_mix

SIZE = 16  # the tiny networks of conftest.py


def test_demo_end_figures_grid_and_commands(files, tmp_path, monkeypatch):
    faces = make_demo_faces(str(tmp_path / "faces"), n=2, size=SIZE, seed=0, n_test=6)
    run_dir = tmp_path / "00000-demo"
    out = run_dir / "test"
    effect, grid = demo.exemplar_effect(files["exe"], files["psp"], faces.root, str(out),
                                        n_grid=2, n_exemplars=3)
    saved = json.load(open(out / "exemplar_effect.json"))
    assert saved["n_images"] == 6 and saved["hole_change"] == effect.hole_change
    assert np.isfinite(effect.hole_change) and effect.hole_change > 0  # a random G reads its codes
    assert set(saved["follows"]) == {"hair_color", "eye_color", "glasses"}
    # 1 exemplar row + 2 faces, 1 + 3 columns, zoomed to >= 128 px per image.
    zoom = 128 // SIZE
    assert Image.open(grid).size == (4 * SIZE * zoom, 3 * SIZE * zoom)

    inputs = demo.example_inputs(str(run_dir), faces.root, SIZE)
    hole = np.asarray(Image.open(inputs["mask"]))
    assert hole.shape == (SIZE, SIZE) and set(np.unique(hole)) == {0, 255}
    commands = demo.usage_commands(files["exe"], files["psp"], inputs, str(run_dir))
    assert [c[1][1] for c in commands] == ["scripts/inpaint.py", "scripts/style_mix.py"]
    monkeypatch.chdir(demo.ROOT)  # the printed paths are relative to the repository root
    assert inpaint.main(commands[0][1][2:]) == 0
    assert style_mix.main(commands[1][1][2:]) == 0
    stem = os.path.splitext(os.path.basename(inputs["image"]))[0]
    assert sorted(os.listdir(run_dir / "inpaint")) == sorted(
        [f"{stem}_sample{k}.png" for k in range(4)] + [f"{stem}_sheet.png"])
    assert f"{stem}_mix_grid.png" in os.listdir(run_dir / "style_mix")


def test_demo_script_runs_as_a_script():
    """`make demo` runs `python scripts/demo.py`: the repository's packages must import from there."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, os.path.join("scripts", "demo.py"), "--help"], cwd=demo.ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "exemplar" in r.stdout or "demo" in r.stdout

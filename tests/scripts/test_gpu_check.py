"""scripts/gpu_check.py without a GPU: the dry run's plumbing (steps, budget, the benchmark JSONs
read back into one JSON and one markdown table), the test-result parsing and the verdict on the
tiled kernel. The GPU run itself is the script's job on a CUDA machine."""
import json
import os
import re
import subprocess
import sys

from scripts import gpu_check

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_dry_run_writes_the_json_and_the_table(tmp_path):
    out = tmp_path / "gc"
    report = gpu_check.main(["--dry-run", "--skip", "build,selfcheck,tests", "--out", str(out),
                             "--budget", "400"])
    steps = report["steps"]
    assert steps["build"]["status"] == steps["tests"]["status"] == "skipped"
    assert steps["bench_b4"]["status"] == steps["bench_b16"]["status"] == "ok", steps
    for name in ("compiled_b16:compile", "compiled_b64:compile+general"):
        assert steps[name]["status"] == "skipped" and "dry run" in steps[name]["note"]
    # Both kernels and both precisions, interleaved on one trainer per batch size.
    variants = report["benchmarks"]["bench_b4"]["variants"]
    assert set(variants) == set(gpu_check.KERNEL_VARIANTS)
    assert variants["bf16"]["config"]["amp"] == "bf16" and variants["general"]["config"]["amp"] == "off"
    assert all("inference_g" in v["phases"] for v in variants.values())
    saved = json.loads((out / "gpu_check.json").read_text())
    assert saved["verdict"].startswith("not decided") and saved["table"] == [list(r) for r in report["table"]]
    md = (out / "gpu_check.md").read_text()
    assert "| measurement | general kernel | default (self-checked tiled) | default / general |" in md
    row = [r for r in report["table"] if r[0].startswith("inference, G_ema + composite only") and "batch 2" in r[0]]
    assert len(row) == 1 and row[0][1] != "–" and row[0][2] != "–" and row[0][3].startswith("x")


def test_steps_that_do_not_fit_the_budget_are_skipped_and_say_so(tmp_path):
    report = gpu_check.main(["--dry-run", "--skip", "build,selfcheck,tests", "--out", str(tmp_path),
                             "--budget", "10"])
    for name in ("bench_b4", "bench_b16"):
        assert report["steps"][name]["status"] == "skipped"
        assert report["steps"][name]["note"].startswith("budget:")


def _junit(path, cases):
    body = "".join(f'<testcase classname="{c}" name="{n}">{x}</testcase>' for c, n, x in cases)
    path.write_text(f'<testsuites><testsuite>{body}</testsuite></testsuites>')
    return str(path)


def test_verdict_needs_every_cuda_test_to_pass_with_the_tiled_kernel_run(tmp_path):
    ok = gpu_check.parse_junit(_junit(tmp_path / "a.xml", [
        ("tests.op.test_cuda_vs_ref", "test_upfirdn2d[tiled-1]", ""),
        ("tests.op.test_cuda_vs_ref", "test_upfirdn2d[default-1]", ""),
        ("tests.op.test_cuda_vs_ref", "test_half", "<skipped/>")]))
    assert (ok["passed"], ok["skipped"], ok["tiled_run"], ok["failed"]) == (2, 1, 1, 0)
    assert gpu_check.verdict({"steps": {"tests": {"result": ok}}}).startswith("yes")
    bad = gpu_check.parse_junit(_junit(tmp_path / "b.xml", [
        ("tests.op.test_cuda_vs_ref", "test_upfirdn2d[tiled-1]", "<failure message='x'/>"),
        ("tests.op.test_cuda_vs_ref", "test_upfirdn2d[default-1]", "")]))
    v = gpu_check.verdict({"steps": {"tests": {"result": bad}}})
    assert v.startswith("no: 1 CUDA test(s) failed (1 of them with the tiled kernel)")
    assert "test_upfirdn2d[tiled-1]" in v
    none = gpu_check.parse_junit(_junit(tmp_path / "c.xml", [("t", "test_default", "")]))
    assert gpu_check.verdict({"steps": {"tests": {"result": none}}}).startswith("not decided")
    assert gpu_check.verdict({"steps": {}}).startswith("not decided")


def test_every_test_that_needs_cuda_is_in_the_list():
    """A new CUDA-only test file must be added to CUDA_TESTS, or the GPU check never runs it."""
    listed = {t.split("::")[0] for t in gpu_check.CUDA_TESTS}
    marker = re.compile(r"skipif\(\s*not torch\.cuda\.is_available\(\)")
    found = set()
    for folder, _, files in os.walk(os.path.join(REPO, "tests")):
        for f in files:
            if f.endswith(".py") and f.startswith("test_"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    if marker.search(fh.read()):
                        found.add(os.path.relpath(path, REPO))
    assert "tests/op/test_cuda_vs_ref.py" in found  # the pattern does find them
    assert found <= listed, sorted(found - listed)


def test_shell_wrapper_passes_arguments_on():
    res = subprocess.run(["bash", os.path.join(REPO, "scripts", "gpu_check.sh"), "--help"],
                         capture_output=True, text=True, timeout=120, cwd=REPO,
                         env=dict(os.environ, PYTHON=sys.executable))
    assert res.returncode == 0 and "--dry-run" in res.stdout and "--budget" in res.stdout


def test_the_self_check_verdict_is_reported_per_case(tmp_path):
    """The selfcheck step runs op/_selfcheck.py (here on the CPU emulation of the tiled kernel:
    needs the CUDA toolkit to build the extension) and reports one verdict per case and dtype."""
    import pytest
    from op import _loader
    if _loader.find_cuda_home() is None:
        pytest.skip("no CUDA toolkit (nvcc) on this machine")
    _loader.build()  # a cache hit after tests/op; the step itself has a 30 s budget
    report = gpu_check.main(["--dry-run", "--skip", "build,tests,bench_b4,bench_b16",
                             "--out", str(tmp_path), "--budget", "200"])
    assert report["steps"]["selfcheck"]["status"] == "ok", report["steps"]["selfcheck"]
    got = {(v["case"], v["dtype"], v["passed"]) for v in report["selfcheck"]}
    assert got == {(0, "float32", True), (1, "float32", True), (2, "float32", True)}
    md = (tmp_path / "gpu_check.md").read_text()
    assert "| case | dtype | device | verdict | seconds | error |" in md
    assert md.count("| passed |") == 3 and "up 2 (4x4 kernel) | float32 | cpu | passed" in md
    failed = gpu_check.selfcheck_lines([dict(report["selfcheck"][0], passed=False,
                                             error="max error 0.5 > tolerance 1e-05")])
    assert any("FAILED: general kernel" in line and "max error 0.5" in line for line in failed)

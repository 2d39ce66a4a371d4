"""scripts/benchmark.py: the harness runs the loop's Trainer on the tiny preset and writes a
complete, self-consistent JSON from the trainer's own phase timer; timing changes nothing the
step computes; variants run in their own processes; variant and round bookkeeping. Properties
only: no timing is asserted."""
import json
import os

import pytest
import torch

from scripts import benchmark as bench
from scripts import benchmark_report as report_mod
from scripts import benchmark_variants as variants


def _opts(**kw):
    """Parsed options of the tiny preset (what main() would build)."""
    args = ["--tiny", "--threads", "1", "--repeats", "1", "--warmup", "0"]
    for k, v in kw.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    opts = bench.build_parser().parse_args(args)
    bench._check_opts(opts)
    return opts


def test_tiny_run_writes_complete_consistent_json(tmp_path):
    out = tmp_path / "b.json"
    report = bench.main(["--tiny", "--threads", "1", "--repeats", "2", "--warmup", "0",
                         "--phases", "d_main,g_main,iteration,inference_g", "--variants", "base",
                         "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))  # what main returns is what it wrote
    assert data["schema"] == bench.SCHEMA and data["baseline"] == "base"
    assert data["command"].startswith("python scripts/benchmark.py ") and "--tiny" in data["command"]
    for key in ("cpu", "cpu_count", "torch", "torch_threads"):
        assert key in data["machine"]
    s = data["settings"]
    assert (s["size"], s["batch"], s["repeats"], s["device"]) == (32, 2, 2, "cpu")

    v = data["variants"]["base"]
    assert v["status"] == "ok" and v["threads"] == 1 and not v["errors"]
    assert set(v["phases"]) == {"d_main", "g_main", "iteration", "inference_g"}
    # Every loss term is on (self_prob 1 makes LPIPS run) and the stand-ins are named.
    assert v["config"]["loss_terms"] == ["adv", "lpips", "id", "attr"]
    assert set(v["config"]["pretrained"]) == {"style encoder", "identity net", "LPIPS VGG16"}
    assert v["pid"] == os.getpid()  # one variant, one round: in this process
    for name, m in v["phases"].items():
        assert len(m["times_s"]) == 2 and all(t > 0 for t in m["times_s"]), name
        assert m["median_s"] == pytest.approx(sum(m["times_s"]) / 2)
        assert m["min_s"] == min(m["times_s"])
        assert m["peak_rss_mib"] >= m["rss_start_mib"] > 0  # VmHWM after the reset covers the runs
    d = v["derived"]
    assert d["iteration_images_per_s"] == pytest.approx(2 / v["phases"]["iteration"]["median_s"])
    assert d["inference_g_images_per_s"] == pytest.approx(2 / v["phases"]["inference_g"]["median_s"])
    assert d["peak_rss_mib"] == max(m["peak_rss_mib"] for m in v["phases"].values())
    assert "amortised_iteration_s" not in d  # needs prep / ema, which were not reported
    # The loop's phases are one timed step each: a phase never takes longer than its iteration.
    for i in range(2):
        assert v["phases"]["d_main"]["times_s"][i] + v["phases"]["g_main"]["times_s"][i] <= \
            v["phases"]["iteration"]["times_s"][i]
    assert all(r == pytest.approx(1.0) for r in data["ratios"]["base"].values())


def _state(trainer):
    return {f"{n}.{k}": t.detach().clone() for n, m in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.G_ema))
            for k, t in m.state_dict().items()}


def test_the_timed_steps_are_train_step_and_timing_changes_nothing():
    """What the benchmark times is Trainer.train_step with train.time_phases on: the same losses
    and networks, bit for bit, as the same steps with the timer off; the timer saw every phase
    of each full step (R1 and path length included) once."""
    opts = _opts()
    torch.set_num_threads(1)
    a = variants.build_trainer(opts, {}, torch.device("cpu"))
    b = variants.build_trainer(opts, {"set": ["train.time_phases=false"]}, torch.device("cpu"))
    assert a.timer.enabled and not b.timer.enabled
    assert all(torch.equal(x, y) for x, y in zip(_state(a).values(), _state(b).values()))
    real = variants.step_inputs(opts, 2, 32, torch.device("cpu"))
    step_at = variants.full_steps(a)
    assert [step_at(i) for i in range(3)] == [0, 16, 32]  # lcm of d_reg_every 16 and g_reg_every 4
    for i in range(2):
        times = variants.timed_step(a, step_at(i), real)
        stats_b = b.train_step(step_at(i), real)
        assert set(times) == set(variants.LOOP_PHASES) and all(t > 0 for t in times.values())
        assert b.timer.read() == {}
    sa, sb = _state(a), _state(b)
    changed = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not changed, changed[:5]
    assert "r1" in stats_b and "path_penalty" in stats_b


def test_variants_parse_and_merge():
    s = variants.parse_variant("bf16+channels_last+no_id+no_attr+modconv_auto")
    assert s["set"] == ["train.amp=bf16", "train.channels_last=true", "loss.lambda_id=0", "loss.lambda_attr=0"]
    assert s["modconv"] == "auto"
    cfg = variants.make_config(_opts(), s)
    assert (cfg.train.amp, cfg.train.channels_last, cfg.loss.lambda_id, cfg.train.time_phases) == (
        "bf16", True, 0, True)
    with pytest.raises(variants.BenchmarkError, match="Unknown variant 'fp8'"):
        variants.parse_variant("base+fp8")
    with pytest.raises(variants.BenchmarkError, match="Unknown phases"):
        _opts(phases="d_main,warp")


def test_zero_weight_variant_builds_no_network_for_the_term():
    opts = _opts()
    t = variants.build_trainer(opts, variants.parse_variant("no_lpips+no_id"), torch.device("cpu"))
    assert t.objective.terms == ["adv", "attr"]
    assert t.pre.lpips is None and t.pre.identity is None


def test_rounds_pool_the_timed_runs():
    def res(times, rss):
        return {"status": "ok", "load_avg_start": (1, 1, 1), "load_avg_end": (1, 1, 1), "errors": {},
                "config": {"batch": 2, "d_reg_every": 16, "g_reg_every": 4},
                "phases": {"iteration": {"median_s": sorted(times)[len(times) // 2], "min_s": min(times),
                                         "times_s": times, "peak_rss_mib": rss, "rss_start_mib": 10.0}}}
    merged = report_mod.merge_rounds([res([1.0, 5.0, 3.0], 100.0), res([2.0, 4.0], 120.0),
                                 {"status": "error", "error": "x"}])
    m = merged["phases"]["iteration"]
    assert merged["rounds"] == 2
    assert sorted(m["times_s"]) == [1.0, 2.0, 3.0, 4.0, 5.0] and m["median_s"] == 3.0 and m["min_s"] == 1.0
    assert m["peak_rss_mib"] == 120.0
    assert merged["derived"]["iteration_images_per_s"] == pytest.approx(2 / 3.0)


def test_ratios_are_baseline_over_variant():
    variants = {
        "a": {"phases": {"g_main": {"median_s": 2.0}}, "derived": {"peak_rss_mib": 100.0}},
        "b": {"phases": {"g_main": {"median_s": 0.5}}, "derived": {"peak_rss_mib": 150.0}},
    }
    r = report_mod.ratios(variants, "a")
    assert r["b"]["g_main"] == 4.0 and r["b"]["peak_rss"] == 1.5 and r["a"]["g_main"] == 1.0
    table = report_mod.format_table({"variants": {k: dict(v, status="ok") for k, v in variants.items()},
                                "ratios": r, "settings": {"device": "cpu", "size": 32, "batch": 2,
                                                          "repeats": 1, "warmup": 0, "rounds": 1}})
    assert "(x4.00)" in table and "2000 ms" in table and "500 ms" in table


def test_variants_run_in_their_own_processes(tmp_path):
    """Two variants: each in a fresh process (not this one, not each other's), no argv rewriting."""
    report = bench.main(["--tiny", "--threads", "1", "--repeats", "1", "--warmup", "0",
                         "--phases", "inference_g", "--variants", "base,modconv_batched",
                         "--out", str(tmp_path / "b.json")])
    pids = {n: v["pid"] for n, v in report["variants"].items()}
    assert all(v["status"] == "ok" for v in report["variants"].values())
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()


def test_single_measurements_write_json(tmp_path):
    from scripts import benchmark_single

    out = tmp_path / "s.json"
    report = benchmark_single.main(["--size", "8", "--mask-size", "32", "--batch", "2",
                                    "--repeats", "1", "--threads", "1", "--out", str(out)])
    data = json.loads(out.read_text())
    assert data == json.loads(json.dumps(report))
    assert set(data["results"]) == {"d_step_fp32", "d_step_bf16", "confidence_map_separable",
                                    "confidence_map_conv2d"}
    assert all(r["median_s"] > 0 and len(r["times_s"]) == 1 for r in data["results"].values())
    assert data["settings"]["mask_size"] == 32 and data["machine"]["cpu_count"] >= 1


def test_library_switches_are_set_and_restored():
    """naive_upfirdn / modconv go through op.set_upfirdn2d_naive and the modconv switch (no module
    attribute is replaced) and are undone after the block; --interleave refuses a variant that
    changes the process (threads)."""
    import op
    from models import stylegan2

    before = (op.get_upfirdn2d_naive(), stylegan2.get_modconv_impl(), stylegan2.upfirdn2d)
    other = "batched" if before[1] != "batched" else "grouped"
    with variants.library_switches(variants.parse_variant(f"naive_upfirdn+modconv_{other}")):
        assert op.get_upfirdn2d_naive() is True
        assert stylegan2.get_modconv_impl() == other
        assert stylegan2.upfirdn2d is op.upfirdn2d
    assert (op.get_upfirdn2d_naive(), stylegan2.get_modconv_impl(), stylegan2.upfirdn2d) == before
    with pytest.raises(variants.BenchmarkError, match="'threads1' changes threads"):
        bench.run_interleaved(_opts(), ["base", "threads1"])


def test_interleaved_variants_of_another_config_get_their_own_trainer():
    """--interleave with a config variant (bf16): a second trainer with train.amp=bf16, its steps
    alternating with base's; both timed the same number of steps."""
    res = bench.run_interleaved(_opts(phases="iteration"), ["base", "bf16"])
    assert res["base"]["config"]["amp"] == "off" and res["bf16"]["config"]["amp"] == "bf16"
    for n in ("base", "bf16"):
        assert res[n]["interleaved"] and len(res[n]["phases"]["iteration"]["times_s"]) == 1

"""tune's order and budget on the CPU: the likely winner per architecture first (by what the model
contains, not its name), compile estimates respected by the budget, and the GPU benchmark script's
flow (arguments, per-model steps, JSON/markdown after each step) on a built-in tiny model."""

from __future__ import annotations

import json
import time

from trtflow.tune.search import _Clock, _not_the_fastest
from trtflow.tune.space import CDT, COST, Candidate, likely_first, prefer, torch_space


def names(cands, kind=None):
    return [c.name for c in cands if kind is None or c.cost >= 1]


def test_conv_bn_net_tries_compile_with_fusions_first():
    cands, _ = torch_space(["fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    compiles = names(cands, "compile")
    assert compiles[:3] == ["fp16 compile+fused+graphs cl", "fp16 reduce-overhead cl", "fp16 compile+graphs cl"]
    assert compiles[-2:] == ["fp16 max-autotune+graphs cl", "fp16 max-autotune cl"]
    assert all(c.cost < 1 for c in cands[: len(cands) - len(compiles)])  # seconds-cheap ones before any compile


def test_each_compile_is_retuned_after_the_plain_compiles_and_before_max_autotune():
    cands, _ = torch_space(["fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    order = names(cands)
    retunes = [c for c in cands if c.kind == "cdt"]
    assert [(c.name, c.refines) for c in retunes] == [
        ("fp16 compile+fused+graphs+cdt cl", "fp16 compile+fused+graphs cl"),
        ("fp16 compile+graphs+cdt cl", "fp16 compile+graphs cl")]
    base = {c.name: c for c in cands}
    for c in retunes:
        assert c.options == {**base[c.refines].options, "inductor": CDT} and c.cost == COST["cdt"]
        assert order.index(c.name) > max(order.index(n) for n in base if base[n].kind in ("compile", "reduce-overhead"))
        assert order.index(c.name) < order.index("fp16 max-autotune+graphs cl")
    cpu, _ = torch_space(["fp16"], cuda=False, conv=True, batchnorm=True, fp8=None)
    assert not any(c.kind == "cdt" for c in cpu)  # Triton kernels are what it retunes


def test_a_retuning_is_tried_only_when_what_it_retunes_is_the_fastest_so_far():
    cdt = Candidate("fp16 compile+graphs+cdt cl", "torch", "fp16", {}, "fp32", COST["cdt"], "cdt",
                    refines="fp16 compile+graphs cl")
    both = {cdt.name, cdt.refines}
    assert _not_the_fastest(cdt, {"fp16 compile+graphs cl": 200.0, "fp16 eager+graphs cl": 100.0}, both) is None
    slower = _not_the_fastest(cdt, {"fp16 compile+graphs cl": 200.0, "fp16 compile+fused+graphs cl": 250.0}, both)
    assert "slower than 'fp16 compile+fused+graphs cl' (250/s)" in slower
    assert "was not timed" in _not_the_fastest(cdt, {"fp16 eager+graphs cl": 100.0}, both)
    # its base left out (--only '*+cdt*'): the retuning is tried on its own rather than never
    assert _not_the_fastest(cdt, {"fp16 eager+graphs cl": 100.0}, {cdt.name}) is None
    plain = Candidate("fp16 compile+graphs cl", "torch", "fp16", {}, "fp32", 1.0, "compile")
    assert _not_the_fastest(plain, {}) is None


def test_plain_recipes_are_candidates_and_other_compiles_freeze():
    cands, _ = torch_space(["fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    plain = {c.options["compile"]: c for c in cands if "freeze" in c.options}
    assert sorted(plain) == ["max-autotune", "reduce-overhead"]  # torch.compile(model, mode=...) as users call it
    assert all(c.options["freeze"] is False and not c.options.get("cuda_graphs") for c in plain.values())
    assert plain["max-autotune"].kind == "max-autotune" and plain["max-autotune"].cost == COST["max-autotune"]
    # everything else is the engine's default: frozen weights


def test_linear_net_tries_fp16_compile_before_fp8():
    cands, skips = torch_space(["fp16", "fp8"], cuda=True, conv=True, batchnorm=False, fp8=None)
    compiles = names(cands, "compile")
    assert compiles[:4] == ["fp16 reduce-overhead cl", "fp8 reduce-overhead cl", "fp16 compile+graphs cl",
                            "fp8 compile+graphs cl"]
    assert not any("fused" in n for n in names(cands)) and not skips


def test_fp8_of_a_conv_net_with_one_fp8_able_layer_goes_last():
    cands, _ = torch_space(["fp16", "fp8"], cuda=True, conv=True, batchnorm=True, fp8=None, linear_heavy=False)
    order = names(cands)
    first_fp8 = min(i for i, n in enumerate(order) if n.startswith("fp8"))
    assert all(n.startswith("fp8") for n in order[first_fp8:]) and "fp16 max-autotune+graphs cl" in order[:first_fp8]
    won = {"fp16 fused+graphs cl": 300.0, "fp16 eager+graphs cl": 100.0}
    assert names(prefer(cands, won)) == order  # measurements swap fused/plain twins only, never the groups


def test_measured_fusion_result_overrides_the_static_order():
    cands, _ = torch_space(["fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    compiles = [c for c in cands if c.kind == "compile"]
    assert [c.name for c in compiles] == ["fp16 compile+fused+graphs cl", "fp16 compile+graphs cl"]
    lost = prefer(compiles, {"fp16 fused+graphs cl": 50.0, "fp16 eager+graphs cl": 100.0})
    won = prefer(compiles, {"fp16 fused+graphs cl": 300.0, "fp16 eager+graphs cl": 100.0})
    assert [c.name for c in lost] == ["fp16 compile+graphs cl", "fp16 compile+fused+graphs cl"]
    assert [c.name for c in won] == [c.name for c in compiles]
    close = prefer(compiles, {"fp16 fused+graphs cl": 91.0, "fp16 eager+graphs cl": 100.0})
    assert close[0].name == "fp16 compile+fused+graphs cl"  # within 10 %: the static order stays


def test_order_does_not_depend_on_the_input_order():
    cands, _ = torch_space(["fp32", "fp16"], cuda=True, conv=True, batchnorm=True, fp8=None)
    assert names(likely_first(list(reversed(cands)))) == names(cands)


def test_subject_traits_from_the_modules():
    import torch

    from trtflow.tune.subjects import TorchSubject

    torch.manual_seed(0)
    nn = torch.nn
    dw = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Conv2d(8, 8, 3, groups=8), nn.BatchNorm2d(8),
                       nn.ReLU()).eval()
    grouped = nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.ReLU()).eval()
    feeds = [{"x": torch.randn(2, 3, 8, 8).numpy()}]
    a = TorchSubject(dw, {"x": (2, 3, 8, 8)}, feeds, "cpu")
    b = TorchSubject(grouped, {"x": (2, 4, 8, 8)}, [{"x": torch.randn(2, 4, 8, 8).numpy()}], "cpu")
    assert (a.conv, a.batchnorm) == (True, True)
    assert (b.conv, b.batchnorm) == (True, False)
    mlp = nn.Sequential(nn.Conv2d(3, 16, 4, stride=4), nn.Flatten(), nn.Linear(64, 256)).eval()
    c = TorchSubject(mlp, {"x": (2, 3, 8, 8)}, feeds, "cpu")
    assert c.linear_heavy and not a.linear_heavy


def test_budget_uses_the_compile_estimate_before_any_compile():
    compile_cand = Candidate("fp16 compile+graphs cl", "torch", "fp16", {}, "fp32", 1.0, "compile")
    eager = Candidate("fp16 eager+graphs cl", "torch", "fp16", {}, "fp32", 0.3, "graphs")
    clock = _Clock(budget_s=30.0, timing_s=1.0, estimate_s=40.0)
    assert "~41 s needed" in clock.refuse(compile_cand) and clock.refuse(eager) is None
    assert _Clock(budget_s=30.0, timing_s=1.0).refuse(compile_cand) is None  # the 5 s guess fits
    clock.learn(compile_cand, 10.0)
    assert clock.per_cost == 40.0  # the larger of estimate and measurement: never optimistic
    # a retuning is estimated from the compile it retunes, not the slowest compile seen (ResNet-50 at 256 on
    # an H200: +cdt refused with ~75 s estimated, its base compiled in 3.7 s and +cdt itself once took 6.6 s)
    cdt = Candidate("fp16 compile+graphs+cdt cl", "torch", "fp16", {}, "fp32", COST["cdt"], "cdt",
                    refines="fp16 compile+graphs cl")
    assert "~201 s needed" in clock.refuse(cdt)  # 1 + 5 x 40
    assert clock.refuse(cdt, base_s=2.0) is None  # 1 + 9 x 2 = 19 s of the 30 s left
    assert "~37 s needed" in clock.refuse(cdt, base_s=4.0)


def _bench_script(name: str):
    """bench/tune_bench.py imported as module ``name`` (bench/ is no package)."""
    import importlib.util
    import sys
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "bench" / "tune_bench.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_bench_script_flow_on_the_cpu(tmp_path):
    bench = _bench_script("tune_bench")
    t0 = time.perf_counter()
    code = bench.main([str(tmp_path), "--device", "cpu", "--runs", "tiny:2,nosuchmodel:2", "--extra-runs", "tiny:4",
                       "--baselines", "eager", "--only", "*eager*", "--short-s", "0.02", "--full-s", "0.05",
                       "--timing-s", "0.05", "--budget-s", "120"])
    assert code == 0 and time.perf_counter() - t0 < 60
    doc = json.loads((tmp_path / "tune_bench.json").read_text())
    rows = {(r["model"], r["batch"]): r for r in doc["rows"]}
    tiny = rows[("tiny", 2)]
    assert tiny["traits"]["depthwise"] == 1 and tiny["eager"]["img_s"] > 0
    assert tiny["tuned"]["chosen"].startswith("fp16 eager") and tiny["tuned"]["reference_peak"] > 1e-3
    assert any("re-estimated" in n for n in tiny["tuned"]["notes"])
    assert "not run" in tiny["max-autotune-no-cudagraphs"]["not_run"]
    assert "nosuchmodel" in rows[("nosuchmodel", 2)]["not_run"] or rows[("nosuchmodel", 2)]["not_run"]
    assert rows[("tiny", 4)]["tuned"]["img_s"] > 0
    md = (tmp_path / "tune_bench.md").read_text()
    assert "| tiny | 2 |" in md and "not run (off" in md and "## tiny batch 2: tune's configurations" in md
    code = bench.main([str(tmp_path / "b"), "--device", "cpu", "--runs", "tiny:2", "--extra-runs", "", "--baselines",
                       "eager", "--no-tune", "--timing-s", "0.05", "--budget-s", "60"])
    row = json.loads((tmp_path / "b" / "tune_bench.json").read_text())["rows"][0]
    assert code == 0 and row["eager"]["img_s"] > 0 and row["tuned"] == {"not_run": "not asked (--no-tune)"}


def test_bench_script_skips_what_the_budget_cannot_cover(tmp_path):
    bench = _bench_script("tune_bench_budget")
    bench.main([str(tmp_path), "--device", "cpu", "--runs", "tiny:2", "--extra-runs", "", "--budget-s", "1"])
    doc = json.loads((tmp_path / "tune_bench.json").read_text())
    assert doc["rows"][0]["not_run"].startswith("not run:")

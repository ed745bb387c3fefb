"""trtexec command lines from the guides parse and run unchanged in build / bench / trtflow trtexec."""

from __future__ import annotations

import json
import shlex

import pytest

from trtflow.cli.main import _parser, main
from trtflow.cli.trtexec import translate
from trtflow.errors import UsageError

# Every trtexec line of the source guides, as written there (guide file -> line).
GUIDE_LINES = [
    ("BMF face detector", "trtexec --onnx=version-RFB-640.engine --buildOnly --saveEngine=version-RFB-640.engine"),
    ("BMF super-resolution", "trtexec --onnx=v1.onnx --minShapes=input:0:1x360x640x21 --optShapes=input:0:1x360x640x21 "
     "--maxShapes=input:0:1x360x640x21 --buildOnly --fp16 --saveEngine=v1.engine"),
    ("quickstart ResNet-50", "trtexec --onnx=resnet50/model.onnx --saveEngine=resnet_engine.trt"),
    ("quickstart FCN build", "trtexec --onnx=fcn-resnet101.onnx --fp16 --workspace=64 --minShapes=input:1x3x256x256 "
     "--optShapes=input:1x3x1026x1282 --maxShapes=input:1x3x1440x2560 --buildOnly --saveEngine=fcn-resnet101.engine"),
    ("quickstart FCN check", "trtexec --shapes=input:1x3x1026x1282 --loadEngine=fcn-resnet101.engine"),
]


def _args(line: str):
    """The namespace trtflow parses a guide line into (through trtflow trtexec's translation)."""
    argv = translate(shlex.split(line))
    parser, _ = _parser()
    args, extra = parser.parse_known_args(argv)
    assert extra == [], extra
    return argv[0], args


@pytest.mark.parametrize("guide,line", GUIDE_LINES, ids=[g for g, _ in GUIDE_LINES])
def test_every_guide_line_parses(guide, line):
    from trtflow.cli import options, trtexec

    command, args = _args(line)
    assert command == ("build" if "--buildOnly" in line else "bench")
    if "--loadEngine" in line:
        args.onnx = None
        trtexec.apply_compat(args)
        assert args.model == "fcn-resnet101.engine" and options.shapes_of(args) == {"input": (1, 3, 1026, 1282)}
        return
    try:
        trtexec.apply_compat(args)
    except Exception as exc:  # the BMF face line names a plan as --onnx: refused with the fix
        assert "version-RFB-640" in line and "--onnx takes the .onnx model" in str(exc)
        return
    assert args.model.endswith(".onnx")
    profiles = options.profiles_of(args)
    if "input:0:" in line:  # the tensor is 'input:0' (split on the last colon)
        assert profiles[0].max == {"input:0": (1, 360, 640, 21)}
    if "--workspace=64" in line:
        assert options.build_config_of(args).mem_pool_size == {"workspace": 64 * 2**20}
        assert profiles[0].opt == {"input": (1, 3, 1026, 1282)} and profiles[0].max == {"input": (1, 3, 1440, 2560)}


def test_build_accepts_trtexec_spellings(fcn_onnx, tmp_path, capsys):
    plan = tmp_path / "fcn.engine"
    code = main(["build", f"--onnx={fcn_onnx}", "--explicitBatch", "--buildOnly", "--workspace=512", "--fp16",
                 "--minShapes=input:1x3x16x16", "--optShapes=input:1x3x32x32", "--maxShapes=input:1x3x64x64",
                 f"--saveEngine={plan}", "--no-cache", "--json", "-v"])
    out = capsys.readouterr()
    assert code == 0 and plan.stat().st_size > 0
    report = json.loads(out.out)
    assert report["profiles"][0]["input"]["max"] == [1, 3, 64, 64]
    assert "--explicitBatch has no effect" in out.err


def test_trtexec_command_builds(fcn_onnx, tmp_path, capsys):
    plan = tmp_path / "t.engine"
    code = main(["trtexec", "trtexec", f"--onnx={fcn_onnx}", "--minShapes=input:1x3x16x16",
                 "--optShapes=input:1x3x16x16", "--maxShapes=input:1x3x16x16", "--buildOnly",
                 f"--saveEngine={plan}", "--json"])
    assert code == 0 and plan.exists(), capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["engine"] == str(plan)


def test_colon_name_builds(tmp_path, capsys):
    """The SR guide's input is named 'input:0' (TensorFlow style); its shapes reach that tensor."""
    onnx_path = _export_sr(tmp_path / "v1.onnx")
    code = main(["build", f"--onnx={onnx_path}", "--minShapes=input:0:1x36x64x21", "--optShapes=input:0:1x36x64x21",
                 "--maxShapes=input:0:1x36x64x21", "--buildOnly", "--fp16", f"--saveEngine={tmp_path / 'v1.engine'}",
                 "--no-cache", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["inputs"][0]["name"] == "input:0" and report["profiles"][0]["input:0"]["max"] == [1, 36, 64, 21]


def test_small_workspace_says_the_fix(fcn_onnx, tmp_path, capsys):
    code = main(["build", f"--onnx={fcn_onnx}", "--workspace=1", "--minShapes=input:1x3x256x256",
                 "--optShapes=input:1x3x1026x1282", "--maxShapes=input:1x3x1440x2560", "--fp16",
                 f"--saveEngine={tmp_path / 'x.engine'}", "--no-cache", "--json"])
    out = capsys.readouterr()
    assert code == 1  # ran and failed, as check
    assert "the workspace limit (1 MiB) is too small for this network; raise --memPoolSize" in out.err
    assert "'?'" not in out.err
    report = json.loads(out.out)  # --json: an error object on failure too
    assert report["ok"] is False and report["exit_code"] == 1 and report["failures"][0]["node"] != "?"
    assert main(["check", str(fcn_onnx), "--memPoolSize=workspace:1", "--minShapes=input:1x3x256x256",
                 "--optShapes=input:1x3x1026x1282", "--maxShapes=input:1x3x1440x2560", "--fp16"]) == 1


def test_inferred_batch_profile_warns(tiny_onnx, tmp_path, capsys):
    code = main(["build", str(tiny_onnx), f"--saveEngine={tmp_path / 'tiny.engine'}", "--no-cache"])
    err = capsys.readouterr().err
    assert code == 0 and "warning" in err and "1..16" in err and "--max-batch" in err


@pytest.mark.parametrize("flag,hint", [("--avgRuns=10", "--iterations"), ("--loadInputs=x:in.bin", "--input NAME=FILE.npy"),
                                       ("--batch=8", "--shapes"), ("--calib=cache", "quantize")])
def test_unsupported_trtexec_flag_named_with_fix(flag, hint, tiny_onnx, capsys):
    code = main(["bench", f"--onnx={tiny_onnx}", flag])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("trtflow bench: error: trtexec's " + flag.split("=")[0]) and hint in err


def test_bench_build_only_and_model_given_twice(tiny_onnx, capsys):
    assert main(["bench", f"--onnx={tiny_onnx}", "--buildOnly", "--shapes=x:2x3x16x16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine_bytes"] > 0
    assert main(["bench", str(tiny_onnx), f"--onnx={tiny_onnx}"]) == 2
    assert "the model is given twice" in capsys.readouterr().err


def test_bench_runs_onnx_given_as_flag(tiny_onnx, capsys):
    code = main(["bench", f"--onnx={tiny_onnx}", "--engine", "ort", "--shapes=x:2x3x16x16", "--iterations=3",
                 "--duration=0", "--warmUp=0", "--json"])
    assert code == 0 and json.loads(capsys.readouterr().out)["queries"] >= 3


def test_plan_given_to_ort_is_named(fcn_onnx, tmp_path, capsys):
    plan = tmp_path / "p.engine"
    assert main(["build", str(fcn_onnx), "--shapes=input:1x3x16x16", f"--saveEngine={plan}", "--no-cache"]) == 0
    capsys.readouterr()
    assert main(["run", str(plan), "--engine", "ort"]) == 2
    assert "TensorRT-RTX plan" in capsys.readouterr().err


@pytest.fixture(scope="module")
def fcn_onnx(tmp_path_factory):
    """A tiny FCN-style segmenter with argmax appended, dynamic batch/height/width, input 'input'."""
    import torch

    class FCN(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.head = torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.Conv2d(8, 21, 1)

        def forward(self, x):
            return self.head(torch.relu(self.conv(x))).argmax(1, keepdim=True)

    path = tmp_path_factory.mktemp("fcn") / "fcn.onnx"
    torch.manual_seed(0)
    dims = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(FCN().eval(), (torch.rand(1, 3, 32, 32),), str(path), input_names=["input"],
                      output_names=["output"], dynamic_axes={"input": dims, "output": dims}, opset_version=17, dynamo=False)
    return path


def _export_sr(path):
    """NHWC 'input:0' of seven stacked RGB frames (the BMF SR model's layout), one conv on top."""
    import torch

    class SR(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(21, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x.permute(0, 3, 1, 2))

    torch.onnx.export(SR().eval(), (torch.rand(1, 36, 64, 21),), str(path), input_names=["input:0"],
                      output_names=["output"], opset_version=17, dynamo=False)
    return path


def test_trtexec_flag_named_before_missing_required_flags(capsys):
    """The missing --saveEngine is not the problem worth reporting first: trtexec's flag is."""
    assert main(["build", "m.onnx", "--calib=cache.bin", "--json"]) == 2
    out = capsys.readouterr()
    assert "trtexec's --calib is not supported" in out.err and out.err.startswith("trtflow build: error:")
    assert json.loads(out.out)["error"].startswith("trtexec's --calib")


def test_trtexec_build_only_without_save_and_build_then_run(tiny_onnx, tmp_path, capsys):
    from trtflow.backends import tensorrt_usable

    assert main(["trtexec", f"--onnx={tiny_onnx}", "--buildOnly", "--shapes=x:2x3x16x16", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["engine"] is None  # built in memory, as trtexec without --saveEngine
    plan = tmp_path / "resnet_engine.trt"  # the quickstart's line: build, save, then benchmark on TensorRT
    code = main(["trtexec", f"--onnx={tiny_onnx}", f"--saveEngine={plan}", "--shapes=x:2x3x16x16"])
    assert plan.exists()
    if not tensorrt_usable():  # the plan is built here; running it needs a GPU TensorRT runs on
        assert code == 2 and "cannot execute here" in capsys.readouterr().err


def test_check_takes_trtexec_spellings(fcn_onnx, capsys):
    assert main(["check", f"--onnx={fcn_onnx}", "--workspace=512", "--explicitBatch", "--buildOnly",
                 "--shapes=input:1x3x32x32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["converts"] is True


@pytest.mark.parametrize("argv, says", [
    (["--onnx=m.onnx", "--shapes", "x:1x3x16x16"], "--shapes=x:1x3x16x16"),
    (["--onnx=m.onnx", "--engine", "ort"], "--engine=ort"),
    (["--fp16", "m.onnx"], "--onnx=m.onnx"),
    (["--loadEngine", "m.plan"], "--loadEngine=m.plan"),
    (["--fp16", "m.engine"], "--loadEngine=m.engine"),
])
def test_a_value_given_apart_from_its_flag_is_joined_to_that_flag_in_the_hint(argv, says):
    """`--shapes x:1x3x16x16` (a space, not "=") was answered "write --flag=VALUE, e.g. --onnx=x:1x3x16x16"."""
    with pytest.raises(UsageError) as info:
        translate(argv)
    assert f"e.g. {says})" in str(info.value), info.value


def test_a_refused_trtexec_line_with_json_is_one_json_object(capsys):
    """`trtflow trtexec model.onnx --json` (a positional) printed only the error line, no JSON object, though
    every failure under --json is one (bench's own errors in the same line are)."""
    assert main(["trtexec", "model.onnx", "--json"]) == 2
    out = capsys.readouterr()
    report = json.loads(out.out)
    assert report["ok"] is False and "--onnx=model.onnx" in report["error"] and "trtexec takes flags only" in out.err

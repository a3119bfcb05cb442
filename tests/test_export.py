"""dcgan.export and `dcgan export-onnx`: a generator in ONNX gives PyTorch's images (onnxruntime, CPU)."""

from __future__ import annotations

import warnings

import pytest
import torch

pytest.importorskip("onnx", reason="onnx is in requirements.lock: run `make setup`")
pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.lock: run `make setup`")

import onnx  # noqa: E402

from dcgan import export as E  # noqa: E402
from dcgan.checkpoints import _net_file, atomic_save  # noqa: E402
from dcgan.cli import main  # noqa: E402
from dcgan.models import Generator, ModelConfig  # noqa: E402


def trained_like(cfg: ModelConfig, seed: int = 0) -> Generator:
    """A G whose BatchNorm statistics and weights are not the initial ones: running stats from a batch (the
    initial mean 0 / var 1 would make eval mode an identity) and weights moved off N(0, 0.02)."""
    torch.manual_seed(seed)
    g = Generator(cfg)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.02)
        for m in g.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # running stats = this batch's
        g.train()
        g(*E._inputs(g, 128, seed=seed + 1))
    return g.eval()


@pytest.mark.parametrize("cfg", [ModelConfig(image_size=32, channels=3, nz=100, ngf=16),
                                 ModelConfig(image_size=32, channels=1, nz=20, ngf=8, z_dist="normal"),
                                 ModelConfig(image_size=16, channels=1, nz=16, ngf=8, n_classes=10)])
def test_onnx_matches_pytorch_within_the_stated_tolerance(cfg, tmp_path):
    g = trained_like(cfg)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the exporter's deprecation notice is silenced at the source
        data = E.export_onnx(g, tmp_path / "g.onnx")
    assert (tmp_path / "g.onnx").read_bytes() == data
    err = E.max_error(g, data, n=32, seed=3)
    assert err <= E.FP32_TOL, err
    half = E.export_onnx(g, fp16=True)
    err16 = E.max_error(g, half, n=32, seed=3)
    assert err16 <= E.FP16_TOL and err16 > err  # the rounding of the weights shows, within its bound
    assert len(half) < 0.6 * len(data)  # float16 weights: about half the file (less for tiny nets: the graph)
    m = onnx.load_from_string(data)
    assert [i.name for i in m.graph.input] == (["z", "y"] if cfg.n_classes else ["z"])
    assert m.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "n"  # any batch size


def test_the_check_fails_for_another_generator():
    """max_error is a test that can fail: another G's file is far from this G."""
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=4)
    a, b = trained_like(cfg, 0), trained_like(cfg, 1)
    assert E.max_error(a, E.export_onnx(b), n=8) > 20 * E.FP16_TOL


def test_fp16_weights_keep_float32_arithmetic():
    g = trained_like(ModelConfig(image_size=16, channels=1, nz=8, ngf=8))
    m = onnx.load_from_string(E.export_onnx(g, fp16=True))
    from onnx import numpy_helper

    sizes = {i.name: (i.data_type, numpy_helper.to_array(i).size) for i in m.graph.initializer}
    assert all(t == onnx.TensorProto.FLOAT16 for t, n in sizes.values() if n >= E.FP16_MIN_SIZE)
    assert all(t != onnx.TensorProto.FLOAT16 for t, n in sizes.values() if n < E.FP16_MIN_SIZE)  # BatchNorm's
    assert m.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert sum(n.op_type == "Cast" for n in m.graph.node) == sum(t == onnx.TensorProto.FLOAT16 for t, _ in sizes.values()) > 0


def _g_file(path, cfg=ModelConfig(image_size=16, channels=1, nz=8, ngf=4)):
    g = trained_like(cfg)
    atomic_save({**_net_file(g, cfg), "kind": "G"}, path)
    return g


def test_cli_exports_a_run_and_says_the_error(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "snapshots").mkdir(parents=True)
    g = _g_file(run / "G.pt")
    _g_file(run / "snapshots" / "G_epoch_002.pt")
    out = tmp_path / "g.onnx"
    assert main(["export-onnx", str(run), "--out", str(out), "--check", "8"]) == 0
    said = capsys.readouterr().out
    assert str(out) in said and "max |ONNX - PyTorch| over 8 seeded images" in said
    assert E.max_error(g, out) <= E.FP32_TOL
    assert main(["export-onnx", str(run), "--out", str(tmp_path / "h.onnx"), "--epoch", "2", "--fp16"]) == 0
    assert "(tolerance 0.01)" in capsys.readouterr().out


@pytest.mark.parametrize("args, says", [
    (["MISSING", "--out", "x.onnx"], "RUN: no such file or folder"),
    (["RUN", "--out", "x.onnx", "--epoch", "7"], "no checkpoint at"),
    (["FILE", "--out", "x.onnx", "--epoch", "1"], "--epoch needs a run folder"),
    (["RUN", "--out", "x.onnx", "--check", "-1"], "--check must be >= 0"),
    (["NOTG", "--out", "x.onnx"], "is not a dcgan checkpoint"),
    (["UNFINISHED", "--out", "x.onnx"], "has no G.pt (an unfinished run?): pick a snapshot with --epoch N (it has epochs [3])"),
])
def test_cli_user_errors_are_one_line(args, says, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    _g_file(run / "G.pt")
    torch.save({"a": 1}, tmp_path / "notg.pt")
    (tmp_path / "partial" / "snapshots").mkdir(parents=True)
    _g_file(tmp_path / "partial" / "snapshots" / "G_epoch_003.pt")
    subst = {"MISSING": str(tmp_path / "nope"), "RUN": str(run), "FILE": str(run / "G.pt"), "NOTG": str(tmp_path / "notg.pt"),
             "UNFINISHED": str(tmp_path / "partial")}
    rc = main(["export-onnx", *[subst.get(a, a) for a in args]])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and says in err and "Traceback" not in err
    assert not (tmp_path / "x.onnx").exists()

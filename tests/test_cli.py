"""Tests for the `dcgan train` / `dcgan sample` commands (pytorch/examples' flags plus ours)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from dcgan import train as T
from dcgan.cli import build_parser, main, train_config_from_args
from dcgan.models import Generator, ModelConfig
from test_train import write_fashion

TINY = ["--dataset", "fashion-mnist", "--imageSize", "16", "--nz", "8", "--ngf", "8", "--ndf", "8",
        "--batchSize", "32", "--subset", "64", "--niter", "1", "--deterministic", "--no-progress"]


def cfg_of(argv):
    return train_config_from_args(build_parser().parse_args(["train", *argv]))


def test_examples_flags_map_to_config():
    c = cfg_of(TINY + ["--lr", "1e-3", "--beta1", "0.9", "--manualSeed", "7"])
    assert (c.dataset, c.image_size, c.model.image_size, c.model.channels) == ("fashion-mnist", 16, 16, 1)
    assert (c.model.nz, c.model.ngf, c.model.ndf, c.batch_size, c.epochs) == (8, 8, 8, 32, 1)
    assert (c.lr, c.beta1, c.seed, c.deterministic) == (1e-3, 0.9, 7, True)
    assert cfg_of(["--dataset", "emoji"]).model.channels == 3
    assert cfg_of(["--dry-run"]).max_steps == 1
    # A preset with overrides: explicit flags win, the rest is the preset's.
    p = cfg_of(["--preset", "emoji-64", "--profile", "smoke", "--ngf", "32", "--precision", "fp32"])
    ref = T.preset("emoji-64", "smoke")
    assert p.model.ngf == 32 and p.model.ndf == ref.model.ndf and p.precision == "fp32" and p.subset == ref.subset


def test_print_config_roundtrips(tmp_path, capsys):
    assert main(["train", "--preset", "fashion-mnist-32", "--profile", "smoke", "--print-config"]) == 0
    d = json.loads(capsys.readouterr().out)
    (tmp_path / "c.json").write_text(json.dumps(d))
    assert cfg_of(["--config", str(tmp_path / "c.json")]) == T.preset("fashion-mnist-32", "smoke")


def test_train_then_sample(tmp_path, monkeypatch, capsys):
    write_fashion(tmp_path / "data")
    monkeypatch.setenv("DCGAN_DATA", "/nonexistent")  # --dataroot overrides it; monkeypatch restores it
    rc = main(["train", *TINY, "--dataroot", str(tmp_path / "data"), "--outf", str(tmp_path / "runs")])
    assert rc == 0
    run_dir = Path(capsys.readouterr().out.strip().splitlines()[-1])
    run = T.load_run(run_dir)
    assert run.steps == 2 and run.config.model.ngf == 8
    out = tmp_path / "grid.png"
    assert main(["sample", str(run_dir), "--out", str(out), "-n", "16", "--nrow", "4"]) == 0
    with Image.open(out) as im:
        assert im.size == (4 * 16 + 5 * 2, 4 * 16 + 5 * 2)  # make_grid pads by 2
    assert main(["sample", str(run_dir), "--epoch", "1", "--out", str(tmp_path / "e1.png")]) == 0
    assert (tmp_path / "e1.png").is_file()
    ckpt = sorted((run_dir / "ckpt").iterdir())[-1]
    assert main(["sample", str(ckpt), "--out", str(tmp_path / "c.png")]) == 0
    capsys.readouterr()
    assert main(["sample", str(run_dir / "D.pt"), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.startswith("error: ") and not (tmp_path / "x.png").exists()


def test_netG_accepts_pytorch_examples_state_dict(tmp_path):
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)
    g = Generator(cfg)
    # pytorch/examples saves netG.state_dict() of an nn.Sequential named `main`: same layers, same order.
    theirs = {f"main.{i}.{k.rsplit('.', 1)[1]}": v for i, (k, v) in enumerate(g.state_dict().items())}
    torch.save(theirs, tmp_path / "netG_epoch_0.pth")
    fresh = Generator(ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8))
    fresh.load_state_dict(T._init_state(tmp_path / "netG_epoch_0.pth", "G", fresh))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), g.state_dict().values()))
    wrong = Generator(ModelConfig(image_size=32, channels=1, nz=8, ngf=8, ndf=8))
    with pytest.raises(T.CheckpointError):
        T._init_state(tmp_path / "netG_epoch_0.pth", "G", wrong)


# ---------------------------------------------------------------- issue 13: errors a user reads


def _examples_state_dict(g: Generator) -> dict:
    """netG.state_dict() as pytorch/examples saves it: nn.Sequential `main` of ConvT, BN, ReLU, ..., ConvT, Tanh."""
    out, module, last = {}, -1, None
    for k, v in g.state_dict().items():
        layer = k.rsplit(".", 1)[0]
        if layer != last:  # a new layer: conv i sits at 3 i, its BatchNorm at 3 i + 1
            module = module + 1 if v.dim() < 4 else 3 * (module // 3 + 1) if module >= 0 else 0
            last = layer
        out[f"main.{module}.{k.rsplit('.', 1)[1]}"] = v.clone()
    return out


@pytest.mark.parametrize("flags,says", [
    (["--batchSize", "0"], "--batchSize must be >= 1, got 0"),
    (["--niter", "-1"], "--niter must be >= 1, got -1"),
    (["--imageSize", "65"], "--imageSize must be a power of two >= 16"),
    (["--dataset", "nonsense"], "--dataset: unknown data set 'nonsense'"),
    (["--netG", "MISSING"], "--netG: no such file"),
])
def test_bad_train_flags_are_one_line_errors(flags, says, tmp_path, capsys, monkeypatch):
    write_fashion(tmp_path / "data")
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))  # --dataroot sets it; monkeypatch restores it
    flags = [str(tmp_path / "missing.pth") if f == "MISSING" else f for f in flags]
    runs = tmp_path / "runs"
    rc = main(["train", *TINY, "--dataroot", str(tmp_path / "data"), "--outf", str(runs), *flags])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith(f"error: {says}") and "Traceback" not in err and "batch_size" not in err
    assert not (runs / ".partial").exists() or not any((runs / ".partial").iterdir())  # refused before any folder


def test_errors_found_while_training_are_one_line_and_leave_no_folder(tmp_path, capsys, monkeypatch):
    write_fashion(tmp_path / "data")
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))  # --dataroot sets it; monkeypatch restores it
    runs = tmp_path / "runs"
    rc = main(["train", *TINY, "--batchSize", "128", "--dataroot", str(tmp_path / "data"), "--outf", str(runs)])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: only 64 images for --batchSize 128: lower --batchSize or raise --subset")
    assert list((runs / ".partial").iterdir()) == []  # the failed attempt left no empty folder


def test_sample_reads_pytorch_examples_weights(tmp_path, capsys):
    """`dcgan sample netG_epoch_0.pth` said "not a dcgan checkpoint (no 'format' key)"."""
    g = Generator(ModelConfig(image_size=64, channels=3, nz=100, ngf=4))
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.01)  # not the initial weights
    theirs = _examples_state_dict(g)
    assert "main.12.weight" in theirs and "main.1.running_var" in theirs and "main.10.num_batches_tracked" in theirs
    path = tmp_path / "netG_epoch_0.pth"
    torch.save(theirs, path)
    out = tmp_path / "grid.png"
    assert main(["sample", str(path), "--out", str(out), "-n", "4", "--nrow", "2"]) == 0
    assert "pytorch/examples" in capsys.readouterr().err and out.is_file()
    back = T.load_generator(path)
    assert (back.cfg.image_size, back.cfg.channels, back.cfg.nz, back.cfg.ngf, back.cfg.z_dist) == (64, 3, 100, 4, "normal")
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), g.state_dict().values()))
    # --netG into another architecture: both shapes and the flag to change (refused before any data is read).
    rc = main(["train", "--dataset", "emoji", "--imageSize", "64", "--ngf", "8", "--netG", str(path),
               "--outf", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "(100, 32, 4, 4)" in err and "(100, 64, 4, 4)" in err and "--ngf 4" in err


def test_data_verify_lists_unreadable_images(tmp_path, capsys):
    from conftest import write_image_folder

    folder = tmp_path / "pics"
    write_image_folder(folder, n=12, classes=(), ext="png")
    assert main(["data", f"folder:{folder}", "--verify"]) == 0
    assert "12 of 12 images decode" in capsys.readouterr().out
    (folder / "000003.png").write_bytes(b"not a png")
    (folder / "000007.png").write_bytes((folder / "000008.png").read_bytes()[:60])  # truncated
    assert main(["data", f"folder:{folder}", "--verify"]) == 1
    out = capsys.readouterr().out
    assert "10 of 12 images decode; 2 unreadable" in out and "000003.png" in out and "000007.png" in out


def test_data_refuses_sizes_the_models_refuse(tmp_path, capsys, monkeypatch):
    write_fashion(tmp_path / "data")
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))
    for argv in (["data", "fashion-mnist", "--image-size", "8"], ["data", "--image-size", "8"]):
        assert main(argv) == 2
        assert capsys.readouterr().err.startswith("error: --image-size must be a power of two >= 16")
    assert main(["data", "nonsense"]) == 2
    assert "unknown data set 'nonsense'" in capsys.readouterr().err


def test_book_tiny_needs_the_paper_profile(capsys):
    assert main(["book", "--tiny", "--only", "01", "--no-build"]) == 2  # before anything runs
    err = capsys.readouterr().err
    assert "--tiny shrinks the paper profile only; add --profile paper (got --profile book)" in err
    assert "Traceback" not in err

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
    with pytest.raises(T.CheckpointError):
        main(["sample", str(run_dir / "D.pt"), "--out", str(tmp_path / "x.png")])


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

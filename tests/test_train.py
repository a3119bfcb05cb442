"""Tests for dcgan.train: caching, resume bit-identity, divergence, corrupt checkpoints, presets.

Every run here trains tiny nets (16x16, width 8) on a 192-image fixture that
the tests write in the Fashion-MNIST idx format.
"""

from __future__ import annotations

import gzip
import json
import os
import threading
import time

import numpy as np
import pytest
import torch

from dcgan import checkpoints as CK
from dcgan import config as C
from dcgan import divergence as DV
from dcgan import step as S
from dcgan import train as T
from dcgan.models import Discriminator, Generator, ModelConfig


def write_fashion(root, n: int = 192, seed: int = 0) -> None:
    """A tiny Fashion-MNIST-format data set: n 28x28 blobs with 10 labels."""
    rng = np.random.default_rng(seed)
    d = root / "fashion-mnist"
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:28, :28]
    imgs = np.zeros((n, 28, 28), np.uint8)
    for i in range(n):
        cy, cx, r = rng.integers(8, 20), rng.integers(8, 20), rng.integers(3, 8)
        imgs[i] = np.where((yy - cy) ** 2 + (xx - cx) ** 2 < r * r, 255, 0)
    labels = rng.integers(0, 10, n).astype(np.uint8)
    for split in ("train", "t10k"):
        with gzip.open(d / f"{split}-images-idx3-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 3]) + b"".join(int(v).to_bytes(4, "big") for v in (n, 28, 28)) + imgs.tobytes())
        with gzip.open(d / f"{split}-labels-idx1-ubyte.gz", "wb") as f:
            f.write(bytes([0, 0, 8, 1]) + n.to_bytes(4, "big") + labels.tobytes())


def tiny_cfg(**kw) -> T.TrainConfig:
    model = kw.pop("model", {})
    m = ModelConfig(**{"image_size": 16, "channels": 1, "nz": 8, "ngf": 8, "ndf": 8, **model})
    base = dict(dataset="fashion-mnist", image_size=16, model=m, epochs=2, batch_size=32, subset=128,
                precision="fp32", deterministic=True, n_samples=16)
    base.update(kw)
    return T.TrainConfig(**base)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """A tiny Fashion-MNIST set (write_fashion) and an empty run cache."""
    write_fashion(tmp_path / "data")
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("DCGAN_RUNS", str(tmp_path / "runs"))
    return tmp_path


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_train_run_layout_and_cache(env, monkeypatch):
    cfg = tiny_cfg()
    run = T.train(cfg, progress=False)
    assert run.dir.parent == env / "runs" and run.epochs_done == 2 and not run.diverged
    assert len(run.metrics) == 2 * (128 // 32)
    assert set(run.metrics[0]) >= {"step", "epoch", "loss_d", "loss_g", "d_x", "d_g_z"}
    assert [m["step"] for m in run.metrics] == list(range(1, 9))
    assert all(0 < m["d_x"] < 1 and 0 < m["d_g_z"] < 1 for m in run.metrics)
    assert run.snapshot_epochs() == [1, 2]
    assert run.sample_grid_path(1).is_file() and run.sample_grid_path(2).is_file()
    g1, g = run.generator(1), run.generator()
    assert isinstance(g, Generator) and not g.training and next(g.parameters()).dtype == torch.float32
    assert not _same_state(g1.state_dict(), g.state_dict())  # epoch 2 moved on
    d = run.discriminator()
    assert isinstance(d, Discriminator) and not d.training
    z, y = run.fixed_noise()
    assert z.shape == (16, 8) and y is None
    assert T.load_run(run.dir).config == cfg
    assert json.loads((run.dir / "config.json").read_text())["model"]["ngf"] == 8
    assert not (env / "runs" / ".partial" / run.dir.name).exists()

    # Cache hit: the same config never reaches the training loop again.
    def boom(*a, **k):
        raise AssertionError("retrained a cached config")

    monkeypatch.setattr(T, "_train_in", boom)
    again = T.train(tiny_cfg(), progress=False)
    assert again.dir == run.dir
    with pytest.raises(AssertionError):  # a different config is a different run
        T.train(tiny_cfg(seed=1), progress=False)


def test_cache_key_tracks_config_and_code_version(monkeypatch):
    a = T.config_key(tiny_cfg())
    assert a == T.config_key(tiny_cfg())
    assert a != T.config_key(tiny_cfg(lr=1e-4))
    assert a != T.config_key(tiny_cfg(model={"ngf": 16}))
    monkeypatch.setattr(C, "CODE_VERSION", T.CODE_VERSION + 1)  # config_key reads it there
    assert a != T.config_key(tiny_cfg())


def test_two_concurrent_callers_train_once(env, monkeypatch):
    calls = []
    real = T._train_in

    def counted(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(T, "_train_in", counted)
    cfg = tiny_cfg(epochs=1)
    out: list = [None, None]

    def go(i):
        out[i] = T.train(cfg, progress=False)

    ts = [threading.Thread(target=go, args=(i,)) for i in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(calls) == 1 and out[0].dir == out[1].dir


def test_train_many_in_worker_processes_equals_train(env, tmp_path):
    """Two configs trained by two one-thread worker processes: the same weights as train() makes of each in
    this (one-thread) process, returned in the order asked, and cached (a second call trains nothing)."""
    cfgs = [tiny_cfg(epochs=1, seed=1), tiny_cfg(epochs=1, seed=0)]
    torch.set_num_threads(2)
    try:
        runs = T.train_many(cfgs, progress=False)
    finally:
        torch.set_num_threads(1)
    assert [r.config.seed for r in runs] == [1, 0]
    for cfg, run in zip(cfgs, runs):
        alone = T.train(cfg, tmp_path / "alone", progress=False)
        assert _same_state(run.generator().state_dict(), alone.generator().state_dict())
    again = T.train_many(cfgs, progress=False, workers=2)
    assert [r.dir for r in again] == [r.dir for r in runs]
    bad = tiny_cfg(dataset=f"folder:{env / 'nowhere'}")
    with pytest.raises(FileNotFoundError, match="nowhere"):  # a bad config fails before any training starts
        T.train_many([tiny_cfg(epochs=1, seed=2), bad], workers=2)
    assert not (env / "runs" / T.run_name(tiny_cfg(epochs=1, seed=2))).exists()


def test_resume_after_kill_is_bit_identical(env):
    cfg = tiny_cfg(ckpt_every=3)  # 8 steps; checkpoints at 3, 4 (epoch end), 6, 8
    full = T.train(cfg, runs_root=env / "a", progress=False)
    # Killed at step 5: the last checkpoint is step 4; steps 5.. are redone.
    with pytest.raises(T.SimulatedKill):
        T.train(cfg, runs_root=env / "b", progress=False, _stop_after=5)
    partial = next((env / "b" / ".partial").iterdir())
    assert sorted(p.name for p in (partial / "ckpt").iterdir()) == ["step_00000003.pt", "step_00000004.pt"]
    # Killed again right after resuming (1 step), then run to the end.
    with pytest.raises(T.SimulatedKill):
        T.train(cfg, runs_root=env / "b", progress=False, _stop_after=1)
    resumed = T.train(cfg, runs_root=env / "b", progress=False)
    assert _same_state(full.generator().state_dict(), resumed.generator().state_dict())
    assert _same_state(full.discriminator().state_dict(), resumed.discriminator().state_dict())
    assert _same_state(full.generator(1).state_dict(), resumed.generator(1).state_dict())
    assert full.metrics == resumed.metrics


def test_nan_raise_keeps_last_good_checkpoint(env, monkeypatch):
    calls = {"n": 0}
    real = S._bce

    def bad_after_5_steps(logits, target):  # 3 BCE calls per step
        calls["n"] += 1
        out = real(logits, target)
        return out * float("nan") if calls["n"] > 3 * 5 else out

    monkeypatch.setattr(S, "_bce", bad_after_5_steps)
    cfg = tiny_cfg(ckpt_every=2)
    with pytest.raises(T.TrainingDiverged, match="non-finite at step 5"):
        T.train(cfg, progress=False)
    ckdir = next((env / "runs" / ".partial").iterdir()) / "ckpt"
    last = sorted(ckdir.iterdir())[-1]
    assert last.name == "step_00000004.pt"
    state = T.load_checkpoint(last)
    assert state["step"] == 4 and all(torch.isfinite(v).all() for v in state["G"].values() if v.is_floating_point())
    assert not (env / "runs" / T.run_name(cfg)).exists()  # not published as a finished run


def test_nan_stop_marks_run_diverged(env, monkeypatch):
    calls = {"n": 0}
    real = S._bce

    def bad_after_3_steps(logits, target):
        calls["n"] += 1
        out = real(logits, target)
        return out * float("inf") if calls["n"] > 3 * 3 else out

    monkeypatch.setattr(S, "_bce", bad_after_3_steps)
    run = T.train(tiny_cfg(nan_policy="stop"), progress=False)
    assert run.diverged and run.steps == 3 and len(run.metrics) == 3 and run.epochs_done == 0
    g = run.generator()
    assert all(torch.isfinite(p).all() for p in g.parameters())
    assert T.train(tiny_cfg(nan_policy="stop"), progress=False).diverged  # cached as diverged


def test_corrupt_checkpoint_clear_error_previous_intact(env):
    cfg = tiny_cfg(ckpt_every=2)
    with pytest.raises(T.SimulatedKill):
        T.train(cfg, progress=False, _stop_after=5)
    ckdir = next((env / "runs" / ".partial").iterdir()) / "ckpt"
    prev, last = sorted(ckdir.iterdir())
    before = prev.read_bytes()
    last.write_bytes(last.read_bytes()[:100])  # truncated write
    with pytest.raises(T.CheckpointError, match="corrupt or truncated"):
        T.train(cfg, progress=False)
    assert prev.read_bytes() == before
    assert T.load_checkpoint(prev)["step"] == 2
    # Following the error's advice (delete the bad file) resumes from the previous one.
    last.unlink()
    run = T.train(cfg, progress=False)
    assert run.steps == 8
    not_ckpt = env / "x.pt"
    torch.save({"a": torch.zeros(1)}, not_ckpt)
    with pytest.raises(T.CheckpointError, match="not a dcgan checkpoint"):
        T.load_checkpoint(not_ckpt)


def test_atomic_save_leaves_previous_file_on_failure(tmp_path, monkeypatch):
    p = tmp_path / "c.pt"
    T.save_checkpoint(p, {"step": 1})

    def failing_save(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(T.CheckpointError):
        T.save_checkpoint(p, {"step": 2})
    monkeypatch.undo()
    assert T.load_checkpoint(p)["step"] == 1


def test_conditional_training(env):
    cfg = tiny_cfg(epochs=1, model={"n_classes": 10})
    run = T.train(cfg, progress=False)
    g = run.generator()
    z, y = run.fixed_noise()
    assert y is not None and y.max() == 9
    x = g(z, y)
    assert x.shape == (16, 1, 16, 16)
    assert run.discriminator()(x, y).shape == (16,)
    with pytest.raises(ValueError, match="n_classes"):
        T.train(tiny_cfg(model={"n_classes": 7}), progress=False)


def test_bf16_path_runs_and_bad_inputs(env):
    if not T.cpu_supports_bf16():
        pytest.skip("no bf16 on this CPU")
    cfg = tiny_cfg(epochs=1, precision="bf16", deterministic=False)
    run = T.train(cfg, progress=False)
    assert run.info["precision"] == "bf16" and next(run.generator().parameters()).dtype == torch.float32
    with pytest.raises(ValueError, match="channel"):
        T.train(tiny_cfg(model={"channels": 3}), progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        T.train(tiny_cfg(batch_size=256), progress=False)
    with pytest.raises(ValueError, match="image_size"):
        T.TrainConfig(image_size=32, model=ModelConfig(image_size=64))
    with pytest.raises(ValueError, match="precision"):
        tiny_cfg(precision="fp16")


def test_resolve_precision():
    cpu = torch.device("cpu")
    assert T.resolve_precision(tiny_cfg(precision="auto", deterministic=True), cpu) == "fp32"
    assert T.resolve_precision(tiny_cfg(precision="fp32", deterministic=False), cpu) == "fp32"
    want = "bf16" if T.cpu_supports_bf16() else "fp32"
    assert T.resolve_precision(tiny_cfg(precision="auto", deterministic=False), cpu) == want


def test_presets():
    for name in ("fashion-mnist-32", "emoji-32", "emoji-64"):
        for profile in ("smoke", "book", "paper"):
            c = T.preset(name, profile)
            assert c.batch_size == (64 if profile == "smoke" else 128)
            assert (c.lr, c.beta1) == (2e-4, 0.5)
            assert c.model.image_size == c.image_size == int(name.split("-")[-1])
    assert T.preset("fashion-mnist-32", "smoke").subset <= 1024
    im = T.preset("imagenet32", "paper")
    assert im.model.d_widths() == [256, 512, 1024] and 16 * sum(im.model.d_widths()) == 28672
    assert T.preset("lsun-64", "paper").model.g_widths()[0] == 1024  # Figure 1
    for name in ("svhn-32", "celeba-64"):
        assert T.preset(name, "paper").dataset in ("svhn", "celeba")
    with pytest.raises(ValueError, match="paper"):
        T.preset("imagenet32", "book")
    with pytest.raises(KeyError):
        T.preset("cifar", "book")
    c = T.preset("emoji-32", "book")
    assert T.TrainConfig.from_dict(json.loads(json.dumps(c.to_dict()))) == c
    # the book trains on the full training sets (the gate's references are made on the same data)
    assert T.preset("fashion-mnist-32", "book").subset is None and c.dataset == "emoji"
    # §8.1's conditional pair differs in BatchNorm's scale and bias only
    a, b = T.preset("mnist-cond", "book"), T.preset("mnist-cond-noaffine", "book")
    assert a.model.n_classes == 10 and a.model.bn_affine and not b.model.bn_affine
    assert a.replace(model={"bn_affine": False}) == b
    assert T.preset("mnist-cond", "paper").dataset == "mnist"


def test_adam_is_the_papers_and_fused():
    net = torch.nn.Linear(3, 2)
    opt = T.adam(net, T.TrainConfig())
    g = opt.param_groups[0]
    assert (g["lr"], g["betas"], g["fused"]) == (2e-4, (0.5, 0.999), True)


def test_sync_bn_needs_gpu(env):
    if torch.cuda.is_available():
        pytest.skip("has a GPU")
    with pytest.raises(ValueError, match="sync_bn needs GPUs"):
        T.train(tiny_cfg(sync_bn=True), progress=False)


# ----------------------------------------------------------------------------- issue 13: reliability


def test_folder_dataset_trains_to_the_end(tmp_path):
    """`folder:/abs/path` once made nested run folders, and os.replace(partial, final) failed at the end."""
    from conftest import write_image_folder

    imgs = tmp_path / "my pics" / "imgs"
    write_image_folder(imgs, n=40, classes=(), ext="png")
    cfg = tiny_cfg(dataset=f"folder:{imgs}", model={"channels": 3}, epochs=1, batch_size=16, subset=None)
    run = T.train(cfg, runs_root=tmp_path / "runs", progress=False)
    assert run.steps == 2 and run.dir.parent == tmp_path / "runs"
    assert run.dir.name == T.run_name(cfg) and run.dir.name.startswith("folder-imgs-16-")
    assert [p.parent for p in (tmp_path / "runs" / ".locks").iterdir()] == [tmp_path / "runs" / ".locks"]
    assert list((tmp_path / "runs" / ".partial").iterdir()) == []


@pytest.mark.parametrize("dataset", ["folder:/abs/path/imgs", "folder:../rel/x", "folder:/", "a/b\\c:d e", "..x", "/"])
def test_run_names_are_one_safe_folder_name(dataset):
    name = C._safe_name(dataset)
    assert name and "/" not in name and "\\" not in name and not name.startswith(".")
    assert all(c.isalnum() or c in "._-" for c in name)


def test_cache_never_returns_a_run_trained_on_other_data(tmp_path, monkeypatch):
    """`folder:clean` from another directory returned the run trained on the other `clean` folder."""
    from conftest import write_image_folder

    for d, seed in (("a", 1), ("b", 2)):
        write_image_folder(tmp_path / d / "clean", n=40, classes=(), ext="png", seed=seed)
    runs = tmp_path / "runs"

    def cfg():
        return tiny_cfg(dataset="folder:clean", model={"channels": 3}, epochs=1, batch_size=16, subset=None)

    monkeypatch.chdir(tmp_path / "a")
    cfg_a = cfg()
    assert cfg_a.dataset == f"folder:{tmp_path / 'a' / 'clean'}"  # resolved: the config names the folder
    run_a = T.train(cfg_a, runs_root=runs, progress=False)
    assert run_a.config.dataset == cfg_a.dataset

    def boom(*a, **k):
        raise AssertionError("trains")

    monkeypatch.setattr(T, "_train_in", boom)
    assert T.train(cfg_a, runs_root=runs, progress=False).dir == run_a.dir  # same folder, same data: cached
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(AssertionError, match="trains"):  # the other `clean`: a new run, not run_a
        T.train(cfg(), runs_root=runs, progress=False)
    # The same folder with a file replaced is other data too.
    key = T.cache_key(cfg_a)
    img = sorted((tmp_path / "a" / "clean").iterdir())[0]
    st = img.stat()
    os.utime(img, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert T.cache_key(cfg_a) != key


def test_data_fingerprint_is_cheap_and_tracks_the_offline_sets(env, tmp_path, monkeypatch):
    import builtins

    from dcgan.data import data_fingerprint

    cfg = tiny_cfg()
    key = T.cache_key(cfg)
    assert T.cache_key(cfg) == key  # stable
    write_fashion(tmp_path / "other", seed=1)  # the same set name, other files
    monkeypatch.setenv("DCGAN_DATA", str(tmp_path / "other"))
    assert T.cache_key(cfg) != key
    assert data_fingerprint("fashion-mnist", tmp_path / "nowhere") == "missing"

    def no_reading(*a, **k):
        raise AssertionError("the fingerprint reads files")

    monkeypatch.setattr(builtins, "open", no_reading)  # it stats, never reads
    assert data_fingerprint("fashion-mnist") == data_fingerprint("fashion-mnist", tmp_path / "other")


def test_blown_up_run_stops_and_is_never_cached_as_good(env, monkeypatch):
    """lr 1e6: losses of 1e13 from step 2 and a saturated G were saved as a normal run."""
    cfg = tiny_cfg(lr=1e6)
    with pytest.raises(T.TrainingDiverged, match=r"loss exploded .* at step 1 .*none to resume from"):
        T.train(cfg, progress=False)
    assert not (env / "runs" / T.run_name(cfg)).exists()
    with pytest.raises(T.TrainingDiverged, match=r"\(step_00000001.pt\) is kept"):  # a checkpoint after step 1
        T.train(cfg.replace(ckpt_every=1), progress=False)
    stopped = T.train(cfg.replace(nan_policy="stop"), progress=False)
    assert stopped.diverged and stopped.steps == 1  # cached as diverged, not as a finished run
    # Explosion aside, G's output is saturated at +-1: the probe before each save catches that alone.
    monkeypatch.setattr(DV, "_LOSS_BLOWUP", float("inf"))
    with pytest.raises(T.TrainingDiverged, match="G's output saturated"):
        T.train(tiny_cfg(lr=1e6, seed=1), progress=False)


def test_divergence_message_says_what_is_kept(env):
    """lr 1e30 said "the last good checkpoint is kept" when there was none."""
    cfg = tiny_cfg(lr=1e30)
    with pytest.raises(T.TrainingDiverged) as e:
        T.train(cfg, progress=False)
    msg = str(e.value)
    assert "is kept" not in msg and "none to resume from" in msg
    assert list((env / "runs" / ".partial").iterdir()) == []  # nothing to resume: no leftover folder


def test_saturation_probe_is_exact_and_leaves_the_state_alone():
    cfg = ModelConfig(image_size=16, channels=1, nz=8, ngf=8, ndf=8)
    g = Generator(cfg)
    z = torch.rand(16, 8) * 2 - 1
    before = {k: v.clone() for k, v in g.state_dict().items()}
    assert DV._g_saturated(g, z, None, "cpu") is None
    assert _same_state(before, g.state_dict()) and g.training  # running stats and mode untouched
    with torch.no_grad():
        g.out[0].weight.mul_(1e6)  # what lr 1e6 does to the last layer
    assert "saturated" in DV._g_saturated(g.eval(), z, None, "cpu") and not g.training
    assert DV._check_blowup(1.4, 15.0) is None and DV._check_blowup(0.0, 30.0) is None  # D winning is healthy
    assert "exploded" in DV._check_blowup(4.6e13, 1.1e14) and "non-finite" in DV._check_blowup(1.0, float("nan"))


def test_full_disk_names_the_file_and_the_free_space(tmp_path, monkeypatch):
    """A checkpoint write on a full disk raised torch's bare "unexpected pos 131200 vs 131092"."""
    p = tmp_path / "ckpt" / "step_00000002.pt"
    p.parent.mkdir()
    T.save_checkpoint(p.with_name("step_00000001.pt"), {"step": 1})

    def full_disk(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 131200 vs 131092")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(T.CheckpointError, match=r"could not write .*step_00000002.pt .*unexpected pos.* MiB free"):
        T.save_checkpoint(p, {"step": 2})
    assert sorted(x.name for x in p.parent.iterdir()) == ["step_00000001.pt"]  # no partial file, the previous intact


def test_metrics_log_leaves_no_temporary_file_on_failure(tmp_path, monkeypatch):
    import errno
    from pathlib import Path

    log = tmp_path / "metrics.jsonl"
    CK._write_jsonl(log, [{"step": 1}])
    real = Path.write_text

    def full_disk(self, text, *a, **k):
        real(self, text[:5])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(T.CheckpointError, match=r"metrics.jsonl .*No space left.* MiB free"):
        CK._write_jsonl(log, [{"step": 1}, {"step": 2}])
    monkeypatch.undo()
    assert [x.name for x in tmp_path.iterdir()] == ["metrics.jsonl"] and log.read_text() == '{"step": 1}\n'


def test_a_run_waiting_on_another_says_so(tmp_path, capsys):
    lock, got = tmp_path / ".locks" / "x.lock", []

    def other():
        with T._file_lock(lock):
            got.append("in")

    with T._file_lock(lock):  # this one trains
        t = threading.Thread(target=other)
        t.start()
        for _ in range(300):
            err = capsys.readouterr().err
            if err:
                break
            time.sleep(0.1)
        assert "waiting for another process that is training the same config" in err and str(lock) in err
        assert got == []
    t.join()
    assert got == ["in"]


def test_bad_inputs_fail_before_any_folder_is_made(env):
    from dcgan.data import UnknownDatasetError

    with pytest.raises(UnknownDatasetError, match="nonsense"):
        T.train(tiny_cfg(dataset="nonsense"), progress=False)
    with pytest.raises(T.CheckpointError, match="no initial G weights"):
        T.train(tiny_cfg(), progress=False, init_g=env / "missing.pth")
    assert not (env / "runs" / ".partial").exists()


def test_split_modules_are_what_train_re_exports():
    """train.py was split by what it holds; ``T.<name>`` is still the one object, so old imports keep working."""
    for name in ("adam", "gan_step"):
        assert getattr(T, name) is getattr(S, name)
    assert T.TrainingDiverged is DV.TrainingDiverged and T.load_run is CK.load_run
    assert set(T.__all__) <= set(dir(T))


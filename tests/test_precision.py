"""The precision-and-device policy (dcgan.precision): 'auto' follows bf16 support, bad names fail, autocast applies it."""

from __future__ import annotations

import pytest
import torch

from dcgan import precision as P

CPU = torch.device("cpu")


def _cpu_autocast_on() -> bool:
    """torch.is_autocast_cpu_enabled(), without its deprecation warning on newer torch."""
    try:
        return torch.is_autocast_enabled("cpu")
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled()


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_bf16_support(monkeypatch, native):
    monkeypatch.setattr(P, "cpu_supports_bf16", lambda: native)
    assert P.bf16_supported(CPU) is native
    assert P.resolve_precision("auto", CPU) == ("bf16" if native else "fp32")
    assert P.resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")  # a device name works too
    assert P.resolve_precision("auto", CPU, deterministic=True) == "fp32"  # bit-identical resumes are fp32 only
    for fixed in ("bf16", "fp32"):  # an explicit precision is kept, supported or not, deterministic or not
        assert P.resolve_precision(fixed, CPU) == fixed
        assert P.resolve_precision(fixed, CPU, deterministic=True) == fixed


def test_auto_on_this_cpu_is_what_onednn_reports():
    want = "bf16" if P.cpu_supports_bf16() else "fp32"
    assert P.resolve_precision("auto", CPU) == want


@pytest.mark.parametrize("bad", ["fp16", "BF16", "", "float32"])
def test_an_unknown_precision_names_the_allowed_ones(bad):
    for call in (P.check_precision, P.resolve_precision, P.autocast):
        with pytest.raises(ValueError, match=r"'auto', 'bf16' or 'fp32'") as e:
            call(bad)
        assert repr(bad) in str(e.value)


def test_fp32_autocast_is_a_no_op():
    with P.autocast("fp32", CPU):
        assert not _cpu_autocast_on()
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == torch.float32


def test_bf16_autocast_on_cpu_enables_cpu_autocast():
    assert not _cpu_autocast_on()
    with P.autocast("bf16", CPU):
        assert _cpu_autocast_on()
        y = torch.ones(4, 4) @ torch.ones(4, 4)
    assert y.dtype == torch.bfloat16
    assert not _cpu_autocast_on()


def test_auto_autocast_follows_support(monkeypatch):
    for native in (True, False):
        monkeypatch.setattr(P, "cpu_supports_bf16", lambda: native)
        with P.autocast("auto", CPU):
            assert _cpu_autocast_on() is native


def test_default_device_and_device_of():
    want = "cuda" if torch.cuda.is_available() else "cpu"
    assert P.default_device().type == want
    assert P.default_device(0) == (torch.device("cuda", 0) if want == "cuda" else CPU)
    assert P.device_of(torch.nn.Linear(2, 2)) == CPU
    assert P.device_of(torch.nn.ReLU()) == CPU  # no parameters: the CPU


def test_train_keeps_its_wrapper_and_old_names():
    from dcgan import features, train
    from dcgan.config import TrainConfig

    assert train.cpu_supports_bf16 is P.cpu_supports_bf16
    cfg = TrainConfig(precision="auto", deterministic=False)
    assert train.resolve_precision(cfg, CPU) == P.resolve_precision("auto", CPU)
    assert train.resolve_precision(TrainConfig(precision="auto", deterministic=True), CPU) == "fp32"
    assert features.bf16_available() == P.bf16_supported(P.default_device())

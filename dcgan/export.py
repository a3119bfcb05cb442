"""A trained generator as an ONNX file, checked against PyTorch (§6 in the reader's browser: chapter 11).

:func:`export_onnx` writes G (eval mode: BatchNorm uses its running statistics) with
``torch.onnx``'s TorchScript exporter, constants folded, the batch dimension free. ``fp16=True``
stores the weights as float16 and casts them back to float32 inside the graph (:func:`fp16_weights`):
half the bytes, the arithmetic still float32, so every runtime that runs the float32 file runs it.
:func:`max_error` measures the file against the PyTorch generator on seeded z with onnxruntime;
:data:`FP32_TOL` and :data:`FP16_TOL` are the bounds the tests and the chapter hold it to.

``dcgan export-onnx RUN --out FILE`` is the command-line face of :func:`export_run`.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import torch

from .models import Generator, sample_noise

__all__ = ["OPSET", "FP32_TOL", "FP16_TOL", "FP16_MIN_SIZE", "ExportError", "export_onnx", "fp16_weights", "max_error", "export_run"]

OPSET = 17  # onnxruntime-web 1.24 runs opsets up to 21; 17 is the TorchScript exporter's best-tested one
# Largest |ONNX - PyTorch| over images in [-1, 1] (tanh outputs). fp32: the two runtimes' float32 rounding (measured
# 1e-8 to 1.2e-6); fp16: the convolutions' weights rounded to half precision (2.4e-4 relative each). Measured on 256
# seeded images: 6e-5 (smoke G), 2.6e-4 (book width, 3 epochs of emoji), 1.4e-3 (ngf 16, 10 epochs of Fashion-MNIST):
# the error grows as training sharpens G. 1e-2 is 1.3 of one 8-bit level (2/255): a page's pixels are PyTorch's
# within one level (two with the rounding).
FP32_TOL = 1e-4
FP16_TOL = 1e-2


class ExportError(RuntimeError):
    """The generator cannot be exported or checked (a missing package, an unreadable checkpoint)."""


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise ExportError("the onnx package is not installed: run `make setup` (it is in requirements.lock)") from e
    return onnx


def _inputs(g: Generator, n: int, seed: int = 0) -> tuple:
    z = sample_noise(g.cfg, n, torch.Generator().manual_seed(seed))
    if g.cfg.n_classes:
        return z, torch.arange(n) % g.cfg.n_classes
    return (z,)


def _names(g: Generator) -> list[str]:
    return ["z", "y"] if g.cfg.n_classes else ["z"]


def export_onnx(g: Generator, path: str | Path | None = None, *, fp16: bool = False) -> bytes:
    """G as ONNX bytes (written to ``path`` too when given): input ``z`` (N, nz) float32 (and ``y`` (N,) int64
    class indices for a conditional G), output ``image`` (N, C, S, S) in [-1, 1]."""
    onnx = _onnx()
    g = g.eval()  # BatchNorm with its running statistics, as the book samples
    names = _names(g)
    axes = {k: {0: "n"} for k in [*names, "image"]}
    buf = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        # the TorchScript exporter says it is the legacy one; the torch.export-based one needs onnxscript, and
        # both write the same graph for these convolutions
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")
        warnings.filterwarnings("ignore", message=r".*legacy TorchScript-based ONNX export.*")
        torch.onnx.export(g, _inputs(g, 2), buf, dynamo=False, input_names=names, output_names=["image"],
                          dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True)
    model = onnx.load_from_string(buf.getvalue())
    model.doc_string = f"dcgan Generator {g.cfg.to_dict()}"
    if fp16:
        model = fp16_weights(model)
    onnx.checker.check_model(model)
    data = model.SerializeToString()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_bytes(data)
    return data


FP16_MIN_SIZE = 1024  # smaller tensors (BatchNorm's statistics, scales and shifts) stay float32


def fp16_weights(model, min_size: int = FP16_MIN_SIZE):
    """``model`` with its float32 weights of at least ``min_size`` numbers (the convolutions: all but a few kB)
    stored as float16 and cast back to float32 by a ``Cast`` node: half the file, float32 arithmetic. BatchNorm's
    small tensors stay float32 (a few kB): their rounding, through 1 / sqrt(var), nearly tripled the error of a 10-epoch Fashion-MNIST G (1.4e-3 -> 3.8e-3)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT or numpy_helper.to_array(init).size < min_size:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype("float16"), f"{init.name}__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__to_fp32"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model


def max_error(g: Generator, model: bytes | str | Path, n: int = 64, seed: int = 0) -> float:
    """Largest |onnxruntime(model) - g| over ``n`` images from seeded z (and cycled labels): the export's error."""
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ExportError("the onnxruntime package is not installed: run `make setup` (it is in requirements.lock)") from e
    data = Path(model).read_bytes() if isinstance(model, (str, Path)) else model
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1  # same numbers on every machine; the nets are small
    opts.log_severity_level = 3  # errors only: nothing on stderr for a clean run
    sess = ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])
    inputs = _inputs(g, n, seed)
    feed = {k: v.numpy() for k, v in zip(_names(g), inputs)}
    got = torch.from_numpy(sess.run(["image"], feed)[0])
    with torch.no_grad():
        want = g.eval()(*inputs)
    return float((got - want).abs().max())


def export_run(src: str | Path, out: str | Path, *, epoch: int | None = None, fp16: bool = False,
               check: int = 64) -> tuple[Path, float | None]:
    """Export the generator of a run folder (at ``epoch``, default its final G), a ``G.pt``, a snapshot, a
    training checkpoint or pytorch/examples' ``netG_epoch_N.pth`` to ``out``; returns (out, max error over
    ``check`` seeded images, None when ``check`` is 0). An unreadable source raises
    :class:`dcgan.checkpoints.CheckpointError`."""
    from .checkpoints import CheckpointError, load_generator

    src = Path(src)
    if epoch is not None:
        if not src.is_dir():
            raise CheckpointError(f"an epoch is chosen in a run folder, and {src} is a file")
        src = src / "snapshots" / f"G_epoch_{epoch:03d}.pt"
    g = load_generator(src)
    out = Path(out)
    data = export_onnx(g, out, fp16=fp16)
    return out, (max_error(g, data, check) if check else None)

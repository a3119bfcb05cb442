"""Training throughput of the DCGAN step: the paper's 64x64 step, the book's 32x32 one and the book's own small nets.

Configurations (``--config``): ``64x64/ngf64`` (the paper's step), ``32x32/ngf32`` (chapter 02's emoji run),
``ch02-grey-32x32/ngf32`` (chapter 02's Fashion-MNIST run), ``ch08-32x32/ngf16`` (chapter 08's 24 ablation
runs: grey, nz 64, batch 64) and ``ch09-cond-32x32/ngf32`` (chapter 09's label-conditional DCGAN: grey, nz 64,
10 classes, batch 64). The book's configurations are read from its presets (``dcgan.config.preset`` and
``dcgan.stability.ablation_config``, ``book`` profile), so they follow the book. The book's small nets are
bound by per-op overhead rather than FLOPs, so they are the ones whose paths differ most.

Prints, in one run and measured side by side, img/s of

* ``fp32``: plain fp32 eager (contiguous memory), the pytorch/examples baseline;
* ``bf16``: bf16 autocast + channels_last (what ``precision="auto"`` picks on a bf16 CPU);
* ``bf16+compile``: the same under ``torch.compile`` (``--no-compile`` leaves it out);
* ``bf16 xN proc``: on a CPU, N one-thread processes each running the bf16 step at the same
  time (``--processes``, default: one per thread), their img/s summed: how
  :func:`dcgan.train.train_many` trains several runs at once (the book's small
  nets are bound by per-op overhead, which one process per core hides); on a CPU
  without bf16 the processes run fp32 (``fp32 xN proc``), as the book's workers then do;

each path's ratio to fp32 eager, the FLOPs of one step (``torch.utils.flop_counter``)
and the fraction of this machine's measured bf16 (and fp32) matmul peak each path
reaches, per configuration and again in one table at the end. A path that cannot run here
(bf16 on a CPU without it, processes on a GPU) is named with the reason. Every path runs the
engine's own step, :func:`dcgan.train.gan_step`.

    python bench/train_throughput.py                 # every configuration, CPU or the GPU if there is one
    python bench/train_throughput.py --config 32x32/ngf32 --steps 20 --json out.json
    python bench/train_throughput.py --config ch08-32x32/ngf16 ch09-cond-32x32/ngf32 --steps 50
    python bench/train_throughput.py --list          # the configurations and paths, without timing anything
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcgan.config import preset
from dcgan.models import ModelConfig, build_models, sample_noise
from dcgan.precision import cpu_supports_bf16, default_device
from dcgan.stability import ablation_config, variant_config
from dcgan.train import TrainConfig, adam, gan_step


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int = 2048, reps: int = 5) -> float:
    """Best-of FLOP/s of an n x n x n matmul in ``dtype``."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def setup(cfg: ModelConfig, batch: int, device: torch.device, path: str, seed: int = 0):
    """One training step of ``cfg`` on a fixed random batch, on ``path`` (fp32, bf16, bf16+compile)."""
    torch.manual_seed(seed)
    G, D = build_models(cfg)
    fast = path != "fp32"
    mem = torch.channels_last if fast else torch.contiguous_format
    G.to(device, memory_format=mem)
    D.to(device, memory_format=mem)
    oG, oD = adam(G, TrainConfig()), adam(D, TrainConfig())  # the engine's optimiser (fused Adam)
    real = (torch.rand(batch, cfg.channels, cfg.image_size, cfg.image_size, device=device) * 2 - 1)
    real = real.contiguous(memory_format=mem)
    nets = (torch.compile(G), torch.compile(D)) if "compile" in path else (G, D)
    prec = "bf16" if fast else "fp32"
    gen = torch.Generator().manual_seed(seed)
    y = torch.randint(0, cfg.n_classes, (batch,), generator=gen).to(device) if cfg.n_classes else None

    def step() -> dict:
        return gan_step(G, D, oG, oD, real, sample_noise(cfg, batch, gen, device), y, device=device, precision=prec,
                        nets=nets)

    return step


def step_flops(cfg: ModelConfig, batch: int) -> int:
    """FLOPs of one training step (D real+fake forward/backward, G forward/backward through D), fp32 on CPU."""
    step = setup(cfg, batch, torch.device("cpu"), "fp32")
    with FlopCounterMode(display=False) as fc:
        step()
    return fc.get_total_flops()


def time_path(step, steps: int, warmup: int, device: torch.device) -> float:
    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.perf_counter() - t) / steps


def _book(cfg: TrainConfig, target: float | None = None) -> tuple[ModelConfig, int, float | None]:
    return cfg.model, cfg.batch_size, target


# name -> (model, batch, the target share of the bf16 matmul peak or None): the paper's 64x64 step, then the book's
# runs as its presets train them (book profile): chapter 02's two, chapter 08's ablation DCGAN, chapter 09's
CONFIGS = {
    "64x64/ngf64": (ModelConfig(image_size=64, channels=3, nz=100, ngf=64, ndf=64), 128, 0.85),
    "32x32/ngf32": _book(preset("emoji-32", "book"), 0.60),
    "ch02-grey-32x32/ngf32": _book(preset("fashion-mnist-32", "book")),
    "ch08-32x32/ngf16": _book(variant_config("dcgan", ablation_config("book"), 0)),
    "ch09-cond-32x32/ngf32": _book(preset("mnist-cond", "book")),
}


def run_processes(cfg: ModelConfig, batch: int, steps: int, warmup: int, n: int, path: str = "bf16") -> float:
    """Summed img/s of ``n`` one-thread processes timing the ``path`` step (bf16 or fp32) at the same time."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, f"{i}.json") for i in range(n)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, "--child-bf16", o, "--child-config", json.dumps(cfg.to_dict()),
                                   "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup),
                                   "--child-path", path],
                                  env=env) for o in outs]
        if any(p.wait() for p in procs):
            raise RuntimeError("a benchmark process failed")
        return sum(json.load(open(o))["img_per_s"] for o in outs)


def bench_config(cfg: ModelConfig, batch: int, steps: int, warmup: int, device: torch.device, compile_: bool,
                 peaks: dict, processes: int = 1) -> dict:
    size, width = cfg.image_size, cfg.ngf
    flops = step_flops(cfg, batch)
    bf16_ok = not math.isnan(peaks["bf16"])
    paths = ["fp32"] + (["bf16"] if bf16_ok else []) + (["bf16+compile"] if bf16_ok and compile_ else [])
    skipped = {p: why for p, why in (("bf16", "no bf16 on this device"),
                                     ("bf16+compile", "no bf16 on this device" if not bf16_ok else "--no-compile"))
               if p not in paths}
    out: dict = {"image_size": size, "width": width, "channels": cfg.channels, "n_classes": cfg.n_classes,
                 "batch": batch, "flops_per_step": flops, "paths": {}}
    print(f"{size}x{size}x{cfg.channels}, batch {batch}, ngf=ndf={width}, nz {cfg.nz}"
          f"{f', {cfg.n_classes} classes' if cfg.n_classes else ''}; one step = {flops / 1e9:.3f} GFLOP")
    for p in paths:
        dt = time_path(setup(cfg, batch, device, p), steps, warmup, device)
        achieved = flops / dt
        peak = peaks["fp32"] if p == "fp32" else peaks["bf16"]
        out["paths"][p] = {"img_per_s": batch / dt, "tflops": achieved / 1e12, "fraction_of_peak": achieved / peak}
        ratio = batch / dt / out["paths"]["fp32"]["img_per_s"]
        out["paths"][p]["vs_fp32"] = ratio
        print(f"  {p:<14} {batch / dt:8.1f} img/s  {achieved / 1e12:.3f} TFLOP/s  "
              f"{100 * achieved / peak:5.1f}% of the {'fp32' if p == 'fp32' else 'bf16'} matmul peak  "
              f"{ratio:5.2f}x fp32 eager", flush=True)
    prec = "bf16" if bf16_ok else "fp32"  # what the book's worker processes train in here (precision="auto")
    name = f"{prec} x{processes} proc"
    if processes > 1 and device.type == "cpu":
        ips = run_processes(cfg, batch, steps, warmup, processes, prec)
        achieved = flops * ips / batch
        ratio = ips / out["paths"]["fp32"]["img_per_s"]
        out["paths"][name] = {"img_per_s": ips, "tflops": achieved / 1e12,
                              "fraction_of_peak": achieved / peaks[prec], "vs_fp32": ratio}
        print(f"  {name:<14} {ips:8.1f} img/s  {achieved / 1e12:.3f} TFLOP/s  "
              f"{100 * achieved / peaks[prec]:5.1f}% of the {prec} matmul peak  {ratio:5.2f}x fp32 eager "
              f"({processes} one-thread processes, "
              f"{ips / out['paths'][prec]['img_per_s']:.2f}x one {torch.get_num_threads()}-thread process)", flush=True)
    else:
        skipped[name] = "a GPU runs one process" if device.type != "cpu" else "--processes 1 (or one thread)"
    for p, why in skipped.items():
        print(f"  {p:<14} not timed: {why}")
    out["skipped"] = skipped
    best = max(out["paths"], key=lambda k: out["paths"][k]["img_per_s"])
    out["fastest"] = best
    out["speedup_vs_fp32"] = out["paths"][best]["img_per_s"] / out["paths"]["fp32"]["img_per_s"]
    print(f"  fastest: {best}, {out['speedup_vs_fp32']:.2f}x plain fp32 eager; "
          f"{100 * out['paths'][best]['fraction_of_peak']:.1f}% of its matmul peak")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                    help="which steps to time (default: all, one after another)")
    ap.add_argument("--image-size", type=int, help="time this size instead of --config (with --width)")
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf, with --image-size")
    ap.add_argument("--batch", type=int, default=None, help="batch size (default: each configuration's own)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                    help="also time bf16 + torch.compile (default; --no-compile leaves it out)")
    ap.add_argument("--list", action="store_true", help="print the configurations and paths, time nothing")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--processes", type=int, default=None,
                    help="CPU: also time this many one-thread processes at once (default: one per thread; 1: no)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child-bf16", help=argparse.SUPPRESS)  # one process of --processes: time --child-path, write img/s here
    ap.add_argument("--child-config", help=argparse.SUPPRESS)  # its ModelConfig as JSON
    ap.add_argument("--child-path", default="bf16", choices=["bf16", "fp32"], help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.list:
        for name in args.config:
            cfg, batch, target = CONFIGS[name]
            print(f"{name:<22} {cfg.image_size}x{cfg.image_size}x{cfg.channels}, nz {cfg.nz}, ngf {cfg.ngf}, "
                  f"ndf {cfg.ndf}, classes {cfg.n_classes}, batch {batch}"
                  + (f", target {100 * target:.0f}% of the bf16 peak" if target else ""))
        procs = args.processes or torch.get_num_threads()
        print("paths: fp32, bf16, " + ("bf16+compile, " if args.compile else "")
              + f"bf16 x{procs} proc (CPU; fp32 x{procs} proc without bf16); each: img/s, % of the measured "
                "matmul peak, x fp32 eager")
        return {}
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_bf16:
        cfg = ModelConfig(**json.loads(args.child_config))
        dt = time_path(setup(cfg, args.batch, torch.device("cpu"), args.child_path), args.steps, args.warmup,
                       torch.device("cpu"))
        with open(args.child_bf16, "w") as f:
            json.dump({"img_per_s": args.batch / dt}, f)
        return {}
    device = default_device()
    bf16_ok = device.type == "cuda" or cpu_supports_bf16()
    peaks = {"bf16": matmul_peak(torch.bfloat16, device) if bf16_ok else float("nan"),
             "fp32": matmul_peak(torch.float32, device)}
    print(f"device {device} ({torch.get_num_threads()} threads); measured matmul peak: bf16 {peaks['bf16'] / 1e12:.3f} "
          f"TFLOP/s, fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s")
    custom = ModelConfig(image_size=args.image_size, channels=3, nz=100, ngf=args.width, ndf=args.width) \
        if args.image_size else None
    configs = {f"{args.image_size}x{args.image_size}/ngf{args.width}": (custom, 128, None)} \
        if custom else {k: CONFIGS[k] for k in args.config}
    res: dict = {"device": str(device), "threads": torch.get_num_threads(), "bf16_matmul_peak_tflops": peaks["bf16"] / 1e12,
                 "fp32_matmul_peak_tflops": peaks["fp32"] / 1e12, "configs": {}}
    for name, (cfg, batch, target) in configs.items():
        r = bench_config(cfg, args.batch or batch, args.steps, args.warmup, device, args.compile, peaks,
                         args.processes or torch.get_num_threads())
        r["target_fraction_of_bf16_peak"] = target
        res["configs"][name] = r
    print("\nevery configuration and path: img/s, fraction of the measured matmul peak (bf16 paths: the bf16 peak), "
          "ratio to fp32 eager")
    for name, r in res["configs"].items():
        for p, v in r["paths"].items():
            print(f"  {name:<22} {p:<14} {v['img_per_s']:8.1f} img/s  {100 * v['fraction_of_peak']:5.1f}% of the peak  "
                  f"{v['vs_fp32']:5.2f}x fp32")
        for p, why in r["skipped"].items():
            print(f"  {name:<22} {p:<14} not timed: {why}")
    print("\nsummary (fastest path; fraction of the bf16 matmul peak against the target):")
    for name, r in res["configs"].items():
        frac = r["paths"][r["fastest"]]["fraction_of_peak"]
        tgt = r["target_fraction_of_bf16_peak"]
        met = "" if tgt is None else f" (target {100 * tgt:.0f}%: {'met' if frac >= tgt else 'not met'})"
        print(f"  {name:<22} {r['fastest']:<14} {r['paths'][r['fastest']]['img_per_s']:8.1f} img/s  "
              f"{r['speedup_vs_fp32']:5.2f}x fp32  {100 * frac:5.1f}% of the peak{met}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()

"""Training throughput of the DCGAN step: the paper's 64x64 step (ngf = ndf = 64) and the book's 32x32 one (ngf 32).

Prints, in one run and measured side by side, img/s of

* ``fp32``: plain fp32 eager (contiguous memory), the pytorch/examples baseline;
* ``bf16``: bf16 autocast + channels_last (what ``precision="auto"`` picks on a bf16 CPU);
* ``bf16+compile``: the same under ``torch.compile`` (with ``--compile``);
* ``bf16 xN proc``: on a CPU, N one-thread processes each running the bf16 step at the same
  time (``--processes``, default: one per thread), their img/s summed: how
  :func:`dcgan.train.train_many` trains several runs at once (the book's small
  nets are bound by per-op overhead, which one process per core hides);

the ratio of the fastest to fp32, the FLOPs of one step (``torch.utils.flop_counter``)
and the fraction of this machine's measured bf16 (and fp32) matmul peak each path
reaches. Every path runs the engine's own step, :func:`dcgan.train.gan_step`.

    python bench/train_throughput.py                 # both configurations, CPU or the GPU if there is one
    python bench/train_throughput.py --config 32x32/ngf32 --steps 20 --compile --json out.json
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

from dcgan.models import ModelConfig, build_models, sample_noise
from dcgan.precision import cpu_supports_bf16, default_device
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

    def step() -> dict:
        return gan_step(G, D, oG, oD, real, sample_noise(cfg, batch, gen, device), device=device, precision=prec, nets=nets)

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


# (image size, ngf = ndf, the target share of the bf16 matmul peak): the paper's 64x64 step and the book's 32x32 runs
CONFIGS = {"64x64/ngf64": (64, 64, 0.85), "32x32/ngf32": (32, 32, 0.60)}


def run_processes(size: int, width: int, batch: int, steps: int, warmup: int, n: int) -> float:
    """Summed img/s of ``n`` one-thread processes timing the bf16 step at the same time."""
    with tempfile.TemporaryDirectory() as tmp:
        outs = [os.path.join(tmp, f"{i}.json") for i in range(n)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        procs = [subprocess.Popen([sys.executable, __file__, "--child-bf16", o, "--image-size", str(size), "--width",
                                   str(width), "--batch", str(batch), "--steps", str(steps), "--warmup", str(warmup)],
                                  env=env) for o in outs]
        if any(p.wait() for p in procs):
            raise RuntimeError("a benchmark process failed")
        return sum(json.load(open(o))["img_per_s"] for o in outs)


def bench_config(size: int, width: int, batch: int, steps: int, warmup: int, device: torch.device, compile_: bool,
                 peaks: dict, processes: int = 1) -> dict:
    cfg = ModelConfig(image_size=size, channels=3, nz=100, ngf=width, ndf=width)
    flops = step_flops(cfg, batch)
    bf16_ok = not math.isnan(peaks["bf16"])
    paths = ["fp32"] + (["bf16"] if bf16_ok else []) + (["bf16+compile"] if bf16_ok and compile_ else [])
    out: dict = {"image_size": size, "width": width, "batch": batch, "flops_per_step": flops, "paths": {}}
    print(f"{size}x{size}, batch {batch}, ngf=ndf={width}; one step = {flops / 1e9:.2f} GFLOP")
    for p in paths:
        dt = time_path(setup(cfg, batch, device, p), steps, warmup, device)
        achieved = flops / dt
        peak = peaks["fp32"] if p == "fp32" else peaks["bf16"]
        out["paths"][p] = {"img_per_s": batch / dt, "tflops": achieved / 1e12, "fraction_of_peak": achieved / peak}
        print(f"  {p:<14} {batch / dt:8.1f} img/s  {achieved / 1e12:.3f} TFLOP/s  "
              f"{100 * achieved / peak:5.1f}% of the {'fp32' if p == 'fp32' else 'bf16'} matmul peak", flush=True)
    if processes > 1 and device.type == "cpu" and bf16_ok:
        ips = run_processes(size, width, batch, steps, warmup, processes)
        achieved = flops * ips / batch
        out["paths"][f"bf16 x{processes} proc"] = {"img_per_s": ips, "tflops": achieved / 1e12,
                                                   "fraction_of_peak": achieved / peaks["bf16"]}
        print(f"  {f'bf16 x{processes} proc':<14} {ips:8.1f} img/s  {achieved / 1e12:.3f} TFLOP/s  "
              f"{100 * achieved / peaks['bf16']:5.1f}% of the bf16 matmul peak ({processes} one-thread processes, "
              f"{ips / out['paths']['bf16']['img_per_s']:.2f}x one {torch.get_num_threads()}-thread process)", flush=True)
    best = max(out["paths"], key=lambda k: out["paths"][k]["img_per_s"])
    out["fastest"] = best
    out["speedup_vs_fp32"] = out["paths"][best]["img_per_s"] / out["paths"]["fp32"]["img_per_s"]
    print(f"  fastest: {best}, {out['speedup_vs_fp32']:.2f}x plain fp32 eager; "
          f"{100 * out['paths'][best]['fraction_of_peak']:.1f}% of its matmul peak")
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", nargs="+", choices=list(CONFIGS), default=list(CONFIGS),
                    help="which step to time (default: both, side by side)")
    ap.add_argument("--image-size", type=int, help="time this size instead of --config (with --width)")
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf, with --image-size")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time bf16 + torch.compile")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--processes", type=int, default=None,
                    help="CPU: also time this many one-thread processes at once (default: one per thread; 1: no)")
    ap.add_argument("--json", help="also write the figures here")
    ap.add_argument("--child-bf16", help=argparse.SUPPRESS)  # one process of --processes: time bf16, write img/s here
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_bf16:
        cfg = ModelConfig(image_size=args.image_size, channels=3, nz=100, ngf=args.width, ndf=args.width)
        dt = time_path(setup(cfg, args.batch, torch.device("cpu"), "bf16"), args.steps, args.warmup, torch.device("cpu"))
        with open(args.child_bf16, "w") as f:
            json.dump({"img_per_s": args.batch / dt}, f)
        return {}
    device = default_device()
    bf16_ok = device.type == "cuda" or cpu_supports_bf16()
    peaks = {"bf16": matmul_peak(torch.bfloat16, device) if bf16_ok else float("nan"),
             "fp32": matmul_peak(torch.float32, device)}
    print(f"device {device} ({torch.get_num_threads()} threads); measured matmul peak: bf16 {peaks['bf16'] / 1e12:.3f} "
          f"TFLOP/s, fp32 {peaks['fp32'] / 1e12:.3f} TFLOP/s")
    configs = {f"{args.image_size}x{args.image_size}/ngf{args.width}": (args.image_size, args.width, None)} \
        if args.image_size else {k: CONFIGS[k] for k in args.config}
    res: dict = {"device": str(device), "threads": torch.get_num_threads(), "bf16_matmul_peak_tflops": peaks["bf16"] / 1e12,
                 "fp32_matmul_peak_tflops": peaks["fp32"] / 1e12, "configs": {}}
    for name, (size, width, target) in configs.items():
        r = bench_config(size, width, args.batch, args.steps, args.warmup, device, args.compile, peaks,
                         args.processes or torch.get_num_threads())
        r["target_fraction_of_bf16_peak"] = target
        res["configs"][name] = r
    print("\nsummary (fastest path; fraction of the bf16 matmul peak against the target):")
    for name, r in res["configs"].items():
        frac = r["paths"][r["fastest"]]["fraction_of_peak"]
        tgt = r["target_fraction_of_bf16_peak"]
        met = "" if tgt is None else f" (target {100 * tgt:.0f}%: {'met' if frac >= tgt else 'not met'})"
        print(f"  {name:<12} {r['paths'][r['fastest']]['img_per_s']:8.1f} img/s  {100 * frac:5.1f}%{met}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()

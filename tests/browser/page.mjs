// The exploration page in a real headless Chromium (Debian's, driven by playwright-core; no
// browser is downloaded): every view is opened, clicked through and checked against the API,
// and a screenshot of each is written and checked for content.
//
//   node tests/browser/page.mjs BASE_URL SHOTS_DIR RESULT_JSON
//
// Checks of the stats, histogram and montage routes fail, with the reason printed, when the
// route answers 404 `route-not-found`.
import { chromium } from "playwright-core";
import { mkdirSync, writeFileSync } from "node:fs";

const [base, shots, resultFile] = process.argv.slice(2);
const origin = new URL(base).origin;
mkdirSync(shots, { recursive: true });

let passed = 0, failed = 0;
const skipped = [];
const failures = [];
function check(name, ok, detail = "") {
  if (ok) passed++;
  else {
    failed++;
    failures.push(`${name}${detail ? ": " + detail : ""}`);
  }
  console.log(`${ok ? "ok  " : "FAIL"} ${name}${!ok && detail ? " -- " + detail : ""}`);
}
// The stats, histogram and montage routes have landed: a route that is missing is a failure.
function skip(name, why) {
  check(name, false, why);
}

const api = async (path) => {
  const r = await fetch(`${base}/${path}`);
  return { status: r.status, headers: r.headers, body: r.headers.get("content-type")?.includes("json") ? await r.json() : await r.arrayBuffer() };
};
/** Whether a route exists on this server. */
const routeExists = async (path) => {
  const r = await api(path);
  return !(r.status === 404 && r.body && r.body.code === "route-not-found");
};

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  // WebGL without a GPU: ANGLE on SwiftShader, so the 3D view really draws.
  args: ["--no-sandbox", "--use-gl=angle", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
    "--ignore-gpu-blocklist", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
});
const context = await browser.newContext({ viewport: { width: 1400, height: 1000 } });
const page = await context.newPage();
page.setDefaultTimeout(20000);

// Every request the page makes, every console error, every uncaught exception.
const requests = [];
const consoleErrors = [];
const expected404 = new Set(); // URLs of routes not on this server yet (their 404 is logged)
page.on("request", (r) => requests.push(r.url()));
page.on("response", async (r) => {
  if (r.status() === 404) {
    try {
      if ((await r.json()).code === "route-not-found") expected404.add(r.url());
    } catch (_) { /* not JSON */ }
  }
});
page.on("console", (m) => { if (m.type() === "error") consoleErrors.push({ text: m.text(), url: m.location().url }); });
page.on("pageerror", (e) => consoleErrors.push({ text: `uncaught: ${e.message}`, url: "" }));
const unexpectedErrors = () => consoleErrors.filter((e) => !expected404.has(e.url));

/** Waits for the view to finish its first render. */
async function open(hash) {
  await page.evaluate((h) => { location.hash = h; }, hash);
  await page.waitForSelector(`#view > div[data-ready="1"]`);
}

/** Pixel statistics of an <img> (drawn at its natural size): a hash and how many colours. */
const imgPixels = (sel) => page.$eval(sel, (img) => {
  const c = document.createElement("canvas");
  c.width = img.naturalWidth;
  c.height = img.naturalHeight;
  const ctx = c.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, c.width, c.height).data;
  let h = 2166136261;
  const colours = new Set();
  for (let i = 0; i < d.length; i++) h = Math.imul(h ^ d[i], 16777619) >>> 0;
  let coloured = 0; // pixels that are not gray
  for (let i = 0; i < d.length; i += 4) {
    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
    if (d[i] !== d[i + 1] || d[i + 1] !== d[i + 2]) coloured++;
  }
  return { hash: h, colours: colours.size, coloured, w: c.width, h: c.height };
});

/** A screenshot, written under the view's name and checked for content: many colours and
 * most of it not one flat colour (decoded in the page, so no PNG library is needed here). */
async function shot(name) {
  const file = `${shots}/${name}.png`;
  const buf = await page.screenshot({ path: file, fullPage: true });
  const s = await page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const c = document.createElement("canvas");
    c.width = img.naturalWidth;
    c.height = img.naturalHeight;
    const ctx = c.getContext("2d");
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    const count = new Map();
    for (let i = 0; i < d.length; i += 4) {
      const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2];
      count.set(k, (count.get(k) || 0) + 1);
    }
    const top = Math.max(...count.values());
    return { colours: count.size, flat: top / (d.length / 4) };
  }, buf.toString("base64"));
  check(`screenshot ${name}.png has content`, s.colours > 64 && s.flat < 0.95, JSON.stringify(s));
}

const t0 = Date.now();
try {
  // ---- / : the page, not the JSON index --------------------------------------------------
  const resp = await page.goto(`${base}/`);
  check("/ answers HTML to the browser", resp.status() === 200 && resp.headers()["content-type"].startsWith("text/html"), resp.headers()["content-type"]);
  await page.waitForSelector(`#view > div[data-ready="1"]`);
  const datasets = (await api("v1/datasets")).body;
  const shown = await page.$$eval("#dataset-table tr[data-dataset]", (rows) => rows.map((r) => r.dataset.dataset));
  check("dataset list equals /v1/datasets", JSON.stringify(shown) === JSON.stringify(datasets.map((d) => d.name)), `${shown} vs ${datasets.map((d) => d.name)}`);
  const kinds = await page.$$eval("#dataset-table tr[data-dataset]", (rows) => rows.map((r) => [...r.children].slice(1, 5).map((c) => c.textContent).join("|")));
  check("kind, layout, splits, counts shown per dataset",
    JSON.stringify(kinds) === JSON.stringify(datasets.map((d) => [d.kind, d.layout, d.splits.join(", "), d.items.toLocaleString("en")].join("|"))), JSON.stringify(kinds));

  // Charts: the numbers equal the stats route's (when there is one), else the catalog's.
  const cls = datasets.find((d) => d.kind === "classification");
  const bars = async () => page.$$eval(`section.dataset[data-dataset="${cls.name}"] .bar[data-split]`,
    (bs) => bs.map((b) => [b.dataset.split, b.dataset.key, Number(b.dataset.count)]));
  if (await routeExists(`v1/datasets/${cls.name}/stats`)) {
    // The stats may still be computing: wait until the page stops polling.
    await page.waitForFunction((n) => !document.querySelector(`section.dataset[data-dataset="${n}"] .progress`), cls.name, { timeout: 60000 });
    const stats = (await api(`v1/datasets/${cls.name}/stats`)).body;
    const want = Object.entries(stats.counts).flatMap(([s, c]) => Object.entries(c).map(([k, n]) => [s, k, n]));
    const got = await bars();
    check("chart numbers equal the stats route's counts", JSON.stringify(got) === JSON.stringify(want), `${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
    await page.waitForFunction(() => !document.querySelector('section.dataset[data-dataset="Task09_Spleen"] .progress'), null, { timeout: 60000 });
    const labelBars = await page.$$eval('section.dataset[data-dataset="Task09_Spleen"] .bar[data-split="labels"]', (bs) => bs.length);
    const segStats = (await api("v1/datasets/Task09_Spleen/stats")).body;
    check("label voxel fractions charted per label", !segStats.volumes || labelBars === Object.keys(segStats.volumes.labels || {}).length, `${labelBars}`);
  } else {
    skip("chart numbers equal the stats route's counts", "GET v1/datasets/{d}/stats is 404 route-not-found here (the stats branch adds it)");
    skip("label voxel fractions charted per label", "needs the stats route");
    await page.waitForSelector(`section.dataset[data-dataset="${cls.name}"] .bar`);
    const want = [];
    for (const s of cls.splits) {
      for (const c of (await api(`v1/datasets/${cls.name}/splits/${s}/classes`)).body) want.push([s, c.name, c.count]);
    }
    const got = await bars();
    check("chart numbers equal /classes (no stats route yet)", JSON.stringify(got) === JSON.stringify(want), `${JSON.stringify(got)} vs ${JSON.stringify(want)}`);
  }
  await page.waitForFunction(() => [...document.querySelectorAll("section.dataset")].every((s) => !s.textContent.includes("Loading statistics")));
  await shot("datasets");

  // ---- Classification -------------------------------------------------------------------
  await open(`#/classification?d=${cls.name}&s=train`);
  await page.waitForFunction(() => [...document.querySelectorAll("#thumbs img")].every((i) => i.complete));
  const thumbs = await page.$$eval("#thumbs img", (is) => is.map((i) => i.naturalWidth));
  const total = (await api(`v1/datasets/${cls.name}/splits/train/items?limit=1`)).body.total;
  check("a page of thumbnails, all decoded, never the whole split", thumbs.length === Math.min(24, total) && thumbs.every((w) => w > 0), `${thumbs.length} of ${total}: ${thumbs}`);
  const firstIds = await page.$$eval("#thumbs .thumb", (ts) => ts.map((t) => t.dataset.item));
  await page.click("#next");
  await page.waitForFunction((first) => document.querySelector("#thumbs .thumb")?.dataset.item !== first && document.querySelector('#view > div[data-ready="1"]'), firstIds[0]);
  const nextIds = await page.$$eval("#thumbs .thumb", (ts) => ts.map((t) => t.dataset.item));
  const pageInfo = await page.textContent("#page-info");
  check("next page shows the next items", nextIds.length > 0 && !nextIds.some((i) => firstIds.includes(i)) && pageInfo.startsWith("25"), `${pageInfo}`);
  // Click an item: raw and preprocessed side by side, metadata, histogram.
  const pick = nextIds[3];
  await page.click(`#thumbs .thumb[data-item="${pick}"]`);
  await page.waitForFunction((id) => {
    const r = document.querySelector("#raw-img"), p = document.querySelector("#pre-img");
    return document.querySelector("#item-detail h2")?.textContent === id && document.querySelector('#view > div[data-ready="1"]') &&
      r && p && r.complete && p.complete && r.naturalWidth > 0 && p.naturalWidth > 0;
  }, pick);
  const meta = (await api(`v1/datasets/${cls.name}/splits/train/items/${encodeURIComponent(pick)}`)).body;
  const raw = await imgPixels("#raw-img"), pre = await imgPixels("#pre-img");
  check("raw image at its native size, preprocessed at 64x64", raw.w === meta.image.width && raw.h === meta.image.height && pre.w === 64 && pre.h === 64, JSON.stringify([raw, pre]));
  const urls = await page.$$eval("#item-detail code.url", (cs) => cs.map((c) => c.textContent));
  check("each picture's URL is shown, absolute", urls.some((u) => u.startsWith(base) && u.endsWith(`/image?scale=none&size=${meta.image.height},${meta.image.width}`)) && urls.some((u) => u.endsWith(`${encodeURIComponent(pick)}/image`)), urls.join(" "));
  await page.waitForFunction(() => document.querySelector("#histogram")?.dataset.source);
  const hist = await page.$eval("#histogram", (c) => {
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    let bar = 0;
    for (let i = 0; i < d.length; i += 4) if (d[i] === 59 && d[i + 1] === 125 && d[i + 2] === 216) bar++;
    return { bar, source: c.dataset.source };
  });
  check("the intensity histogram is drawn", hist.bar > 50, JSON.stringify(hist));
  if (await routeExists(`v1/datasets/${cls.name}/splits/train/items/${encodeURIComponent(pick)}/histogram?bins=64`)) {
    check("the histogram comes from the histogram route", hist.source === "api", hist.source);
  } else {
    skip("the histogram comes from the histogram route", "GET .../items/{item}/histogram is 404 route-not-found here (the page computes it from the raw float32 pixels meanwhile)");
  }
  // Edit the chain: size 32,32 nearest.
  await page.fill('#item-detail input[name="size"]', "32,32");
  await page.dispatchEvent('#item-detail input[name="size"]', "change");
  await page.selectOption('#item-detail select[name="mode"]', "nearest");
  await page.waitForFunction(() => { const p = document.querySelector("#pre-img"); return p.complete && p.naturalWidth === 32 && p.src.includes("mode=nearest"); });
  const editedUrl = await page.$$eval("#item-detail code.url", (cs) => cs.map((c) => c.textContent).find((u) => u.includes("size=32,32")));
  check("editing size and mode refetches the picture and shows its URL", !!editedUrl && editedUrl.includes("mode=nearest"), String(editedUrl));
  const montageUrl = `v1/datasets/${cls.name}/splits/train/montage?per_class=8&size=64`;
  if (await routeExists(montageUrl)) {
    await page.waitForSelector("#montage-img");
    await page.waitForFunction(() => document.querySelector("#montage-img").complete);
    const w = await page.$eval("#montage-img", (i) => i.naturalWidth);
    check("the montage is decoded", w > 0, `${w}`);
  } else {
    skip("the montage is decoded", "GET v1/datasets/{d}/splits/{s}/montage is 404 route-not-found here (the stats branch adds it)");
  }
  await shot("classification");

  // ---- Segmentation ---------------------------------------------------------------------
  const seg = "Task09_Spleen", item = "spleen_10";
  const vmeta = (await api(`v1/datasets/${seg}/splits/train/items/${item}`)).body;
  await open(`#/segmentation?d=${seg}&s=train&item=${item}`);
  const loaded = (plane) => page.waitForFunction((p) => {
    const img = document.querySelector(`.plane[data-plane="${p}"] img`);
    return img.complete && img.naturalWidth > 0 && !img.dataset.loading;
  }, plane);
  for (const p of ["axial", "coronal", "sagittal"]) await loaded(p);
  const sizes = await page.$$eval(".plane img", (is) => is.map((i) => [i.getBoundingClientRect().width, i.getBoundingClientRect().height, i.naturalWidth, i.naturalHeight]));
  check("three planes decoded", sizes.length === 3 && sizes.every((s) => s[2] > 0), JSON.stringify(sizes));
  // Coronal: X columns at 0.8 mm, Z rows at 2.5 mm: drawn taller than its pixel count says.
  const [sx, , sz] = vmeta.volume.spacing, [nx, , nz] = vmeta.volume.shape;
  const cor = sizes[1];
  const wantRatio = (nz * sz) / (nx * sx);
  check("pixels drawn with the voxel spacing's aspect ratio", Math.abs(cor[1] / cor[0] - wantRatio) < 0.03, `${cor[1] / cor[0]} vs ${wantRatio}`);
  // The slider fetches a new slice whose pixels differ.
  const before = await imgPixels('.plane[data-plane="axial"] img');
  const axialSrc = await page.$eval('.plane[data-plane="axial"] img', (i) => i.src);
  await page.$eval('.plane[data-plane="axial"] input[type=range]', (r) => { r.value = String(Number(r.value) + 3); r.dispatchEvent(new Event("input")); });
  await page.waitForFunction((old) => document.querySelector('.plane[data-plane="axial"] img').src !== old, axialSrc);
  await loaded("axial");
  const after = await imgPixels('.plane[data-plane="axial"] img');
  const newSrc = await page.$eval('.plane[data-plane="axial"] img', (i) => i.src);
  check("moving the slider fetches a new slice whose pixels differ", before.hash !== after.hash && /index=\d+/.test(newSrc), newSrc);
  // Keyboard: page up on the focused plane moves ten slices.
  const idxBefore = await page.$eval('.plane[data-plane="axial"] input[type=range]', (r) => Number(r.value));
  await page.focus('.plane[data-plane="axial"]');
  await page.keyboard.press("PageDown");
  await page.keyboard.press("ArrowUp");
  const idxAfter = await page.$eval('.plane[data-plane="axial"] input[type=range]', (r) => Number(r.value));
  check("page down and arrow up move the focused plane's slice", idxAfter === idxBefore - 9, `${idxBefore} -> ${idxAfter}`);
  await loaded("axial");
  // Crosshair: a click on the axial plane moves the coronal and sagittal indices.
  const other = async () => page.$$eval('.plane input[type=range]', (rs) => rs.map((r) => Number(r.value)));
  const o1 = await other();
  const box = await page.$eval('.plane[data-plane="axial"] img', (i) => { const r = i.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; });
  await page.mouse.click(box[0] + box[2] * 0.2, box[1] + box[3] * 0.7);
  const o2 = await other();
  check("a click on one plane moves the other planes' indices", o2[0] === o1[0] && o2[1] !== o1[1] && o2[2] !== o1[2], `${o1} -> ${o2}`);
  await loaded("coronal");
  // Overlay toggle changes the pixels (on the axial slice through the mask's middle).
  await page.$eval('.plane[data-plane="axial"] input[type=range]', (r, v) => { r.value = String(v); r.dispatchEvent(new Event("input")); }, Math.floor(vmeta.volume.shape[2] / 2));
  await page.waitForFunction((v) => document.querySelector('.plane[data-plane="axial"] img').src.includes(`index=${v}&`), Math.floor(vmeta.volume.shape[2] / 2));
  await loaded("axial");
  const withOverlay = await imgPixels('.plane[data-plane="axial"] img');
  await page.click('input[name="overlay"]');
  await page.waitForFunction(() => !document.querySelector('.plane[data-plane="axial"] img').src.includes("overlay"));
  await loaded("axial");
  const noOverlay = await imgPixels('.plane[data-plane="axial"] img');
  check("the overlay toggle changes the pixels", withOverlay.hash !== noOverlay.hash && withOverlay.coloured > 0 && noOverlay.coloured === 0, `${withOverlay.coloured} vs ${noOverlay.coloured} coloured pixels`);
  await page.click('input[name="overlay"]');
  for (const p of ["axial", "coronal", "sagittal"]) await loaded(p);
  // Dragging sets a custom window.
  await page.mouse.move(box[0] + box[2] / 2, box[1] + box[3] / 2);
  await page.mouse.down();
  await page.mouse.move(box[0] + box[2] / 2 + 60, box[1] + box[3] / 2 + 20, { steps: 5 });
  await page.mouse.up();
  await page.waitForFunction(() => document.querySelector('.plane[data-plane="axial"] img').src.includes("window="));
  const win = await page.$eval('input[name="window"]', (i) => i.value);
  check("dragging sets window=center,width", /^-?\d+,\d+$/.test(win), win);
  for (const p of ["axial", "coronal", "sagittal"]) await loaded(p);
  // Legend: each label's voxels as the item's metadata counts them.
  const legend = await page.$$eval("#legend tr[data-label]", (rs) => rs.map((r) => [Number(r.dataset.label), r.children[2].textContent]));
  check("the legend lists each label's voxel count", JSON.stringify(legend) === JSON.stringify(vmeta.label.values.map((v) => [v.value, v.voxels.toLocaleString("en")])), JSON.stringify(legend));
  const links = await page.$$eval('a[download]', (as) => as.map((a) => a.getAttribute("href")));
  check("download links for volume and mask, NIfTI and npz, all relative",
    ["/volume.nii.gz", "/volume.nii.gz?part=label", "/volume.npz?part=both"].every((s) => links.some((l) => l.endsWith(s))) && links.every((l) => l.startsWith("v1/")), links.join(" "));
  await shot("segmentation");
  check("no console errors so far", unexpectedErrors().length === 0, JSON.stringify(unexpectedErrors()));

  // An API error shows its message: a preset typed where a window goes names the presets.
  await page.fill('input[name="window"]', "ct-abdomen");
  await page.dispatchEvent('input[name="window"]', "change");
  await page.waitForSelector('.plane[data-plane="axial"] .plane-error .error');
  const err = await page.textContent('.plane[data-plane="axial"] .plane-error .error');
  check("an API error shows its detail, naming the presets", err.includes("400") && err.includes("preset=ct-abdomen") && err.includes("ct-lung"), err);
  await shot("segmentation-error");
  // Its failed loads are logged as console errors (some a little later): set them aside.
  const deliberate = (e) => e.url.includes("window=ct-abdomen");

  // ---- 3D --------------------------------------------------------------------------------
  await open(`#/3d?d=${seg}&s=train&item=${item}`);
  await page.waitForFunction(() => document.querySelector("#nv-canvas").dataset.loaded || document.querySelector("#nv-status .error"), null, { timeout: 60000 });
  const status = await page.textContent("#nv-status");
  check("NiiVue loads the volume and its mask", await page.$eval("#nv-canvas", (c) => c.dataset.loaded === "1"), status);
  const px = await page.evaluate(() => {
    const nv = window.medserve.nv;
    nv.drawScene(); // the drawing buffer is only readable in the task that drew it
    const gl = nv.gl, w = gl.drawingBufferWidth, h = gl.drawingBufferHeight;
    const d = new Uint8Array(w * h * 4);
    gl.readPixels(0, 0, w, h, gl.RGBA, gl.UNSIGNED_BYTE, d);
    let lit = 0, red = 0;
    for (let i = 0; i < d.length; i += 4) {
      if (Math.abs(d[i] - 13) + Math.abs(d[i + 1] - 13) + Math.abs(d[i + 2] - 20) > 30) lit++;
      if (d[i] > 150 && d[i + 1] < 90) red++;
    }
    return { w, h, lit: lit / (w * h), red };
  });
  check("the NiiVue canvas is not blank", px.lit > 0.02, JSON.stringify(px));
  const nvReqs = requests.filter((u) => u.includes("volume.nii.gz"));
  check("NiiVue fetched the resized volume and mask from medserve", nvReqs.some((u) => u.includes("size=128,128,64") && !u.includes("part=label")) && nvReqs.some((u) => u.includes("part=label")), nvReqs.join(" "));
  await shot("3d");

  // ---- Augmentation ---------------------------------------------------------------------
  const aitem = "HeadCT~005001";
  await open(`#/augment?d=${cls.name}&s=train&item=${encodeURIComponent(aitem)}`);
  await page.waitForFunction(() => document.querySelectorAll("#aug-grid img[data-augment]").length === 16 && [...document.querySelectorAll("#aug-grid img")].every((i) => i.complete && i.naturalWidth > 0));
  const cells = await page.$$eval("#aug-grid figure", (fs) => fs.map((f) => ({ seed: Number(f.dataset.seed), aug: f.querySelector("code.augment")?.textContent, src: f.querySelector("img").src })));
  const hashes = [];
  for (let k = 0; k < 16; k++) hashes.push((await imgPixels(`#aug-grid figure[data-seed="${k}"] img`)).hash);
  const want = [];
  for (let k = 0; k < 16; k++) {
    want.push((await api(`v1/datasets/${cls.name}/splits/train/items/${encodeURIComponent(aitem)}/image?rand_flip=0.5&rand_rotate=15&rand_rotate_prob=0.5&seed=${k}`)).headers.get("x-augment"));
  }
  check("16 images, each captioned with its X-Augment value", cells.length === 16 && cells.every((c, k) => c.seed === k && c.aug === want[k] && c.src.startsWith("blob:")), JSON.stringify(cells.map((c) => c.aug)));
  // Same draw, same pixels; a different draw, different pixels (seeds that drew nothing at all
  // are the unaugmented image, so they agree with each other).
  let consistent = true;
  for (let i = 0; i < 16; i++) for (let j = 0; j < i; j++) if ((want[i] === want[j]) !== (hashes[i] === hashes[j])) consistent = false;
  const distinctDraws = new Set(want).size;
  check("the 16 pictures differ exactly where their draws differ", consistent && new Set(hashes).size === distinctDraws && distinctDraws >= 8, `${new Set(hashes).size} distinct pictures, ${distinctDraws} distinct draws`);
  await page.waitForFunction(() => document.querySelectorAll("#chain-steps figure").length === 6 && [...document.querySelectorAll("#chain-steps figure div.muted")].every((d) => d.textContent));
  const steps = await page.$$eval("#chain-steps figure", (fs) => fs.map((f) => f.querySelector("div.muted").textContent));
  check("the chain step by step: raw (H,W), channel-first (1,H,W), resized, scaled to [0,1], flipped, rotated",
    steps[0].startsWith("shape (64,64)") && steps[1].startsWith("shape (1,64,64)") && steps[3].includes("values 0 … 1") && steps.every((s) => s.startsWith("shape (")), JSON.stringify(steps));
  const note = await page.textContent(".note");
  check("the range_x note is shown", note.includes("859 degrees") && note.includes("0.2618"), note);
  await shot("augment");
  await page.click('input[name="degrees"]');
  await page.waitForFunction(() => document.querySelectorAll("#aug-grid img[data-augment]").length === 16 && document.querySelector("#aug-grid code.url").textContent.includes("rand_rotate=0.2618"));
  const small = await page.$$eval("#aug-grid figure .muted", (ms) => ms.map((m) => Math.abs(parseFloat(m.textContent.replace(/[()°\s]/g, "")))));
  check("the 15-degree toggle draws angles within 15 degrees", small.length > 0 && small.every((a) => a <= 15.0001), JSON.stringify(small));

  // ---- Whole run -------------------------------------------------------------------------
  const left = unexpectedErrors().filter((e) => !deliberate(e));
  check("no console errors outside the deliberate API error", left.length === 0, JSON.stringify(left));
  const outside = requests.filter((u) => !u.startsWith(origin + "/") && !u.startsWith("blob:") && !u.startsWith("data:"));
  check(`no request outside medserve (${requests.length} recorded)`, outside.length === 0, outside.join(" "));
  check("the page used only relative URLs (everything under /v1/, /ui/ or the page)",
    requests.filter((u) => u.startsWith(origin)).every((u) => /^\/(v1\/|ui\/|$|#)/.test(new URL(u).pathname)), "");
} catch (e) {
  check("the run finished", false, e.stack || String(e));
  try { await shot("failure"); } catch (_) { /* the page may be gone */ }
} finally {
  await browser.close();
}
const seconds = ((Date.now() - t0) / 1000).toFixed(1);
writeFileSync(resultFile, JSON.stringify({ passed, failed, skipped, failures, seconds }));
console.log(`page checks: ${passed} passed, ${failed} failed, ${skipped.length} skipped (${seconds} s)`);
process.exit(failed ? 1 : 0);

// The page at MedNIST scale (not part of CI): first paint of `/`, the classification view of a
// 58,954-image dataset (one page of thumbnails, never all of them), paging, and the stats
// view until complete, in a real headless Chromium.
//
//   node tests/browser/scale.mjs BASE_URL DATASET
import { chromium } from "playwright-core";

const [base, dataset] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--no-first-run", "--disable-background-networking"],
});
const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
const t0 = Date.now();
await page.goto(`${base}/`, { waitUntil: "load" });
const paint = await page.evaluate(() =>
  performance.getEntriesByType("paint").map((e) => [e.name, Math.round(e.startTime)]));
console.log("first paint (ms):", JSON.stringify(paint), "load:", Date.now() - t0);
const t1 = Date.now();
await page.goto(`${base}/#/classification?d=${encodeURIComponent(dataset)}`, { waitUntil: "load" });
await page.waitForFunction(() => {
  const imgs = [...document.querySelectorAll("img")];
  return imgs.length > 0 && imgs.every((i) => i.complete && i.naturalWidth > 0);
}, null, { timeout: 60000 });
const thumbs = await page.evaluate(() => document.querySelectorAll("img").length);
console.log(`classification view of ${dataset}: ${thumbs} images decoded in ${Date.now() - t1} ms`);
const next = page.getByRole("button", { name: /next/i }).first();
if (await next.count()) {
  const t2 = Date.now();
  await next.click();
  await page.waitForFunction(() => [...document.querySelectorAll("img")].every((i) => i.complete && i.naturalWidth > 0));
  console.log(`next page: ${Date.now() - t2} ms`);
}
const t3 = Date.now();
for (;;) {
  const r = await (await fetch(`${base}/v1/datasets/${dataset}/stats`)).json();
  if (r.complete) { console.log(`stats complete: ${r.done}/${r.total} in ${Date.now() - t3} ms after the views`); break; }
  await new Promise((res) => setTimeout(res, 250));
}
await browser.close();

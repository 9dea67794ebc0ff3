// What a person does with the web UI, step by step, through Playwright. Each step that checks
// something records the feature it exercised (harness.feature), so the report's feature table
// is what the tests actually did.
"use strict";

const crypto = require("node:crypto");
const fs = require("node:fs");
const path = require("node:path");

const { feature, overflow } = require("./harness");
const { API, getJson, waitFor } = require("./nodes");

const VIEWS = ["datasets", "network", "space", "slots", "market", "metrics"];

/** RFC 8187 ext-value encoding: what is not attr-char is percent-encoded (encodeURIComponent leaves ' ( ) * as they are). */
const rfc8187 = (text) => encodeURIComponent(text).replace(/['()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());

const sha256 = (buf) => crypto.createHash("sha256").update(buf).digest("hex");

function fmtBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = Number(n);
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + " " + units[i];
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

/** Goes to a view the way a person does: the nav links, through the menu on a narrow screen. */
async function gotoView(page, view, profile) {
  const toggle = page.getByTestId("menu-toggle");
  const narrow = await toggle.isVisible();
  await feature(narrow ? "Navigation through the menu button (narrow screens)" : "Navigation bar links (wide screens)", profile, async () => {
    if (narrow) {
      await toggle.click();
      assert((await toggle.getAttribute("aria-expanded")) === "true", "the menu button does not say it is expanded");
    }
    await page.getByTestId(`nav-${view}`).click();
    await page.waitForFunction((v) => document.body.dataset.loaded === v && !document.querySelector(`[data-testid=view-${v}]`).hidden, view, { timeout: 15000 });
    assert((await page.getByTestId(`nav-${view}`).getAttribute("aria-current")) === "page", "the nav link of the view shown is not marked current");
    if (narrow) assert(!(await page.getByTestId("nav").isVisible()), "the menu stays open after choosing a view");
  });
}

async function openUi(context, url, watcher) {
  const page = await context.newPage();
  const w = watcher(page);
  await page.goto(url);
  await page.waitForFunction(() => document.body.dataset.loaded, null, { timeout: 15000 });
  return { page, w };
}

function assertClean(w, what) {
  const problems = w.problems();
  w.reset();
  if (problems.length) throw new Error(`${what}: ${problems.slice(0, 6).join("; ")}`);
}

const rowOf = (page, cid) => page.locator(`[data-testid=dataset-row][data-cid="${cid}"]`);

/** Uploads through the file input; resolves with the CID the UI shows. */
async function uploadWithPicker(page, profile, { name, mimeType, buffer, timeoutMs = 30000 }) {
  return feature("Upload through the file picker, with a progress bar", profile, async () => {
    await page.getByTestId("file-input").setInputFiles({ name, mimeType, buffer });
    return waitUploaded(page, name, timeoutMs);
  });
}

async function waitUploaded(page, name, timeoutMs) {
  const status = page.getByTestId("upload-status");
  const handle = await page.waitForFunction((n) => {
    const el = document.querySelector("[data-testid=upload-status]");
    const t = el.textContent;
    if (t.includes(n) && t.startsWith("Uploaded")) return { ok: true, cid: el.dataset.cid };
    if (t.includes(n) && t.includes("failed")) return { ok: false, text: t };
    return false;
  }, name, { timeout: timeoutMs });
  const outcome = await handle.jsonValue();
  if (!outcome.ok) throw new Error(`the upload failed in the UI: ${outcome.text}`);
  const percent = await page.getByTestId("upload-percent").textContent();
  assert(percent === "100%", `the progress shows ${percent} after the upload`);
  assert(/^z[1-9A-HJ-NP-Za-km-z]+$/.test(outcome.cid), `not a CID: ${outcome.cid}`);
  await status.isVisible();
  return outcome.cid;
}

/** Upload (picker) → listed → download, same bytes → details → protect (validation first) →
 *  delete (cancel first). */
async function datasetJourney({ page, w, node, profile, index }) {
  const buffer = crypto.randomBytes(700 * 1024 + index * 1111);
  const name = `Résumé ${profile} 日本 #${index}.bin`;
  const cid = await uploadWithPicker(page, profile, { name, mimeType: "application/x-neverust-test", buffer });
  const row = rowOf(page, cid);
  await feature("Dataset list: filename, size, MIME type, protected or not", profile, async () => {
    await row.waitFor({ timeout: 10000 });
    assert((await row.getByTestId("dataset-filename").textContent()) === name, "the filename shown is not the uploaded one");
    assert((await row.getByTestId("dataset-size").textContent()) === fmtBytes(buffer.length), "the size shown is wrong");
    assert((await row.getByTestId("dataset-mime").textContent()) === "application/x-neverust-test", "the MIME type shown is wrong");
    assert((await row.getByTestId("dataset-protected").getAttribute("data-protected")) === "false", "a fresh upload is shown as protected");
    assert((await row.getByTestId("dataset-cid").textContent()) === cid, "the CID shown is not the upload's");
    const listed = await getJson(`${node.base}${API}/data`);
    const item = listed.content.find((d) => d.cid === cid);
    assert(item && item.manifest.filename === name, "the node did not store the filename as sent (Content-Disposition filename*)");
    assert(item.manifest.mimetype === "application/x-neverust-test", "the node did not store the Content-Type");
  });
  await feature("Download through the link, identical bytes (SHA-256)", profile, async () => {
    const link = row.getByTestId("dataset-download");
    assert((await link.getAttribute("download")) !== null, "the download link has no download attribute");
    const href = new URL(await link.getAttribute("href"), page.url()).toString();
    w.downloads.add(href);
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 20000 }), link.click()]);
    const file = await download.path();
    const got = fs.readFileSync(file);
    assert(got.length === buffer.length, `downloaded ${got.length} bytes, uploaded ${buffer.length}`);
    assert(sha256(got) === sha256(buffer), "the downloaded bytes differ from the uploaded ones");
    assert(download.suggestedFilename() === name, `the download is named ${JSON.stringify(download.suggestedFilename())}`);
  });
  await feature("Manifest details and status (expand)", profile, async () => {
    const toggle = row.getByTestId("dataset-details-toggle");
    await toggle.click();
    assert((await toggle.getAttribute("aria-expanded")) === "true", "the details button does not say it is expanded");
    await row.getByTestId("dataset-status-value").waitFor({ timeout: 10000 });
    assert((await row.getByTestId("dataset-status-value").textContent()) === "Completed", "the dataset's status is not Completed");
    await toggle.click();
    assert(await row.getByTestId("dataset-details").isHidden(), "the details do not collapse");
  });
  let protectedCid;
  await feature("Protect: inline validation of K and M (2 ≤ K, 1 ≤ M ≤ K)", profile, async () => {
    await row.getByTestId("dataset-protect-toggle").click();
    const form = row.getByTestId("protect-form");
    await form.waitFor();
    let posts = 0;
    const count = (r) => { if (r.url().includes("/protect")) posts++; };
    page.on("request", count);
    await form.getByTestId("protect-k").fill("1");
    await form.getByTestId("protect-submit").click();
    assert(/K \(data slots\) must be at least 2/.test(await form.getByTestId("protect-error").textContent()), "K = 1 is not refused inline");
    assert((await form.getByTestId("protect-k").getAttribute("aria-invalid")) === "true", "K = 1 is not marked invalid");
    await form.getByTestId("protect-k").fill("2");
    await form.getByTestId("protect-m").fill("3");
    await form.getByTestId("protect-submit").click();
    assert(/cannot be greater than K/.test(await form.getByTestId("protect-error").textContent()), "M > K is not refused inline");
    page.off("request", count);
    assert(posts === 0, "an invalid K or M was sent to the node");
  });
  await feature("Protect (erasure-code K=2, M=1) from the list", profile, async () => {
    const form = row.getByTestId("protect-form");
    await form.getByTestId("protect-m").fill("1");
    assert((await form.getByTestId("protect-error").textContent()) === "", "K=2, M=1 still shows an error");
    await form.getByTestId("protect-submit").click();
    const prot = page.locator("[data-testid=dataset-row]", { has: page.locator("[data-protected=true]") })
      .filter({ has: page.getByTestId("dataset-filename").getByText(name, { exact: true }) });
    await prot.waitFor({ timeout: 30000 });
    protectedCid = await prot.getAttribute("data-cid");
    assert(/K=2 M=1/.test(await prot.getByTestId("dataset-protected").textContent()), "the protected dataset does not show K and M");
    await prot.getByTestId("dataset-details-toggle").click();
    await prot.getByTestId("detail-coding").waitFor({ timeout: 5000 });
    const listed = await getJson(`${node.base}${API}/data`);
    const item = listed.content.find((d) => d.cid === protectedCid);
    assert(item && item.manifest.protected && item.manifest.ecK === 2 && item.manifest.ecM === 1, "the node has no such protected dataset");
  });
  await feature("Delete with a confirmation dialog (cancel keeps it)", profile, async () => {
    const prot = rowOf(page, protectedCid);
    await prot.getByTestId("dataset-delete").click();
    const dialog = page.getByTestId("confirm-dialog");
    await dialog.waitFor({ state: "visible" });
    await page.getByTestId("confirm-no").click();
    await dialog.waitFor({ state: "hidden" });
    assert(await prot.isVisible(), "cancelling the confirmation deleted the dataset");
    for (const c of [protectedCid, cid]) {
      await rowOf(page, c).getByTestId("dataset-delete").click();
      await dialog.waitFor({ state: "visible" });
      await page.getByTestId("confirm-yes").click();
      await rowOf(page, c).waitFor({ state: "detached", timeout: 15000 });
    }
    const listed = await getJson(`${node.base}${API}/data`);
    assert(!listed.content.some((d) => d.cid === cid || d.cid === protectedCid), "the node still lists a deleted dataset");
  });
  assertClean(w, "the dataset journey");
  return { cid, protectedCid };
}

/** A synthetic drop of a file (DataTransfer) on the drop zone. */
async function dropJourney({ page, w, node, profile }) {
  const buffer = crypto.randomBytes(300 * 1024);
  const name = `dropped ${profile}.txt`;
  const cid = await feature("Upload by drag and drop (DataTransfer drop on the zone)", profile, async () => {
    await page.evaluate(({ b64, name: n }) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], n, { type: "text/plain" }));
      const zone = document.querySelector("[data-testid=dropzone]");
      zone.dispatchEvent(new DragEvent("dragenter", { bubbles: true, cancelable: true, dataTransfer: dt }));
      zone.dispatchEvent(new DragEvent("dragover", { bubbles: true, cancelable: true, dataTransfer: dt }));
      window.__dropHighlighted = zone.classList.contains("over");
      zone.dispatchEvent(new DragEvent("drop", { bubbles: true, cancelable: true, dataTransfer: dt }));
    }, { b64: buffer.toString("base64"), name });
    assert(await page.evaluate(() => window.__dropHighlighted), "the drop zone is not highlighted while a file is dragged over it");
    return waitUploaded(page, name, 30000);
  });
  await feature("Download through the link, identical bytes (SHA-256)", profile, async () => {
    const row = rowOf(page, cid);
    await row.waitFor({ timeout: 10000 });
    const link = row.getByTestId("dataset-download");
    w.downloads.add(new URL(await link.getAttribute("href"), page.url()).toString());
    const [download] = await Promise.all([page.waitForEvent("download", { timeout: 20000 }), link.click()]);
    assert(sha256(fs.readFileSync(await download.path())) === sha256(buffer), "the dropped file downloads with other bytes");
  });
  assertClean(w, "the drop journey");
  return cid;
}

/** A filename made of HTML must show as text. */
async function filenameSafetyJourney({ page, w, node, profile }) {
  const name = `<img src=x onerror="window.__pwned=1"><b>bold</b>.txt`;
  const res = await fetch(`${node.base}${API}/data`, {
    method: "POST",
    headers: { "Content-Type": "text/plain", "Content-Disposition": `attachment; filename*=UTF-8''${rfc8187(name)}` },
    body: "hello",
  });
  const cid = (await res.text()).trim();
  assert(res.ok, `upload by the API failed: ${cid}`);
  await feature("Filenames from the API shown as text (no HTML injection)", profile, async () => {
    await page.getByTestId("datasets-refresh").click();
    const row = rowOf(page, cid);
    await row.waitFor({ timeout: 10000 });
    assert((await row.getByTestId("dataset-filename").textContent()) === name, "the filename is not shown literally");
    assert((await row.locator("img, b").count()) === 0, "the filename was parsed as HTML");
    assert(!(await page.evaluate(() => window.__pwned)), "a script in a filename ran");
  });
  assertClean(w, "the filename journey");
  return cid;
}

async function networkJourney({ page, w, node, peer, profile }) {
  await gotoView(page, "network", profile);
  const info = await getJson(`${node.base}${API}/debug/info`);
  await feature("Network: peer ID, addresses, reachability", profile, async () => {
    await page.waitForFunction((id) => document.querySelector("[data-testid=peer-id]").textContent === id, info.id, { timeout: 10000 });
    const addrs = await page.getByTestId("addrs").getByTestId("addr").allTextContents();
    assert(addrs.includes(info.addrs[0]), "the listen address is not shown");
    assert((await page.getByTestId("nat").textContent()) === (info.reachability && info.reachability.nat || "unknown"), "the NAT verdict is not the node's");
  });
  await feature("Network: SPR with a copy button (clipboard holds it)", profile, async () => {
    // The node signs its record anew at each request (a new sequence number each second), so
    // the record shown is compared with the node's up to the sequence number: the same envelope
    // key and peer ID.
    const now = (await getJson(`${node.base}${API}/debug/info`)).spr;
    const stable = (t) => String(t).slice(0, 100);
    const shown = await page.getByTestId("spr").textContent();
    assert(shown.startsWith("spr:") && stable(shown) === stable(now), "the SPR shown is not the node's record");
    await page.getByTestId("copy-spr").click();
    await page.waitForFunction(() => /copied/.test(document.querySelector("[data-testid=copy-status]").textContent), null, { timeout: 5000 });
    const clip = await page.evaluate(() => navigator.clipboard.readText());
    assert(clip.length > 100 && stable(clip) === stable(now), "the clipboard does not hold the SPR");
  });
  if (peer) {
    await feature("Network: connected peers with ping", profile, async () => {
      const row = page.locator(`[data-testid=peer-row][data-peer="${peer.info.id}"]`);
      await row.waitFor({ timeout: 15000 });
      assert(/^\d+(\.\d+)? ms$/.test(await row.getByTestId("peer-row-ping").textContent()), "no ping time shown for the peer");
    });
  }
  await feature("Network: connect form shows the node's error", profile, async () => {
    w.allow(/\/connect\//, 400);
    await page.getByTestId("connect-peer").fill("not-a-peer-id");
    await page.getByTestId("connect-submit").click();
    const res = await fetch(`${node.base}${API}/connect/not-a-peer-id`);
    const expected = (await res.json()).error;
    await page.waitForFunction((t) => document.querySelector("[data-testid=connect-error]").textContent === t, expected, { timeout: 5000 });
  });
  assertClean(w, "the network journey");
}

async function spaceJourney({ page, w, node, profile }) {
  await gotoView(page, "space", profile);
  await feature("Space: used / reserved / free as a donut and a bar", profile, async () => {
    const space = await getJson(`${node.base}${API}/space`);
    const chart = page.getByTestId("space-chart");
    await page.waitForFunction((max) => document.querySelector("[data-testid=space-chart]").dataset.max === String(max), space.quotaMaxBytes, { timeout: 10000 });
    assert((await page.getByTestId("space-total").textContent()) === fmtBytes(space.quotaMaxBytes), "the quota shown is wrong");
    const used = Number(await chart.getAttribute("data-used"));
    const dash = await page.getByTestId("space-seg-used").getAttribute("stroke-dasharray");
    if (used > 0) assert(parseFloat(dash) > 0, "used space is not drawn");
    const box = await chart.boundingBox();
    assert(box && box.width > 80, "the donut is not drawn");
  });
  assertClean(w, "the space journey");
}

async function slotsJourney({ page, w, node, profile }) {
  await gotoView(page, "slots", profile);
  await feature("Slots held and repairs (from /metrics repairs_*)", profile, async () => {
    const slots = await getJson(`${node.base}${API}/slots`);
    const rows = await page.getByTestId("slot-row").count();
    assert(rows === slots.slots.length, `${rows} slots shown, the node holds ${slots.slots.length}`);
    await page.waitForFunction(() => /^\d/.test(document.querySelector("[data-testid=m-repairs-started]").textContent), null, { timeout: 10000 });
    const metrics = await (await fetch(`${node.base}/metrics`)).text();
    const started = Number((/^repairs_started_total (\S+)/m.exec(metrics) || [])[1]);
    assert(Number((await page.getByTestId("m-repairs-started").textContent()).replace(/,/g, "")) === started, "repairs started differs from /metrics");
  });
  assertClean(w, "the slots journey");
}

async function marketNoChainJourney({ page, w, node, profile }) {
  w.allow(/\/api\/archivist\/v1\/(sales|storage)\//, 503);
  await gotoView(page, "market", profile);
  await feature("Marketplace without a chain: says so, with the node's hint (503)", profile, async () => {
    const res = await fetch(`${node.base}${API}/sales/availability`);
    assert(res.status === 503, `the node answers ${res.status} without a chain`);
    const hint = (await res.json()).error;
    await page.getByTestId("market-unavailable").waitFor({ timeout: 10000 });
    assert((await page.getByTestId("market-hint").textContent()) === hint, "the hint is not the node's message");
    assert(await page.getByTestId("market-body").isHidden(), "the marketplace forms are shown without a chain");
  });
  assertClean(w, "the marketplace (no chain) journey");
}

async function metricsJourney({ page, w, profile }) {
  await gotoView(page, "metrics", profile);
  await feature("Live charts of /metrics (SVG, polled)", profile, async () => {
    await page.waitForFunction(() => Number(document.querySelector("[data-testid=chart-http-rate-svg]").dataset.points) >= 2, null, { timeout: 20000 });
    for (const id of ["bytes-stored", "peers", "upload-rate", "download-rate", "http-rate"]) {
      const now = await page.getByTestId(`chart-${id}-now`).textContent();
      assert(now !== "–", `the ${id} chart has no value`);
    }
    const points = await page.getByTestId("chart-bytes-stored-svg").locator("polyline").getAttribute("points");
    assert(points.split(" ").length >= 2, "the bytes stored chart draws no line");
  });
  assertClean(w, "the metrics journey");
}

/** Keyboard only: Tab to a nav link, Enter; the focus is visible. */
async function keyboardJourney({ page, w, profile }) {
  await feature("Keyboard: Tab reaches the navigation, Enter opens a view, focus is visible", profile, async () => {
    await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
    await page.locator("body").focus();
    const toggle = page.getByTestId("menu-toggle");
    const narrow = await toggle.isVisible();
    const target = narrow ? "menu-toggle" : "nav-space";
    let reached = false;
    for (let i = 0; i < 20 && !reached; i++) {
      await page.keyboard.press("Tab");
      reached = await page.evaluate((t) => document.activeElement && document.activeElement.dataset.testid === t, target);
    }
    assert(reached, `Tab never reaches ${target}`);
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert(outline !== "none", "the focused control has no visible outline");
    if (narrow) {
      await page.keyboard.press("Enter");
      assert((await toggle.getAttribute("aria-expanded")) === "true", "Enter does not open the menu");
      await page.keyboard.press("Escape");
      assert((await toggle.getAttribute("aria-expanded")) === "false", "Escape does not close the menu");
      await page.keyboard.press("Enter");
      let onLink = false;
      for (let i = 0; i < 6 && !onLink; i++) {
        await page.keyboard.press("Tab");
        onLink = await page.evaluate(() => document.activeElement && document.activeElement.dataset.testid === "nav-space");
      }
      assert(onLink, "Tab does not go from the menu button into the menu");
    }
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => document.body.dataset.loaded === "space", null, { timeout: 10000 });
  });
  assertClean(w, "the keyboard journey");
}

/** Every view: a screenshot, no horizontal overflow, no console errors or failed requests. */
async function pagesJourney({ page, w, profile, shotDir, shots, allow503 }) {
  if (allow503) w.allow(/\/api\/archivist\/v1\/(sales|storage)\//, 503);
  const problems = [];
  fs.mkdirSync(shotDir, { recursive: true });
  for (const view of VIEWS) {
    await gotoView(page, view, profile);
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.waitForTimeout(250);
    const file = path.join(shotDir, `${view}.png`);
    await page.screenshot({ path: file, fullPage: true });
    shots.push({ view, file });
    await feature("No horizontal overflow on any view", profile, async () => {
      const over = await overflow(page);
      if (over.length) {
        problems.push(`${view}: ${over.join("; ")}`);
        throw new Error(`${view} overflows: ${over[0]}`);
      }
    }).catch(() => {});
    await feature("No console errors or failed requests", profile, async () => {
      const p = w.problems();
      w.reset();
      if (p.length) {
        problems.push(`${view}: ${p.join("; ")}`);
        throw new Error(p[0]);
      }
    }).catch(() => {});
  }
  if (problems.length) throw new Error(problems.join("\n"));
}

module.exports = {
  VIEWS, gotoView, openUi, assertClean, uploadWithPicker, waitUploaded, datasetJourney, dropJourney,
  filenameSafetyJourney, networkJourney, spaceJourney, slotsJourney, marketNoChainJourney,
  metricsJourney, keyboardJourney, pagesJourney, fmtBytes, sha256, assert, rowOf, rfc8187,
};

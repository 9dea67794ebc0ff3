// The web UI's browser suite: real nodes, Debian's Chromium driven by playwright-core, 12 device
// profiles, a report. Run through run.sh (it installs what is needed); prints `N passed, M failed`
// last and exits non-zero on any failure.
//
// Environment: NEVERUST_BIN (node binary), NEVERUST_BROWSER_OUT (output directory),
// NEVERUST_BROWSER_PROFILES (comma-separated substrings of profile names, to run fewer),
// NEVERUST_BROWSER_NO_DEVNET=1 (skip the marketplace journeys), NEVERUST_BROWSER_EMBEDDED=1 (test
// the UI files embedded in the binary instead of node/ui/ as they are now), NEVERUST_BROWSER_PARALLEL
// (profiles at once, default 2).
"use strict";

const fs = require("node:fs");
const os = require("node:os");
const path = require("node:path");
const crypto = require("node:crypto");
const { chromium } = require("playwright-core");

const { results, features, test, skip, watch, overflow, slug } = require("./lib/harness");
const nodes = require("./lib/nodes");
const j = require("./lib/journeys");
const market = require("./lib/market");
const { writeReport } = require("./lib/report");
const { profiles: allProfiles } = require("./profiles");

const ROOT = path.resolve(__dirname, "../..");
const CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync"];

async function main() {
  const t0 = Date.now();
  const out = path.resolve(ROOT, process.env.NEVERUST_BROWSER_OUT || "target/browser-report");
  const reportDir = path.join(out, "report");
  const logDir = path.join(out, "logs");
  fs.rmSync(reportDir, { recursive: true, force: true });
  fs.rmSync(logDir, { recursive: true, force: true });
  fs.mkdirSync(reportDir, { recursive: true });
  fs.mkdirSync(logDir, { recursive: true });
  const bin = path.resolve(ROOT, process.env.NEVERUST_BIN || path.join(process.env.CARGO_TARGET_DIR || "target", "release/neverust"));
  const embedded = process.env.NEVERUST_BROWSER_EMBEDDED === "1";
  const uiDir = embedded ? null : path.join(ROOT, "node/ui");
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "neverust-browser-"));
  const wanted = (process.env.NEVERUST_BROWSER_PROFILES || "").split(",").map((s) => s.trim().toLowerCase()).filter(Boolean);
  const profiles = wanted.length ? allProfiles.filter((p) => wanted.some((w) => p.name.toLowerCase().includes(w))) : allProfiles;
  const parallel = Math.max(1, Number(process.env.NEVERUST_BROWSER_PARALLEL || 2));
  const shots = new Map();
  const meta = { date: new Date().toISOString(), bin, uiSource: embedded ? "embedded in the binary" : uiDir, devnet: "no devnet", browser: "", ms: 0 };

  let browser = null;
  const cleanup = async () => {
    if (browser) await browser.close().catch(() => {});
    await nodes.stopAll();
  };
  for (const signal of ["SIGINT", "SIGTERM"]) {
    process.once(signal, async () => {
      console.log(`stopping on ${signal}`);
      await cleanup();
      process.exit(130);
    });
  }

  try {
    if (!fs.existsSync(bin)) throw new Error(`no node binary at ${bin}: build it (cargo build --release -p neverust) or set NEVERUST_BIN`);
    console.log(`# node ${bin}; UI from ${meta.uiSource}; output ${out}`);

    // The devnet takes a while to come up: start it first, use it last.
    // Only NEVERUST_BROWSER_NO_DEVNET=1 skips the marketplace journeys: a binary without a
    // working `devnet` fails them.
    const useDevnet = process.env.NEVERUST_BROWSER_NO_DEVNET !== "1";
    const devnetPromise = useDevnet
      ? nodes.startDevnet({ bin, nodes: 5, workDir: work, logDir, uiDir }).then((d) => d, (e) => ({ error: e }))
      : Promise.resolve(null);
    if (!useDevnet) meta.devnet = "no devnet (NEVERUST_BROWSER_NO_DEVNET=1)";

    // Two plain nodes (no chain): the UI under test on A, B its peer.
    const A = await nodes.startNode({ bin, name: "node-a", workDir: work, logDir, uiDir });
    const B = await nodes.startNode({ bin, name: "node-b", workDir: work, logDir, uiDir, bootstrap: A.info.addrs[0] });
    await nodes.waitFor(async () => (await nodes.getJson(`${A.base}${nodes.API}/debug/info`)).table.nodes.length > 0, { timeoutMs: 20000, what: "node A to see node B" });
    await seed(A);
    console.log(`# node A ${A.base} (peer ${A.info.id}), node B ${B.base}`);

    browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: CHROMIUM_ARGS });
    meta.browser = `Chromium ${browser.version()}`;

    let devnet = null;
    let devnetOnce = null;
    const getDevnet = () => (devnetOnce = devnetOnce || settleDevnet());
    const settleDevnet = async () => {
      const d = await devnetPromise;
      if (d && d.error) {
        devnet = { error: d.error };
        meta.devnet = `devnet failed: ${d.error.message}`;
      } else if (d) {
        devnet = d;
        meta.devnet = `devnet: ${d.config.nodes.map((n) => `${n.name} ${n.role}`).join(", ")}`;
        console.log(`# ${meta.devnet} (${d.config.chain})`);
      } else devnet = false;
      return devnet;
    };

    let index = 0;
    for (let i = 0; i < profiles.length; i += parallel) {
      await Promise.all(profiles.slice(i, i + parallel).map((profile) =>
        runProfile({ profile, index: index++, browser, A, B, getDevnet, reportDir, shots, useDevnet })));
    }

    await selfChecks({ browser, bin, work, logDir, reportDir, profile: profiles[0] || allProfiles[0] });
  } catch (e) {
    await test("suite setup", null, () => { throw e; });
  } finally {
    meta.ms = Date.now() - t0;
    await cleanup();
    // The devnet's logs live in its directory: keep them with the others.
    const devnetDir = path.join(work, "devnet");
    if (fs.existsSync(devnetDir)) {
      for (const f of fs.readdirSync(devnetDir)) {
        if (f.endsWith(".log")) fs.copyFileSync(path.join(devnetDir, f), path.join(logDir, `devnet-${f}`));
      }
    }
    const file = writeReport({ outDir: out, reportDir, results, features, profiles, shots, meta });
    fs.rmSync(work, { recursive: true, force: true });
    const passed = results.filter((r) => r.ok === true).length;
    const failed = results.filter((r) => r.ok === false).length;
    const skipped = results.filter((r) => r.ok === null).length;
    console.log(`# report ${file}; logs ${logDir}; ${(meta.ms / 1000).toFixed(0)} s`);
    console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}`);
    process.exitCode = failed > 0 || passed === 0 ? 1 : 0;
  }
}

/** A few datasets on node A before the journeys, so every list has something in it. */
async function seed(A) {
  const put = async (name, type, bytes) => {
    const res = await fetch(`${A.base}${nodes.API}/data`, {
      method: "POST",
      headers: { "Content-Type": type, "Content-Disposition": `attachment; filename*=UTF-8''${j.rfc8187(name)}` },
      body: bytes,
    });
    if (!res.ok) throw new Error(`seeding ${name}: ${res.status} ${await res.text()}`);
    return (await res.text()).trim();
  };
  await put("holiday photos (2026).tar", "application/x-tar", crypto.randomBytes(900 * 1024));
  const notes = await put("notes € and a rather long file name that must wrap on a phone.txt", "text/plain", Buffer.from("hello\n".repeat(5000)));
  const res = await fetch(`${A.base}${nodes.API}/data/${notes}/protect?k=2&m=1`, { method: "POST" });
  if (!res.ok) throw new Error(`seeding protect: ${res.status} ${await res.text()}`);
}

async function newContext(browser, profile, origins) {
  const { name, ...options } = profile;
  const context = await browser.newContext({ ...options, acceptDownloads: true });
  for (const origin of origins) await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin });
  context.setDefaultTimeout(15000);
  return context;
}

async function runProfile({ profile, index, browser, A, B, getDevnet, reportDir, shots, useDevnet }) {
  const name = profile.name;
  const shotDir = path.join(reportDir, "screens", slug(name));
  const list = [];
  shots.set(name, list);
  // The journeys on the plain nodes and those on the devnet (mostly waiting for the chain) run
  // at once, each in its own browser context.
  await Promise.all([
    plainJourneys({ profile, name, index, browser, A, B, shotDir, list }),
    useDevnet ? marketJourneys({ profile, name, index, browser, getDevnet, shotDir, list }) : skipMarket(name),
  ]);
  // Screenshots in the order of the views, the devnet's last.
  list.sort((a, b) => (a.view.startsWith("market (") ? 1 : 0) - (b.view.startsWith("market (") ? 1 : 0));
}

const MARKET_TESTS = ["marketplace: offer space on a host", "marketplace: request storage on the devnet → purchase started",
  "marketplace: a host's sales and proofs", "marketplace views on the devnet: screenshot, no overflow"];

function skipMarket(name) {
  for (const t of MARKET_TESTS) skip(t, name, "no devnet: NEVERUST_BROWSER_NO_DEVNET=1");
}

async function plainJourneys({ profile, name, index, browser, A, B, shotDir, list }) {
  let context;
  try {
    context = await newContext(browser, profile, [A.base]);
  } catch (e) {
    await test("open a browser context", name, () => { throw e; });
    return;
  }
  // One page on node A; each journey starts from a fresh load.
  let page = null;
  let w = null;
  const fresh = async (view = "datasets") => {
    if (page) await page.close().catch(() => {});
    ({ page, w } = await j.openUi(context, `${A.base}/#/${view}`, watch));
    return { page, w };
  };
  const wide = profile.viewport.width >= 1900 && profile.viewport.width < 2000;

  await test("datasets: upload (file picker) → listed → download, same SHA-256 → protect → delete", name, async () => {
    await fresh();
    await j.datasetJourney({ page, w, node: A, profile: name, index });
  }, { timeoutMs: 90000 });
  if (wide) {
    await test("datasets: drag-and-drop upload (synthetic DataTransfer drop)", name, async () => {
      await fresh();
      await j.dropJourney({ page, w, node: A, profile: name });
    });
    await test("datasets: a filename made of HTML is shown as text", name, async () => {
      await fresh();
      await j.filenameSafetyJourney({ page, w, node: A, profile: name });
    });
  }
  await test("network: peer ID, addresses, SPR copy, peers with ping, connect errors", name, async () => {
    await fresh();
    await j.networkJourney({ page, w, node: A, peer: B, profile: name });
  });
  await test("space: quota used / reserved / free drawn", name, async () => {
    await fresh();
    await j.spaceJourney({ page, w, node: A, profile: name });
  });
  await test("slots and repairs", name, async () => {
    await fresh();
    await j.slotsJourney({ page, w, node: A, profile: name });
  });
  await test("marketplace on a node without a chain: 503 and its hint shown", name, async () => {
    await fresh();
    await j.marketNoChainJourney({ page, w, node: A, profile: name });
  });
  await test("keyboard only: Tab, Enter, Escape, visible focus", name, async () => {
    await fresh();
    await j.keyboardJourney({ page, w, profile: name });
  });
  // On the same page: its metrics samples have been piling up since the keyboard journey began.
  await test("live metrics charts", name, async () => {
    if (!page) await fresh();
    await j.metricsJourney({ page, w, profile: name });
  }, { timeoutMs: 60000 });
  await test("every view: screenshot, no horizontal overflow, no console errors or failed requests", name, async () => {
    await fresh();
    await j.pagesJourney({ page, w, profile: name, shotDir, shots: list, allow503: true });
  }, { timeoutMs: 90000 });
  if (page) await page.close().catch(() => {});
  await context.close().catch(() => {});
}

async function marketJourneys({ profile, name, index, browser, getDevnet, shotDir, list }) {
  const devnet = await getDevnet();
  if (!devnet) return skipMarket(name);
  if (devnet.error) {
    await test(MARKET_TESTS[0], name, () => { throw devnet.error; });
    return;
  }
  const all = devnet.config.nodes;
  const client = all.find((n) => n.role === "bootstrap") || all[0];
  const hosts = all.filter((n) => n.role === "host");
  const host = hosts[index % hosts.length];
  const context = await newContext(browser, profile, [client.base, host.base]);
  let mp = null;
  const openOn = async (node, view) => {
    if (mp) await mp.page.close().catch(() => {});
    mp = await j.openUi(context, `${node.base}/#/${view}`, watch);
    return mp;
  };
  await test(MARKET_TESTS[1], name, async (entry) => {
    const { page: p, w: ww } = await openOn(client, "datasets");
    const id = await market.requestStorageJourney({ page: p, w: ww, client, hosts, profile: name, index });
    entry.notes.push(`request ${id}`);
  }, { timeoutMs: 240000 });
  await test(MARKET_TESTS[0], name, async () => {
    const { page: p, w: ww } = await openOn(host, "datasets");
    await market.offerSpaceJourney({ page: p, w: ww, host, profile: name });
  });
  await test(MARKET_TESTS[2], name, async () => {
    const { page: p, w: ww } = await openOn(host, "datasets");
    await market.hostSalesJourney({ page: p, w: ww, host, profile: name });
  }, { timeoutMs: 120000 });
  await test(MARKET_TESTS[3], name, async () => {
    const problems = [];
    for (const [who, node] of [["client", client], ["host", host]]) {
      const { page: p, w: ww } = await openOn(node, "market");
      await p.waitForFunction(() => document.body.dataset.loaded === "market", null, { timeout: 15000 });
      await p.waitForTimeout(300);
      const file = path.join(shotDir, `market-devnet-${who}.png`);
      fs.mkdirSync(shotDir, { recursive: true });
      await p.screenshot({ path: file, fullPage: true });
      list.push({ view: `market (devnet ${who})`, file });
      const over = await overflow(p);
      if (over.length) problems.push(`${who}: ${over.join("; ")}`);
      const bad = ww.problems();
      if (bad.length) problems.push(`${who}: ${bad.join("; ")}`);
    }
    if (problems.length) throw new Error(problems.join("\n"));
  });
  if (mp) await mp.page.close().catch(() => {});
  await context.close().catch(() => {});
}

/** The suite must catch a broken page: plant a break in a copy of the UI and check it fails. */
async function selfChecks({ browser, bin, work, logDir, reportDir, profile }) {
  const broken = path.join(work, "broken-ui");
  fs.cpSync(path.join(ROOT, "node/ui"), broken, { recursive: true });
  const css = path.join(broken, "style.css");
  fs.appendFileSync(css, "\n/* planted by the browser suite */\n[data-testid=\"dataset-count\"] { display: inline-block; width: 150vw; }\n");
  const js = path.join(broken, "app.js");
  const source = fs.readFileSync(js, "utf8");
  const uploadLine = "xhr.open(\"POST\", `${API}/data`);";
  let C = null;
  const name = `${profile.name} (planted break)`;
  try {
    if (!source.includes(uploadLine)) throw new Error("app.js no longer has the upload line the self-check breaks; update run.js");
    fs.writeFileSync(js, source.replace(uploadLine, "xhr.open(\"POST\", `${API}/data-planted-break`);"));
    C = await nodes.startNode({ bin, name: "node-broken-ui", workDir: work, logDir, uiDir: broken });
  } catch (e) {
    await test("self-check: the suite catches planted breaks", null, () => { throw e; });
    return;
  }
  const context = await newContext(browser, profile, [C.base]);
  await test("self-check: an element wider than the viewport is caught by the overflow check", name, async (entry) => {
    const { page } = await j.openUi(context, `${C.base}/#/datasets`, watch);
    const over = await overflow(page);
    const file = path.join(reportDir, "screens", "planted-break-overflow.png");
    await page.screenshot({ path: file, fullPage: false });
    if (!over.length) throw new Error("the planted overflow was NOT detected: the overflow check is blind");
    entry.notes.push(`detected: ${over[0]}`);
    await page.close();
  });
  await test("self-check: a broken upload handler is caught by the upload journey", name, async (entry) => {
    const { page } = await j.openUi(context, `${C.base}/#/datasets`, watch);
    let caught = null;
    try {
      await j.uploadWithPicker(page, name, { name: "planted.bin", mimeType: "application/octet-stream", buffer: crypto.randomBytes(4096), timeoutMs: 10000 });
    } catch (e) {
      caught = e;
    }
    if (!caught) throw new Error("the planted broken upload was NOT detected: the upload journey passed");
    entry.notes.push(`detected: ${caught.message.split("\n")[0]}`);
    await page.close();
  });
  // The planted run's features are not the UI's: keep them out of the table.
  for (const f of features.values()) f.profiles.delete(name);
  for (const [k, f] of features) if (f.profiles.size === 0) features.delete(k);
  await context.close();
  await C.stop();
}

main();

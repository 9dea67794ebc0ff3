// The suite's own small test harness: tests with timeouts, features recorded as the tests
// exercise them, and the per-page checks (horizontal overflow, console errors, failed requests).
"use strict";

const results = []; // {name, profile, ok, ms, error, expectedFailure}
const features = new Map(); // feature → {profiles: Map(profile → ok), details: []}

function slug(text) {
  return String(text).toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
}

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what} timed out after ${Math.round(ms / 1000)} s`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

let counter = 0;
/** Runs one test; never throws. */
async function test(name, profile, fn, { timeoutMs = 120000 } = {}) {
  const started = Date.now();
  const full = profile ? `${profile}: ${name}` : name;
  const entry = { name, profile, ok: false, ms: 0, error: null, notes: [] };
  results.push(entry);
  try {
    await withTimeout(Promise.resolve().then(() => fn(entry)), timeoutMs, full);
    entry.ok = true;
  } catch (e) {
    entry.error = (e && (e.stack || e.message)) || String(e);
  }
  entry.ms = Date.now() - started;
  const n = ++counter;
  if (entry.ok) console.log(`ok ${n} - ${full} (${(entry.ms / 1000).toFixed(1)} s)`);
  else {
    console.log(`not ok ${n} - ${full} (${(entry.ms / 1000).toFixed(1)} s)`);
    for (const line of String(entry.error).split("\n").slice(0, 8)) console.log(`  # ${line}`);
  }
  return entry;
}

/** A test that is not run, and says why (counted apart from passed and failed). */
function skip(name, profile, reason) {
  results.push({ name, profile, ok: null, ms: 0, error: null, skipped: reason, notes: [] });
  console.log(`ok ${++counter} - ${profile ? profile + ": " : ""}${name} # SKIP ${reason}`);
}

/** Runs a step of a journey and records the feature it exercises, passed or failed. */
async function feature(name, profile, fn) {
  let f = features.get(name);
  if (!f) {
    f = { profiles: new Map() };
    features.set(name, f);
  }
  try {
    const value = await fn();
    if (f.profiles.get(profile) !== false) f.profiles.set(profile, true);
    return value;
  } catch (e) {
    f.profiles.set(profile, false);
    throw new Error(`[${name}] ${e.message}`, { cause: e });
  }
}

/** Watches a page for console errors, uncaught exceptions, failed requests and error answers. */
function watch(page) {
  const w = { console: [], pageErrors: [], failed: [], responses: [], allowed: [] };
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const text = m.text();
    // Chromium logs every answer >= 400 as a console error; answers are judged below, by status.
    if (/^Failed to load resource: the server responded with a status of \d+/.test(text)) return;
    w.console.push(text);
  });
  page.on("pageerror", (e) => w.pageErrors.push(e.message));
  page.on("requestfailed", (r) => {
    const failure = r.failure();
    const text = failure ? failure.errorText : "failed";
    // A link followed as a download is aborted as a navigation: that is how downloads end.
    if (/ERR_ABORTED/.test(text) && w.downloads && w.downloads.has(r.url())) return;
    w.failed.push(`${r.method()} ${r.url()}: ${text}`);
  });
  page.on("response", (r) => {
    if (r.status() >= 400) w.responses.push({ url: r.url(), status: r.status(), method: r.request().method() });
  });
  w.downloads = new Set();
  /** An error answer this journey expects (e.g. 503 from the marketplace of a node without a chain). */
  w.allow = (pattern, status) => w.allowed.push({ pattern, status });
  w.problems = () => {
    const out = [];
    for (const t of w.console) out.push(`console error: ${t}`);
    for (const t of w.pageErrors) out.push(`uncaught exception: ${t}`);
    for (const t of w.failed) out.push(`request failed: ${t}`);
    for (const r of w.responses) {
      if (w.allowed.some((a) => a.pattern.test(r.url) && (a.status === undefined || a.status === r.status))) continue;
      out.push(`unexpected ${r.status} for ${r.method} ${r.url}`);
    }
    return out;
  };
  w.reset = () => { w.console.length = 0; w.pageErrors.length = 0; w.failed.length = 0; w.responses.length = 0; };
  return w;
}

/** Elements (and the document) that reach past the viewport's right edge. */
async function overflow(page) {
  return page.evaluate(() => {
    const doc = document.documentElement;
    const vw = doc.clientWidth;
    const out = [];
    if (doc.scrollWidth > vw) out.push(`document.scrollWidth ${doc.scrollWidth} > clientWidth ${vw}`);
    if (document.body.scrollWidth > vw) out.push(`body.scrollWidth ${document.body.scrollWidth} > clientWidth ${vw}`);
    const describe = (el) => {
      const id = el.getAttribute("data-testid");
      return el.tagName.toLowerCase() + (id ? `[data-testid=${id}]` : "") + (el.className && typeof el.className === "string" ? "." + el.className.trim().split(/\s+/).join(".") : "");
    };
    for (const el of document.querySelectorAll("body *")) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      if (r.right > vw + 0.5 || r.left < -0.5) {
        out.push(`${describe(el)} spans ${Math.round(r.left)}..${Math.round(r.right)} px of a ${vw} px viewport`);
        if (out.length >= 12) break;
      }
    }
    return out;
  });
}

module.exports = { results, features, test, skip, feature, watch, overflow, slug, withTimeout };

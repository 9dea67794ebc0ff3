// The HTML report: every profile's screenshots, each journey's result, and the features table
// built from what the tests recorded while they ran.
"use strict";

const fs = require("node:fs");
const path = require("node:path");

const esc = (s) => String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

function writeReport({ outDir, reportDir, results, features, profiles, shots, meta }) {
  fs.mkdirSync(reportDir, { recursive: true });
  const passed = results.filter((r) => r.ok === true).length;
  const failed = results.filter((r) => r.ok === false).length;
  const skipped = results.filter((r) => r.ok === null).length;
  const rel = (file) => path.relative(reportDir, file).split(path.sep).join("/");
  const profileNames = profiles.map((p) => p.name);

  const featureRows = [...features.entries()].map(([name, f]) => {
    const cells = profileNames.map((p) => {
      const v = f.profiles.get(p);
      return `<td class="${v === true ? "pass" : v === false ? "fail" : "none"}">${v === true ? "✓" : v === false ? "✗" : ""}</td>`;
    });
    const extra = [...f.profiles.keys()].filter((p) => !profileNames.includes(p));
    const ok = [...f.profiles.values()].every(Boolean);
    return `<tr><th scope="row" class="${ok ? "pass" : "fail"}">${esc(name)}</th>${cells.join("")}<td>${esc(extra.join(", "))}</td></tr>`;
  }).join("\n");

  const resultRows = results.map((r) => `<tr class="${r.ok === true ? "pass" : r.ok === false ? "fail" : "skip"}">
<td>${esc(r.profile || "—")}</td><td>${esc(r.name)}</td><td>${r.ok === true ? "passed" : r.ok === false ? "failed" : "skipped"}</td>
<td>${(r.ms / 1000).toFixed(1)} s</td><td><pre>${esc(r.ok === false ? String(r.error).split("\n").slice(0, 6).join("\n") : r.skipped || (r.notes || []).join("\n"))}</pre></td></tr>`).join("\n");

  const shotSections = profiles.map((p) => {
    const list = shots.get(p.name) || [];
    const own = results.filter((r) => r.profile === p.name);
    const status = own.every((r) => r.ok !== false) ? "pass" : "fail";
    return `<section class="profile"><h3 class="${status}">${esc(p.name)} <small>${p.viewport.width}×${p.viewport.height}${p.isMobile ? ", mobile" : ""}, ×${p.deviceScaleFactor || 1}</small></h3>
<div class="shots">${list.map((s) => `<figure><a href="${esc(rel(s.file))}"><img src="${esc(rel(s.file))}" alt="${esc(p.name)}: ${esc(s.view)}"></a><figcaption>${esc(s.view)}</figcaption></figure>`).join("")}</div></section>`;
  }).join("\n");

  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Neverust web UI: browser test report</title>
<style>
body { font-family: system-ui, sans-serif; margin: 16px; color: #1a202c; }
h1 { margin: 0 0 4px; } .meta { color: #555; margin: 0 0 16px; }
.summary { font-size: 1.2rem; font-weight: 600; }
table { border-collapse: collapse; margin: 8px 0 24px; font-size: 0.9rem; }
th, td { border: 1px solid #d8dee8; padding: 4px 6px; text-align: left; vertical-align: top; }
.features td { text-align: center; min-width: 2.2em; }
.features thead th { writing-mode: vertical-rl; transform: rotate(180deg); font-weight: 500; white-space: nowrap; }
td.pass, th.pass, tr.pass td:nth-child(3) { color: #22643f; } td.pass { background: #e3f5ea; }
td.fail, th.fail, tr.fail td:nth-child(3), h3.fail { color: #9b2c2c; } td.fail { background: #fde2e2; }
tr.fail { background: #fff5f5; } tr.skip { color: #777; }
pre { margin: 0; white-space: pre-wrap; max-width: 70ch; font-size: 0.8rem; }
.shots { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; } figure img { display: block; width: 160px; height: 240px; object-fit: cover; object-position: top; border: 1px solid #ccc; }
figcaption { font-size: 0.8rem; text-align: center; }
.wrap { overflow-x: auto; }
</style></head><body>
<h1>Neverust web UI: browser test report</h1>
<p class="meta">${esc(meta.date)} · ${esc(meta.browser)} · node binary ${esc(meta.bin)} · UI files ${esc(meta.uiSource)} · ${esc(meta.devnet)} · ${(meta.ms / 1000).toFixed(0)} s</p>
<p class="summary">${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ""}</p>
<h2>Features exercised</h2>
<p>Each row is a feature a test exercised (recorded as the step ran), each column a device profile: ✓ passed there, ✗ failed there, empty: not exercised there.</p>
<div class="wrap"><table class="features"><thead><tr><th>Feature</th>${profileNames.map((n) => `<th>${esc(n)}</th>`).join("")}<th>Other runs</th></tr></thead><tbody>
${featureRows}
</tbody></table></div>
<h2>Journeys</h2>
<div class="wrap"><table><thead><tr><th>Profile</th><th>Journey</th><th>Result</th><th>Time</th><th>Details</th></tr></thead><tbody>
${resultRows}
</tbody></table></div>
<h2>Screenshots</h2>
${shotSections}
</body></html>
`;
  const file = path.join(reportDir, "index.html");
  fs.writeFileSync(file, html);
  fs.writeFileSync(path.join(outDir, "results.json"), JSON.stringify({
    meta, passed, failed, skipped,
    results: results.map((r) => ({ profile: r.profile, name: r.name, ok: r.ok, ms: r.ms, error: r.error, skipped: r.skipped })),
    features: Object.fromEntries([...features.entries()].map(([k, f]) => [k, Object.fromEntries(f.profiles)])),
  }, null, 2));
  return file;
}

module.exports = { writeReport };

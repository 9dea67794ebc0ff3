"use strict";
// Neverust web UI: plain JavaScript, no framework, no build step. It talks to this node's own
// API (same origin, /api/archivist/v1) and reads /metrics for the live charts. Every text that
// comes from the API is put in the page with textContent, never parsed as HTML.

(() => {
  const API = "/api/archivist/v1";
  const POLL_MS = 3000;
  const HISTORY = 100; // metric samples kept for the charts (5 minutes at 3 s)

  // ---------------------------------------------------------------- helpers

  const tid = (id, root = document) => root.querySelector(`[data-testid="${id}"]`);

  /** An element: attrs are attributes (class, testid, on* handlers as functions), children are
   *  nodes or strings (as text). */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "testid") el.dataset.testid = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === undefined || child === null || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  const SVG_NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, String(value));
    return el;
  }

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  /** The message of an error answer: the API's {"error": "..."}, else the status line. */
  function errorMessage(status, statusText, contentType, bodyText) {
    if (contentType && contentType.includes("json")) {
      try {
        const body = JSON.parse(bodyText);
        if (body && typeof body.error === "string") return body.error;
      } catch (_) { /* not JSON after all */ }
    }
    if (bodyText && bodyText.length < 300) return bodyText;
    return `${status} ${statusText || "error"}`;
  }

  async function request(url, options = {}) {
    const init = { method: options.method || "GET", headers: Object.assign({}, options.headers) };
    if (options.json !== undefined) {
      init.body = JSON.stringify(options.json);
      init.headers["Content-Type"] = "application/json";
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (e) {
      throw new ApiError(0, "the node does not answer (" + (e && e.message ? e.message : "network error") + ")");
    }
    const type = response.headers.get("content-type") || "";
    if (!response.ok) {
      const text = await response.text().catch(() => "");
      throw new ApiError(response.status, errorMessage(response.status, response.statusText, type, text));
    }
    if (response.status === 204) return null;
    if (type.includes("json")) return response.json();
    return response.text();
  }

  const api = (path, options) => request(API + path, options);

  function fmtBytes(n) {
    if (n === undefined || n === null || !isFinite(n)) return "–";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    let v = Number(n);
    while (Math.abs(v) >= 1024 && i < units.length - 1) {
      v /= 1024;
      i++;
    }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : v < 100 ? 1 : 0)) + " " + units[i];
  }

  function fmtNum(n, digits = 0) {
    if (n === undefined || n === null || !isFinite(n)) return "–";
    return Number(n).toLocaleString("en-US", { maximumFractionDigits: digits });
  }

  function fmtDuration(s) {
    s = Number(s);
    if (!isFinite(s)) return "–";
    if (s < 120) return `${s} s`;
    if (s < 7200) return `${Math.round(s / 60)} min`;
    if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
    return `${(s / 86400).toFixed(1)} days`;
  }

  const short = (text, keep = 8) =>
    typeof text === "string" && text.length > keep * 2 + 1 ? `${text.slice(0, keep)}…${text.slice(-keep)}` : text;

  let toastTimer = null;
  function toast(message, kind) {
    const el = tid("toast");
    el.textContent = message;
    el.className = "toast show" + (kind === "error" ? " error" : "");
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { el.className = "toast"; }, kind === "error" ? 7000 : 4000);
  }

  function setError(el, message) {
    el.textContent = message || "";
  }

  function markInvalid(input, invalid) {
    if (invalid) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }

  async function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        return true;
      } catch (_) { /* fall back below */ }
    }
    const area = h("textarea", { class: "visually-hidden", readonly: true });
    area.value = text;
    document.body.append(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
    area.remove();
    return ok;
  }

  /** Asks in a modal dialog; resolves true when the person confirms. */
  function confirmAction(title, text, okLabel) {
    const dialog = tid("confirm-dialog");
    tid("confirm-title").textContent = title;
    tid("confirm-text").textContent = text;
    tid("confirm-yes").textContent = okLabel || "Delete";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
      dialog.returnValue = "";
      dialog.showModal();
      tid("confirm-no").focus();
    });
  }

  /** RFC 8187 value: UTF-8, percent-encoded (attr-char stays as is). */
  function rfc8187(text) {
    return encodeURIComponent(text).replace(/['()*]/g, (c) => "%" + c.charCodeAt(0).toString(16).toUpperCase());
  }

  /** A stored filename as a file may be named here: the node's own rule (`safe_filename` in
   *  node/src/api/headers.rs): the last path component, no control characters, no trailing dots
   *  or spaces, at most 255 bytes; "" when nothing is left (the node's download header decides). */
  function safeFilename(name) {
    let base = String(name || "").split(/[\\/]/).pop()
      .replace(/[\u0000-\u001f\u007f-\u009f]/g, "").trim().replace(/[. ]+$/, "");
    const utf8 = new TextEncoder();
    while (utf8.encode(base).length > 255) base = Array.from(base).slice(0, -1).join("");
    return base;
  }

  // ---------------------------------------------------------------- metrics

  /** OpenMetrics text → Map name → [{labels, value}]. */
  function parseMetrics(text) {
    const out = new Map();
    for (const raw of text.split("\n")) {
      const line = raw.trim();
      if (!line || line.startsWith("#")) continue;
      const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
      if (!m) continue;
      const labels = {};
      if (m[3]) {
        const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
        let l;
        while ((l = re.exec(m[3]))) labels[l[1]] = l[2].replace(/\\(.)/g, (_, c) => (c === "n" ? "\n" : c));
      }
      const value = m[4] === "+Inf" ? Infinity : m[4] === "-Inf" ? -Infinity : Number(m[4]);
      if (!out.has(m[1])) out.set(m[1], []);
      out.get(m[1]).push({ labels, value });
    }
    return out;
  }

  function metricSum(sample, name, filter) {
    const rows = sample && sample.metrics.get(name);
    if (!rows) return undefined;
    let sum = 0;
    for (const row of rows) if (!filter || filter(row.labels)) sum += row.value;
    return sum;
  }

  const samples = []; // {t (ms), metrics}
  let latest = null;

  /** Charts: what is drawn, from a sample (and the one before it for rates). */
  const CHARTS = [
    { id: "bytes-stored", title: "Bytes stored", fmt: fmtBytes, value: (s) => metricSum(s, "bytes_stored") },
    { id: "peers", title: "Connected peers", fmt: (v) => fmtNum(v), value: (s) => metricSum(s, "peer_count") },
    { id: "upload-rate", title: "Upload", fmt: (v) => fmtBytes(v) + "/s", rate: (s) => metricSum(s, "upload_bytes_total") },
    { id: "download-rate", title: "Download", fmt: (v) => fmtBytes(v) + "/s", rate: (s) => metricSum(s, "download_bytes_total") },
    { id: "http-rate", title: "HTTP requests", fmt: (v) => fmtNum(v, 2) + "/s", rate: (s) => metricSum(s, "http_requests_total") },
    {
      id: "exchange-rate", title: "Block exchange (sent + received)", fmt: (v) => fmtBytes(v) + "/s",
      rate: (s) => (metricSum(s, "block_bytes_sent_total") || 0) + (metricSum(s, "block_bytes_received_total") || 0),
    },
  ];

  function chartValue(chart, i) {
    const s = samples[i];
    if (chart.value) return chart.value(s);
    if (i === 0) return undefined;
    const prev = samples[i - 1];
    const a = chart.rate(prev);
    const b = chart.rate(s);
    const dt = (s.t - prev.t) / 1000;
    if (a === undefined || b === undefined || dt <= 0) return undefined;
    return Math.max(0, (b - a) / dt);
  }

  const W = 300;
  const H = 90;
  function buildCharts() {
    const root = tid("charts");
    for (const chart of CHARTS) {
      const now = h("span", { class: "now", testid: `chart-${chart.id}-now`, text: "–" });
      const line = svg("polyline", { class: "line", points: "" });
      const area = svg("polygon", { class: "area", points: "" });
      const maxLabel = svg("text", { class: "axis", x: 4, y: 12 });
      const timeLabel = svg("text", { class: "axis", x: 4, y: H - 4 });
      const graph = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": `${chart.title} over time`, preserveAspectRatio: "none" });
      graph.dataset.testid = `chart-${chart.id}-svg`;
      graph.append(
        svg("line", { class: "grid-line", x1: 0, y1: H - 0.5, x2: W, y2: H - 0.5 }),
        svg("line", { class: "grid-line", x1: 0, y1: 16, x2: W, y2: 16 }),
        area, line, maxLabel, timeLabel,
      );
      const figure = h("figure", { class: "card chart", testid: `chart-${chart.id}` },
        h("h2", { text: chart.title }), now, graph);
      chart.el = { now, line, area, maxLabel, timeLabel, graph };
      root.append(figure);
    }
  }

  function drawCharts() {
    for (const chart of CHARTS) {
      if (!chart.el) continue;
      const values = samples.map((_, i) => chartValue(chart, i));
      const known = values.filter((v) => v !== undefined && isFinite(v));
      const last = known.length ? known[known.length - 1] : undefined;
      chart.el.now.textContent = last === undefined ? "–" : chart.fmt(last);
      const max = Math.max(1e-9, ...known);
      // The samples so far span the width (the chart fills from the first sample on).
      const n = Math.max(2, values.length);
      const pts = [];
      values.forEach((v, i) => {
        if (v === undefined || !isFinite(v)) return;
        const x = W - (values.length - 1 - i) * (W / (n - 1));
        const y = H - 2 - (v / max) * (H - 22);
        pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
      });
      chart.el.line.setAttribute("points", pts.join(" "));
      if (pts.length) {
        const firstX = pts[0].split(",")[0];
        chart.el.area.setAttribute("points", `${firstX},${H} ${pts.join(" ")} ${W},${H}`);
      } else chart.el.area.setAttribute("points", "");
      chart.el.maxLabel.textContent = known.length ? "max " + chart.fmt(max) : "";
      const span = samples.length > 1 ? Math.round((samples[samples.length - 1].t - samples[0].t) / 1000) : 0;
      chart.el.timeLabel.textContent = span ? `last ${fmtDuration(span)}` : "collecting…";
      chart.el.graph.dataset.points = String(pts.length);
    }
  }

  let sampling = false;
  async function sampleMetrics() {
    if (sampling) return;
    sampling = true;
    try {
      const text = await request("/metrics");
      latest = { t: Date.now(), metrics: parseMetrics(text) };
      samples.push(latest);
      while (samples.length > HISTORY) samples.shift();
      nodeUp(true);
      drawCharts();
      updateMetricStats();
    } catch (e) {
      nodeUp(false, e.message);
    } finally {
      sampling = false;
    }
  }

  function setStat(id, text) {
    const el = tid(id);
    if (el) el.textContent = text;
  }

  function updateMetricStats() {
    const s = latest;
    if (!s) return;
    const v = (name) => metricSum(s, name);
    setStat("m-slots-held", fmtNum(v("slots_held")));
    setStat("m-repairs-started", fmtNum(v("repairs_started_total")));
    setStat("m-repairs-completed", fmtNum(v("repairs_completed_total")));
    setStat("m-repairs-failed", fmtNum(v("repairs_failed_total")));
    setStat("m-repair-bytes", fmtBytes(v("repair_bytes_total")));
    setStat("m-blocks-recovered", fmtNum(v("blocks_recovered_total")));
    setStat("m-datasets-protected", fmtNum(v("datasets_protected_total")));
    setStat("m-proofs-submitted", fmtNum(v("market_proofs_submitted_total")));
    setStat("m-proofs-missed", fmtNum(v("market_proofs_missed_total")));
    setStat("m-proofs-marked", fmtNum(v("market_proofs_marked_missing_total")));
    setStat("m-slots-filled", fmtNum(v("market_slots_filled_total")));
    setStat("m-collateral", fmtNum(v("market_collateral_locked")) + " tokens");
    setStat("m-payouts", fmtNum(v("market_payouts_total")) + " tokens");
    setStat("m-requests-started", fmtNum(v("market_requests_started_total")));
    setStat("m-requests-finished", fmtNum(v("market_requests_finished_total")));
    const live = tid("live-slots");
    const rows = s.metrics.get("dataset_live_slots") || [];
    live.replaceChildren(...rows.map((r) =>
      h("li", { testid: "live-slot-row" }, h("code", { class: "mono", text: r.labels.dataset || "?" }), ": ", `${fmtNum(r.value)} live slots`)));
    tid("live-slots-empty").hidden = rows.length > 0;
  }

  // ---------------------------------------------------------------- node state

  let nodeInfo = null;
  let wasDown = false;
  function nodeUp(up, message) {
    const state = tid("node-state");
    const banner = tid("global-error");
    if (up) {
      const peers = metricSum(latest, "peer_count");
      state.className = "node-state up";
      state.textContent = (nodeInfo ? short(nodeInfo.id, 6) + " · " : "") + (peers === undefined ? "online" : `${peers} peer${peers === 1 ? "" : "s"}`);
      if (wasDown) banner.hidden = true;
      wasDown = false;
    } else {
      state.className = "node-state down";
      state.textContent = "offline";
      banner.textContent = "The node does not answer: " + (message || "no response") + ". Retrying…";
      banner.hidden = false;
      wasDown = true;
    }
  }

  // ---------------------------------------------------------------- datasets

  const datasetRows = new Map(); // cid → {li, item}
  let datasets = [];

  function datasetSize(m) {
    return m.protected && m.originalDatasetSize !== undefined ? m.originalDatasetSize : m.datasetSize;
  }

  function renderDatasets(items) {
    const list = tid("dataset-list");
    const seen = new Set();
    // Rows are kept and moved only when out of place: moving a row would take the focus (and
    // the half-typed K or M) from a person using it.
    let cursor = list.firstElementChild;
    for (const item of items) {
      seen.add(item.cid);
      let row = datasetRows.get(item.cid);
      if (!row) {
        row = { li: datasetRow(item), item };
        datasetRows.set(item.cid, row);
      }
      if (row.li === cursor) cursor = cursor.nextElementSibling;
      else list.insertBefore(row.li, cursor);
    }
    for (const [cid, row] of datasetRows) {
      if (!seen.has(cid)) {
        row.li.remove();
        datasetRows.delete(cid);
      }
    }
    tid("dataset-count").textContent = `(${items.length})`;
    tid("datasets-empty").hidden = items.length > 0;
  }

  let rowSeq = 0;
  function datasetRow(item) {
    const m = item.manifest || {};
    const id = `ds-${++rowSeq}`;
    const name = m.filename ? m.filename : "(no filename)";
    const details = h("div", { class: "dataset-details", id: `${id}-details`, testid: "dataset-details", hidden: true });
    const protectForm = m.protected ? null : protectFormFor(item, id);
    const detailsToggle = h("button", {
      type: "button", class: "button small", testid: "dataset-details-toggle",
      "aria-expanded": "false", "aria-controls": `${id}-details`, text: "Details",
    });
    detailsToggle.addEventListener("click", () => {
      const open = detailsToggle.getAttribute("aria-expanded") !== "true";
      detailsToggle.setAttribute("aria-expanded", String(open));
      details.hidden = !open;
      if (open) loadDetails(item, details);
    });
    const actions = h("div", { class: "dataset-actions" },
      h("a", {
        class: "button small", testid: "dataset-download", href: `${API}/data/${encodeURIComponent(item.cid)}`,
        download: safeFilename(m.filename), "aria-label": `Download ${name}`, text: "Download",
      }),
      detailsToggle,
    );
    if (protectForm) {
      const toggle = h("button", {
        type: "button", class: "button small", testid: "dataset-protect-toggle",
        "aria-expanded": "false", "aria-controls": `${id}-protect`, text: "Protect…",
      });
      toggle.addEventListener("click", () => {
        const open = toggle.getAttribute("aria-expanded") !== "true";
        toggle.setAttribute("aria-expanded", String(open));
        protectForm.hidden = !open;
        if (open) tid("protect-k", protectForm).focus();
      });
      actions.append(toggle);
    }
    const del = h("button", { type: "button", class: "button small danger", testid: "dataset-delete", "aria-label": `Delete ${name}`, text: "Delete" });
    del.addEventListener("click", () => deleteDataset(item, name, del));
    actions.append(del);
    const badge = m.protected
      ? h("span", { class: "badge protected", testid: "dataset-protected", "data-protected": "true", text: `Protected K=${m.ecK} M=${m.ecM}` })
      : h("span", { class: "badge plain", testid: "dataset-protected", "data-protected": "false", text: "Not protected" });
    const li = h("li", { class: "dataset", testid: "dataset-row", "data-cid": item.cid },
      h("div", { class: "dataset-main" },
        h("span", { class: "dataset-name", testid: "dataset-filename", text: name }),
        h("div", { class: "dataset-meta" },
          badge,
          h("span", { testid: "dataset-size", text: fmtBytes(datasetSize(m)) }),
          h("span", { testid: "dataset-mime", text: m.mimetype || "no MIME type" })),
        h("code", { class: "mono", testid: "dataset-cid", text: item.cid })),
      actions, details, protectForm);
    return li;
  }

  function fact(dl, label, value, testid) {
    dl.append(h("dt", { text: label }), h("dd", { testid }, value));
  }

  async function loadDetails(item, box) {
    const m = item.manifest || {};
    const dl = h("dl", { class: "facts" });
    fact(dl, "Manifest CID", h("code", { class: "mono", text: item.cid }));
    fact(dl, "Tree CID", h("code", { class: "mono", text: m.treeCid || "–" }));
    fact(dl, "Dataset size", `${fmtBytes(m.datasetSize)} (${fmtNum(m.datasetSize)} bytes)`);
    fact(dl, "Block size", fmtBytes(m.blockSize));
    if (m.protected) {
      fact(dl, "Erasure coding", `K = ${m.ecK} data slots, M = ${m.ecM} parity slots`, "detail-coding");
      fact(dl, "Content size", `${fmtBytes(m.originalDatasetSize)} (${fmtNum(m.originalDatasetSize)} bytes)`);
      fact(dl, "Original tree CID", h("code", { class: "mono", text: m.originalTreeCid || "–" }));
      if (m.verifyRoot) fact(dl, "Verification root", h("code", { class: "mono", text: m.verifyRoot }));
      if (m.slotRoots) fact(dl, "Slot roots", h("ol", { class: "plain mono" }, m.slotRoots.map((r, i) => h("li", { text: `${i}: ${r}` }))));
    }
    const status = h("dd", { testid: "dataset-status", text: "loading…" });
    dl.append(h("dt", { text: "Status" }), status);
    box.replaceChildren(dl);
    try {
      const st = await api(`/data/${encodeURIComponent(item.cid)}/status`);
      const held = (st.hasBlocks || []).filter(Boolean).length;
      const total = (st.hasBlocks || []).length;
      status.replaceChildren(
        h("span", { class: "badge", testid: "dataset-status-value", text: st.status }),
        ` ${held} of ${total} blocks held here` + (st.expiry ? `, stored until ${new Date(st.expiry * 1000).toLocaleString()}` : ""),
        total <= 512 ? h("div", { class: "blockmap", "aria-hidden": "true" }, (st.hasBlocks || []).map((b) => h("span", { class: b ? "" : "missing" }))) : null,
      );
    } catch (e) {
      status.textContent = "status unavailable: " + e.message;
    }
  }

  function protectFormFor(item, id) {
    const k = h("input", { id: `${id}-k`, type: "number", min: 2, step: 1, value: 2, inputmode: "numeric", testid: "protect-k" });
    const m = h("input", { id: `${id}-m`, type: "number", min: 1, step: 1, value: 1, inputmode: "numeric", testid: "protect-m" });
    const error = h("p", { class: "field-error", testid: "protect-error", "aria-live": "polite", id: `${id}-protect-err` });
    k.setAttribute("aria-describedby", error.id);
    m.setAttribute("aria-describedby", error.id);
    const submit = h("button", { type: "submit", class: "button primary small", testid: "protect-submit", text: "Protect" });
    const form = h("form", { class: "protect-form", id: `${id}-protect`, testid: "protect-form", hidden: true, novalidate: true },
      h("div", { class: "field" }, h("label", { for: k.id, text: "K (data slots)" }), k),
      h("div", { class: "field" }, h("label", { for: m.id, text: "M (parity slots)" }), m),
      submit, error);
    const validate = () => {
      const problem = protectProblem(k.value, m.value);
      setError(error, problem ? problem.message : "");
      markInvalid(k, problem && problem.field === "k");
      markInvalid(m, problem && problem.field === "m");
      return !problem;
    };
    k.addEventListener("input", validate);
    m.addEventListener("input", validate);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!validate()) return;
      submit.disabled = true;
      setError(error, "");
      const old = submit.textContent;
      submit.textContent = "Protecting…";
      try {
        const result = await api(`/data/${encodeURIComponent(item.cid)}/protect?k=${Number(k.value)}&m=${Number(m.value)}`, { method: "POST" });
        toast(`Protected: ${short(result.cid, 10)} (K=${k.value}, M=${m.value})`);
        form.hidden = true;
        await refreshDatasets();
      } catch (e) {
        setError(error, e.message);
      } finally {
        submit.disabled = false;
        submit.textContent = old;
      }
    });
    return form;
  }

  /** Archivist's rules for K and M: 2 ≤ K, 1 ≤ M ≤ K, K + M ≤ 256. */
  function protectProblem(kText, mText) {
    const isInt = (t) => /^\s*\d+\s*$/.test(String(t));
    if (!isInt(kText)) return { field: "k", message: "K must be a whole number" };
    if (!isInt(mText)) return { field: "m", message: "M must be a whole number" };
    const k = Number(kText);
    const m = Number(mText);
    if (k < 2) return { field: "k", message: "K (data slots) must be at least 2" };
    if (m < 1) return { field: "m", message: "M (parity slots) must be at least 1" };
    if (m > k) return { field: "m", message: "M (parity slots) cannot be greater than K" };
    if (k + m > 256) return { field: "m", message: "K + M cannot be more than 256 slots" };
    return null;
  }

  async function deleteDataset(item, name, button) {
    const ok = await confirmAction(`Delete ${name}?`, `The dataset ${item.cid} and its blocks are removed from this node.`, "Delete");
    if (!ok) return;
    button.disabled = true;
    try {
      await api(`/data/${encodeURIComponent(item.cid)}`, { method: "DELETE" });
      toast(`Deleted ${name}`);
      await refreshDatasets();
    } catch (e) {
      button.disabled = false;
      toast(`Could not delete ${name}: ${e.message}`, "error");
      setError(tid("datasets-error"), e.message);
    }
  }

  let datasetsInFlight = null;
  function refreshDatasets() {
    if (datasetsInFlight) return datasetsInFlight;
    datasetsInFlight = (async () => {
      try {
        const list = await api("/data");
        datasets = (list && list.content) || [];
        renderDatasets(datasets);
        fillRequestDatasets();
        setError(tid("datasets-error"), "");
      } catch (e) {
        setError(tid("datasets-error"), "Could not list the datasets: " + e.message);
      } finally {
        datasetsInFlight = null;
      }
    })();
    return datasetsInFlight;
  }

  // Uploads: one at a time, through XMLHttpRequest for its upload progress.
  const uploadQueue = [];
  let uploading = null;

  function queueUploads(files) {
    for (const file of files) uploadQueue.push(file);
    if (!uploading) nextUpload();
  }

  function nextUpload() {
    const file = uploadQueue.shift();
    const panel = tid("upload-panel");
    if (!file) {
      uploading = null;
      panel.hidden = true;
      return;
    }
    const status = tid("upload-status");
    const progress = tid("upload-progress");
    const percent = tid("upload-percent");
    tid("upload-name").textContent = file.name;
    progress.value = 0;
    percent.textContent = "0%";
    panel.hidden = false;
    status.className = "status-line";
    status.textContent = `Uploading ${file.name} (${fmtBytes(file.size)})…`;
    const xhr = new XMLHttpRequest();
    uploading = xhr;
    xhr.open("POST", `${API}/data`);
    xhr.setRequestHeader("Content-Type", file.type || "application/octet-stream");
    xhr.setRequestHeader("Content-Disposition", `attachment; filename*=UTF-8''${rfc8187(file.name)}`);
    xhr.upload.addEventListener("progress", (event) => {
      if (!event.lengthComputable) return;
      const p = Math.round((event.loaded / event.total) * 100);
      progress.value = p;
      percent.textContent = `${p}%`;
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 200) {
        const cid = xhr.responseText.trim();
        progress.value = 100;
        percent.textContent = "100%";
        status.className = "status-line ok";
        status.textContent = `Uploaded ${file.name}: ${cid}`;
        status.dataset.cid = cid;
        refreshDatasets();
      } else {
        let message = errorMessage(xhr.status, xhr.statusText, xhr.getResponseHeader("content-type"), xhr.responseText);
        const retry = xhr.getResponseHeader("retry-after");
        if (xhr.status === 503 && retry) message += ` (try again in ${retry} s)`;
        status.className = "status-line field-error";
        status.textContent = `Upload of ${file.name} failed: ${message}`;
      }
      nextUpload();
    });
    xhr.addEventListener("error", () => {
      status.className = "status-line field-error";
      status.textContent = `Upload of ${file.name} failed: the node did not answer`;
      nextUpload();
    });
    xhr.addEventListener("abort", () => {
      status.className = "status-line";
      status.textContent = `Upload of ${file.name} cancelled`;
      nextUpload();
    });
    xhr.send(file);
  }

  function setupUpload() {
    const input = tid("file-input");
    input.addEventListener("change", () => {
      if (input.files && input.files.length) queueUploads(Array.from(input.files));
      input.value = "";
    });
    const zone = tid("dropzone");
    const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types || []).includes("Files");
    zone.addEventListener("dragenter", (event) => { if (hasFiles(event)) { event.preventDefault(); zone.classList.add("over"); } });
    zone.addEventListener("dragover", (event) => {
      if (!hasFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      zone.classList.add("over");
    });
    zone.addEventListener("dragleave", (event) => { if (!zone.contains(event.relatedTarget)) zone.classList.remove("over"); });
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      zone.classList.remove("over");
      const files = event.dataTransfer ? Array.from(event.dataTransfer.files || []) : [];
      if (files.length) queueUploads(files);
    });
    // A file dropped beside the zone must not navigate away from the page.
    window.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
    window.addEventListener("drop", (event) => { if (hasFiles(event)) event.preventDefault(); });
    tid("upload-cancel").addEventListener("click", () => { if (uploading) uploading.abort(); });
    tid("datasets-refresh").addEventListener("click", () => refreshDatasets());

    const fetchForm = tid("fetch-form");
    fetchForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      const input2 = tid("fetch-cid");
      const cid = input2.value.trim();
      const error = tid("fetch-error");
      if (!cid) {
        setError(error, "Enter the CID of a dataset");
        markInvalid(input2, true);
        return;
      }
      markInvalid(input2, false);
      setError(error, "");
      try {
        await api(`/data/${encodeURIComponent(cid)}/network`, { method: "POST" });
        toast("Fetching the dataset from the network…");
        input2.value = "";
        refreshDatasets();
      } catch (e) {
        setError(error, e.message);
      }
    });
  }

  // ---------------------------------------------------------------- network

  function fillList(el, items, testid) {
    el.replaceChildren(...(items || []).map((text) => h("li", { testid, text })));
    if (!items || !items.length) el.append(h("li", { class: "empty", text: "none" }));
  }

  async function refreshNetwork() {
    let info;
    try {
      info = await api("/debug/info");
    } catch (e) {
      toast("Could not read the node's information: " + e.message, "error");
      return;
    }
    nodeInfo = info;
    tid("peer-id").textContent = info.id;
    tid("node-version").textContent = (info.archivist && info.archivist.version) || "–";
    tid("eth-address").textContent = info.ethAddress || "none (no marketplace)";
    tid("repo").textContent = info.repo || "–";
    tid("spr").textContent = info.spr || "–";
    fillList(tid("addrs"), info.addrs, "addr");
    fillList(tid("announce-addrs"), info.announceAddresses, "announce-addr");
    const r = info.reachability || {};
    tid("nat").textContent = r.nat || "unknown";
    tid("public-addr").textContent = r.publicAddr || "none";
    tid("relays").textContent = r.relays && r.relays.length ? r.relays.join(", ") : "none";
    tid("hole-punches").textContent = `${fmtNum(r.holePunches || 0)} succeeded, ${fmtNum(r.holePunchFailures || 0)} failed`;
    fillList(tid("observed-addrs"), r.observedAddrs, "observed-addr");
    const peers = (info.table && info.table.nodes) || [];
    tid("peer-count").textContent = `(${peers.length})`;
    tid("peers-empty").hidden = peers.length > 0;
    tid("peer-table").hidden = peers.length === 0;
    tid("peer-list").replaceChildren(...peers.map((p) =>
      h("tr", { testid: "peer-row", "data-peer": p.peerId },
        h("td", {}, h("code", { class: "mono", testid: "peer-row-id", text: p.peerId || p.nodeId || "?" }),
          p.address ? h("div", { class: "mono sub", text: p.address }) : null),
        h("td", { testid: "peer-row-ping", text: typeof p.rttMs === "number" ? `${p.rttMs.toFixed(p.rttMs < 10 ? 2 : 0)} ms` : "–" }))));
  }

  function setupNetwork() {
    const status = tid("copy-status");
    const copy = async (text, what) => {
      if (!text || text === "…") return;
      const ok = await copyText(text);
      status.textContent = ok ? `${what} copied to the clipboard` : `Could not copy: select the ${what} and copy it by hand`;
      toast(status.textContent, ok ? undefined : "error");
    };
    tid("copy-spr").addEventListener("click", () => copy(tid("spr").textContent, "SPR"));
    tid("copy-peer-id").addEventListener("click", () => copy(tid("peer-id").textContent, "peer ID"));
    tid("connect-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const peer = tid("connect-peer");
      const addr = tid("connect-addr");
      const error = tid("connect-error");
      let id = peer.value.trim();
      let address = addr.value.trim();
      // A full multiaddr ending in /p2p/<id> names the peer too.
      const full = /^(.*)\/p2p\/([^/]+)$/.exec(id);
      if (full) { address = address || full[1]; id = full[2]; }
      if (!id) {
        setError(error, "Enter the peer's ID (or its full address ending in /p2p/<id>)");
        markInvalid(peer, true);
        return;
      }
      markInvalid(peer, false);
      setError(error, "");
      try {
        await api(`/connect/${encodeURIComponent(id)}` + (address ? `?addrs=${encodeURIComponent(address)}` : ""));
        toast(`Connected to ${short(id, 6)}`);
        peer.value = "";
        addr.value = "";
        refreshNetwork();
      } catch (e) {
        setError(error, e.message);
      }
    });
  }

  // ---------------------------------------------------------------- space

  async function refreshSpace() {
    let space;
    try {
      space = await api("/space");
    } catch (e) {
      toast("Could not read the space: " + e.message, "error");
      return;
    }
    const max = space.quotaMaxBytes || 0;
    const used = space.quotaUsedBytes || 0;
    const reserved = space.quotaReservedBytes || 0;
    const free = Math.max(0, max - used - reserved);
    const pct = (n) => (max > 0 ? Math.min(100, (n / max) * 100) : 0);
    // A share too small to see still gets a sliver, so "some" never looks like "none".
    const visible = (n) => (n > 0 ? Math.max(0.6, pct(n)) : 0);
    const u = visible(used);
    const r = Math.min(100 - u, visible(reserved));
    const used2 = tid("space-seg-used");
    const res2 = tid("space-seg-reserved");
    used2.setAttribute("stroke-dasharray", `${u.toFixed(3)} ${(100 - u).toFixed(3)}`);
    used2.setAttribute("stroke-dashoffset", "25");
    res2.setAttribute("stroke-dasharray", `${r.toFixed(3)} ${(100 - r).toFixed(3)}`);
    res2.setAttribute("stroke-dashoffset", String(25 - u));
    const shown = pct(used) + pct(reserved);
    tid("space-percent").textContent = shown > 0 && shown < 1 ? "<1%" : `${Math.round(shown)}%`;
    const share = (n) => { const v = pct(n); return v > 0 && v < 1 ? v.toFixed(2) : v.toFixed(0); };
    tid("space-used").textContent = `${fmtBytes(used)} (${share(used)}%)`;
    tid("space-reserved").textContent = `${fmtBytes(reserved)} (${share(reserved)}%)`;
    tid("space-free").textContent = fmtBytes(free);
    tid("space-total").textContent = fmtBytes(max);
    tid("space-blocks").textContent = fmtNum(space.totalBlocks);
    tid("space-bar-used").style.width = `${u}%`;
    tid("space-bar-reserved").style.width = `${r}%`;
    tid("space-chart").dataset.used = String(used);
    tid("space-chart").dataset.reserved = String(reserved);
    tid("space-chart").dataset.max = String(max);
  }

  // ---------------------------------------------------------------- slots

  async function refreshSlots() {
    let result;
    try {
      result = await api("/slots");
    } catch (e) {
      toast("Could not list the slots: " + e.message, "error");
      return;
    }
    const slots = (result && result.slots) || [];
    tid("slot-count").textContent = `(${slots.length})`;
    tid("slots-empty").hidden = slots.length > 0;
    tid("slot-table").hidden = slots.length === 0;
    tid("slot-list").replaceChildren(...slots.map((s) =>
      h("tr", { testid: "slot-row" },
        h("td", {}, h("code", { class: "mono", text: s.manifest })),
        h("td", { text: String(s.slot) }),
        h("td", { text: `${fmtNum(s.blocks)} from #${fmtNum(s.firstBlock)}` }))));
    updateMetricStats();
  }

  // ---------------------------------------------------------------- marketplace

  let marketUp = null;

  function showMarketUnavailable(e) {
    const banner = tid("market-unavailable");
    const parts = [h("strong", { text: "No marketplace on this node." }), " "];
    if (e.status === 503) {
      parts.push(h("span", { class: "hint", testid: "market-hint", text: e.message }));
    } else {
      parts.push(h("span", { class: "hint", testid: "market-hint", text: `The node answered: ${e.message}` }));
    }
    banner.replaceChildren(...parts);
    banner.hidden = false;
    tid("market-body").hidden = true;
    marketUp = false;
  }

  async function refreshMarket() {
    let availabilities;
    try {
      availabilities = await api("/sales/availability");
    } catch (e) {
      if (e.status === 503 || e.status === 0) {
        showMarketUnavailable(e);
        return;
      }
      toast("Could not list the availabilities: " + e.message, "error");
      availabilities = [];
    }
    marketUp = true;
    tid("market-unavailable").hidden = true;
    tid("market-body").hidden = false;
    renderAvailabilities(availabilities || []);
    await Promise.all([refreshPurchases(), refreshSales(), refreshDatasets()]);
    updateMetricStats();
  }

  function renderAvailabilities(list) {
    tid("avail-count").textContent = `(${list.length})`;
    tid("avail-empty").hidden = list.length > 0;
    tid("avail-list").replaceChildren(...list.map((a) =>
      h("li", { testid: "avail-row", "data-id": a.id },
        h("div", { class: "line" },
          h("strong", { text: `#${a.id}` }),
          h("span", { testid: "avail-row-size", text: `${fmtBytes(a.totalSize)} offered` }),
          h("span", { testid: "avail-row-free", text: `${fmtBytes(a.freeSize)} free` }),
          h("span", { class: a.enabled ? "badge state-started" : "badge plain", text: a.enabled ? "enabled" : "disabled" })),
        h("div", { class: "line sub" },
          h("span", { text: `up to ${fmtDuration(a.maximumDuration)}` }),
          h("span", { text: `≥ ${a.minimumPricePerBytePerSecond} tokens/byte/s` }),
          h("span", { text: `collateral ≤ ${a.maximumCollateralPerByte} tokens/byte` }),
          h("span", { text: a.availableUntil ? `until ${new Date(a.availableUntil * 1000).toLocaleString()}` : "no end date" })))));
  }

  const isWhole = (t) => /^\s*\d+\s*$/.test(String(t));
  const positiveDecimal = (t) => isWhole(t) && /[1-9]/.test(String(t));

  function availabilityProblems() {
    const problems = {};
    const size = Number(tid("avail-size").value);
    if (!(size > 0)) problems.size = "Enter a size greater than 0";
    else if (Math.floor(size * Number(tid("avail-unit").value)) < 1) problems.size = "The size must be at least 1 byte";
    const duration = tid("avail-duration").value;
    if (!positiveDecimal(duration)) problems.duration = "Enter a whole number of seconds greater than 0";
    if (!positiveDecimal(tid("avail-price").value)) problems.price = "Enter a whole number of tokens greater than 0";
    if (!positiveDecimal(tid("avail-collateral").value)) problems.collateral = "Enter a whole number of tokens greater than 0";
    return problems;
  }

  function showProblems(prefix, fields, problems) {
    for (const field of fields) {
      const input = tid(`${prefix}-${field}`);
      const err = tid(`${prefix}-${field}-error`);
      setError(err, problems[field] || "");
      if (input) markInvalid(input, Boolean(problems[field]));
    }
    return Object.keys(problems).length === 0;
  }

  function setupAvailabilityForm() {
    const form = tid("avail-form");
    const fields = ["size", "duration", "price", "collateral"];
    form.addEventListener("input", () => showProblems("avail", fields, availabilityProblems()));
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = tid("avail-error");
      setError(error, "");
      if (!showProblems("avail", fields, availabilityProblems())) {
        setError(error, "Correct the fields marked above");
        return;
      }
      const body = {
        totalSize: Math.floor(Number(tid("avail-size").value) * Number(tid("avail-unit").value)),
        maximumDuration: Number(tid("avail-duration").value),
        minimumPricePerBytePerSecond: tid("avail-price").value.trim(),
        maximumCollateralPerByte: tid("avail-collateral").value.trim(),
      };
      const until = tid("avail-until").value;
      if (until) body.availableUntil = Math.floor(new Date(until).getTime() / 1000);
      const submit = tid("avail-submit");
      submit.disabled = true;
      try {
        const created = await api("/sales/availability", { method: "POST", json: body });
        toast(`Offered ${fmtBytes(created.totalSize)} (availability #${created.id})`);
        await refreshMarket();
      } catch (e) {
        setError(error, e.message);
      } finally {
        submit.disabled = false;
      }
    });
  }

  function fillRequestDatasets() {
    const select = tid("request-cid");
    if (!select) return;
    const current = select.value;
    const plain = datasets.filter((d) => !(d.manifest && d.manifest.protected));
    // Rebuilt only when the datasets change: rebuilding would close the list a person has open.
    const key = plain.map((d) => d.cid).join(",");
    if (select.dataset.key === key && select.options.length) return;
    select.dataset.key = key;
    const options = plain.map((d) =>
      h("option", { value: d.cid, text: `${(d.manifest && d.manifest.filename) || "(no filename)"} · ${fmtBytes(datasetSize(d.manifest || {}))} · ${short(d.cid, 6)}` }));
    if (!options.length) options.push(h("option", { value: "", text: "No dataset: upload a file first" }));
    select.replaceChildren(...options);
    if (plain.some((d) => d.cid === current)) select.value = current;
  }

  /** Archivist's validation of a storage request (node/src/market/purchasing.rs), in the same
   *  words as the node's 422 answers. The duration limit is the marketplace's: the node checks it. */
  function requestProblems() {
    const p = {};
    const val = (f) => tid(`request-${f}`).value.trim();
    if (!val("cid")) p.cid = "Choose a dataset stored on this node";
    const whole = { duration: "duration", expiry: "expiry", nodes: "nodes", tolerance: "tolerance" };
    for (const f of Object.keys(whole)) if (!isWhole(val(f))) p[f] = `${whole[f]} must be a whole number`;
    const amounts = { price: "pricePerBytePerSecond", collateral: "collateralPerByte", probability: "proofProbability" };
    for (const f of Object.keys(amounts)) {
      if (!isWhole(val(f))) p[f] = `${amounts[f]} must be a decimal number`;
      else if (!/[1-9]/.test(val(f))) p[f] = `${amounts[f]} must be greater than 0`;
    }
    for (const f of ["duration", "expiry"]) if (!p[f] && Number(val(f)) === 0) p[f] = `${f} must be greater than 0`;
    const duration = Number(val("duration"));
    const expiry = Number(val("expiry"));
    if (!p.duration && !p.expiry && expiry >= duration) p.expiry = `expiry must be less than duration (${expiry} >= ${duration})`;
    const nodes = Number(val("nodes"));
    const tolerance = Number(val("tolerance"));
    if (!p.nodes && !p.tolerance) {
      if (tolerance > nodes) p.tolerance = `tolerance ${tolerance} cannot be greater than nodes ${nodes}`;
      else if (nodes - tolerance < 2 || nodes - tolerance < tolerance || tolerance === 0) {
        p.tolerance = `nodes - tolerance must be at least 2 and at least tolerance (nodes ${nodes}, tolerance ${tolerance})`;
      } else if (nodes > 256) p.nodes = `${nodes} slots is more than the 256 a request may have`;
    }
    return p;
  }

  const REQUEST_FIELDS = ["cid", "duration", "expiry", "price", "collateral", "probability", "nodes", "tolerance"];

  function updateCoding() {
    const nodes = Number(tid("request-nodes").value);
    const tolerance = Number(tid("request-tolerance").value);
    const el = tid("request-coding");
    if (isWhole(tid("request-nodes").value) && isWhole(tid("request-tolerance").value) && nodes - tolerance >= 2 && tolerance >= 1 && tolerance <= nodes - tolerance) {
      el.textContent = `Erasure coding: K = ${nodes - tolerance} data slots and M = ${tolerance} parity slot${tolerance === 1 ? "" : "s"}; any ${nodes - tolerance} of the ${nodes} hosts can rebuild the data.`;
    } else el.textContent = "";
  }

  function setupRequestForm() {
    const form = tid("request-form");
    form.addEventListener("input", () => {
      showProblems("request", REQUEST_FIELDS, requestProblems());
      updateCoding();
    });
    updateCoding();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = tid("request-error");
      const result = tid("request-result");
      setError(error, "");
      result.textContent = "";
      if (!showProblems("request", REQUEST_FIELDS, requestProblems())) {
        setError(error, "Correct the fields marked above");
        return;
      }
      const val = (f) => tid(`request-${f}`).value.trim();
      const body = {
        duration: Number(val("duration")),
        pricePerBytePerSecond: val("price"),
        proofProbability: val("probability"),
        collateralPerByte: val("collateral"),
        expiry: Number(val("expiry")),
        nodes: Number(val("nodes")),
        tolerance: Number(val("tolerance")),
      };
      const submit = tid("request-submit");
      submit.disabled = true;
      result.textContent = "Erasure-coding the dataset and submitting the request…";
      try {
        const id = await api(`/storage/request/${encodeURIComponent(val("cid"))}`, { method: "POST", json: body });
        const requestId = String(id).trim();
        result.textContent = `Requested: ${requestId}`;
        result.dataset.requestId = requestId;
        toast("Storage requested");
        await refreshPurchases();
      } catch (e) {
        result.textContent = "";
        setError(error, e.message);
      } finally {
        submit.disabled = false;
      }
    });
  }

  async function refreshPurchases() {
    let ids;
    try {
      ids = await api("/storage/purchases");
    } catch (e) {
      if (e.status !== 503) toast("Could not list the purchases: " + e.message, "error");
      return;
    }
    ids = (ids || []).slice(-25).reverse();
    const purchases = await Promise.all(ids.map((id) => api(`/storage/purchases/${encodeURIComponent(id)}`).catch((e) => ({ requestId: id, state: "unknown", error: e.message }))));
    tid("purchase-count").textContent = `(${purchases.length})`;
    tid("purchases-empty").hidden = purchases.length > 0;
    tid("purchase-list").replaceChildren(...purchases.map((p) => {
      const req = p.request || {};
      const ask = req.ask || {};
      return h("li", { testid: "purchase-row", "data-request-id": p.requestId, "data-state": p.state },
        h("div", { class: "line" },
          h("span", { class: `badge state-${p.state}`, testid: "purchase-state", text: p.state }),
          h("code", { class: "mono", testid: "purchase-id", title: p.requestId, text: short(p.requestId, 10) })),
        h("div", { class: "line sub" },
          h("span", {}, "dataset ", h("code", { class: "mono", text: short(req.content && req.content.cid, 8) || "–" })),
          h("span", { text: `${ask.slots || "?"} slots of ${fmtBytes(ask.slotSize)}` }),
          h("span", { text: `for ${fmtDuration(ask.duration)}` }),
          h("span", { text: `${ask.pricePerBytePerSecond || "?"} tokens/byte/s` })),
        p.error ? h("div", { class: "field-error", testid: "purchase-error", text: p.error }) : null);
    }));
  }

  async function refreshSales() {
    let ids;
    try {
      ids = await api("/sales/slots");
    } catch (e) {
      if (e.status !== 503) toast("Could not list the sales: " + e.message, "error");
      return;
    }
    ids = (ids || []).slice(-25);
    const sales = await Promise.all(ids.map((id) => api(`/sales/slots/${encodeURIComponent(id)}`).catch((e) => ({ id, state: "SaleUnknown", error: e.message }))));
    tid("sale-count").textContent = `(${sales.length})`;
    tid("sales-empty").hidden = sales.length > 0;
    tid("sale-list").replaceChildren(...sales.map((s) => {
      const ask = (s.request && s.request.ask) || {};
      return h("li", { testid: "sale-row", "data-state": s.state },
        h("div", { class: "line" },
          h("span", { class: `badge state-${s.state}`, testid: "sale-state", text: s.state }),
          h("span", { text: `slot ${s.slotIndex}` }),
          h("code", { class: "mono", title: s.requestId, text: short(s.requestId, 8) })),
        h("div", { class: "line sub" },
          h("span", { testid: "sale-proofs", text: `${fmtNum(s.proofs || 0)} proofs submitted` }),
          h("span", { text: `${fmtBytes(ask.slotSize)} for ${fmtDuration(ask.duration)}` }),
          s.repair ? h("span", { class: "badge", text: "repair" }) : null),
        s.error ? h("div", { class: "field-error", text: s.error }) : null);
    }));
  }

  // ---------------------------------------------------------------- routing

  const VIEWS = {
    datasets: { title: "Datasets", refresh: refreshDatasets },
    network: { title: "Network", refresh: refreshNetwork },
    space: { title: "Space", refresh: refreshSpace },
    slots: { title: "Slots", refresh: refreshSlots },
    market: { title: "Marketplace", refresh: refreshMarket },
    metrics: { title: "Metrics", refresh: async () => drawCharts() },
  };
  let current = null;

  function route(focus) {
    const match = /^#\/([a-z]+)/.exec(location.hash);
    const name = match && VIEWS[match[1]] ? match[1] : "datasets";
    current = name;
    for (const key of Object.keys(VIEWS)) tid(`view-${key}`).hidden = key !== name;
    for (const link of document.querySelectorAll(".nav a")) {
      if (link.dataset.view === name) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    document.title = `${VIEWS[name].title} · Neverust`;
    document.body.dataset.view = name;
    setMenu(false);
    if (focus) {
      const heading = tid(`view-${name}`).querySelector("h1");
      heading.setAttribute("tabindex", "-1");
      heading.focus({ preventScroll: false });
    }
    return refreshCurrent();
  }

  let refreshing = null;
  let again = false;
  /** Refreshes the view shown; a call during a refresh runs one more after it (the view may
   *  have changed meanwhile). */
  async function refreshCurrent() {
    if (!current) return;
    if (refreshing) {
      again = true;
      return refreshing;
    }
    refreshing = (async () => {
      do {
        again = false;
        const view = current;
        try {
          await VIEWS[view].refresh();
        } catch (e) {
          toast(e.message, "error");
        }
        if (view === current) document.body.dataset.loaded = view;
      } while (again);
    })();
    try {
      await refreshing;
    } finally {
      refreshing = null;
    }
  }

  function setMenu(open) {
    const nav = tid("nav");
    const toggle = tid("menu-toggle");
    nav.classList.toggle("open", open);
    toggle.setAttribute("aria-expanded", String(open));
  }

  function setupNav() {
    const toggle = tid("menu-toggle");
    toggle.addEventListener("click", () => setMenu(toggle.getAttribute("aria-expanded") !== "true"));
    document.addEventListener("keydown", (event) => {
      if (event.key === "Escape" && toggle.getAttribute("aria-expanded") === "true") {
        setMenu(false);
        toggle.focus();
      }
    });
    window.addEventListener("hashchange", () => route(true));
    // Choosing the view already shown changes no hash: close the menu all the same.
    for (const link of document.querySelectorAll(".nav a")) {
      link.addEventListener("click", () => {
        if (link.getAttribute("href") === location.hash) setMenu(false);
      });
    }
  }

  // ---------------------------------------------------------------- start

  async function start() {
    buildCharts();
    setupNav();
    setupUpload();
    setupNetwork();
    setupAvailabilityForm();
    setupRequestForm();
    api("/debug/info").then((info) => { nodeInfo = info; nodeUp(true); }).catch(() => {});
    await sampleMetrics();
    await route(false);
    setInterval(sampleMetrics, POLL_MS);
    setInterval(() => { if (!document.hidden) refreshCurrent(); }, POLL_MS);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

// Real nodes for the browser tests: `neverust start` on free loopback ports, and `neverust devnet`
// (Anvil, the contracts, a client, hosts and a validator) when the binary has it.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const net = require("node:net");
const path = require("node:path");

const API = "/api/archivist/v1";

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** Consecutive free ports (the devnet takes BASE..BASE+N-1). */
async function freePortRange(count) {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = 20000 + Math.floor(Math.random() * 30000);
    let ok = true;
    for (let i = 0; i < count && ok; i++) ok = await canListen(base + i);
    if (ok) return base;
  }
  throw new Error(`no ${count} consecutive free ports`);
}

function canListen(port) {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function getJson(url, timeoutMs = 10000) {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (!res.ok) throw new Error(`${url}: ${res.status} ${text}`);
  return JSON.parse(text);
}

async function waitFor(fn, { timeoutMs = 30000, intervalMs = 200, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  while (Date.now() < deadline) {
    try {
      const value = await fn();
      if (value) return value;
    } catch (e) {
      last = e;
    }
    await sleep(intervalMs);
  }
  throw new Error(`timed out waiting for ${what}${last ? ": " + last.message : ""}`);
}

const children = new Set();

function track(child) {
  children.add(child);
  child.on("exit", () => children.delete(child));
  return child;
}

/** Stops a child: SIGINT (the devnet stops its nodes and Anvil on it), then SIGKILL. */
async function stop(child, graceMs = 8000) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const done = new Promise((r) => child.once("exit", r));
  child.kill("SIGINT");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await done;
  clearTimeout(timer);
}

async function stopAll() {
  await Promise.all([...children].map((c) => stop(c)));
}

/** Starts `neverust start` on a free API port; resolves when /health answers. */
async function startNode({ bin, name, workDir, logDir, uiDir, bootstrap, quota = "2GiB", env = {} }) {
  const apiPort = await freePort();
  const dataDir = path.join(workDir, name);
  fs.mkdirSync(dataDir, { recursive: true });
  const args = ["start", "--data-dir", dataDir, "--api-port", String(apiPort), "--api-bindaddr", "127.0.0.1",
    "--listen-addrs", "/ip4/127.0.0.1/tcp/0", "--storage-quota", quota, "--log-format", "plain"];
  if (bootstrap) args.push("--bootstrap-node", bootstrap);
  const log = fs.openSync(path.join(logDir, `${name}.log`), "w");
  const childEnv = Object.assign({}, process.env, env);
  if (uiDir) childEnv.NEVERUST_UI_DIR = uiDir;
  else delete childEnv.NEVERUST_UI_DIR;
  const child = track(spawn(bin, args, { stdio: ["ignore", log, log], env: childEnv }));
  const base = `http://127.0.0.1:${apiPort}`;
  await waitFor(async () => {
    if (child.exitCode !== null) throw new Error(`${name} exited with ${child.exitCode} (see ${name}.log)`);
    const res = await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  }, { timeoutMs: 30000, what: `${name} to answer /health` });
  const info = await getJson(`${base}${API}/debug/info`);
  return { name, child, base, apiPort, dataDir, info, stop: () => stop(child) };
}

/** Starts `neverust devnet`; resolves with devnet.json once it prints `devnet ready`. */
async function startDevnet({ bin, nodes, workDir, logDir, uiDir, proofPeriod = 30, timeoutMs = 240000 }) {
  const dir = path.join(workDir, "devnet");
  fs.mkdirSync(dir, { recursive: true });
  const base = await freePortRange(nodes);
  const chainPort = await freePort();
  const args = ["devnet", "--nodes", String(nodes), "--dir", dir, "--api-port", String(base), "--chain-port", String(chainPort),
    "--proof-samples", "1", "--proof-period", String(proofPeriod), "--storage-quota", "1GiB"];
  const logPath = path.join(logDir, "devnet.log");
  const log = fs.createWriteStream(logPath);
  const env = Object.assign({}, process.env);
  if (uiDir) env.NEVERUST_UI_DIR = uiDir;
  const child = track(spawn(bin, args, { stdio: ["ignore", "pipe", "pipe"], env }));
  let ready = false;
  const readyPromise = new Promise((resolve, reject) => {
    const onData = (chunk) => {
      log.write(chunk);
      if (!ready && /devnet ready/.test(chunk.toString())) {
        ready = true;
        resolve();
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.on("exit", (code, signal) => { if (!ready) reject(new Error(`neverust devnet exited (${code ?? signal}) before it was ready; see devnet.log`)); });
  });
  let timer;
  const timeout = new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`neverust devnet not ready after ${timeoutMs / 1000} s; see devnet.log`)), timeoutMs); });
  try {
    await Promise.race([readyPromise, timeout]);
  } catch (e) {
    await stop(child);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  const config = JSON.parse(fs.readFileSync(path.join(dir, "devnet.json"), "utf8"));
  for (const node of config.nodes) {
    node.base = node.api.replace(/\/api\/archivist\/v1\/?$/, "").replace(/\/$/, "");
    node.uiUrl = node.ui || node.base + "/";
  }
  return { child, dir, config, args, stop: () => stop(child) };
}

module.exports = { API, freePort, startNode, startDevnet, stop, stopAll, getJson, waitFor, sleep };

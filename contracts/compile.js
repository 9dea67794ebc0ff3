#!/usr/bin/env node
// Compiles the marketplace contracts with solc-js (pinned in package.json) and writes the
// artifacts the Rust code embeds: artifacts/<Contract>.json (ABI, bytecode) and
// artifacts/build.json (compiler, settings, a hash of every source and the settings).
//
//   node compile.js          write the artifacts
//   node compile.js --check  compile and fail if the committed artifacts differ
"use strict";
const crypto = require("crypto");
const fs = require("fs");
const path = require("path");
const solc = require("solc");

const ROOT = __dirname;
const SOURCES = path.join(ROOT, "src");
const ARTIFACTS = path.join(ROOT, "artifacts");
// Contracts that get an artifact: what gets deployed.
const DEPLOYED = ["Marketplace", "TestToken", "Groth16Verifier"];
// EIP-170: the largest deployed code a chain accepts.
const CODE_SIZE_LIMIT = 24576;
const SETTINGS = {
  // Paris (no PUSH0): runs on every EVM chain Archivist targets.
  evmVersion: "paris",
  optimizer: { enabled: true, runs: 1000 },
  metadata: { bytecodeHash: "none", appendCBOR: false },
  outputSelection: { "*": { "*": ["abi", "evm.bytecode.object", "evm.deployedBytecode.object"] } },
};

// The deployed contracts (top level) and the parts they are built from (src/), keyed by
// their path from contracts/.
function readSources() {
  const sources = {};
  for (const dir of [ROOT, SOURCES]) {
    for (const file of fs.readdirSync(dir).sort()) {
      if (file.endsWith(".sol")) {
        const name = path.relative(ROOT, path.join(dir, file));
        sources[name] = { content: fs.readFileSync(path.join(dir, file), "utf8") };
      }
    }
  }
  return sources;
}

// Imports outside contracts/ (OpenZeppelin) come from node_modules; every file read is recorded so
// the source hash covers the library code too.
function makeImporter(loaded) {
  return (importPath) => {
    const file = path.join(ROOT, "node_modules", importPath);
    if (!fs.existsSync(file)) return { error: `not found: ${importPath}` };
    const content = fs.readFileSync(file, "utf8");
    loaded[importPath] = content;
    return { contents: content };
  };
}

function compile() {
  const sources = readSources();
  const loaded = {};
  const input = { language: "Solidity", sources, settings: SETTINGS };
  const output = JSON.parse(solc.compile(JSON.stringify(input), { import: makeImporter(loaded) }));
  const errors = (output.errors || []).filter((e) => e.severity === "error");
  for (const e of output.errors || []) console.error(e.formattedMessage);
  if (errors.length > 0) process.exit(1);

  const hash = crypto.createHash("sha256");
  hash.update(`solc ${solc.version()}\n${JSON.stringify(SETTINGS)}\n`);
  const all = Object.assign({}, ...Object.entries(sources).map(([k, v]) => ({ [k]: v.content })), loaded);
  for (const name of Object.keys(all).sort()) hash.update(`${name}\n${all[name]}\n`);

  const files = {};
  for (const name of DEPLOYED) {
    const contract = output.contracts[`${name}.sol`][name];
    const deployed = contract.evm.deployedBytecode.object;
    if (deployed.length / 2 > CODE_SIZE_LIMIT) {
      console.error(`${name}: ${deployed.length / 2} bytes of code, over the EIP-170 limit of ${CODE_SIZE_LIMIT}`);
      process.exit(1);
    }
    files[`${name}.json`] = {
      contractName: name,
      abi: contract.abi,
      bytecode: "0x" + contract.evm.bytecode.object,
      deployedBytecode: "0x" + deployed,
    };
  }
  files["build.json"] = {
    compiler: `solc-js ${solc.version()}`,
    settings: SETTINGS,
    sources: Object.keys(all).sort(),
    sourceHash: "0x" + hash.digest("hex"),
    codeSize: Object.fromEntries(DEPLOYED.map((n) => [n, files[`${n}.json`].deployedBytecode.length / 2 - 1])),
  };
  const text = {};
  for (const [file, value] of Object.entries(files)) text[file] = JSON.stringify(value, null, 2) + "\n";
  return text;
}

const check = process.argv.includes("--check");
const artifacts = compile();
let different = 0;
if (!check) fs.mkdirSync(ARTIFACTS, { recursive: true });
for (const [file, text] of Object.entries(artifacts)) {
  const target = path.join(ARTIFACTS, file);
  if (check) {
    const committed = fs.existsSync(target) ? fs.readFileSync(target, "utf8") : null;
    if (committed !== text) {
      console.error(`artifacts/${file} differs from what the sources compile to`);
      different++;
    }
  } else {
    fs.writeFileSync(target, text);
  }
}
const sizes = JSON.parse(artifacts["build.json"]).codeSize;
if (check && different > 0) {
  console.error("run `node contracts/compile.js` and commit the artifacts");
  process.exit(1);
}
console.log(`${check ? "checked" : "wrote"} artifacts (solc ${solc.version()}); code sizes: ${JSON.stringify(sizes)}`);

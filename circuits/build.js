#!/usr/bin/env node
// Compiles the circom test circuit (npm circom2) and makes its Groth16 keys (npm snarkjs)
// with a deterministic setup: a powers-of-tau ceremony and a circuit-specific phase finished
// by public beacons, so the same sources give the same files on every machine. The keys are
// for tests only: the beacon is public, so anyone can forge proofs under them.
//
//   node circuits/build.js           writes circuits/test/circuit.{r1cs,wasm,zkey} and
//                                    verification_key.json, and an example proof of input.json
//   node circuits/build.js --check   rebuilds in a temporary directory and fails unless the
//                                    committed artifacts are identical
'use strict';
const { execFileSync } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const here = __dirname;
const bin = (name) => path.join(here, 'node_modules', '.bin', name);
const BEACON = '0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f';
const ARTIFACTS = ['circuit.r1cs', 'circuit.wasm', 'circuit.zkey', 'verification_key.json'];

function run(command, args, cwd) {
  execFileSync(bin(command), args, { cwd, stdio: ['ignore', 'ignore', 'inherit'] });
}

function build(out) {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'neverust-circom-'));
  fs.copyFileSync(path.join(here, 'test', 'circuit.circom'), path.join(work, 'circuit.circom'));
  run('circom2', ['circuit.circom', '--r1cs', '--wasm', '-o', '.'], work);
  run('snarkjs', ['powersoftau', 'new', 'bn128', '6', 'pot0.ptau'], work);
  run('snarkjs', ['powersoftau', 'beacon', 'pot0.ptau', 'pot1.ptau', BEACON, '10', '-n=neverust test'], work);
  run('snarkjs', ['powersoftau', 'prepare', 'phase2', 'pot1.ptau', 'pot.ptau'], work);
  run('snarkjs', ['groth16', 'setup', 'circuit.r1cs', 'pot.ptau', 'circuit0.zkey'], work);
  run('snarkjs', ['zkey', 'beacon', 'circuit0.zkey', 'circuit.zkey', BEACON, '10', '-n=neverust test'], work);
  run('snarkjs', ['zkey', 'export', 'verificationkey', 'circuit.zkey', 'verification_key.json'], work);
  fs.copyFileSync(path.join(work, 'circuit_js', 'circuit.wasm'), path.join(work, 'circuit.wasm'));
  for (const name of ARTIFACTS) {
    fs.copyFileSync(path.join(work, name), path.join(out, name));
  }
  fs.rmSync(work, { recursive: true, force: true });
}

const test = path.join(here, 'test');
if (process.argv.includes('--check')) {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'neverust-circom-check-'));
  build(out);
  const stale = ARTIFACTS.filter((name) => !fs.readFileSync(path.join(out, name)).equals(fs.readFileSync(path.join(test, name))));
  fs.rmSync(out, { recursive: true, force: true });
  if (stale.length > 0) {
    console.error(`circuits/test: ${stale.join(', ')} differ from a fresh build; run node circuits/build.js`);
    process.exit(1);
  }
  console.log('circuits/test: the committed artifacts match a fresh build');
} else {
  build(test);
  // An example proof by snarkjs (random blinding: not part of the check).
  run('snarkjs', ['groth16', 'fullprove', 'input.json', 'circuit.wasm', 'circuit.zkey', 'proof.json', 'public.json'], test);
  console.log('circuits/test: built');
}

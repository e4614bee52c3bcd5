#!/usr/bin/env node
// Builds native/ with cargo and installs it as native/vsw_native.node.
// Runs from `npm ci`/`npm install` (postinstall), also as root under `sudo -E`,
// where PATH no longer holds the user's ~/.cargo/bin: so we look there too.
import { spawnSync } from 'node:child_process';
import { findCargo } from './requirements.mjs';
import { copyFileSync, existsSync, renameSync, statSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const output = join(nativeDir, 'vsw_native.node');

const { cargo, sudoHome } = findCargo();
if (!cargo) {
  console.error('vsw: cargo was not found (looked in PATH, $CARGO_HOME, ~/.cargo/bin and the sudo user\'s ~/.cargo/bin): install Rust 1.63 or later (apt-get install cargo, or rustup) or set CARGO=/path/to/cargo.');
  process.exit(1);
}

const env = { ...process.env };
// A rustup cargo run as root under sudo needs the invoking user's toolchains.
if (sudoHome && cargo.startsWith(sudoHome) && !env.RUSTUP_HOME) env.RUSTUP_HOME = join(sudoHome, '.rustup');
env.CARGO_TARGET_DIR = env.CARGO_TARGET_DIR ?? join(nativeDir, 'target');

const result = spawnSync(cargo, ['build', '--release', '--offline', '--manifest-path', join(nativeDir, 'Cargo.toml')], {
  stdio: ['ignore', 'inherit', 'inherit'],
  env,
});
if (result.status !== 0) {
  console.error(`vsw: building the native addon with ${cargo} failed (exit ${result.status ?? result.signal}): see the compiler output above.`);
  process.exit(1);
}
const built = join(env.CARGO_TARGET_DIR, 'release', 'libvsw_native.so');
// Copy then rename: a running daemon has the old file mapped, and rewriting it in place could crash it.
const staging = `${output}.${process.pid}.tmp`;
copyFileSync(built, staging);
renameSync(staging, output);
console.log(`vsw: native addon built: ${output} (${Math.round(statSync(output).size / 1024)} KiB)`);

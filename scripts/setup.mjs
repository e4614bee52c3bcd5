#!/usr/bin/env node
// `npm run setup` (what the tests need) and `npm run setup:daemon` (what the
// daemon needs, and cargo to build the addon): installs the Debian packages
// this machine lacks, as root; as anyone else, says the one command to run.
// Needs nothing but node, so it runs before `npm ci`.
import { spawnSync } from 'node:child_process';
import { findCargo, missing } from './requirements.mjs';

const purpose = process.argv[2] ?? 'test';
if (!['daemon', 'bench', 'test'].includes(purpose)) {
  console.error(`vsw setup: ${purpose} is not a purpose: use daemon, bench or test.`);
  process.exit(2);
}
const packages = [...new Set(missing(purpose).map(([, pkg]) => pkg))];
if (!findCargo().cargo) packages.push('cargo');
if (packages.length === 0) {
  console.log(`vsw setup: everything the ${purpose === 'test' ? 'tests need' : purpose === 'bench' ? 'benchmarks need' : 'daemon needs'} is installed.`);
  process.exit(0);
}
const install = `apt-get install -y --no-install-recommends ${packages.join(' ')}`;
if (process.geteuid?.() !== 0) {
  console.error(`vsw setup: missing ${packages.join(', ')}: run \`sudo apt-get update && sudo ${install}\`, or this as root.`);
  process.exit(1);
}
console.log(`vsw setup: installing ${packages.join(' ')}`);
// noninteractive: tshark's installer would otherwise ask who may capture.
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
for (const args of [['update', '-qq'], ['install', '-y', '-qq', '--no-install-recommends', ...packages]]) {
  const result = spawnSync('apt-get', args, { stdio: ['ignore', 'ignore', 'inherit'], env });
  if (result.status !== 0) {
    console.error(`vsw setup: \`apt-get ${args.join(' ')}\` failed (exit ${result.status ?? result.signal}): run it by hand to see why.`);
    process.exit(1);
  }
}
const still = missing(purpose);
if (still.length > 0) {
  console.error(`vsw setup: ${still.map(([probe]) => probe).join(', ')} still missing after the install: check the packages ${still.map(([, p]) => p).join(', ')}.`);
  process.exit(1);
}
console.log('vsw setup: done.');

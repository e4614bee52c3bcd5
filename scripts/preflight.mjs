#!/usr/bin/env node
// Checks, before the tests or the daemon run, what a clean machine may lack,
// and says in one line what to install. No side effects.
import { existsSync } from 'node:fs';
import { missing as missingFor } from './requirements.mjs';

const purpose = process.argv[2] ?? 'test';
const table = purpose === 'daemon' ? 'daemon' : purpose === 'bench' ? 'bench' : 'test';

const problems = [];
if (process.geteuid && process.geteuid() !== 0) problems.push(`the ${purpose === 'test' ? 'tests need' : 'daemon needs'} root (namespaces and TAP devices): run as root or with sudo -E`);
const missing = missingFor(table);
if (missing.length) problems.push(`missing ${missing.map(([c]) => c).join(', ')}: run \`npm run setup${table === 'test' ? '' : `:${table}`}\` as root, or \`apt-get install ${[...new Set(missing.map(([, p]) => p))].join(' ')}\``);
if (!existsSync('/dev/net/tun')) problems.push('/dev/net/tun does not exist: load the tun module with `modprobe tun`');
if (!existsSync(new URL('../native/vsw_native.node', import.meta.url))) problems.push('the native addon is not built: run `npm run build:native` (needs cargo)');
if (problems.length) {
  console.error(`vsw: ${problems.join('; ')}.`);
  process.exit(1);
}

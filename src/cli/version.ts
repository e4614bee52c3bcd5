import { readFileSync } from 'node:fs';

/** The version in package.json; this file runs from dist/src/cli/, three levels below it. */
export function cliVersion(): string {
  try {
    const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version?: string };
    return pkg.version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/**
 * Rates and sizes as people type them for docker and tc, so a limit copied
 * from a `tc qdisc` line or a compose file means the same thing here.
 *
 * Following tc(8): rates are decimal (1kbit = 1000 bit/s) and sizes binary
 * (1kb = 1024 bytes). "bit" units are bits, "bps" units are BYTES per second
 * (tc's reading: 10mbps is 80 Mbit/s), and a bare number is bit/s for a rate
 * and bytes for a size. The binary rate units (kibit, mibit, ...) are accepted
 * too. Case does not matter.
 *
 * Errors are one sentence that says what is wrong and what to write instead:
 * they reach the operator unchanged through the API.
 */

const RATE_UNITS: Record<string, number> = {
  '': 1,
  bit: 1,
  kbit: 1e3,
  mbit: 1e6,
  gbit: 1e9,
  tbit: 1e12,
  kibit: 1024,
  mibit: 1024 ** 2,
  gibit: 1024 ** 3,
  tibit: 1024 ** 4,
  bps: 8,
  kbps: 8e3,
  mbps: 8e6,
  gbps: 8e9,
  tbps: 8e12,
  kibps: 8 * 1024,
  mibps: 8 * 1024 ** 2,
  gibps: 8 * 1024 ** 3,
  tibps: 8 * 1024 ** 4,
};

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kb: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
  gib: 1024 ** 3,
  kbit: 1024 / 8,
  mbit: 1024 ** 2 / 8,
  gbit: 1024 ** 3 / 8,
};

const NUMBER_AND_UNIT = /^([+-]?(?:\d+(?:\.\d*)?|\.\d+))\s*([a-z]*)(\/s)?$/;

/** Parses a rate such as 100mbit, 1.5gbit, 10mbps (bytes) or 2000000 (bit/s); returns bits per second. */
export function parseRate(text: string): number {
  const shown = JSON.stringify(String(text));
  const m = typeof text === 'string' ? NUMBER_AND_UNIT.exec(text.trim().toLowerCase()) : null;
  const unit = m ? RATE_UNITS[m[2]] : undefined;
  if (m && unit === undefined && m[3] === undefined && SIZE_UNITS[m[2]] !== undefined) {
    throw new Error(`${shown} is a size, not a rate: write ${m[1]}${m[2].replace(/b$/, '')}bit for bits or ${m[1]}${m[2].replace(/b$/, '')}bps for bytes per second.`);
  }
  // "/s" only reads naturally after a bit unit (100mbit/s); "bps/s" is a typo.
  if (!m || unit === undefined || (m[3] !== undefined && !m[2].endsWith('bit'))) {
    throw new Error(`${shown} is not a rate: write a number with a unit such as 100mbit or 1gbit.`);
  }
  const bps = Math.round(Number(m[1]) * unit);
  if (!(bps >= 1) || !Number.isFinite(bps)) {
    throw new Error(`${shown} is not a usable rate: write a rate above zero such as 100mbit.`);
  }
  return bps;
}

/** Parses a size such as 64kb, 1mb, 2m or 1500 (bytes); returns bytes. */
export function parseSize(text: string): number {
  const shown = JSON.stringify(String(text));
  const m = typeof text === 'string' ? NUMBER_AND_UNIT.exec(text.trim().toLowerCase()) : null;
  const unit = m && m[3] === undefined ? SIZE_UNITS[m[2]] : undefined;
  if (!m || unit === undefined) {
    throw new Error(`${shown} is not a size: write a number of bytes with an optional unit such as 1500, 64kb or 1mb.`);
  }
  const bytes = Math.round(Number(m[1]) * unit);
  if (!(bytes >= 1) || !Number.isSafeInteger(bytes)) {
    throw new Error(`${shown} is not a usable size: write a size above zero such as 64kb.`);
  }
  return bytes;
}

const FORMAT_UNITS: Array<[number, string]> = [
  [1e12, 'tbit'],
  [1e9, 'gbit'],
  [1e6, 'mbit'],
  [1e3, 'kbit'],
];

/** The shortest tc-style text for a rate in bits per second: 100mbit, 1.5gbit, 64kbit, 300bit. */
export function formatRate(bitsPerSecond: number): string {
  for (const [unit, name] of FORMAT_UNITS) {
    const v = bitsPerSecond / unit;
    if (v >= 1 && Math.abs(v * 1000 - Math.round(v * 1000)) < 1e-6) return `${trim(v)}${name}`;
  }
  for (const [unit, name] of FORMAT_UNITS) {
    if (bitsPerSecond >= unit) return `${trim(bitsPerSecond / unit)}${name}`;
  }
  return `${Math.round(bitsPerSecond)}bit`;
}

function trim(v: number): string {
  return String(Number(v.toFixed(3)));
}

/**
 * Byte-order helpers shared by the views. Plain functions over a Uint8Array
 * rather than a DataView: a DataView is tied to one ArrayBuffer, so a view that
 * is reset onto another buffer would have to allocate a new one.
 */

/** What a view points at before its first successful reset, and after a failed one. */
export const EMPTY = new Uint8Array(0);

/** True when [offset, offset + length) lies inside buf and holds at least `min` bytes. */
export function fits(buf: Uint8Array, offset: number, length: number, min: number): boolean {
  return offset >= 0 && length >= min && offset + length <= buf.length;
}

export function read16(buf: Uint8Array, i: number): number {
  return (buf[i] << 8) | buf[i + 1];
}

export function write16(buf: Uint8Array, i: number, v: number): void {
  buf[i] = v >>> 8;
  buf[i + 1] = v;
}

/** Unsigned: `>>> 0` keeps addresses and sequence numbers above 2^31 positive. */
export function read32(buf: Uint8Array, i: number): number {
  return ((buf[i] << 24) | (buf[i + 1] << 16) | (buf[i + 2] << 8) | buf[i + 3]) >>> 0;
}

export function write32(buf: Uint8Array, i: number, v: number): void {
  buf[i] = v >>> 24;
  buf[i + 1] = v >>> 16;
  buf[i + 2] = v >>> 8;
  buf[i + 3] = v;
}

export function read16le(buf: Uint8Array, i: number): number {
  return buf[i] | (buf[i + 1] << 8);
}

export function write16le(buf: Uint8Array, i: number, v: number): void {
  buf[i] = v;
  buf[i + 1] = v >>> 8;
}

/** Byte-wise copy: cheaper than `set(subarray(...))` for a handful of bytes, and allocates nothing. */
export function copyBytes(dst: Uint8Array, dstOff: number, src: Uint8Array, srcOff: number, n: number): void {
  for (let i = 0; i < n; i++) dst[dstOff + i] = src[srcOff + i];
}

export function hex16(v: number): string {
  return '0x' + v.toString(16).padStart(4, '0');
}

/**
 * A fresh copy of buf[off, off+len) as a plain Uint8Array. Reprs copy payloads
 * rather than alias them because rx slots are reused by the next batch; and
 * not through slice() because on a Buffer that either aliases (Buffer#slice)
 * or goes through the deprecated Buffer constructor (species).
 */
export function copyOut(buf: Uint8Array, off: number, len: number): Uint8Array {
  const out = new Uint8Array(len);
  copyBytes(out, 0, buf, off, len);
  return out;
}

/**
 * Cuts a pcap or pcapng byte stream at whole units (the file header, then each
 * record or block) and counts the frames, so a reader that stops anywhere
 * (Ctrl-C of `vsw capture`) writes a file that ends on a whole frame and can
 * say how many it holds.
 */
import { PCAP_FILE_HEADER_BYTES, PCAP_MAGIC_MICROSECONDS, PCAP_RECORD_HEADER_BYTES } from './pcap.js';
import { PCAPNG_ENHANCED_PACKET, PCAPNG_SECTION_HEADER } from './pcapng.js';
import type { CaptureFormat } from './writer.js';

/** pcapng's block header: type and total length. */
const BLOCK_HEADER_BYTES = 8;
const MIN_BLOCK_BYTES = 12;

export class CaptureFramer {
  /** Frames in the whole units handed out so far. */
  frames = 0;
  format: CaptureFormat | null = null;
  private pending: Buffer = Buffer.alloc(0);
  private headerSeen = false;

  /** Takes the next bytes of the stream; returns the whole units they complete (possibly none). */
  push(chunk: Buffer): Buffer {
    const buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    let at = 0;
    for (;;) {
      const size = this.unitSize(buf, at);
      if (size < 0 || at + size > buf.length) break;
      at += size;
    }
    this.pending = at === buf.length ? Buffer.alloc(0) : Buffer.from(buf.subarray(at));
    return buf.subarray(0, at);
  }

  /** Bytes held back: the start of a unit that has not arrived whole. */
  get held(): number {
    return this.pending.length;
  }

  /** The size of the unit at `at`, counting it if it is a frame; -1 when its header is not all there yet. */
  private unitSize(buf: Buffer, at: number): number {
    if (this.format === null) {
      if (buf.length - at < 4) return -1;
      const magic = buf.readUInt32LE(at);
      if (magic === PCAP_MAGIC_MICROSECONDS) this.format = 'pcap';
      else if (magic === PCAPNG_SECTION_HEADER) this.format = 'pcapng';
      else throw new Error('the stream is neither pcap nor pcapng (little-endian)');
    }
    if (this.format === 'pcap') {
      if (!this.headerSeen) {
        if (buf.length - at < PCAP_FILE_HEADER_BYTES) return -1;
        this.headerSeen = true;
        return PCAP_FILE_HEADER_BYTES;
      }
      if (buf.length - at < PCAP_RECORD_HEADER_BYTES) return -1;
      const size = PCAP_RECORD_HEADER_BYTES + buf.readUInt32LE(at + 8);
      if (at + size <= buf.length) this.frames++;
      return size;
    }
    if (buf.length - at < BLOCK_HEADER_BYTES) return -1;
    const size = buf.readUInt32LE(at + 4);
    if (size < MIN_BLOCK_BYTES || size % 4 !== 0) throw new Error(`a pcapng block claims ${size} bytes`);
    if (at + size <= buf.length && buf.readUInt32LE(at) === PCAPNG_ENHANCED_PACKET) this.frames++;
    return size;
  }
}

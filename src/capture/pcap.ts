/**
 * The classic libpcap file format (tcpdump's -w): a 24-byte file header, then
 * a 16-byte record header before each frame. Microsecond timestamps,
 * little-endian, Ethernet. It has no room for a port or a drop reason; pcapng
 * (pcapng.ts) carries both.
 */
import { LINKTYPE_ETHERNET, microseconds, type CapturedFrame, type CaptureWriter } from './writer.js';

export const PCAP_MAGIC_MICROSECONDS = 0xa1b2c3d4;
export const PCAP_FILE_HEADER_BYTES = 24;
export const PCAP_RECORD_HEADER_BYTES = 16;

export class PcapWriter implements CaptureWriter {
  readonly format = 'pcap';

  constructor(readonly snaplen: number) {}

  start(): Buffer {
    const b = Buffer.alloc(PCAP_FILE_HEADER_BYTES);
    b.writeUInt32LE(PCAP_MAGIC_MICROSECONDS, 0);
    b.writeUInt16LE(2, 4);
    b.writeUInt16LE(4, 6);
    // thiszone and sigfigs stay 0, as every writer since libpcap 1.0 leaves them.
    b.writeUInt32LE(this.snaplen, 16);
    b.writeUInt32LE(LINKTYPE_ETHERNET, 20);
    return b;
  }

  frame(f: CapturedFrame): Buffer {
    const length = Math.min(f.data.length, this.snaplen);
    const b = Buffer.allocUnsafe(PCAP_RECORD_HEADER_BYTES + length);
    const us = microseconds(f.timeMs);
    b.writeUInt32LE(Math.floor(us / 1e6), 0);
    b.writeUInt32LE(us % 1e6, 4);
    b.writeUInt32LE(length, 8);
    b.writeUInt32LE(f.originalLength, 12);
    b.set(f.data.subarray(0, length), PCAP_RECORD_HEADER_BYTES);
    return b;
  }
}

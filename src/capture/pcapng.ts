/**
 * pcapng (the IETF opsawg draft "PCAP Next Generation Dump File Format"):
 * a section header block, an interface description block per port, named
 * after it, and an enhanced packet block per frame with an opt_comment (the
 * capture point, and a drop's reason) and epb_flags (inbound or outbound).
 * Little-endian, microsecond timestamps (if_tsresol's default), Ethernet.
 */
import { LINKTYPE_ETHERNET, microseconds, type CapturedFrame, type CaptureWriter } from './writer.js';

export const PCAPNG_SECTION_HEADER = 0x0a0d0d0a;
export const PCAPNG_INTERFACE_DESCRIPTION = 0x00000001;
export const PCAPNG_ENHANCED_PACKET = 0x00000006;
export const PCAPNG_BYTE_ORDER_MAGIC = 0x1a2b3c4d;

const OPT_ENDOFOPT = 0;
const OPT_COMMENT = 1;
const SHB_USERAPPL = 4;
const IF_NAME = 2;
const IF_DESCRIPTION = 3;
const EPB_FLAGS = 2;
const EPB_FLAGS_INBOUND = 1;
const EPB_FLAGS_OUTBOUND = 2;

export interface InterfaceDescription {
  name: string;
  description?: string;
}

type Option = [code: number, value: Buffer];

const pad4 = (n: number): number => (n + 3) & ~3;

/** Options as the format lays them out: code, length, value padded to 4; then opt_endofopt. None: nothing at all. */
function encodeOptions(options: Option[]): Buffer {
  if (options.length === 0) return Buffer.alloc(0);
  const size = options.reduce((n, [, v]) => n + 4 + pad4(v.length), 4);
  const b = Buffer.alloc(size);
  let at = 0;
  for (const [code, value] of options) {
    b.writeUInt16LE(code, at);
    b.writeUInt16LE(value.length, at + 2);
    value.copy(b, at + 4);
    at += 4 + pad4(value.length);
  }
  b.writeUInt16LE(OPT_ENDOFOPT, at);
  return b;
}

/** type, total length, body (fixed part, data padded to 4, options), total length again. */
function block(type: number, fixed: Buffer, data: Uint8Array | null, options: Option[]): Buffer {
  const opts = encodeOptions(options);
  const dataLength = data === null ? 0 : pad4(data.length);
  const total = 12 + fixed.length + dataLength + opts.length;
  const b = Buffer.alloc(total);
  b.writeUInt32LE(type, 0);
  b.writeUInt32LE(total, 4);
  fixed.copy(b, 8);
  if (data !== null) b.set(data, 8 + fixed.length);
  opts.copy(b, 8 + fixed.length + dataLength);
  b.writeUInt32LE(total, total - 4);
  return b;
}

const text = (s: string): Buffer => Buffer.from(s, 'utf8');

export class PcapngWriter implements CaptureWriter {
  readonly format = 'pcapng';
  /** Interface ids by key, in the order their description blocks were written. */
  private readonly interfaces = new Map<number, number>();

  constructor(
    readonly snaplen: number,
    private readonly describe: (key: number) => InterfaceDescription,
    private readonly application?: string,
  ) {}

  start(): Buffer {
    const fixed = Buffer.alloc(16);
    fixed.writeUInt32LE(PCAPNG_BYTE_ORDER_MAGIC, 0);
    fixed.writeUInt16LE(1, 4);
    fixed.writeUInt16LE(0, 6);
    // Section length -1: not given (the stream's length is not known when it starts).
    fixed.writeBigInt64LE(-1n, 8);
    return block(PCAPNG_SECTION_HEADER, fixed, null, this.application ? [[SHB_USERAPPL, text(this.application)]] : []);
  }

  frame(f: CapturedFrame): Buffer {
    let id = this.interfaces.get(f.interfaceKey);
    let idb: Buffer | null = null;
    if (id === undefined) {
      id = this.interfaces.size;
      this.interfaces.set(f.interfaceKey, id);
      idb = this.interfaceBlock(this.describe(f.interfaceKey));
    }
    const length = Math.min(f.data.length, this.snaplen);
    const us = microseconds(f.timeMs);
    const fixed = Buffer.alloc(20);
    fixed.writeUInt32LE(id, 0);
    fixed.writeUInt32LE(Math.floor(us / 2 ** 32), 4);
    fixed.writeUInt32LE(us % 2 ** 32, 8);
    fixed.writeUInt32LE(length, 12);
    fixed.writeUInt32LE(f.originalLength, 16);
    const options: Option[] = [];
    if (f.comment !== undefined) options.push([OPT_COMMENT, text(f.comment)]);
    if (f.direction !== undefined) {
      const flags = Buffer.alloc(4);
      flags.writeUInt32LE(f.direction === 'inbound' ? EPB_FLAGS_INBOUND : EPB_FLAGS_OUTBOUND, 0);
      options.push([EPB_FLAGS, flags]);
    }
    const epb = block(PCAPNG_ENHANCED_PACKET, fixed, f.data.subarray(0, length), options);
    return idb === null ? epb : Buffer.concat([idb, epb]);
  }

  private interfaceBlock(d: InterfaceDescription): Buffer {
    const fixed = Buffer.alloc(8);
    fixed.writeUInt16LE(LINKTYPE_ETHERNET, 0);
    fixed.writeUInt32LE(this.snaplen, 4);
    const options: Option[] = [[IF_NAME, text(d.name)]];
    if (d.description !== undefined) options.push([IF_DESCRIPTION, text(d.description)]);
    return block(PCAPNG_INTERFACE_DESCRIPTION, fixed, null, options);
  }
}

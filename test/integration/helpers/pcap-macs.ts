/**
 * The MAC addresses a capture file holds where MACs live: Ethernet source and
 * destination, and an ARP packet's sender and target hardware addresses
 * (after any 802.1Q tags). Searching the raw bytes instead would match a MAC
 * made of an IPv4 address (vsw's 02:76:A:B:C:D) whenever an IP header's
 * checksum happens to be 0x0276 just before that address.
 */
import { readFile } from 'node:fs/promises';

const hex = (b: Buffer, at: number): string => [...b.subarray(at, at + 6)].map((x) => x.toString(16).padStart(2, '0')).join(':');

export interface WireMacs {
  /** Every MAC seen in those fields, lower case. */
  all: Set<string>;
  /** Ethernet sources of IPv6 frames (whose neighbour discovery would carry MACs in its options). */
  ipv6Sources: Set<string>;
}

/** Reads a classic pcap file of Ethernet frames (tcpdump -w). */
export async function macsOnWire(file: string): Promise<WireMacs> {
  const b = await readFile(file);
  const little = b.readUInt32LE(0) === 0xa1b2c3d4 || b.readUInt32LE(0) === 0xa1b23c4d;
  const u32 = (at: number): number => (little ? b.readUInt32LE(at) : b.readUInt32BE(at));
  const all = new Set<string>();
  const ipv6Sources = new Set<string>();
  for (let at = 24; at + 16 <= b.length; ) {
    const caplen = u32(at + 8);
    const f = at + 16;
    at = f + caplen;
    if (caplen < 14 || at > b.length) continue;
    all.add(hex(b, f));
    all.add(hex(b, f + 6));
    let type = b.readUInt16BE(f + 12);
    let l3 = f + 14;
    while ((type === 0x8100 || type === 0x88a8) && l3 + 4 <= at) {
      type = b.readUInt16BE(l3 + 2);
      l3 += 4;
    }
    if (type === 0x0806 && l3 + 28 <= at) {
      all.add(hex(b, l3 + 8));
      all.add(hex(b, l3 + 18));
    }
    if (type === 0x86dd) ipv6Sources.add(hex(b, f + 6));
  }
  return { all, ipv6Sources };
}

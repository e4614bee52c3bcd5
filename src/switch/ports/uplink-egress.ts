/**
 * How frames leave through a physical uplink when they need changing on the
 * way out: an l2bridge network puts the uplink's MAC on them (and on an ARP
 * frame's sender hardware address) and sends IPv4 and ARP only; a network on
 * a VLAN (`--vlan`) inserts its 802.1Q tag, as the socket hands frames over
 * untagged and the kernel has no VLAN device to add it (none is needed).
 *
 * A frame switched to the uplink alone is changed in place: the tag goes in
 * by moving the vnet header and the MACs 4 bytes into the headroom in front
 * of the frame, which every rx slot has. A flooded frame is one buffer that
 * the other receivers share, and they must see it unchanged: it is copied
 * into the uplink's staging area first. A frame that does not start at its
 * slot's headroom (none on these networks today) is copied as well.
 */
import { ArpField } from '../../packet/arp.js';
import { copyBytes, read16, read16le, write16, write16le } from '../../packet/bytes.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { writeMac } from '../../packet/ethernet.js';
import { VnetField, VnetFlags } from '../../packet/vnet.js';
import type { SwitchPort, PortHost } from './port.js';
import { transmitCounted } from './tap-port.js';

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const TPID_8021Q = 0x8100;
const ETH_HEADER = 14;
const MACS = 12;
const TAG = 4;
const ARP_SHA_AT = ETH_HEADER + ArpField.SHA;
/**
 * The staging area for flooded frames, per uplink: broadcasts are small; an
 * unknown-unicast TSO frame is the rare large one. A batch that floods more
 * than this drops the rest (txFailed), as a full device queue would.
 */
const STAGING_BYTES = 512 * 1024;

export interface UplinkEgressOptions {
  /** The uplink's MAC as macHi16/macLo32, put on every frame as its source (l2bridge); absent: frames keep theirs. */
  sourceMac?: { hi: number; lo: number };
  /** Only IPv4 and ARP leave; the rest is dropped as l2bridgeNotIpv4. */
  ipv4Only: boolean;
  /** The VLAN whose 802.1Q tag every frame gets (1..4094), or 0 for untagged. */
  vlan: number;
}

export class UplinkEgress {
  private readonly staging = new Uint8Array(STAGING_BYTES);
  private readonly stagedOffsets: Uint32Array;
  private readonly stagedLengths: Uint32Array;
  private readonly rewriteSource: boolean;
  private readonly macHi: number;
  private readonly macLo: number;

  constructor(
    private readonly opts: UplinkEgressOptions,
    queueSize: number,
  ) {
    this.stagedOffsets = new Uint32Array(queueSize);
    this.stagedLengths = new Uint32Array(queueSize);
    this.rewriteSource = opts.sourceMac !== undefined;
    this.macHi = opts.sourceMac?.hi ?? 0;
    this.macLo = opts.sourceMac?.lo ?? 0;
  }

  /** What the port's flush would drop the frame for, or 0 (for a dry run). */
  refuses(buf: Uint8Array, off: number, len: number): number {
    if (!this.opts.ipv4Only) return 0;
    const type = len >= ETH_HEADER ? read16(buf, off + 12) : 0;
    return type === ETHERTYPE_IPV4 || type === ETHERTYPE_ARP ? 0 : DropReason.l2bridgeNotIpv4;
  }

  /** Changes what is queued on `port` as the options say and writes it: one sendmmsg for the frames changed in place, one for the staged ones. */
  flush(port: SwitchPort, host: PortHost): void {
    const n = port.txCount;
    if (n === 0) return;
    const io = host.io;
    const buf = io.buffer;
    const vnet = io.vnetHdrLen;
    const offsets = port.txOffsets;
    const lengths = port.txLengths;
    const staging = this.staging;
    const tag = this.opts.vlan !== 0 ? TAG : 0;
    let kept = 0;
    let keptBytes = 0;
    let staged = 0;
    let stagedBytes = 0;
    let stagingUsed = 0;
    for (let i = 0; i < n; i++) {
      const off = offsets[i];
      const len = lengths[i];
      const refused = this.refuses(buf, off, len);
      if (refused !== 0) {
        host.dropped(port.id, refused, off, len);
        continue;
      }
      if (port.txReplyTo[i] >= 0 && off % io.slotSize === io.headroom) {
        const at = this.change(buf, off, len, vnet);
        offsets[kept] = at;
        lengths[kept] = len + tag;
        kept++;
        keptBytes += len + tag;
        continue;
      }
      // Room for the tag in front of the copy, so the copy is changed like an original.
      const at = stagingUsed + tag + vnet;
      if (at + len > STAGING_BYTES) {
        host.dropped(port.id, DropReason.txFailed, off, len);
        continue;
      }
      copyBytes(staging, at - vnet, buf, off - vnet, vnet + len);
      stagingUsed = at + len;
      this.stagedOffsets[staged] = this.change(staging, at, len, vnet);
      this.stagedLengths[staged] = len + tag;
      staged++;
      stagedBytes += len + tag;
    }
    // The uplink's socket: one sendmmsg for each of the two.
    if (kept > 0) transmitCounted(host, port, buf, offsets, lengths, kept, keptBytes, true);
    if (staged > 0) transmitCounted(host, port, staging, this.stagedOffsets, this.stagedLengths, staged, stagedBytes, true);
    port.txCount = 0;
    port.txBytes = 0;
  }

  /** Changes the frame at buf[off] (its vnet header before it, room for a tag before that); returns where it starts now. */
  private change(buf: Uint8Array, off: number, len: number, vnet: number): number {
    if (this.rewriteSource) {
      writeMac(buf, off + 6, this.macHi, this.macLo);
      if (len >= ARP_SHA_AT + 6 && read16(buf, off + 12) === ETHERTYPE_ARP) writeMac(buf, off + ARP_SHA_AT, this.macHi, this.macLo);
    }
    if (this.opts.vlan === 0) return off;
    // The vnet header and the MACs move 4 bytes forward; the tag goes where the MACs ended.
    const start = off - vnet;
    buf.copyWithin(start - TAG, start, off + MACS);
    const at = off - TAG;
    write16(buf, at + MACS, TPID_8021Q);
    write16(buf, at + MACS + 2, this.opts.vlan);
    if (vnet > 0) {
      // Offsets the kernel reads from the frame's start move with the tag.
      const h = at - vnet;
      if ((buf[h + VnetField.FLAGS] & VnetFlags.NEEDS_CSUM) !== 0) write16le(buf, h + VnetField.CSUM_START, read16le(buf, h + VnetField.CSUM_START) + TAG);
      if (buf[h + VnetField.GSO_TYPE] !== 0) write16le(buf, h + VnetField.HDR_LEN, read16le(buf, h + VnetField.HDR_LEN) + TAG);
    }
    return at;
  }
}

/**
 * The uplink of an l2bridge network: the host interface, through an AF_PACKET
 * socket that is not promiscuous, and one MAC on the wire, the interface's.
 *
 * In: the socket sees what the interface receives. IPv4 broadcast and
 * multicast enter the switch; ARP enters when it names a container's address,
 * and IPv4 to the interface's MAC when it is for one of them; the rest is the
 * host's own traffic or the LAN's (IPv6 among it), and stays out uncounted.
 * The network's L2BridgeStage then delivers by address.
 *
 * Out: every frame gets the interface's MAC as its source, and an ARP frame
 * its sender hardware address too, so no container MAC reaches the LAN; what
 * is neither IPv4 nor ARP is dropped (IPv6 neighbour discovery carries the
 * container's MAC in its options). A flooded frame is one buffer shared with
 * the containers it also goes to, which must see it unchanged: it is copied
 * into the port's own staging area and rewritten there. A frame switched to
 * the uplink alone is rewritten in place.
 */
import { ArpField } from '../../packet/arp.js';
import { copyBytes, read16, read32 } from '../../packet/bytes.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { macHi16, macLo32, mustParseMac, writeMac } from '../../packet/ethernet.js';
import { COUNTER_COLUMNS, RX_BYTES, RX_FRAMES } from '../counters.js';
import type { SwitchNetwork } from '../network.js';
import type { L2BridgeAddresses } from '../stages/l2bridge-stage.js';
import { FlushPhase, PortKind, SwitchPort, type PortDriver, type PortHost } from './port.js';
import { transmitCounted } from './tap-port.js';

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ETH_HEADER = 14;
/** Ethernet, then the IPv4 destination (bytes 16-19 of the header). */
const IPV4_DST_AT = ETH_HEADER + 16;
const ARP_TPA_AT = ETH_HEADER + ArpField.TPA;
const ARP_SHA_AT = ETH_HEADER + ArpField.SHA;
/**
 * The staging area for flooded frames, per uplink: broadcasts are small; an
 * unknown-unicast TSO frame is the rare large one. A batch that floods more
 * than this drops the rest (txFailed), as a full device queue would.
 */
const STAGING_BYTES = 512 * 1024;

class L2BridgeUplinkDriver implements PortDriver {
  private readonly staging = new Uint8Array(STAGING_BYTES);
  private readonly stagedOffsets: Uint32Array;
  private readonly stagedLengths: Uint32Array;

  constructor(
    private readonly macHi: number,
    private readonly macLo: number,
    private readonly addresses: L2BridgeAddresses,
    queueSize: number,
  ) {
    this.stagedOffsets = new Uint32Array(queueSize);
    this.stagedLengths = new Uint32Array(queueSize);
  }

  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    const io = host.io;
    const buf = io.buffer;
    const lengths = io.lengths;
    const counters = host.counters;
    const row = port.id * COUNTER_COLUMNS;
    let bytes = 0;
    for (let slot = 0; slot < count; slot++) {
      const off = slot * io.slotSize + io.headroom;
      const len = lengths[slot];
      if (!this.containers(buf, off, len)) continue;
      counters[row + RX_FRAMES]++;
      counters[row + RX_BYTES] += len;
      bytes += len;
      host.switchFrame(port, off, len, now);
    }
    return bytes;
  }

  /** Whether the frame the LAN sent is the containers' business (see the file's comment). */
  private containers(buf: Uint8Array, off: number, len: number): boolean {
    if (len < ETH_HEADER) return true; // the switch counts it as a runt
    const type = read16(buf, off + 12);
    // ARP, broadcast or not, only when it names a container: the LAN's other ARP is constant noise.
    if (type === ETHERTYPE_ARP) return len >= ARP_TPA_AT + 4 && this.addresses.get(read32(buf, off + ARP_TPA_AT)) !== undefined;
    if (type !== ETHERTYPE_IPV4) return false;
    if ((buf[off] & 1) !== 0) return true;
    if (macHi16(buf, off) !== this.macHi || macLo32(buf, off) !== this.macLo) return false;
    return len >= IPV4_DST_AT + 4 && this.addresses.get(read32(buf, off + IPV4_DST_AT)) !== undefined;
  }

  flush(port: SwitchPort, host: PortHost): void {
    const n = port.txCount;
    if (n === 0) return;
    const io = host.io;
    const buf = io.buffer;
    const vnet = io.vnetHdrLen;
    const offsets = port.txOffsets;
    const lengths = port.txLengths;
    const staging = this.staging;
    let kept = 0;
    let keptBytes = 0;
    let staged = 0;
    let stagedBytes = 0;
    let stagingUsed = 0;
    for (let i = 0; i < n; i++) {
      const off = offsets[i];
      const len = lengths[i];
      const type = len >= ETH_HEADER ? read16(buf, off + 12) : 0;
      if (type !== ETHERTYPE_IPV4 && type !== ETHERTYPE_ARP) {
        host.dropped(port.id, DropReason.l2bridgeNotIpv4, off, len);
        continue;
      }
      if (port.txReplyTo[i] >= 0) {
        this.rewrite(buf, off, type);
        offsets[kept] = off;
        lengths[kept] = len;
        kept++;
        keptBytes += len;
        continue;
      }
      if (stagingUsed + vnet + len > STAGING_BYTES) {
        host.dropped(port.id, DropReason.txFailed, off, len);
        continue;
      }
      copyBytes(staging, stagingUsed, buf, off - vnet, vnet + len);
      const at = stagingUsed + vnet;
      stagingUsed = at + len;
      this.rewrite(staging, at, type);
      this.stagedOffsets[staged] = at;
      this.stagedLengths[staged] = len;
      staged++;
      stagedBytes += len;
    }
    if (kept > 0) transmitCounted(host, port, buf, offsets, lengths, kept, keptBytes);
    if (staged > 0) transmitCounted(host, port, staging, this.stagedOffsets, this.stagedLengths, staged, stagedBytes);
    port.txCount = 0;
    port.txBytes = 0;
  }

  private rewrite(buf: Uint8Array, off: number, type: number): void {
    writeMac(buf, off + 6, this.macHi, this.macLo);
    if (type === ETHERTYPE_ARP) writeMac(buf, off + ARP_SHA_AT, this.macHi, this.macLo);
  }

  refuses(_port: SwitchPort, buf: Uint8Array, off: number, len: number): number {
    const type = len >= ETH_HEADER ? read16(buf, off + 12) : 0;
    return type === ETHERTYPE_IPV4 || type === ETHERTYPE_ARP ? 0 : DropReason.l2bridgeNotIpv4;
  }
}

/** `mac`: the interface's own, aa:bb:cc:dd:ee:ff; `addresses`: the network's containers (its L2BridgeStage's). */
export function l2bridgeUplinkPort(id: number, network: SwitchNetwork, fd: number, name: string, mac: string, addresses: L2BridgeAddresses, maxFrame: number, queueSize: number): SwitchPort {
  const m = mustParseMac(mac);
  const driver = new L2BridgeUplinkDriver(macHi16(m, 0), macLo32(m, 0), addresses, queueSize);
  return new SwitchPort(id, PortKind.PACKET_UPLINK, network, fd, name, maxFrame, FlushPhase.WRITE, true, true, driver, queueSize, false);
}

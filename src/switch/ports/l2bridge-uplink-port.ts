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
 * Out (uplink-egress.ts): every frame gets the interface's MAC as its
 * source, and an ARP frame its sender hardware address too, so no container
 * MAC reaches the LAN; what is neither IPv4 nor ARP is dropped (IPv6
 * neighbour discovery carries the container's MAC in its options).
 */
import { ArpField } from '../../packet/arp.js';
import { read16, read32 } from '../../packet/bytes.js';
import { macHi16, macLo32, mustParseMac } from '../../packet/ethernet.js';
import type { SwitchNetwork } from '../network.js';
import type { AddressTable } from '../address-table.js';
import { FlushPhase, PortKind, SwitchPort, type PortDriver, type PortHost } from './port.js';
import { receiveAccepted, type UplinkFilter } from './packet-uplink-port.js';
import { UplinkEgress } from './uplink-egress.js';

const ETHERTYPE_IPV4 = 0x0800;
const ETHERTYPE_ARP = 0x0806;
const ETH_HEADER = 14;
/** Ethernet, then the IPv4 destination (bytes 16-19 of the header). */
const IPV4_DST_AT = ETH_HEADER + 16;
const ARP_TPA_AT = ETH_HEADER + ArpField.TPA;

class L2BridgeUplinkDriver implements PortDriver, UplinkFilter {
  private readonly egress: UplinkEgress;

  constructor(
    private readonly macHi: number,
    private readonly macLo: number,
    private readonly addresses: AddressTable,
    vlan: number,
    queueSize: number,
  ) {
    this.egress = new UplinkEgress({ sourceMac: { hi: macHi, lo: macLo }, ipv4Only: true, vlan }, queueSize);
  }

  receive(port: SwitchPort, host: PortHost, count: number, now: number): number {
    return receiveAccepted(port, host, count, now, this);
  }

  /** Whether the frame the LAN sent is the containers' business (see the file's comment). */
  accepts(buf: Uint8Array, off: number, len: number): boolean {
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
    this.egress.flush(port, host);
  }

  refuses(_port: SwitchPort, buf: Uint8Array, off: number, len: number): number {
    return this.egress.refuses(buf, off, len);
  }
}

/** `mac`: the interface's own, aa:bb:cc:dd:ee:ff; `addresses`: the network's containers (its L2BridgeStage's); `vlan`: 0 or the VLAN it tags with. */
export function l2bridgeUplinkPort(id: number, network: SwitchNetwork, fd: number, name: string, mac: string, addresses: AddressTable, vlan: number, maxFrame: number, queueSize: number): SwitchPort {
  const m = mustParseMac(mac);
  const driver = new L2BridgeUplinkDriver(macHi16(m, 0), macLo32(m, 0), addresses, vlan, queueSize);
  return new SwitchPort(id, PortKind.PACKET_UPLINK, network, fd, name, maxFrame, FlushPhase.WRITE, true, true, driver, queueSize, false);
}

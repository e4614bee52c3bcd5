/**
 * An l2bridge or l2tunnel network ("1 MAC, N IPs", Windows' L2 Bridge and L2
 * Tunnel): on the LAN every
 * container is the host's uplink MAC with an address of its own. Frames from
 * the LAN come to the uplink's MAC, so this stage delivers them by their IPv4
 * destination, writing the container's MAC back in; it answers ARP on the LAN
 * for container addresses with the uplink's MAC, and keeps every other frame
 * of the LAN (the host's own, IPv6, requests for other addresses) away from
 * the containers. What containers send is switched as on any network; the
 * uplink's flush puts its MAC on what leaves (l2bridge-uplink-port.ts), so
 * frames between containers of the host stay local with their own MACs.
 *
 * l2tunnel (a container host in Azure's model): nothing is switched locally;
 * every frame a container sends goes out of the uplink to the fabric host,
 * even one for another container of the host, and comes back by address.
 *
 * On a fabric host (an l2bridge network with a fabric port, fabric-port.ts),
 * frames from a fabric address to another address of the network are
 * delivered by address too (hairpin: two containers of one container host
 * talk through here, each address's policy applied), and ARP from a fabric
 * address for one of them is answered with the fabric port's MAC.
 */
import { ArpField, ArpOp, writeArpReply } from '../../packet/arp.js';
import { read16, read32 } from '../../packet/bytes.js';
import { DropReason } from '../../packet/drop-reasons.js';
import { macHi16, macLo32, writeMac } from '../../packet/ethernet.js';
import { formatIpv4Addr } from '../../packet/ipv4.js';
import { KeyWord, Meta } from '../../vfp/key.js';
import { Rewrite } from '../../vfp/pipeline.js';
import type { FrameContext } from '../frame-context.js';
import { AddressTable } from '../address-table.js';
import { PortKind, type SwitchPort } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

const ETHERTYPE_ARP = 0x0806;

export class L2BridgeStage implements NetworkStage {
  readonly name = 'l2bridge';
  readonly dropReasons: readonly number[] = [DropReason.uplinkNotLocal, DropReason.l2bridgeNotIpv4, DropReason.noEgress];
  /** The network's containers by address (the uplink's driver reads it too, to tell container frames from the host's). */
  readonly addresses = new AddressTable();
  /** The uplink's own MAC, as macHi16/macLo32: the one MAC on the wire (set as the uplink port joins: an interface's MAC may change while it is out). */
  macHi = -1;
  macLo = -1;
  private uplink: SwitchPort | null = null;
  /** A fabric host's: the MAC of its port toward the container hosts, or -1. */
  private fabricMacHi = -1;
  private fabricMacLo = -1;
  private arpAnswered = 0;
  private deliveredByIp = 0;
  private tunneled = 0;
  private hairpinned = 0;

  /** `tunnelAll`: l2tunnel, every container frame to the uplink. */
  constructor(readonly tunnelAll = false) {}

  /** The uplink port joins (or leaves: null) with its MAC. */
  setUplink(port: SwitchPort | null, mac?: Uint8Array): void {
    this.uplink = port;
    if (mac !== undefined) {
      this.macHi = macHi16(mac, 0);
      this.macLo = macLo32(mac, 0);
    }
  }

  setFabricMac(mac: Uint8Array): void {
    this.fabricMacHi = macHi16(mac, 0);
    this.fabricMacLo = macLo32(mac, 0);
  }

  process(host: StageHost, f: FrameContext): number {
    const kind = f.ingress!.kind;
    if (kind === PortKind.TAP && this.tunnelAll) return this.tunnel(host, f);
    if (kind === PortKind.FABRIC_ADDRESS) return this.fromFabric(host, f);
    // Containers' frames are switched as usual; only what the LAN sends needs an address to go to.
    if (kind !== PortKind.PACKET_UPLINK) return StageResult.CONTINUE;
    const key = host.key;
    const meta = host.meta;
    const version = meta[Meta.IP_VERSION];
    const toUplink = key[KeyWord.DST_MAC_HI] === this.macHi && key[KeyWord.DST_MAC_LO] === this.macLo;
    if (version === 4) {
      if (!toUplink) {
        // Broadcast and multicast from the LAN reach every container (the uplink's driver lets in no other unicast).
        if ((key[KeyWord.DST_MAC_HI] & 0x0100) !== 0) return StageResult.CONTINUE;
        if (f.steps !== null) f.step('l2bridge', "a unicast frame for another MAC: LAN traffic that is not the containers'");
        return this.notLocal(host, f);
      }
      const port = this.addresses.get(key[KeyWord.DST_IP]);
      if (port === undefined) {
        if (f.steps !== null) f.step('l2bridge', `no container has ${formatIpv4Addr(key[KeyWord.DST_IP])}: the host's own traffic`);
        return this.notLocal(host, f);
      }
      if (!f.dryRun) this.deliveredByIp++;
      if (f.steps !== null) f.step('l2bridge', `to ${formatIpv4Addr(key[KeyWord.DST_IP])} at the uplink's MAC: delivered to ${port.name} with its own MAC`);
      return deliverTo(host, f, port);
    }
    const buf = host.buffer;
    const et = f.off + meta[Meta.ETHERTYPE_AT];
    if (version !== 0 || read16(buf, et) !== ETHERTYPE_ARP) {
      if (f.steps !== null) f.step('l2bridge', 'neither IPv4 nor ARP: an l2bridge network carries IPv4 only');
      host.dropAtIngress(f, DropReason.l2bridgeNotIpv4);
      return StageResult.DONE;
    }
    const arp = et + 2;
    const target = read32(buf, arp + ArpField.TPA);
    const port = this.addresses.get(target);
    if (port === undefined) {
      if (f.steps !== null) f.step('l2bridge', `ARP for ${formatIpv4Addr(target)}, which no container has: the LAN's, not the containers'`);
      return this.notLocal(host, f);
    }
    const op = read16(buf, arp + ArpField.OPER);
    if (op === ArpOp.Request && this.tunnelAll) {
      // The fabric host answers for every container address; an answer from here too would let a
      // neighbour on the segment (another container host) send to this host directly, past the fabric's policy.
      if (f.steps !== null) f.step('l2tunnel', `ARP for ${formatIpv4Addr(target)}: the fabric host answers for container addresses, not this host`);
      return this.notLocal(host, f);
    }
    if (op === ArpOp.Request) {
      writeArpReply(buf, f.off, arp, this.macHi, this.macLo);
      if (!f.dryRun) this.arpAnswered++;
      if (f.steps !== null) f.step('l2bridge', `ARP for ${formatIpv4Addr(target)} (${port.name}) answered with the uplink's MAC`);
      host.reply(f);
      return StageResult.DONE;
    }
    if (op === ArpOp.Reply && toUplink) {
      // An answer to a container's request, which left with the uplink's MAC: the container's MAC back in.
      writeMac(buf, f.off, port.deviceMacHi, port.deviceMacLo);
      writeMac(buf, arp + ArpField.THA, port.deviceMacHi, port.deviceMacLo);
      if (f.steps !== null) f.step('l2bridge', `ARP reply for ${formatIpv4Addr(target)}: delivered to ${port.name} with its own MAC`);
      host.forward(f, port);
      return StageResult.DONE;
    }
    if (f.steps !== null) f.step('l2bridge', 'an ARP frame that is neither a request nor a reply to the uplink');
    return this.notLocal(host, f);
  }

  /** l2tunnel: the container's frame goes to the fabric host, whatever it is for. */
  private tunnel(host: StageHost, f: FrameContext): number {
    const up = this.uplink;
    if (up === null) {
      if (f.steps !== null) f.step('l2tunnel', 'the uplink is down: nowhere to send it');
      host.dropAtIngress(f, DropReason.noEgress);
      return StageResult.DONE;
    }
    if (f.steps !== null) f.step('l2tunnel', 'every container frame goes to the fabric host through the uplink, also one for a container of this host');
    if (!f.dryRun) this.tunneled++;
    host.forward(f, up);
    return StageResult.DONE;
  }

  /** A fabric host: a frame from a container address behind the fabric port. */
  private fromFabric(host: StageHost, f: FrameContext): number {
    const key = host.key;
    const meta = host.meta;
    if (meta[Meta.IP_VERSION] === 4) {
      if ((key[KeyWord.DST_MAC_HI] & 0x0100) !== 0) return StageResult.CONTINUE;
      const port = this.addresses.get(key[KeyWord.DST_IP]);
      if (port === undefined) return StageResult.CONTINUE;
      if (!f.dryRun) this.hairpinned++;
      if (f.steps !== null) f.step('l2bridge', `to ${formatIpv4Addr(key[KeyWord.DST_IP])}: delivered by address to ${port.name}${port.kind === PortKind.FABRIC_ADDRESS ? " (hairpin through the fabric host, from the fabric port's MAC)" : ''}`);
      if (port.kind === PortKind.FABRIC_ADDRESS) {
        // From the MAC the sender resolved the address to: a learning switch between the container
        // hosts and the fabric port must not learn the sender's host MAC on the fabric port.
        const d = host.decision;
        key[KeyWord.SRC_MAC_HI] = d.srcMacHi = this.fabricMacHi;
        key[KeyWord.SRC_MAC_LO] = d.srcMacLo = this.fabricMacLo;
        d.rwFlags |= Rewrite.SRC_MAC;
      }
      return deliverTo(host, f, port);
    }
    const buf = host.buffer;
    const et = f.off + meta[Meta.ETHERTYPE_AT];
    if (this.fabricMacHi < 0 || read16(buf, et) !== ETHERTYPE_ARP) return StageResult.CONTINUE;
    const arp = et + 2;
    const target = read32(buf, arp + ArpField.TPA);
    if (read16(buf, arp + ArpField.OPER) !== ArpOp.Request || this.addresses.get(target) === undefined) return StageResult.CONTINUE;
    writeArpReply(buf, f.off, arp, this.fabricMacHi, this.fabricMacLo);
    if (!f.dryRun) this.arpAnswered++;
    if (f.steps !== null) f.step('l2bridge', `ARP for ${formatIpv4Addr(target)} from behind the fabric port, answered with the fabric port's MAC`);
    host.reply(f);
    return StageResult.DONE;
  }

  private notLocal(host: StageHost, f: FrameContext): number {
    host.dropAtIngress(f, DropReason.uplinkNotLocal);
    return StageResult.DONE;
  }

  commit(): boolean {
    return true;
  }

  abandon(): void {}

  counters(): Record<string, number> {
    return { containers: this.addresses.size, arpAnswered: this.arpAnswered, deliveredByIp: this.deliveredByIp, tunneled: this.tunneled, hairpinned: this.hairpinned };
  }
}

/** The frame goes to `port` with the MAC of its device as destination: a rewrite like a policy's, which the flow cache replays for the flow's next frames. */
function deliverTo(host: StageHost, f: FrameContext, port: SwitchPort): number {
  const key = host.key;
  const d = host.decision;
  key[KeyWord.DST_MAC_HI] = d.dstMacHi = port.deviceMacHi;
  key[KeyWord.DST_MAC_LO] = d.dstMacLo = port.deviceMacLo;
  d.rwFlags |= Rewrite.DST_MAC;
  host.forward(f, port);
  return StageResult.DONE;
}

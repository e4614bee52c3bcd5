/**
 * A network whose endpoints get their addresses from the LAN's DHCP server
 * (`--ipam dhcp`): vsw is the DHCP client of each endpoint (src/dhcp, run by
 * src/service/dhcp.ts), so the server's replies that come in through the
 * uplink are handed to the control plane and kept from the containers (whose
 * kernels, with no client listening, would answer a unicast renewal with
 * ICMP port unreachable). A reply is a copy posted to the main thread; a LAN
 * that floods such frames is held to a rate, the rest dropped and counted.
 */
import { DropReason } from '../../packet/drop-reasons.js';
import { VnetField, VnetFlags } from '../../packet/vnet.js';
import { KeyWord, Meta } from '../../vfp/key.js';
import type { FrameContext } from '../frame-context.js';
import { PortKind } from '../ports/port.js';
import { StageResult, type NetworkStage, type StageHost } from './stage.js';

const UDP = 17;
/** Source port 67 (server), destination port 68 (client), as the key holds them. */
const SERVER_TO_CLIENT = ((67 << 16) | 68) >>> 0;
/** Replies handed over per second at most: far above what a LAN's DHCP server sends for a host's endpoints. */
const REPLIES_PER_SECOND = 200;

export class DhcpReplyStage implements NetworkStage {
  readonly name = 'dhcp';
  readonly dropReasons: readonly number[] = [DropReason.dhcpReplyTaken, DropReason.dhcpReplyRate];
  private handed = 0;
  private overRate = 0;
  private windowStart = 0;
  private inWindow = 0;

  constructor(
    private readonly networkId: number,
    private readonly sink: { dhcpReply?(networkId: number, frame: Uint8Array, partial: boolean): void },
  ) {}

  process(host: StageHost, f: FrameContext): number {
    if (f.ingress!.kind !== PortKind.PACKET_UPLINK) return StageResult.CONTINUE;
    const key = host.key;
    if (host.meta[Meta.IP_VERSION] !== 4 || key[KeyWord.PROTO] >>> 24 !== UDP || key[KeyWord.PORTS] !== SERVER_TO_CLIENT) return StageResult.CONTINUE;
    if (f.steps !== null) f.step('dhcp', "a DHCP server's reply: handed to vsw's DHCP client for the endpoints, not to the containers");
    if (f.dryRun) {
      host.dropAtIngress(f, DropReason.dhcpReplyTaken);
      return StageResult.DONE;
    }
    if (f.now - this.windowStart >= 1000) {
      this.windowStart = f.now;
      this.inWindow = 0;
    }
    if (++this.inWindow > REPLIES_PER_SECOND) {
      this.overRate++;
      host.dropAtIngress(f, DropReason.dhcpReplyRate);
      return StageResult.DONE;
    }
    const buf = host.buffer;
    const partial = f.vnetOff >= 0 && (buf[f.vnetOff + VnetField.FLAGS] & VnetFlags.NEEDS_CSUM) !== 0;
    this.handed++;
    // A copy in a buffer of its own (the rx buffer is a Buffer, whose slice() would share it), which the sink may transfer.
    const frame = new Uint8Array(f.len);
    frame.set(buf.subarray(f.off, f.off + f.len));
    this.sink.dhcpReply?.(this.networkId, frame, partial);
    host.dropAtIngress(f, DropReason.dhcpReplyTaken);
    return StageResult.DONE;
  }

  commit(): boolean {
    return true;
  }

  abandon(): void {}

  counters(): Record<string, number> {
    return { repliesHanded: this.handed, repliesOverRate: this.overRate };
  }
}

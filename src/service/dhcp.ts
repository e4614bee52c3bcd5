/**
 * DHCP addresses for the endpoints of a transparent network created with
 * `--ipam dhcp`: vsw is each endpoint's DHCP client (src/dhcp), with the
 * endpoint's MAC and client id. Its messages enter the switch as if the
 * endpoint's port had sent them (DataPlane.inject), so they pass the port's
 * policy and leave through the uplink like the container's own traffic; the
 * server's replies come back through the network's DhcpReplyStage, which
 * hands them here instead of to the containers. Renewal at T1, rebinding at
 * T2, a new address after expiry, and a RELEASE when the endpoint goes; a
 * stop of the daemon keeps the lease (the next one asks for the same
 * address again, INIT-REBOOT).
 */
import type { Logger } from 'pino';
import { DhcpAcquireError, DhcpClient, type DhcpLease } from '../dhcp/index.js';
import type { DataPlane } from '../switch/dataplane.js';

/** How long an endpoint create waits for a lease before it gives up (said in the refusal and the docs). */
export const DHCP_ACQUIRE_TIMEOUT_MS = 15_000;

export type DhcpDataPlane = Pick<DataPlane, 'inject' | 'on'>;

interface Leasing {
  client: DhcpClient;
  networkId: number;
}

export interface DhcpHooks {
  /** A lease after the first of a create (after a restart, after one was lost): the endpoint takes its address, if it is another. */
  readdress(endpointId: string, lease: DhcpLease): Promise<void>;
}

export class DhcpService {
  private readonly leasing = new Map<string, Leasing>();
  private listening = false;

  constructor(
    private readonly dataPlane: DhcpDataPlane,
    private readonly logger: Logger,
    private readonly hooks: DhcpHooks,
  ) {}

  /**
   * A client for the endpoint whose switch port is `portId`, started; resolves
   * with its first lease, or rejects within `timeoutMs` with one sentence
   * (the client is then stopped and forgotten).
   */
  async acquire(endpoint: { id: string; mac: string; hostname?: string }, portId: number, networkId: number, timeoutMs = DHCP_ACQUIRE_TIMEOUT_MS): Promise<DhcpLease> {
    const client = this.start(endpoint, portId, networkId);
    try {
      return await client.acquire(timeoutMs);
    } catch (err) {
      this.leasing.delete(endpoint.id);
      throw err instanceof DhcpAcquireError ? err : new DhcpAcquireError(`the DHCP client of endpoint ${endpoint.id} stopped: ${(err as Error).message}`);
    }
  }

  /** After a restart: the endpoint's client again, asking to keep `address` (it goes on in the background). */
  resume(endpoint: { id: string; mac: string; hostname?: string }, portId: number, networkId: number, address: string): void {
    this.start(endpoint, portId, networkId, address).start();
  }

  /** The endpoint goes: its lease is released (a RELEASE to the server), and its client forgotten. */
  release(endpointId: string): void {
    const l = this.leasing.get(endpointId);
    if (!l) return;
    this.leasing.delete(endpointId);
    l.client.release();
  }

  /** The daemon stops: every client stops without releasing, so the addresses stay the endpoints'. */
  stopAll(): void {
    for (const l of this.leasing.values()) l.client.stop();
    this.leasing.clear();
  }

  private start(endpoint: { id: string; mac: string; hostname?: string }, portId: number, networkId: number, requestedAddress?: string): DhcpClient {
    if (!this.listening) {
      // From the first client on: a daemon without DHCP networks never hears of it.
      this.dataPlane.on('dhcpReply', (id: number, frame: Uint8Array, partial: boolean) => this.deliver(id, frame, partial));
      this.listening = true;
    }
    this.leasing.get(endpoint.id)?.client.stop();
    const log = this.logger.child({ endpoint: endpoint.id });
    const client = new DhcpClient({
      mac: endpoint.mac,
      ...(endpoint.hostname === undefined ? {} : { hostname: endpoint.hostname }),
      ...(requestedAddress === undefined ? {} : { requestedAddress }),
      send: (frame) => {
        this.dataPlane.inject(portId, frame).then(
          (sent) => {
            if (!sent) log.warn('the data plane did not send a DHCP message: the endpoint has no port');
          },
          (err: unknown) => log.warn({ err }, 'the data plane could not send a DHCP message'),
        );
      },
    });
    // acquire() hands the first lease of a create to its caller; every other one (after a restart, after a loss) goes to the endpoint here.
    let takenByAcquire = requestedAddress === undefined;
    client.on('lease', (lease) => {
      log.info({ address: lease.address, server: lease.serverId, leaseSeconds: lease.leaseSeconds }, 'DHCP lease obtained');
      if (takenByAcquire) {
        takenByAcquire = false;
        return;
      }
      this.hooks.readdress(endpoint.id, lease).catch((err: unknown) => log.error({ err, address: lease.address }, 'could not give the endpoint its DHCP address'));
    });
    client.on('renewed', (lease) => log.debug({ address: lease.address, leaseSeconds: lease.leaseSeconds }, 'DHCP lease renewed'));
    client.on('expired', (lease, reason) => log.warn({ address: lease.address, reason }, 'DHCP lease lost; asking the LAN for an address again'));
    client.on('error', (err) => log.warn({ err }, 'DHCP client'));
    this.leasing.set(endpoint.id, { client, networkId });
    return client;
  }

  private deliver(networkId: number, frame: Uint8Array, partial: boolean): void {
    for (const l of this.leasing.values()) if (l.networkId === networkId && l.client.receive(frame, { checksumPartial: partial })) return;
  }
}

/**
 * The control plane's handle on the data-plane worker. Every method is a
 * declarative command answered by the worker; counters are read directly from
 * shared memory.
 */
import { EventEmitter } from 'node:events';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { allocateCounters, readPortCounters, type PortCounters } from './counters.js';
import type { MacEntry } from './mac-table.js';
import type { PortPolicy } from '../vfp/policy.js';
import type { PortConfig } from './switch.js';
import type {
  CaptureEndReason,
  CaptureStart,
  CaptureTarget,
  DataPlaneCapture,
  DataPlaneCommand,
  DataPlaneDhcpReply,
  DataPlaneDnsQuery,
  NameRecord,
  DataPlaneEvent,
  DataPlaneVhostEvent,
  VhostPortStatus,
  DataPlaneLog,
  DataPlaneReply,
  DataPlaneVfpOptions,
  DataPlaneWorkerData,
  NatGatewaySpec,
  LbSpec,
  NatPublishSpec,
  NetworkLbState,
  NetworkSpec,
  OverlayDataPlaneState,
  OverlayNetworkSpec,
  RemoteEndpoint,
  SnapshotImport,
  SwitchCounters,
  SwitchFlow,
  SwitchNat,
  SwitchSnapshot,
  SwitchTrace,
  UplinkConfig,
} from './messages.js';

export type { SnapshotImport, SwitchSnapshot, VhostPortStatus };
export type { CaptureEndReason, CaptureStart, CaptureTarget };
export type { PortCounters, SwitchCounters, MacEntry, SwitchFlow, SwitchNat, SwitchTrace, NatGatewaySpec, NatPublishSpec, NetworkSpec, OverlayDataPlaneState, OverlayNetworkSpec, RemoteEndpoint, UplinkConfig };

export interface DataPlaneOptions {
  logger: Logger;
  /** Highest port id plus one; sizes the shared counter table. Default 4096. */
  maxPorts?: number;
  macTable?: { maxEntries?: number; agingSeconds?: number };
  vfp?: DataPlaneVfpOptions;
}

/** A port as the control plane asks for it: the switch's own PortConfig, sent to the worker as it is. */
export type DataPlanePort = PortConfig;

/**
 * Events besides the replies: `portDown` (portId, errno, fd), `vhost` (portId, socket, code: VhostEvent, detail), `dhcpReply`
 * (networkId, frame: Uint8Array, partial: boolean), `crash` (err),
 * `captureRecords` (records: ArrayBuffer, lost: number[] per session slot; see
 * src/switch/capture.ts) and `captureEnd` (slot, reason: CaptureEndReason).
 */
export class DataPlane extends EventEmitter {
  private nextRequestId = 1;
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private stopped = false;
  /** The worker has exited: nothing will ever answer again. */
  private exited = false;

  private constructor(
    private readonly worker: Worker,
    private readonly counters: Float64Array,
    readonly maxPorts: number,
    private readonly logger: Logger,
    /** Captured bytes the worker posted and the listeners have not yet had (src/switch/capture-sessions.ts). */
    private readonly captureInFlight: Int32Array,
  ) {
    super();
  }

  static async start(opts: DataPlaneOptions): Promise<DataPlane> {
    const maxPorts = opts.maxPorts ?? 4096;
    const shared = allocateCounters(maxPorts);
    const captureInFlight = new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT);
    const workerData: DataPlaneWorkerData = { counters: shared, captureInFlight, macTable: opts.macTable ?? {}, vfp: opts.vfp ?? {} };
    const worker = new Worker(new URL('./dataplane-worker.js', import.meta.url), { workerData, name: 'vsw-dataplane' });
    const logger = opts.logger.child({ component: 'dataplane' });
    const plane = new DataPlane(worker, new Float64Array(shared), maxPorts, logger, new Int32Array(captureInFlight));
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error) => reject(new Error(`the data-plane worker failed to start: ${err.message}`));
      worker.once('error', onError);
      worker.once('message', () => {
        worker.off('error', onError);
        resolve();
      });
    });
    plane.attach();
    return plane;
  }

  private attach(): void {
    this.worker.on('message', (msg: DataPlaneReply | DataPlaneLog | DataPlaneEvent | DataPlaneVhostEvent | DataPlaneCapture | DataPlaneDhcpReply | DataPlaneDnsQuery) => {
      if ('dnsQuery' in msg) {
        this.emit('dnsQuery', msg.networkId, msg.portId, msg.fd, msg.frame);
        return;
      }
      if ('dhcpReply' in msg) {
        this.emit('dhcpReply', msg.networkId, msg.frame, msg.partial);
        return;
      }
      if ('capture' in msg) {
        this.onCapture(msg);
        return;
      }
      if ('log' in msg) {
        this.logger[msg.log](msg.fields ?? {}, msg.msg);
        return;
      }
      if ('event' in msg) {
        if (msg.event === 'vhost') this.emit('vhost', msg.portId, msg.socket, msg.code, msg.detail);
        else this.emit(msg.event, msg.portId, msg.errno, msg.fd);
        return;
      }
      const waiter = this.waiting.get(msg.id);
      if (!waiter) return;
      this.waiting.delete(msg.id);
      if (msg.ok) waiter.resolve(msg.result);
      else waiter.reject(new Error(msg.error));
    });
    this.worker.on('error', (err) => {
      this.logger.fatal({ err }, 'the data-plane worker crashed');
      this.failAll(new Error(`the data plane crashed: ${err.message}`));
      this.emit('crash', err);
    });
    this.worker.on('exit', (code) => {
      this.exited = true;
      this.failAll(new Error('the data plane has stopped'));
      if (!this.stopped) {
        this.logger.fatal({ code }, 'the data-plane worker exited unexpectedly');
        this.emit('crash', new Error(`data-plane worker exited with code ${code}`));
      }
    });
  }

  private onCapture(msg: DataPlaneCapture): void {
    if (msg.capture === 'end') {
      this.emit('captureEnd', msg.slot, msg.reason);
      return;
    }
    try {
      // Listeners write synchronously (or drop what their clients cannot take): once they return, the bytes are out of the worker's account.
      this.emit('captureRecords', msg.records, msg.lost);
    } finally {
      Atomics.sub(this.captureInFlight, 0, msg.records.byteLength);
    }
  }

  private failAll(err: Error): void {
    for (const waiter of this.waiting.values()) waiter.reject(err);
    this.waiting.clear();
  }

  private request<T = void>(command: DataPlaneCommand): Promise<T> {
    if (this.stopped || this.exited) return Promise.reject(new Error('the data plane has stopped'));
    const id = this.nextRequestId++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.worker.postMessage({ id, command });
    });
  }

  /** With `nat`, the network gets a NAT gateway (src/nat/gateway.ts); with `overlay`, a tunnel port on an uplink (src/tunnel). */
  addNetwork(networkId: number, name: string, spec: NetworkSpec = {}): Promise<void> {
    return this.request({ op: 'addNetwork', networkId, name, spec });
  }

  /** Starts receiving VXLAN on the uplink's first socket; the fds stay the caller's to close, after removeUplink. */
  addUplink(uplink: UplinkConfig): Promise<void> {
    return this.request({ op: 'addUplink', ...uplink });
  }

  removeUplink(uplinkId: number): Promise<void> {
    return this.request({ op: 'removeUplink', uplinkId });
  }

  setPeers(networkId: number, peers: string[]): Promise<{ added: string[]; removed: string[] }> {
    return this.request({ op: 'setPeers', networkId, peers });
  }

  /** False when the VTEP or ARP table is at its static bound. */
  addRemote(networkId: number, remote: RemoteEndpoint): Promise<boolean> {
    return this.request({ op: 'addRemote', networkId, remote });
  }

  removeRemote(networkId: number, remote: { mac: string; ip?: string }): Promise<boolean> {
    return this.request({ op: 'removeRemote', networkId, remote });
  }

  overlay(networkId?: number, countersOnly = false): Promise<OverlayDataPlaneState> {
    return this.request<OverlayDataPlaneState>({ op: 'overlay', networkId, countersOnly });
  }

  /** Replaces a network's DNS names; resolves to the sentence why they were refused, or null. */
  setNames(networkId: number, records: NameRecord[]): Promise<string | null> {
    return this.request<string | null>({ op: 'setNames', networkId, records });
  }

  /** Sends a frame out of a port (an answer to a DNS query it asked); false when the port is gone or is another now. */
  deliver(portId: number, fd: number, frame: Uint8Array): Promise<boolean> {
    return this.request<boolean>({ op: 'deliver', portId, fd, frame });
  }

  /** Replaces a network's load balancers (all of them at once). */
  setBalancers(networkId: number, balancers: LbSpec[]): Promise<void> {
    return this.request({ op: 'setBalancers', networkId, balancers });
  }

  /** The balancers and their backends' counters, of every network or one. */
  lb(networkId?: number): Promise<NetworkLbState[]> {
    return this.request<NetworkLbState[]>({ op: 'lb', networkId });
  }

  setPublished(networkId: number, published: NatPublishSpec[]): Promise<void> {
    return this.request({ op: 'setPublished', networkId, published });
  }

  /** With countersOnly, every network's translations list is empty: a large table is not copied to answer for its counters. */
  nat(networkId?: number, countersOnly = false): Promise<SwitchNat[]> {
    return this.request<SwitchNat[]>({ op: 'nat', networkId, countersOnly });
  }

  /**
   * Stops receiving on every port, for good, and returns the connections and
   * NAT translations: what a stopping daemon saves for its successor.
   */
  snapshot(): Promise<SwitchSnapshot> {
    return this.request<SwitchSnapshot>({ op: 'snapshot' });
  }

  /** Switches `frame` as if the endpoint's port had sent it (its DHCP client's messages); false when the port is gone or the frame does not fit. */
  inject(portId: number, frame: Uint8Array): Promise<boolean> {
    return this.request<boolean>({ op: 'inject', portId, frame });
  }

  /** A gratuitous ARP from each endpoint into its network, paced by the worker (see the worker's announce()). */
  announce(endpoints: { portId: number; ip: string; mac: string }[]): Promise<void> {
    return this.request({ op: 'announce', endpoints });
  }

  /** Restores a predecessor's snapshot; call it after the networks exist and before the ports in `portIds` are added. */
  importState(snapshot: SwitchSnapshot, downtimeMs: number, portIds: number[]): Promise<SnapshotImport> {
    return this.request<SnapshotImport>({ op: 'importState', snapshot, downtimeMs, portIds });
  }

  removeNetwork(networkId: number): Promise<void> {
    return this.request({ op: 'removeNetwork', networkId });
  }

  /** Starts switching frames of the TAP behind `fd`. The fd stays the caller's to close, after removePort. */
  addPort(port: DataPlanePort): Promise<void> {
    return this.request({ op: 'addPort', ...port });
  }

  /** Stops polling and forgets the port; when this resolves the caller may close the fd. */
  removePort(portId: number): Promise<void> {
    return this.request({ op: 'removePort', portId });
  }

  /** The devices of vhost-user ports (one, or all), as the data plane sees them now. */
  vhostStatus(portId?: number): Promise<VhostPortStatus[]> {
    return this.request<VhostPortStatus[]>({ op: 'vhostStatus', portId });
  }

  /** Replaces a port's policy at once; the data plane re-evaluates cached flows on their next frame. */
  setPolicy(portId: number, policy: PortPolicy): Promise<void> {
    return this.request({ op: 'setPolicy', portId, policy });
  }

  flows(portId?: number): Promise<SwitchFlow[]> {
    return this.request<SwitchFlow[]>({ op: 'flows', portId });
  }

  trace(portId: number, direction: 'in' | 'out', frame: Uint8Array): Promise<SwitchTrace> {
    return this.request<SwitchTrace>({ op: 'trace', portId, direction, frame });
  }

  ruleHits(portId: number): Promise<Record<string, number>> {
    return this.request<Record<string, number>>({ op: 'ruleHits', portId });
  }

  /**
   * Starts recording `points` (CapturePoint bits) at the target's ports, `snaplen`
   * bytes of each frame; resolves to the session's slot, which the records
   * name, or to why it could not start.
   */
  startCapture(target: CaptureTarget, points: number, snaplen: number): Promise<CaptureStart> {
    return this.request<CaptureStart>({ op: 'startCapture', target, points, snaplen });
  }

  /** Ends the session; records it had taken already are posted before this resolves. */
  stopCapture(slot: number): Promise<void> {
    return this.request({ op: 'stopCapture', slot });
  }

  portCounters(portId: number): PortCounters {
    return readPortCounters(this.counters, portId);
  }

  switchCounters(): Promise<SwitchCounters> {
    return this.request<SwitchCounters>({ op: 'switchCounters' });
  }

  /** A network's stages in the order frames meet them, with their counters. */
  stages(networkId: number): Promise<{ name: string; dropReasons: string[]; counters: Record<string, number> }[]> {
    return this.request({ op: 'stages', networkId });
  }

  macEntries(): Promise<MacEntry[]> {
    return this.request<MacEntry[]>({ op: 'macEntries' });
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    if (this.exited) {
      this.stopped = true;
      return;
    }
    const exited = new Promise<void>((resolve) => this.worker.once('exit', () => resolve()));
    this.worker.postMessage({ id: 0, command: { op: 'stop' } });
    this.stopped = true;
    const timeout = setTimeout(() => void this.worker.terminate(), 2000);
    await exited;
    clearTimeout(timeout);
  }
}

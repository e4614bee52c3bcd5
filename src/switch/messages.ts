/** The declarative messages between the control plane (DataPlane) and the data-plane worker. */
import type { VfpCounters } from '../vfp/vfp.js';
import type { PortPolicy } from '../vfp/policy.js';
import type { MacEntry, MacTableCounters } from './mac-table.js';
import type { NetworkSpec, OverlayNetworkSpec, SwitchFlow, SwitchNat, SwitchOverlay, SwitchTrace, UplinkConfig } from './switch.js';
import type { RemoteEndpoint } from '../tunnel/overlay-segment.js';
import type { NatGatewaySpec, NatPublishSpec } from '../nat/gateway.js';
import type { LbCounters, LbSpec } from '../lb/balancer.js';
import type { NameRecord } from '../dns/names.js';
import type { SnapshotImport, SwitchSnapshot } from './snapshot.js';
import type { VhostStatus } from '../native/index.js';

export type DataPlaneCommand =
  | { op: 'addNetwork'; networkId: number; name: string; spec: NetworkSpec }
  | ({ op: 'addUplink' } & UplinkConfig)
  | { op: 'removeUplink'; uplinkId: number }
  | { op: 'setPeers'; networkId: number; peers: string[] }
  | { op: 'addRemote'; networkId: number; remote: RemoteEndpoint }
  | { op: 'removeRemote'; networkId: number; remote: { mac: string; ip?: string } }
  | { op: 'overlay'; networkId?: number; countersOnly?: boolean }
  | { op: 'removeNetwork'; networkId: number }
  | { op: 'addPort'; portId: number; networkId: number; fd: number; name: string; mtu?: number; policy?: PortPolicy; external?: boolean; ip?: string; mac?: string; uplinkMac?: string; vhostUser?: { socket: string; server: boolean } }
  | { op: 'vhostStatus'; portId?: number }
  | { op: 'setPublished'; networkId: number; published: NatPublishSpec[] }
  | { op: 'nat'; networkId?: number; countersOnly?: boolean }
  | { op: 'setBalancers'; networkId: number; balancers: LbSpec[] }
  | { op: 'lb'; networkId?: number }
  | { op: 'setNames'; networkId: number; records: NameRecord[] }
  | { op: 'deliver'; portId: number; fd: number; frame: Uint8Array }
  | { op: 'removePort'; portId: number }
  | { op: 'setPolicy'; portId: number; policy: PortPolicy }
  | { op: 'flows'; portId?: number }
  | { op: 'trace'; portId: number; direction: 'in' | 'out'; frame: Uint8Array }
  | { op: 'ruleHits'; portId: number }
  | { op: 'switchCounters' }
  | { op: 'stages'; networkId: number }
  | { op: 'macEntries' }
  | { op: 'snapshot' }
  | { op: 'announce'; endpoints: { portId: number; ip: string; mac: string }[] }
  | { op: 'inject'; portId: number; frame: Uint8Array }
  | { op: 'importState'; snapshot: SwitchSnapshot; downtimeMs: number; portIds: number[] }
  | { op: 'startCapture'; target: CaptureTarget; points: number; snaplen: number }
  | { op: 'stopCapture'; slot: number }
  | { op: 'stop' };

export interface DataPlaneRequest {
  id: number;
  command: DataPlaneCommand;
}

export type DataPlaneReply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: string };

/** Something the data plane noticed on its own: a port that stopped receiving (its TAP is gone, or read() failed). */
export interface DataPlaneEvent {
  event: 'portDown';
  portId: number;
  errno: number;
  /** The fd the port read: port ids are reused, so the receiver checks it still means the same port. */
  fd: number;
}

/** A vhost-user port's device changed state (VhostEvent codes): its VMM came or went, its queues started or stopped, its guest broke a ring. */
export interface DataPlaneVhostEvent {
  event: 'vhost';
  portId: number;
  /** The socket: port ids are reused, so the receiver checks it still means the same port. */
  socket: string;
  code: number;
  detail: string;
}

/** A vhost-user port's device as `vhostStatus` reports it. */
export interface VhostPortStatus extends VhostStatus {
  portId: number;
  socket: string;
  server: boolean;
}

/** What `vsw capture` records: one port, or every port of a network (also those that join while it runs). */
export type CaptureTarget = { portId: number } | { networkId: number };

/** A started capture's slot, or why none was started: the port or network is not on the switch (any more), or every slot is taken. */
export type CaptureStart = { slot: number } | { refused: 'noTarget' | 'full' };

/** Why the data plane ended a capture session on its own. */
export type CaptureEndReason = 'portRemoved' | 'networkRemoved';

/**
 * Captured frames (src/switch/capture.ts describes the records), and what each
 * session slot lost since the last such message; or the end of a session
 * whose port or network left the switch.
 */
/** A DHCP server's reply taken off a network with DHCP addresses (src/switch/stages/dhcp-reply-stage.ts). */
/** A DNS query for a name that is not its network's, from port `portId` (whose fd was `fd` when it was sent: ids are reused). */
export interface DataPlaneDnsQuery {
  dnsQuery: true;
  networkId: number;
  portId: number;
  fd: number;
  frame: Uint8Array;
}

export interface DataPlaneDhcpReply {
  dhcpReply: true;
  networkId: number;
  frame: Uint8Array;
  /** Its UDP checksum is partial (the sender's device left it to offload). */
  partial: boolean;
}

export type DataPlaneCapture =
  | { capture: 'records'; records: ArrayBuffer; lost: number[] }
  | { capture: 'end'; slot: number; reason: CaptureEndReason };

export interface DataPlaneLog {
  log: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}

export interface SwitchCounters {
  macTable: MacTableCounters;
  batches: number;
  ports: number;
  vfp: VfpCounters;
}

export type { SnapshotImport, SwitchSnapshot };
export type { MacEntry, SwitchFlow, SwitchNat, SwitchTrace, VfpCounters, NatGatewaySpec, NatPublishSpec, NetworkSpec, OverlayNetworkSpec, SwitchOverlay, UplinkConfig, RemoteEndpoint, LbSpec, LbCounters, NameRecord };

/** The overlay state of the data plane: each overlay network, and datagrams by decapsulation verdict host-wide. */
/** One network's load balancers as the data plane counts them. */
export interface NetworkLbState {
  networkId: number;
  balancers: LbCounters[];
}

export interface OverlayDataPlaneState {
  networks: SwitchOverlay[];
  decap: Record<string, number>;
}

export interface DataPlaneWorkerData {
  counters: SharedArrayBuffer;
  /** One Int32: captured bytes posted to the control plane and not yet written out by it (src/switch/capture-sessions.ts). */
  captureInFlight?: SharedArrayBuffer;
  macTable: { maxEntries?: number; agingSeconds?: number };
  vfp: DataPlaneVfpOptions;
}

export interface DataPlaneVfpOptions {
  /** Unified flow table entries. */
  maxFlows?: number;
  /** Connections per port. */
  maxConnectionsPerPort?: number;
}

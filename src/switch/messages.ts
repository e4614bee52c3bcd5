/** The declarative messages between the control plane (DataPlane) and the data-plane worker. */
import type { MacEntry, MacTableCounters } from './mac-table.js';

export type DataPlaneCommand =
  | { op: 'addNetwork'; networkId: number; name: string }
  | { op: 'removeNetwork'; networkId: number }
  | { op: 'addPort'; portId: number; networkId: number; fd: number; name: string; mtu?: number }
  | { op: 'removePort'; portId: number }
  | { op: 'switchCounters' }
  | { op: 'macEntries' }
  | { op: 'stop' };

export interface DataPlaneRequest {
  id: number;
  command: DataPlaneCommand;
}

export type DataPlaneReply = { id: number; ok: true; result?: unknown } | { id: number; ok: false; error: string };

export interface DataPlaneLog {
  log: 'debug' | 'info' | 'warn' | 'error';
  msg: string;
  fields?: Record<string, unknown>;
}

export interface SwitchCounters {
  macTable: MacTableCounters;
  batches: number;
  ports: number;
}

export type { MacEntry };

export interface DataPlaneWorkerData {
  counters: SharedArrayBuffer;
  macTable: { maxEntries?: number; agingSeconds?: number };
}

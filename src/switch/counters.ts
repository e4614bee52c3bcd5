/**
 * Per-port counters in shared memory: the data-plane worker writes them at the
 * point of transfer, the control plane reads them without a message round trip.
 * One row per port slot; columns are the fixed counters, then one per drop reason.
 * Float64 holds integers exactly up to 2^53: centuries of line-rate bytes.
 */
import { DROP_REASON_COUNT, DROP_REASON_NAMES, type DropReasonName } from '../packet/drop-reasons.js';

export const RX_FRAMES = 0;
export const RX_BYTES = 1;
export const TX_FRAMES = 2;
export const TX_BYTES = 3;
/** Column of drop reason code c is DROP_BASE + c (code 0 is unused). */
export const DROP_BASE = 4;
export const COUNTER_COLUMNS = DROP_BASE + DROP_REASON_COUNT;

export interface PortCounters {
  rxFrames: number;
  rxBytes: number;
  txFrames: number;
  txBytes: number;
  /** Only the reasons that happened, by name. */
  drops: Partial<Record<DropReasonName, number>>;
  dropsTotal: number;
}

export function allocateCounters(maxPorts: number): SharedArrayBuffer {
  return new SharedArrayBuffer(maxPorts * COUNTER_COLUMNS * Float64Array.BYTES_PER_ELEMENT);
}

export function readPortCounters(table: Float64Array, portId: number): PortCounters {
  const row = portId * COUNTER_COLUMNS;
  const drops: Partial<Record<DropReasonName, number>> = {};
  let dropsTotal = 0;
  for (let code = 1; code < DROP_REASON_COUNT; code++) {
    const n = table[row + DROP_BASE + code];
    if (n > 0) {
      drops[DROP_REASON_NAMES[code]] = n;
      dropsTotal += n;
    }
  }
  return {
    rxFrames: table[row + RX_FRAMES],
    rxBytes: table[row + RX_BYTES],
    txFrames: table[row + TX_FRAMES],
    txBytes: table[row + TX_BYTES],
    drops,
    dropsTotal,
  };
}

export function resetPortCounters(table: Float64Array, portId: number): void {
  table.fill(0, portId * COUNTER_COLUMNS, (portId + 1) * COUNTER_COLUMNS);
}

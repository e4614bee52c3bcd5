/**
 * What a stopping daemon hands to the next one so that connections survive
 * a restart: every live connection-tracking entry and every NAT translation
 * bound to one, with their ports and ages. Neither Open vSwitch nor docker
 * keeps these across a restart; without them, a TCP connection through a
 * nat network would come back on a new external port and be reset.
 *
 * The snapshot is plain typed arrays (Conntrack.exportLive and
 * NatTable.exportMappings layouts), so it crosses from the worker by
 * transfer and goes to disk as it is (runtime.bin, src/service/state-file.ts). Flow-table
 * entries are not part of it: they are a cache, refilled by the first frame
 * of each flow from the restored connections and translations.
 */
import { NAT_EXPORT_WORDS } from '../nat/nat-table.js';
import type { Switch } from './switch.js';

export interface SwitchSnapshot {
  /** Conntrack.exportLive records, CT_EXPORT_WORDS each. */
  conntrack: Uint32Array;
  /** Per nat network, NatTable.exportMappings records; their connection index points into `conntrack`. */
  nat: { networkId: number; mappings: Uint32Array }[];
}

export interface SnapshotImport {
  connections: number;
  /** Exported connections left out (their port is gone, they timed out while the daemon was down, or no room). */
  connectionsSkipped: number;
  translations: number;
  translationsSkipped: number;
}

export function exportSwitchState(sw: Switch, now: number): SwitchSnapshot {
  const { records, slots } = sw.vfp.conntrack.exportLive(now);
  const indexOf = new Map<number, number>();
  for (let n = 0; n < slots.length; n++) indexOf.set(slots[n], n);
  const nat = sw.natGateways().map(({ networkId, gateway }) => ({
    networkId,
    mappings: gateway.table.exportMappings(now, (slot) => indexOf.get(slot) ?? -1),
  }));
  return { conntrack: records, nat };
}

/**
 * Restores a snapshot into a switch whose networks exist but whose ports are
 * not receiving yet: connections only of `portIds` (the ports about to be
 * attached), aged by the time the daemon was down.
 */
export function importSwitchState(sw: Switch, snap: SwitchSnapshot, now: number, downtimeMs: number, portIds: readonly number[]): SnapshotImport {
  const accepted = new Set(portIds);
  const slots = sw.vfp.conntrack.importLive(snap.conntrack, now, downtimeMs, (portId) => accepted.has(portId));
  let connections = 0;
  for (const slot of slots) if (slot >= 0) connections++;
  const gateways = new Map(sw.natGateways().map(({ networkId, gateway }) => [networkId, gateway]));
  let translations = 0;
  let offered = 0;
  for (const { networkId, mappings } of snap.nat) {
    offered += mappings.length / NAT_EXPORT_WORDS;
    const gw = gateways.get(networkId);
    if (gw) translations += gw.table.importMappings(mappings, slots);
  }
  return { connections, connectionsSkipped: slots.length - connections, translations, translationsSkipped: offered - translations };
}

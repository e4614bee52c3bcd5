/** A switch over RecordingIo for frame-by-frame tests: frames in through a port, what each port was sent out. */
import { COUNTER_COLUMNS, DROP_BASE } from '../../../src/switch/counters.js';
import { MacTable } from '../../../src/switch/mac-table.js';
import { Switch, type SwitchEvents } from '../../../src/switch/switch.js';
import { VNET_HDR_LEN } from '../../../src/packet/vnet.js';
import { HEADROOM, RecordingIo, type Sent } from './recording-io.js';

export function switchRig(events: Partial<SwitchEvents> = {}) {
  const io = new RecordingIo();
  const counters = new Float64Array(16 * COUNTER_COLUMNS);
  const sw = new Switch(io, counters, new MacTable({ maxEntries: 64, agingSeconds: 300 }), { portStopped: () => {}, ...events }, () => 1e7, {
    vfp: { maxFlows: 1024, maxTranspositions: 64, conntrack: { capacity: 4096 } },
  });
  /** `frame` read from `port` (`prepare` may write its vnet header, at the offset given); what was written, by fd. */
  const send = (port: number, frame: Buffer, prepare?: (vnetAt: number) => void): Sent[] => {
    io.place(0, frame);
    prepare?.(HEADROOM - VNET_HDR_LEN);
    sw.receive(port, 1);
    return io.take().sort((a, b) => a.fd - b.fd);
  };
  const drops = (port: number, reason: number): number => counters[port * COUNTER_COLUMNS + DROP_BASE + reason];
  return { sw, io, counters, send, drops };
}

/** The frame of a write, without its vnet header. */
export const frameOf = (s: Sent): Buffer => s.wire.subarray(VNET_HDR_LEN);

/**
 * The data plane's capture recorder and its sessions: what is recorded where,
 * for which session, truncated how, timed how; what is lost when the buffer
 * is full; ports that join and leave; sessions that end on their own.
 */
import test from 'ava';
import { CAPTURE_BUFFER_BYTES, CAPTURE_SESSIONS, CapturePoint, CaptureRecorder, CaptureRecords, captureRecordBytes, type CaptureRecord } from '../../src/switch/capture.js';
import { CaptureSessions } from '../../src/switch/capture-sessions.js';
import type { DataPlaneCapture } from '../../src/switch/messages.js';
import { DropReason } from '../../src/packet/drop-reasons.js';

const { INGRESS, EGRESS, DROP } = CapturePoint;

/** A buffer like the switch's: frames at slot offsets, one at an odd offset. */
const buf = Buffer.alloc(1 << 20);
for (let i = 0; i < buf.length; i++) buf[i] = (i * 7 + 3) & 0xff;

function read(records: ArrayBuffer): (CaptureRecord & { data: Buffer })[] {
  const reader = new CaptureRecords(records);
  const out: (CaptureRecord & { data: Buffer })[] = [];
  while (reader.next()) out.push({ ...reader.current, data: Buffer.from(reader.data()) });
  return out;
}

test('idle: nothing active, nothing masked, record() keeps nothing', (t) => {
  const rec = new CaptureRecorder(16);
  t.false(rec.active);
  t.deepEqual([...rec.mask], new Array(16).fill(0));
  rec.record(INGRESS, 3, 0, buf, 128, 60, 1000);
  t.is(rec.pending, 0);
  t.is(rec.drain(), null);
});

test('a session records its port at its points only, with bytes, lengths, reason and wall-clock time', (t) => {
  const rec = new CaptureRecorder(16);
  const before = Date.now();
  const slot = rec.openSlot(65535, 5000);
  rec.setPort(slot, 3, INGRESS | DROP);
  t.true(rec.active);
  t.is(rec.mask[3], INGRESS | DROP);
  t.is(rec.mask[4], 0);
  rec.record(INGRESS, 3, 0, buf, 128, 60, 5000.25);
  rec.record(EGRESS, 3, 0, buf, 256, 60, 5001); // not asked for
  rec.record(INGRESS, 4, 0, buf, 256, 60, 5001); // another port
  rec.record(DROP, 3, DropReason.policyBlock, buf, 1001, 99, 5002); // odd offset: the byte-wise copy
  const drained = rec.drain()!;
  t.is(rec.pending, 0);
  const records = read(drained.records);
  t.is(records.length, 2);
  t.like(records[0], { portId: 3, point: INGRESS, reason: 0, sessions: 1 << slot, capturedLength: 60, originalLength: 60 });
  t.deepEqual(records[0].data, buf.subarray(128, 188));
  t.like(records[1], { portId: 3, point: DROP, reason: DropReason.policyBlock, capturedLength: 99 });
  t.deepEqual(records[1].data, buf.subarray(1001, 1100));
  // The base is taken at openSlot: clock 5000 is "now" then.
  t.true(records[0].timeMs - 0.25 >= before && records[0].timeMs - 0.25 <= Date.now(), `time ${records[0].timeMs}`);
  t.is(records[1].timeMs - records[0].timeMs, 1.75);
  t.deepEqual(drained.lost, new Array(CAPTURE_SESSIONS).fill(0));
});

test('frames longer than the snaplen keep their first bytes and their original length; the largest snaplen of the sessions wins', (t) => {
  const rec = new CaptureRecorder(8);
  const a = rec.openSlot(100, 0);
  rec.setPort(a, 1, INGRESS);
  rec.record(INGRESS, 1, 0, buf, 128, 65_000, 1);
  const b = rec.openSlot(1000, 0);
  rec.setPort(b, 1, INGRESS);
  rec.record(INGRESS, 1, 0, buf, 128, 65_000, 2);
  rec.closeSlot(b);
  rec.record(INGRESS, 1, 0, buf, 128, 65_000, 3);
  const records = read(rec.drain()!.records);
  t.deepEqual(
    records.map((r) => [r.capturedLength, r.originalLength, r.sessions]),
    [
      [100, 65_000, 1 << a],
      [1000, 65_000, (1 << a) | (1 << b)],
      [100, 65_000, 1 << a],
    ],
  );
  t.deepEqual(records[1].data, buf.subarray(128, 1128));
});

test('what does not fit until the next drain is counted as lost, for the sessions that wanted it', (t) => {
  const rec = new CaptureRecorder(8);
  const a = rec.openSlot(65535, 0);
  const b = rec.openSlot(65535, 0);
  rec.setPort(a, 1, INGRESS);
  rec.setPort(b, 2, INGRESS);
  const size = captureRecordBytes(60_000);
  const fit = Math.floor(CAPTURE_BUFFER_BYTES / size);
  for (let i = 0; i < fit + 5; i++) rec.record(INGRESS, 1, 0, buf, 0, 60_000, i);
  rec.record(INGRESS, 2, 0, buf, 0, 60_000, 0);
  const drained = rec.drain()!;
  t.is(read(drained.records).length, fit);
  t.is(drained.lost[a], 5);
  t.is(drained.lost[b], 1);
  // Drained: room again, and the losses were reported once.
  rec.record(INGRESS, 2, 0, buf, 0, 60, 0);
  const next = rec.drain()!;
  t.is(read(next.records).length, 1);
  t.is(next.lost[a], 0);
});

test('at most CAPTURE_SESSIONS slots; a closed slot clears its ports and is free again', (t) => {
  const rec = new CaptureRecorder(8);
  const slots = Array.from({ length: CAPTURE_SESSIONS }, () => rec.openSlot(65535, 0));
  t.deepEqual(slots, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.is(rec.openSlot(65535, 0), -1);
  rec.setPort(2, 5, EGRESS);
  rec.setPort(3, 5, INGRESS);
  rec.closeSlot(2);
  t.is(rec.mask[5], INGRESS);
  t.is(rec.openSlot(65535, 0), 2);
  for (const s of slots) rec.closeSlot(s);
  t.false(rec.active);
  t.is(rec.mask[5], 0);
});

test('out-of-range ports are ignored rather than recorded', (t) => {
  const rec = new CaptureRecorder(4);
  const s = rec.openSlot(65535, 0);
  rec.setPort(s, 9, INGRESS);
  rec.record(INGRESS, 9, 0, buf, 0, 60, 0);
  rec.record(INGRESS, -1, 0, buf, 0, 60, 0);
  t.is(rec.pending, 0);
});

// ------------------------------------------------------------------ sessions

function sessions(maxPorts = 16): { rec: CaptureRecorder; sessions: CaptureSessions; posted: DataPlaneCapture[]; inFlight: Int32Array } {
  const rec = new CaptureRecorder(maxPorts);
  const posted: DataPlaneCapture[] = [];
  const inFlight = new Int32Array(new SharedArrayBuffer(4));
  const s = new CaptureSessions(rec, () => 0, (m) => posted.push(m), inFlight);
  return { rec, sessions: s, posted, inFlight };
}

test('an endpoint session captures its port; removing the port drains its frames and ends it', (t) => {
  const { rec, sessions: s, posted, inFlight } = sessions();
  s.networkAdded(1);
  s.portAdded(3, 1);
  s.portAdded(4, 1);
  t.deepEqual(s.start({ portId: 9 }, INGRESS, 65535), { refused: 'noTarget' });
  const { slot } = s.start({ portId: 3 }, INGRESS | EGRESS, 65535) as { slot: number };
  t.is(rec.mask[3], INGRESS | EGRESS);
  t.is(rec.mask[4], 0);
  rec.record(EGRESS, 3, 0, buf, 0, 60, 0);
  s.portRemoved(3);
  t.is(posted.length, 2);
  t.is(posted[0].capture, 'records');
  t.is(inFlight[0], captureRecordBytes(60), 'the records are in flight until the control plane says otherwise');
  t.deepEqual(posted[1], { capture: 'end', slot, reason: 'portRemoved' });
  t.false(rec.active);
  t.is(rec.mask[3], 0);
  s.close();
});

test('a network session captures every port of the network, those that join later too, and ends with the network', (t) => {
  const { rec, sessions: s, posted } = sessions();
  s.networkAdded(1);
  s.networkAdded(2);
  s.portAdded(3, 1);
  s.portAdded(4, 2);
  s.portAdded(7, 1); // a nat host TAP or an overlay tunnel port is a port of its network like any other
  const { slot } = s.start({ networkId: 1 }, DROP, 65535) as { slot: number };
  t.deepEqual([rec.mask[3], rec.mask[4], rec.mask[7]], [DROP, 0, DROP]);
  s.portAdded(5, 1);
  t.is(rec.mask[5], DROP);
  s.portRemoved(3);
  t.is(rec.mask[3], 0);
  t.is(posted.length, 0, 'a port leaving does not end a network session');
  s.portRemoved(5);
  s.portRemoved(7);
  s.networkRemoved(1);
  t.deepEqual(posted, [{ capture: 'end', slot, reason: 'networkRemoved' }]);
  t.false(rec.active);
  t.deepEqual(s.start({ networkId: 1 }, DROP, 65535), { refused: 'noTarget' });
});

test('drains wait while the control plane is behind, but a stop always drains: its records carry a slot that may be reused', (t) => {
  const { rec, sessions: s, posted, inFlight } = sessions();
  s.networkAdded(1);
  s.portAdded(3, 1);
  const { slot } = s.start({ portId: 3 }, INGRESS, 65535) as { slot: number };
  rec.record(INGRESS, 3, 0, buf, 0, 60, 0);
  Atomics.store(inFlight, 0, 64 << 20);
  s.drain(false);
  t.is(posted.length, 0);
  s.stop(slot);
  t.is(posted.length, 1);
  t.is(read((posted[0] as { records: ArrayBuffer }).records).length, 1);
});

test('a batch that leaves the buffer over half full drains it at once', (t) => {
  const { rec, sessions: s, posted } = sessions();
  s.networkAdded(1);
  s.portAdded(3, 1);
  s.start({ portId: 3 }, INGRESS, 65535);
  rec.record(INGRESS, 3, 0, buf, 0, 60_000, 0);
  s.afterBatch();
  t.is(posted.length, 0);
  while (rec.pending <= CAPTURE_BUFFER_BYTES / 2) rec.record(INGRESS, 3, 0, buf, 0, 60_000, 0);
  s.afterBatch();
  t.is(posted.length, 1);
  t.is(rec.pending, 0);
  s.close();
});

test('a start past the last free slot is refused, not thrown', (t) => {
  const { sessions: s } = sessions();
  s.networkAdded(1);
  s.portAdded(3, 1);
  for (let i = 0; i < CAPTURE_SESSIONS; i++) t.deepEqual(s.start({ portId: 3 }, INGRESS, 65535), { slot: i });
  t.deepEqual(s.start({ networkId: 1 }, INGRESS, 65535), { refused: 'full' });
  s.stop(5);
  t.deepEqual(s.start({ networkId: 1 }, INGRESS, 65535), { slot: 5 });
  s.close();
});

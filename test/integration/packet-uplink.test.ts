/**
 * packetOpen: an AF_PACKET socket on a host interface that the receive engine
 * and writeBatch use as they use a TAP. Checked on a veth whose host end is
 * the "uplink" and whose other end is in a namespace of the test's own: what
 * the namespace sends is read with a vnet header, what is written reaches
 * the namespace, and what the socket itself sent is not read back.
 */
import test from 'ava';
import { createNetns } from '../../src/host/index.js';
import { closeFd, packetOpen, RxEngine, VNET_HDR_LEN, writeBatch } from '../../src/native/index.js';
import { buildArpRequest } from '../../src/packet/builders.js';
import { formatMac } from '../../src/packet/ethernet.js';
import { injectFrames, removeEverything, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const ns = `${prefix}-lan`;
const uplink = `${prefix}-up`;
const FAKE_MAC = '02:00:00:00:77:01';
const NS_IP = '192.168.213.1';

test.before(async () => {
  await createNetns(ns);
  const steps: string[][] = [
    ['link', 'add', uplink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns],
    ['link', 'set', uplink, 'up'],
    ['-n', ns, 'link', 'set', 'eth0', 'up'],
    ['-n', ns, 'addr', 'add', `${NS_IP}/24`, 'dev', 'eth0'],
  ];
  for (const args of steps) {
    const r = await sh('ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
  }
});

test.after.always(async () => {
  await removeEverything(prefix);
});

test.serial('frames written on a packet socket reach the wire, answers are read back with a vnet header, its own frames are not', async (t) => {
  const fd = packetOpen(uplink, true);
  const frames: { src: string; dst: string; etherType: number; vnetZero: boolean }[] = [];
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      const b = engine.buffer;
      frames.push({
        dst: formatMac(b.subarray(off, off + 6)),
        src: formatMac(b.subarray(off + 6, off + 12)),
        etherType: b.readUInt16BE(off + 12),
        vnetZero: b.subarray(off - VNET_HDR_LEN, off).every((x) => x === 0),
      });
    }
  });
  try {
    engine.addPort(1, fd);
    // Who has NS_IP? asked from a MAC the host does not have: only the namespace can answer, to that MAC.
    const request = buildArpRequest({ srcMac: FAKE_MAC, srcIp: '192.168.213.77', targetIp: NS_IP });
    const buf = Buffer.alloc(VNET_HDR_LEN + request.length);
    request.copy(buf, VNET_HDR_LEN);
    const lengths = new Uint32Array([request.length]);
    t.is(writeBatch(fd, buf, new Uint32Array([VNET_HDR_LEN]), lengths, 1, VNET_HDR_LEN), 1);
    const deadline = Date.now() + 5000;
    while (!frames.some((f) => f.dst === FAKE_MAC) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const reply = frames.find((f) => f.dst === FAKE_MAC);
    t.truthy(reply, `the namespace's ARP reply was read: ${JSON.stringify(frames)}`);
    t.is(reply?.etherType, 0x0806);
    t.true(reply?.vnetZero, 'behind a vnet header (all zero: a plain frame from the wire)');
    t.false(
      frames.some((f) => f.src === FAKE_MAC),
      'the request the socket sent is not read back',
    );
    const promisc = await sh('ip', ['-d', 'link', 'show', uplink]);
    t.regex(promisc.stdout, /promiscuity 1\b/, 'promiscuous while the socket is open');
  } finally {
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  }
  t.regex((await sh('ip', ['-d', 'link', 'show', uplink])).stdout, /promiscuity 0\b/, 'and not after it is closed');
});

test.serial("frames with another VLAN's tag are not read; untagged ones are", async (t) => {
  const fd = packetOpen(uplink, true);
  const seen: string[] = [];
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      seen.push(formatMac(engine.buffer.subarray(off + 6, off + 12)));
    }
  });
  try {
    engine.addPort(1, fd);
    const untagged = buildArpRequest({ srcMac: '02:00:00:00:78:01', srcIp: '192.168.213.1', targetIp: '192.168.213.9' });
    // The same request behind an 802.1Q tag (VLAN 7), from another source MAC.
    const tagged = Buffer.concat([Buffer.from('ffffffffffff020000007802', 'hex'), Buffer.from([0x81, 0x00, 0x00, 0x07]), untagged.subarray(12)]);
    const sent = await injectFrames(ns, 'eth0', [tagged.toString('hex'), untagged.toString('hex')]);
    t.is(sent.sent, 2);
    const deadline = Date.now() + 5000;
    while (!seen.includes('02:00:00:00:78:01') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    t.true(seen.includes('02:00:00:00:78:01'), `the untagged frame was read: ${seen.join(', ')}`);
    t.false(seen.includes('02:00:00:00:78:02'), 'the tagged one was not');
  } finally {
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  }
});

test.serial('an interface that does not exist is refused with the reason', (t) => {
  t.throws(() => packetOpen(`${prefix}-none`, false), { message: /interface vswt.*-none: No such device \(ENODEV\)/ });
});

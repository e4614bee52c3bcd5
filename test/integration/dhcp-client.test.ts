/**
 * The DHCP client against a real server: Debian's dnsmasq in a namespace of
 * the test's own, on one end of a veth; the client on the other end, in the
 * host namespace, through the addon's AF_PACKET socket (packetOpen, RxEngine,
 * writeBatch), speaking for a MAC no interface has, as it will for a
 * container endpoint on a transparent network. dnsmasq's lease file is the
 * judge: the lease appears with the MAC and client id, a renewal moves its
 * expiry, the release removes it.
 *
 * The client has no IP stack, so this test answers ARP for the leased
 * address (a container's kernel does that in vsw): dnsmasq answers a renewal
 * by unicast to the client's address, and resolves it first.
 */
import test from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DhcpClient, type DhcpLease } from '../../src/dhcp/index.js';
import { parseDhcpFrame } from '../../src/dhcp/frames.js';
import { messageTypeOf, DhcpMessageType } from '../../src/dhcp/message.js';
import { closeFd, packetOpen, RxEngine, VNET_HDR_LEN, writeBatch } from '../../src/native/index.js';
import { ArpOp, ArpView, parseArp } from '../../src/packet/arp.js';
import { buildArpReply } from '../../src/packet/builders.js';
import { EtherType } from '../../src/packet/ethernet.js';
import { VnetFlags } from '../../src/packet/vnet.js';
import { Dnsmasq } from './helpers/dnsmasq.js';
import { addNetns, removeEverything, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const ns = `${prefix}-lan`;
const uplink = `${prefix}-up`;
const SERVER_IP = '192.168.214.1';
const ENDPOINT_MAC = '02:00:5e:14:00:01';
/** A MAC dnsmasq is told to ignore: for it, no server answers. */
const IGNORED_MAC = '02:00:5e:14:00:02';
const HOSTNAME = 'vswdhcp';
/** dnsmasq's shortest lease is 2 minutes; T1 and T2 are set short so a renewal comes within the test. */
const LEASE_SECONDS = 120;
const T1_SECONDS = 6;
const T2_SECONDS = 100;

let tmp = '';
let dnsmasq: Dnsmasq | null = null;

async function must(args: string[]): Promise<void> {
  const r = await sh('ip', args);
  if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr}`);
}

test.before(async () => {
  tmp = await mkdtemp(join(tmpdir(), `${prefix}-dhcp-`));
  await addNetns(ns);
  await must(['link', 'add', uplink, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
  await must(['link', 'set', uplink, 'up']);
  await must(['-n', ns, 'link', 'set', 'lo', 'up']);
  await must(['-n', ns, 'link', 'set', 'eth0', 'up']);
  await must(['-n', ns, 'addr', 'add', `${SERVER_IP}/24`, 'dev', 'eth0']);
  dnsmasq = await Dnsmasq.start({
    netns: ns,
    ifname: 'eth0',
    range: '192.168.214.50,192.168.214.99,255.255.255.0',
    leaseSeconds: LEASE_SECONDS,
    t1Seconds: T1_SECONDS,
    t2Seconds: T2_SECONDS,
    dir: tmp,
    extra: ['--dhcp-option=option:dns-server,192.0.2.53', '--dhcp-option=option:mtu,1400', `--dhcp-host=${IGNORED_MAC},ignore`, '--domain=vsw.test'],
  });
});

test.after.always(async () => {
  dnsmasq?.stop();
  await removeEverything(prefix);
  if (tmp !== '') await rm(tmp, { recursive: true, force: true });
});

const leaseFor = (mac: string) => dnsmasq!.leaseFor(mac);
const waitFor = <T,>(what: string, probe: () => Promise<T | null | false>, timeoutMs: number): Promise<T> => dnsmasq!.waitFor(what, probe, timeoutMs);

/**
 * The client's transport in this test: frames out through writeBatch on the
 * packet socket, frames in through an RxEngine, handed to the client and to
 * an ARP responder for the client's leased address.
 */
function packetTransport(mac: string, hostname: string) {
  const fd = packetOpen(uplink, true);
  const sent: { type: number | null; dstIp: string; ciaddr: string }[] = [];
  const txBuffer = Buffer.alloc(VNET_HDR_LEN + 2048);
  const send = (frame: Uint8Array) => {
    // A zero vnet header: a plain, complete frame.
    txBuffer.fill(0, 0, VNET_HDR_LEN);
    txBuffer.set(frame, VNET_HDR_LEN);
    if (writeBatch(fd, txBuffer, new Uint32Array([VNET_HDR_LEN]), new Uint32Array([frame.length]), 1, VNET_HDR_LEN) !== 1) {
      throw new Error('the packet socket did not take the frame');
    }
    const parsed = parseDhcpFrame(frame);
    if (parsed !== null) sent.push({ type: messageTypeOf(parsed.message), dstIp: parsed.dstIp, ciaddr: parsed.message.ciaddr });
  };
  const client = new DhcpClient({ mac, hostname, send });
  const arp = new ArpView();
  const answerArp = (frame: Buffer) => {
    const address = client.lease?.address;
    if (address === undefined || frame.readUInt16BE(12) !== EtherType.ARP || !arp.reset(frame, 14, frame.length - 14)) return;
    const request = parseArp(arp);
    if (request === null || request.operation !== ArpOp.Request || request.targetIp !== address) return;
    send(buildArpReply({ srcMac: mac, srcIp: address, dstMac: request.senderMac, dstIp: request.senderIp }));
  };
  const engine = new RxEngine((_port, count) => {
    for (let i = 0; i < count; i++) {
      const off = engine.frameOffset(i);
      const frame = Buffer.from(engine.buffer.subarray(off, off + engine.lengths[i]));
      // A veth passes dnsmasq's UDP checksum on unfinished when its tx offload is on; the vnet header says so.
      const checksumPartial = (engine.buffer[off - VNET_HDR_LEN] & VnetFlags.NEEDS_CSUM) !== 0;
      answerArp(frame);
      client.receive(frame, { checksumPartial });
    }
  });
  engine.addPort(1, fd);
  const close = () => {
    client.stop();
    engine.removePort(1);
    engine.close();
    closeFd(fd);
  };
  return { client, sent, close };
}

test.serial('a lease from dnsmasq for a MAC of no interface: in the lease file with the client id, renewed at T1, gone after release', async (t) => {
  const { client, sent, close } = packetTransport(ENDPOINT_MAC, HOSTNAME);
  const renewals: DhcpLease[] = [];
  client.on('renewed', (lease) => renewals.push(lease));
  const errors: string[] = [];
  client.on('error', (err) => errors.push(err.message));
  try {
    const started = Date.now();
    const lease = await client.acquire(20_000);
    t.log(`lease ${lease.address}/${lease.prefixLength} in ${Date.now() - started} ms`);
    t.like(lease, {
      prefixLength: 24,
      subnetMask: '255.255.255.0',
      router: SERVER_IP,
      dnsServers: ['192.0.2.53'],
      domain: 'vsw.test',
      mtu: 1400,
      leaseSeconds: LEASE_SECONDS,
      t1Seconds: T1_SECONDS,
      t2Seconds: T2_SECONDS,
      serverId: SERVER_IP,
    });
    t.regex(lease.address, /^192\.168\.214\.(5\d|[6-9]\d)$/, 'from the range');
    const nsMac = JSON.parse((await sh('ip', ['-n', ns, '-j', 'link', 'show', 'eth0'])).stdout)[0].address as string;
    t.is(lease.serverMac, nsMac, "the server's MAC, for unicast renewals");

    const granted = await waitFor('the lease in dnsmasq\'s lease file', () => leaseFor(ENDPOINT_MAC), 5_000);
    t.like(granted, { ip: lease.address, hostname: HOSTNAME, clientId: '01:02:00:5e:14:00:01' });
    const nowSeconds = Date.now() / 1000;
    t.true(Math.abs(granted.expiry - (nowSeconds + LEASE_SECONDS)) < 10, `expiry ${granted.expiry} about ${LEASE_SECONDS} s from now`);

    // T1: a unicast REQUEST to the server; dnsmasq's unicast ACK moves the expiry.
    await waitFor('a renewal', async () => renewals.length > 0, (T1_SECONDS + 10) * 1000);
    t.is(client.state, 'bound');
    t.like(renewals[0], { address: lease.address, serverId: SERVER_IP });
    const renewal = sent.find((s) => s.type === DhcpMessageType.REQUEST && s.ciaddr === lease.address);
    t.like(renewal, { dstIp: SERVER_IP }, 'renewing is unicast to the server');
    const renewed = await waitFor(
      'a later expiry in the lease file',
      async () => {
        const line = await leaseFor(ENDPOINT_MAC);
        return line !== null && line.expiry > granted.expiry ? line : null;
      },
      5_000,
    );
    t.is(renewed.ip, lease.address);
    t.true(renewed.expiry - granted.expiry >= T1_SECONDS - 2, `expiry moved by ${renewed.expiry - granted.expiry} s`);

    t.true(client.release());
    t.is(client.state, 'stopped');
    await waitFor('the lease gone from the lease file', async () => (await leaseFor(ENDPOINT_MAC)) === null, 5_000);
    t.deepEqual(errors, []);
  } finally {
    close();
  }
});

test.serial('when no server answers, acquire fails in the stated time with one sentence and the client sends nothing more', async (t) => {
  const { client, sent, close } = packetTransport(IGNORED_MAC, 'ignored');
  try {
    const started = Date.now();
    const err = await t.throwsAsync(client.acquire(5_000));
    const took = Date.now() - started;
    t.is(
      err?.message,
      "no DHCP server answered on the LAN within 5 s: check that the uplink's network has one, or create the network without --ipam dhcp to give it static addresses",
    );
    t.true(took >= 5_000 && took < 6_000, `rejected after ${took} ms`);
    t.is(client.state, 'stopped');
    t.true(sent.length >= 2 && sent.every((s) => s.type === DhcpMessageType.DISCOVER), `DISCOVERs sent: ${sent.length}`);
    const count = sent.length;
    await new Promise((r) => setTimeout(r, 4_500));
    t.is(sent.length, count, 'no retransmission after the deadline');
    t.is(await leaseFor(IGNORED_MAC), null);
    t.regex(dnsmasq!.log, new RegExp(`${IGNORED_MAC}.*ignored`), 'dnsmasq saw the DISCOVERs and ignored them, as configured');
  } finally {
    close();
  }
});

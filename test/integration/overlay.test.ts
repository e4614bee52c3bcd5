/**
 * Overlay networks across "hosts" (namespaces on an underlay bridge): two vsw
 * daemons (A = .11, B = .12), the Linux kernel's own VXLAN device bridged to
 * a container (K = .13), and a stranger on the underlay (S = .14) that is
 * nobody's peer. Checked with ping, iperf3, tcpdump captures read by tshark,
 * crafted VXLAN datagrams, and the daemons' counters (`vsw overlay ls`).
 */
import test from 'ava';
import type { OverlayNetworkState } from '../../src/service/api-types.js';
import { addNetns, inNetns, must, ping, runPrefix } from './helpers/env.js';
import { assertOneSentence, capture, createEndpoint, teardown, type DaemonHandle, type EndpointJson } from './helpers/daemon.js';
import { addKernelVxlan, addUnderlay, iperf, sendUdp, startHostDaemon, tsharkFields, type KernelVxlanHost, type UnderlayHost } from './helpers/overlay.js';

const prefix = runPrefix();
const VNI = 4096;
const SUBNET = '10.10.0.0/24';
const KERNEL_IP = '10.10.0.200';

let hostA: UnderlayHost;
let hostB: UnderlayHost;
let hostK: UnderlayHost;
let hostS: UnderlayHost;
let daemonA: DaemonHandle | undefined;
let daemonB: DaemonHandle | undefined;
let kernel: KernelVxlanHost;
let a1: EndpointJson;
let b1: EndpointJson;

async function overlayState(d: DaemonHandle, network = 'blue'): Promise<OverlayNetworkState> {
  const [state] = await d.vswJson<OverlayNetworkState[]>(['overlay', 'ls', '--network', network, '--json']);
  return state;
}

async function addContainer(d: DaemonHandle, name: string, network = 'blue'): Promise<EndpointJson> {
  await addNetns(`${prefix}-${name}`);
  return createEndpoint(d, network, `${prefix}-${name}`);
}

test.before(async () => {
  [hostA, hostB, hostK, hostS] = await addUnderlay(prefix, 4);
  daemonA = await startHostDaemon(prefix, hostA);
  daemonB = await startHostDaemon(prefix, hostB);
  for (const [d, self] of [
    [daemonA, hostA],
    [daemonB, hostB],
  ] as const) {
    const peers = [hostA, hostB, hostK].filter((h) => h !== self).flatMap((h) => ['--peer', h.ip]);
    await d.vswOk(['network', 'create', '-d', 'overlay', '--subnet', SUBNET, '--vni', String(VNI), '--vtep', self.ip, ...peers, 'blue']);
  }
  a1 = await addContainer(daemonA, 'a1');
  b1 = await addContainer(daemonB, 'b1');
  kernel = await addKernelVxlan(hostK, [hostA.ip, hostB.ip], VNI, `${prefix}-k1`, KERNEL_IP);
});

test.after.always(async () => {
  await teardown(prefix, daemonA, daemonB);
});

test.serial('each host hands out its own share of the subnet, and endpoints get the overlay MTU', async (t) => {
  // Three VTEPs (.11, .12, .13): A takes the first third of 10.10.0.1-254, B the second.
  t.is(a1.ip, '10.10.0.2');
  t.is(b1.ip, '10.10.0.85');
  const link = JSON.parse(await must('ip', ['-n', a1.netns, '-j', 'link', 'show', 'eth0'])) as { mtu: number }[];
  t.is(link[0].mtu, 1450);
  const net = await daemonA!.vswJson<{ overlay: { mtu: number; ipRange: string; underlayInterface: string } }>(['network', 'inspect', 'blue']);
  t.is(net.overlay.mtu, 1450);
  t.is(net.overlay.ipRange, '10.10.0.1-10.10.0.84');
  t.is(net.overlay.underlayInterface, 'eth0');
});

test.serial('containers on two vsw hosts and a kernel VXLAN host all reach each other', async (t) => {
  t.true(await ping(a1.netns, b1.ip), 'vsw A -> vsw B');
  t.true(await ping(b1.netns, a1.ip), 'vsw B -> vsw A');
  t.true(await ping(a1.netns, KERNEL_IP), 'vsw A -> kernel');
  t.true(await ping(kernel.container, a1.ip), 'kernel -> vsw A');
  t.true(await ping(kernel.container, b1.ip), 'kernel -> vsw B');
  const state = await overlayState(daemonA!);
  const learned = state.vteps.find((e) => e.mac === kernel.mac);
  t.is(learned?.vtep, hostK.ip, 'A learned the kernel container behind VTEP .13');
  t.is(learned?.kind, 'learned');
});

test.serial('iperf3 runs both ways between vsw and the kernel VXLAN device, and between two vsw hosts', async (t) => {
  const toKernel = await iperf(a1.netns, kernel.container, KERNEL_IP);
  const fromKernel = await iperf(a1.netns, kernel.container, KERNEL_IP, ['-R']);
  const vswToVsw = await iperf(a1.netns, b1.netns, b1.ip);
  t.true(toKernel > 0 && fromKernel > 0 && vswToVsw > 0, `rates ${toKernel} ${fromKernel} ${vswToVsw}`);
  const state = await overlayState(daemonA!);
  t.true(state.counters.tunnel.segmented > 0, 'TSO super-frames were cut into segments before the tunnel');
  t.is(state.counters.tunnel.encapFailed, 0);
});

test.serial('TCP from the kernel VXLAN container reaches the vsw container as super-frames: its VXLAN GSO packets whole, its MTU-sized datagrams merged', async (t) => {
  // What vsw wrote to the container's TAP: a TCP super-frame counts as one packet there.
  const tapRx = async () => (JSON.parse(await must('ip', ['-n', a1.netns, '-s', '-j', 'link', 'show', 'eth0'])) as { stats64: { rx: { bytes: number; packets: number } } }[])[0].stats64.rx;
  const offloads = (on: boolean) => must('ip', ['netns', 'exec', hostK.ns, 'ethtool', '-K', 'eth0', 'tx-udp_tnl-segmentation', on ? 'on' : 'off', 'tx-udp_tnl-csum-segmentation', on ? 'on' : 'off']);
  // Offloads on (a veth's default): the kernel sends each TSO frame as one VXLAN GSO packet, which
  // reaches vsw's socket as one datagram holding the whole inner super-frame. Off: one MTU-sized
  // datagram per segment, each on its own (a veth has no GRO), as from a NIC that cannot segment VXLAN.
  const oversize = async (): Promise<number> => (await overlayState(daemonA!)).counters.tunnel.drops.oversize ?? 0;
  const oversizeBefore = await oversize();
  for (const segmented of [false, true]) {
    if (segmented) await offloads(false);
    try {
      const before = await tapRx();
      const rate = await iperf(a1.netns, kernel.container, KERNEL_IP, ['-R']);
      const after = await tapRx();
      const bytes = after.bytes - before.bytes;
      const frames = after.packets - before.packets;
      const what = segmented ? 'MTU-sized datagrams' : 'VXLAN GSO packets';
      t.true(rate > 0 && frames > 0, `${what}: ${rate} bit/s, ${frames} frames`);
      // Frames of one segment each would average at most 1464 bytes (MTU 1450 and Ethernet).
      t.true(bytes / frames > 2 * 1464, `${what}: ${bytes} bytes in ${frames} frames to the TAP, ${Math.round(bytes / frames)} per frame`);
    } finally {
      if (segmented) await offloads(true);
    }
  }
  t.is(await oversize(), oversizeBefore, 'vsw overlay ls shows no frame dropped as oversize on the tunnel port (where the whole-frame datagrams went before)');
});

test.serial('tshark decodes what vsw sends as VXLAN with the VNI, port 4789 and the inner frame', async (t) => {
  const file = `/tmp/${prefix}/vxlan.pcap`;
  const cap = await capture(hostK.ns, 'eth0', ['udp', 'port', '4789'], file);
  t.true(await ping(a1.netns, KERNEL_IP, 3));
  await cap.stop();
  const rows = await tsharkFields(file, `vxlan && icmp && ip.src == ${hostA.ip}`, ['vxlan.vni', 'udp.dstport', 'eth.src', 'eth.dst', 'ip.src', 'ip.dst', 'icmp.type']);
  t.true(rows.length >= 3, `echo requests from A in the capture: ${JSON.stringify(rows)}`);
  for (const [vni, port, ethSrc, ethDst, ipSrc, ipDst, type] of rows) {
    t.is(vni, String(VNI));
    t.is(port, '4789');
    // tshark lists outer then inner values of a field.
    t.is(ethSrc.split(',')[1], a1.mac);
    t.is(ethDst.split(',')[1], kernel.mac);
    t.deepEqual(ipSrc.split(','), [hostA.ip, a1.ip]);
    t.deepEqual(ipDst.split(','), [hostK.ip, KERNEL_IP]);
    t.is(type, '8');
  }
});

test.serial('with static remote entries no ARP request crosses the underlay', async (t) => {
  const a2 = await addContainer(daemonA!, 'a2');
  const b2 = await addContainer(daemonB!, 'b2');
  await daemonA!.vswOk(['overlay', 'remote', 'add', 'blue', '--mac', b2.mac, '--ip', b2.ip, '--vtep', hostB.ip]);
  await daemonB!.vswOk(['overlay', 'remote', 'add', 'blue', '--mac', a2.mac, '--ip', a2.ip, '--vtep', hostA.ip]);
  const before = (await overlayState(daemonA!)).counters.tunnel.arpSuppressed;
  const file = `/tmp/${prefix}/arp.pcap`;
  const cap = await capture(`${prefix}-ul`, 'br0', ['udp', 'port', '4789'], file);
  t.true(await ping(a2.netns, b2.ip, 3));
  await cap.stop();
  const arp = await tsharkFields(file, 'vxlan && arp', ['arp.opcode']);
  const icmp = await tsharkFields(file, 'vxlan && icmp', ['icmp.type']);
  t.is(arp.length, 0, 'ARP inside VXLAN on the underlay');
  t.true(icmp.length >= 6, `the capture saw the pings themselves (${icmp.length})`);
  const after = await overlayState(daemonA!);
  t.true(after.counters.tunnel.arpSuppressed > before, 'A answered the ARP request itself');
  t.true((await overlayState(daemonB!)).counters.tunnel.arpSuppressed > 0, 'B answered the reply direction itself');
  t.deepEqual(after.remotes, [{ mac: b2.mac, ip: b2.ip, vtep: hostB.ip }]);
  t.true(after.vteps.some((e) => e.mac === b2.mac && e.kind === 'static'));
});

test.serial('bad VXLAN datagrams are counted by reason and dropped, and forwarding goes on', async (t) => {
  const eth = `${b1.mac.replaceAll(':', '')}${'020000000099'}0800${'45'.padEnd(92, '0')}`;
  const header = (flags: string, vni: number) => `${flags}000000${vni.toString(16).padStart(6, '0')}00`;
  await sendUdp(hostB.ns, hostA.ip, 4789, [
    '0800', // shorter than the header
    header('00', VNI) + eth, // I flag clear
    header('08', VNI) + '0011223344', // inner frame cut short
    header('08', 9999) + eth, // a VNI nobody serves
  ]);
  await sendUdp(hostS.ns, hostA.ip, 4789, [header('08', VNI) + eth]); // from a VTEP that is no peer
  let drops: Record<string, number> = {};
  for (let i = 0; i < 20; i++) {
    drops = (await overlayState(daemonA!)).counters.underlay.drops;
    if (drops.vxlanNotPeer) break;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.is(drops.vxlanShortHeader, 1, JSON.stringify(drops));
  t.is(drops.vxlanBadFlags, 1);
  t.is(drops.vxlanTruncated, 1);
  t.is(drops.vxlanUnknownVni, 1);
  t.is(drops.vxlanNotPeer, 1);
  t.is((await overlayState(daemonA!)).counters.tunnel.notPeer, 1);
  t.true(await ping(a1.netns, b1.ip), 'the tunnel still forwards');
});

test.serial('an oversized frame without TSO gets ICMP fragmentation-needed with the overlay MTU', async (t) => {
  await must('ip', ['-n', a1.netns, 'link', 'set', 'eth0', 'mtu', '1500']);
  try {
    const r = await inNetns(a1.netns, 'ping', ['-M', 'do', '-s', '1472', '-c', '2', '-i', '0.3', '-W', '1', b1.ip]);
    t.regex(r.stdout + r.stderr, /mtu ?= ?1450/i, r.stdout + r.stderr);
    t.true((await overlayState(daemonA!)).counters.tunnel.tooBig >= 1);
    t.true(await ping(a1.netns, b1.ip), 'small frames still pass');
  } finally {
    await must('ip', ['-n', a1.netns, 'link', 'set', 'eth0', 'mtu', '1450']);
  }
});

test.serial('bad overlay options are refused with one sentence and harm nothing', async (t) => {
  const d = daemonA!;
  const create = (extra: string[]) => d.vsw(['network', 'create', '-d', 'overlay', '--subnet', '10.30.0.0/24', '--vtep', hostA.ip, '--peer', hostB.ip, ...extra, 'bad']);
  const vni0 = await create(['--vni', '0']);
  assertOneSentence(t, vni0, '--vni 0');
  t.regex(vni0.stderr, /VNI 0 is out of range.*1 to 16777215/);
  const vniBig = await create(['--vni', '16777216']);
  assertOneSentence(t, vniBig, '--vni 16777216');
  t.regex(vniBig.stderr, /16777216 is out of range/);
  const taken = await create(['--vni', String(VNI)]);
  assertOneSentence(t, taken, 'a VNI in use');
  t.regex(taken.stderr, /already used by network blue/);
  const notHere = await d.vsw(['network', 'create', '-d', 'overlay', '--subnet', '10.30.0.0/24', '--vni', '7', '--vtep', '10.99.0.1', 'bad']);
  assertOneSentence(t, notHere, 'a VTEP that is not on the host');
  t.regex(notHere.stderr, /VTEP 10\.99\.0\.1 is not an address of this host.*192\.168\.56\.11 on eth0/);
  const tooBig = await create(['--vni', '7', '--mtu', '1500']);
  assertOneSentence(t, tooBig, 'an MTU too large for the underlay');
  t.regex(tooBig.stderr, /MTU 1500 is too large for the underlay: eth0 .* has MTU 1500 .* --mtu 1450 or less/);
  const notOverlay = await d.vsw(['network', 'create', '-d', 'internal', '--subnet', '10.30.0.0/24', '--vni', '7', 'bad']);
  assertOneSentence(t, notOverlay, '--vni on an internal network');
  const networks = await d.vswJson<{ name: string }[]>(['network', 'ls', '--json']);
  t.deepEqual(
    networks.map((n) => n.name),
    ['blue'],
  );
  t.true(await ping(a1.netns, b1.ip), 'the overlay still forwards');
});

test.serial('removing the networks closes the underlay sockets', async (t) => {
  for (const d of [daemonA!, daemonB!]) {
    const endpoints = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
    await d.vswOk(['endpoint', 'rm', ...endpoints.map((e) => e.id)]);
    await d.vswOk(['network', 'rm', 'blue']);
  }
  const sockets = await inNetns(hostA.ns, 'ss', ['-uan', 'sport', '=', ':4789']);
  t.false(sockets.stdout.includes(':4789'), sockets.stdout);
  // The port is free again: a new network can take it.
  await daemonA!.vswOk(['network', 'create', '-d', 'overlay', '--subnet', SUBNET, '--vni', String(VNI), '--vtep', hostA.ip, '--peer', hostB.ip, 'blue']);
  t.pass();
});

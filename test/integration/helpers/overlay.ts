/**
 * Multi-host topologies for overlay tests, on one machine: "hosts" are
 * namespaces on an underlay bridge (in a namespace of its own, so the real
 * host is never touched), each running either a vsw daemon or the kernel's
 * own VXLAN device bridged to a container namespace. Names carry the test's
 * prefix, so removeEverything(prefix) and scripts/cleanup.sh find them.
 */
import { addNetns, inNetns, must, sh } from './env.js';
import { startDaemon, type DaemonHandle } from './daemon.js';

export const UNDERLAY_NET = '192.168.56';

export interface UnderlayHost {
  ns: string;
  ip: string;
}

/**
 * The underlay namespace with bridge br0, and `count` host namespaces with eth0 = 192.168.56.(10+i)/24 on it
 * (`net` instead of 192.168.56 for a test that wants an underlay of its own).
 */
export async function addUnderlay(prefix: string, count: number, first = 1, net = UNDERLAY_NET): Promise<UnderlayHost[]> {
  const ul = `${prefix}-ul`;
  if ((await sh('ip', ['netns', 'pids', ul])).code !== 0) {
    await addNetns(ul);
    await must('ip', ['-n', ul, 'link', 'add', 'br0', 'type', 'bridge']);
    await must('ip', ['-n', ul, 'link', 'set', 'br0', 'up']);
  }
  const hosts: UnderlayHost[] = [];
  for (let i = first; i < first + count; i++) {
    const ns = `${prefix}-h${i}`;
    const ip = `${net}.${10 + i}`;
    await addNetns(ns);
    await must('ip', ['link', 'add', 'eth0', 'netns', ns, 'type', 'veth', 'peer', 'name', `h${i}`, 'netns', ul]);
    await must('ip', ['-n', ul, 'link', 'set', `h${i}`, 'master', 'br0', 'up']);
    await must('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
    await must('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    await must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    hosts.push({ ns, ip });
  }
  return hosts;
}

/** A vsw daemon running inside a host namespace. */
export function startHostDaemon(prefix: string, host: UnderlayHost): Promise<DaemonHandle> {
  return startDaemon(prefix, { netns: host.ns, name: host.ns.slice(prefix.length + 1) });
}

export interface KernelVxlanHost {
  container: string;
  ip: string;
  mac: string;
}

/**
 * The Linux way on a host namespace: vxlan0 (VNI, UDP 4789, learning) with a
 * flood entry per peer, a bridge, and a container namespace on a veth with
 * `ip`/24 and MTU 1450.
 */
export async function addKernelVxlan(host: UnderlayHost, peers: string[], vni: number, container: string, ip: string): Promise<KernelVxlanHost> {
  const n = (args: string[]) => must('ip', ['-n', host.ns, ...args]);
  // The host's eth0 keeps tx checksum offload on, as a veth has by default: the kernel peer's
  // datagrams then carry inner TCP segments with partial checksums, which vsw must accept.
  await n(['link', 'add', 'vxlan0', 'type', 'vxlan', 'id', String(vni), 'dstport', '4789', 'local', host.ip, 'dev', 'eth0']);
  for (const peer of peers) await must('ip', ['netns', 'exec', host.ns, 'bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxlan0', 'dst', peer]);
  await n(['link', 'add', 'br0', 'type', 'bridge']);
  await n(['link', 'set', 'vxlan0', 'master', 'br0', 'up']);
  await addNetns(container);
  await n(['link', 'add', 'vc', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', container]);
  await n(['link', 'set', 'vc', 'mtu', '1450', 'master', 'br0', 'up']);
  await n(['link', 'set', 'br0', 'up']);
  await must('ip', ['-n', container, 'link', 'set', 'eth0', 'mtu', '1450', 'up']);
  await must('ip', ['-n', container, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await must('ip', ['-n', container, 'link', 'set', 'lo', 'up']);
  const link = JSON.parse(await must('ip', ['-n', container, '-j', 'link', 'show', 'eth0'])) as { address: string }[];
  return { container, ip, mac: link[0].address };
}

/** iperf3 for `seconds` from one namespace to a server in another; resolves to bits per second received. */
export async function iperf(clientNs: string, serverNs: string, serverIp: string, extra: string[] = [], seconds = 2): Promise<number> {
  const server = await inNetns(serverNs, 'iperf3', ['-s', '-D', '-1']);
  if (server.code !== 0) throw new Error(`iperf3 -s in ${serverNs}: ${server.stderr}`);
  let r = await inNetns(clientNs, 'iperf3', ['-c', serverIp, '-t', String(seconds), '-J', ...extra], { timeoutMs: (seconds + 20) * 1000 });
  for (let i = 0; r.code !== 0 && /refused/.test(r.stdout + r.stderr) && i < 20; i++) {
    // The daemonized server may not be listening yet.
    await new Promise((resolve) => setTimeout(resolve, 100));
    r = await inNetns(clientNs, 'iperf3', ['-c', serverIp, '-t', String(seconds), '-J', ...extra], { timeoutMs: (seconds + 20) * 1000 });
  }
  if (r.code !== 0) throw new Error(`iperf3 -c ${serverIp} from ${clientNs} failed: ${r.stdout.slice(-400)} ${r.stderr}`);
  const doc = JSON.parse(r.stdout) as { end: { sum_received?: { bits_per_second: number } } };
  return doc.end.sum_received?.bits_per_second ?? 0;
}

/** Sends raw UDP payloads (hex) from a namespace to ip:port with a plain socket. */
export async function sendUdp(ns: string, ip: string, port: number, payloadsHex: string[]): Promise<void> {
  const script = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for h in sys.argv[3:]:
    s.sendto(bytes.fromhex(h), (sys.argv[1], int(sys.argv[2])))
`;
  const r = await inNetns(ns, 'python3', ['-c', script, ip, String(port), ...payloadsHex]);
  if (r.code !== 0) throw new Error(`sending UDP from ${ns}: ${r.stderr}`);
}

/** tshark over a capture file: one line per packet, the fields tab-separated (inner and outer values of a field comma-separated). */
export async function tsharkFields(file: string, filter: string, fields: string[]): Promise<string[][]> {
  const args = ['-r', file, '-Y', filter, '-T', 'fields', ...fields.flatMap((f) => ['-e', f])];
  const r = await sh('tshark', args);
  if (r.code !== 0) throw new Error(`tshark ${args.join(' ')}: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

/**
 * `scripts/lab up --lan-mode l2tunnel`: the lab's LAN (see lab-lan.test.ts)
 * reached through a fabric host. Container host -> fabric host -> the rest
 * of the network: each lab host's uplink eth1 (with its own LAN address) is
 * an isolated port of a top-of-rack bridge (namespace PREFIX-tor) whose one
 * other port is the fabric host's fabric port eth2; the fabric host
 * (PREFIX-fab, its own vsw daemon) has eth1 on the LAN bridge, an l2bridge
 * network with --fabric eth2, and a fabric endpoint hI-l1 for each lab
 * container. Checked: the outside host and the containers reach each other
 * both ways; a container pings another host's container through the fabric
 * host (its hairpin counter rises, the tor's capture holds each request
 * twice: to the fabric host, then from it); a per-address policy on the
 * fabric host stops that pair and nothing else; the LAN never sees a lab
 * host's or a container's MAC; `down` leaves nothing, checked before any
 * cleanup helper runs.
 */
import test from 'ava';
import { readFileSync, readdirSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { capture, processAlive } from './helpers/daemon.js';
import { inNetns, linksWithPrefix, namespacesWithPrefix, ping, processesMentioning, removeEverything, runPrefix, sh, type CommandResult } from './helpers/env.js';
import { macsOnWire } from './helpers/pcap-macs.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LAB = `${REPO}scripts/lab`;
const CLI = `${REPO}dist/src/cli/main.js`;
const prefix = runPrefix();
const STATE = `/run/vsw-lab/${prefix}.json`;
const LAN_PCAP = `/tmp/${prefix}-lan.pcap`;
const TOR_PCAP = `/tmp/${prefix}-tor.pcap`;

interface LabContainer {
  id: string;
  host: string;
  netns: string;
  ip: string;
  mac: string;
  ifname: string;
}
interface LabFabric {
  name: string;
  netns: string;
  socket: string;
  pid: number;
  uplink: string;
  lanIp: string;
  fabricIf: string;
  network: { name: string; driver: string; ipRange: string };
  tor: { netns: string; bridge: string; port: string };
  addresses: { container: string; name: string; endpoint: string; ip: string; hostMac: string }[];
}
interface LabJson {
  hosts: { name: string; index: number; netns: string; socket: string; pid: number }[];
  lan: {
    netns: string;
    bridge: string;
    dhcp: { pid: number };
    router: { netns: string };
    outside: { netns: string; ip: string };
    network: { name: string; driver: string };
    uplinks: { host: string; ifname: string; bridgePort: string; bridgeNetns: string; hostAddress: string | null; mac: string }[];
    containers: LabContainer[];
    fabric: LabFabric;
  };
}
interface Stage {
  name: string;
  counters: Record<string, number>;
}
interface Stats {
  ports: { name: string; rxFrames: number; txFrames: number; drops: Record<string, number> }[];
}

let desc: LabJson;

function lab(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return sh('bash', [LAB, ...args], { timeoutMs });
}

async function vswJson<T>(socket: string, args: string[]): Promise<T> {
  const r = await sh('node', [CLI, '--socket', socket, ...args]);
  if (r.code !== 0) throw new Error(`vsw ${args.join(' ')} (${socket}) exited ${r.code}: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout) as T;
}

const fabric = (): LabFabric => desc.lan.fabric;
const hairpinned = async (): Promise<number> =>
  (await vswJson<{ stages: Stage[] }>(fabric().socket, ['network', 'inspect', fabric().network.name])).stages.find((s) => s.name === 'l2bridge')!.counters.hairpinned;
const fabricPort = async (name: string): Promise<Stats['ports'][number]> => {
  const p = (await vswJson<Stats>(fabric().socket, ['stats', '--json'])).ports.find((x) => x.name === name);
  if (!p) throw new Error(`the fabric host has no endpoint ${name}`);
  return p;
};

test.before(async () => {
  // --lan-mode alone implies --lan.
  const r = await lab(['up', '--lan-mode', 'l2tunnel', '--hosts', '2', '--containers', '1', '--prefix', prefix]);
  if (r.code !== 0) throw new Error(`scripts/lab up --lan-mode l2tunnel exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  desc = JSON.parse(readFileSync(STATE, 'utf8')) as LabJson;
  // up's own checks, through the fabric host: both ways to the outside host, and container to container.
  for (const line of ['h1-l1 -> out', 'out -> h1-l1', 'h2-l1 -> out', 'out -> h2-l1', 'h1-l1 -> h2-l1', 'h2-l1 -> h1-l1']) {
    if (!r.stdout.includes(`check: ${line} ping answered`)) throw new Error(`up did not report "${line}" answered:\n${r.stdout}`);
  }
});

test.after.always(async () => {
  rmSync(LAN_PCAP, { force: true });
  rmSync(TOR_PCAP, { force: true });
  const down = await lab(['down', '--prefix', prefix], 60_000);
  await removeEverything(prefix);
  if (down.code !== 0) throw new Error(`scripts/lab down --prefix ${prefix} exited ${down.code}: ${down.stderr.trim()}`);
});

test.serial('the fabric host stands between the hosts and the LAN: its own daemon, an l2bridge network with a fabric port, one fabric endpoint per container', async (t) => {
  const fab = fabric();
  t.is(desc.lan.network.driver, 'l2tunnel');
  t.is(fab.netns, `${prefix}-fab`);
  t.is(fab.tor.netns, `${prefix}-tor`);
  const st = await lab(['status', '--prefix', prefix]);
  t.is(st.code, 0, `status: ${st.stdout}${st.stderr}`);
  t.regex(st.stdout, new RegExp(`fabric host ${prefix}-fab  192\\.168\\.57\\.9  daemon answers  ${fab.socket}`), st.stdout);
  const net = await vswJson<{ driver: string; uplink?: { interface: string; hostAddress?: string }; fabric?: { interface: string } }>(fab.socket, ['network', 'inspect', 'lan']);
  t.is(net.driver, 'l2bridge');
  t.is(net.uplink?.interface, 'eth1');
  t.is(net.uplink?.hostAddress, '192.168.57.9');
  t.is(net.fabric?.interface, 'eth2');
  // The hosts are cabled to the top-of-rack switch, not the LAN; the LAN bridge has the router and the fabric host.
  const lanPorts = JSON.parse((await sh('ip', ['-n', desc.lan.netns, '-j', 'link', 'show', 'master', desc.lan.bridge])).stdout) as { ifname: string }[];
  t.deepEqual(lanPorts.map((l) => l.ifname).sort(), ['fab', 'rt']);
  const torPorts = JSON.parse((await sh('ip', ['-n', fab.tor.netns, '-j', '-d', 'link', 'show', 'master', fab.tor.bridge])).stdout) as { ifname: string; linkinfo: { info_slave_data: { isolated?: boolean } } }[];
  t.deepEqual(torPorts.map((l) => l.ifname).sort(), ['fab', 'h1', 'h2']);
  for (const p of torPorts) t.is(p.linkinfo.info_slave_data.isolated === true, p.ifname !== 'fab', `tor port ${p.ifname} isolated`);
  const fabEps = await vswJson<{ name: string; ip: string; mac: string }[]>(fab.socket, ['endpoint', 'ls', '--json']);
  for (const h of desc.hosts) {
    const up = desc.lan.uplinks.find((u) => u.host === h.name)!;
    t.is(up.bridgeNetns, fab.tor.netns);
    t.is(up.hostAddress, `192.168.57.${10 + h.index}`);
    const addr = await sh('ip', ['-n', h.netns, '-4', '-br', 'addr', 'show', 'dev', up.ifname]);
    t.true(addr.stdout.includes(`${up.hostAddress}/24`), `${h.name}'s ${up.ifname}: ${addr.stdout}`);
    const hnet = await vswJson<{ driver: string; uplink?: { hostAddress?: string } }>(h.socket, ['network', 'inspect', 'lan']);
    t.is(hnet.driver, 'l2tunnel');
    t.is(hnet.uplink?.hostAddress, up.hostAddress ?? undefined);
    const c = desc.lan.containers.find((x) => x.host === h.name)!;
    const mac = (JSON.parse((await sh('ip', ['-n', h.netns, '-j', 'link', 'show', up.ifname])).stdout) as { address: string }[])[0].address;
    t.is(up.mac, mac);
    const ep = fabEps.find((e) => e.name === c.id);
    t.truthy(ep, `the fabric host has an endpoint ${c.id}: ${JSON.stringify(fabEps)}`);
    t.is(ep?.ip, c.ip);
    t.is(ep?.mac, mac, `${c.id}'s fabric endpoint is at ${h.name}'s uplink MAC`);
  }
});

test.serial("the outside host and the containers reach each other through the fabric host; the LAN sees the fabric host's MAC only", async (t) => {
  const lan = desc.lan;
  await sh('ip', ['-n', lan.router.netns, 'neigh', 'flush', 'dev', 'eth0']);
  for (const c of lan.containers) await inNetns(c.netns, 'ip', ['neigh', 'flush', 'dev', c.ifname]);
  const before = await Promise.all(lan.containers.map((c) => fabricPort(c.id)));
  const cap = await capture(lan.netns, lan.bridge, [], LAN_PCAP);
  for (const c of lan.containers) {
    t.true(await ping(c.netns, lan.outside.ip, 3), `${c.id} cannot ping the outside host`);
    t.true(await ping(lan.outside.netns, c.ip, 3), `the outside host cannot ping ${c.id}`);
  }
  const lines = await cap.stop();
  t.true(lines.some((l) => l.includes('ARP')), 'ARP crossed the LAN');
  const after = await Promise.all(lan.containers.map((c) => fabricPort(c.id)));
  lan.containers.forEach((c, k) => {
    t.true(after[k].rxFrames >= before[k].rxFrames + 6, `${c.id}'s frames went through its fabric endpoint: ${before[k].rxFrames} -> ${after[k].rxFrames}`);
    t.true(after[k].txFrames >= before[k].txFrames + 6, `and the frames to it: ${before[k].txFrames} -> ${after[k].txFrames}`);
  });
  const macs = (await macsOnWire(LAN_PCAP)).all;
  for (const c of lan.containers) t.false(macs.has(c.mac.toLowerCase()), `${c.id}'s own MAC ${c.mac} appeared on the LAN`);
  for (const u of lan.uplinks) t.false(macs.has(u.mac.toLowerCase()), `${u.host}'s uplink MAC ${u.mac} appeared on the LAN: it should be behind the fabric host`);
  const fabMac = (JSON.parse((await sh('ip', ['-n', fabric().netns, '-j', 'link', 'show', fabric().uplink])).stdout) as { address: string }[])[0].address;
  t.true(macs.has(fabMac), `the fabric host's uplink MAC ${fabMac} carried the containers' traffic`);
  const r = await lab(['iperf', '--prefix', prefix, '--from', 'out', '--to', 'h1-l1', '--time', '1']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /[\d.]+ (Gbit|Mbit)\/s received/);
});

test.serial('a container pings a container of the other host through the fabric host: hairpinned there, each request twice on the top-of-rack bridge', async (t) => {
  const [a, b] = desc.lan.containers;
  const fab = fabric();
  const upA = desc.lan.uplinks.find((u) => u.host === a.host)!;
  const upB = desc.lan.uplinks.find((u) => u.host === b.host)!;
  const fabMac = (JSON.parse((await sh('ip', ['-n', fab.netns, '-j', 'link', 'show', fab.fabricIf])).stdout) as { address: string }[])[0].address;
  const hairpinBefore = await hairpinned();
  const cap = await capture(fab.tor.netns, fab.tor.bridge, ['icmp'], TOR_PCAP);
  t.true(await ping(a.netns, b.ip, 3), `${a.id} cannot ping ${b.id}`);
  t.true(await ping(b.netns, a.ip, 3), `${b.id} cannot ping ${a.id}`);
  await cap.stop();
  const lines = (await sh('tcpdump', ['-r', TOR_PCAP, '-n', '-e'])).stdout.split('\n').filter(Boolean);
  // tcpdump -e: "SRC > DST, ethertype IPv4 (0x0800), length 98: FROM > TO: ICMP echo request, ...". The hosts'
  // ports are isolated, so a frame to a host's MAC can only have come from the fabric host's port.
  const frames = (dst: string, from: string, to: string, what: string, src = ''): string[] =>
    lines.filter((l) => l.includes(`${src ? `${src} ` : ''}> ${dst}, `) && l.includes(`${from} > ${to}: ICMP echo ${what}`));
  const dump = `\n${lines.join('\n')}`;
  const toFabric = frames(fabMac, a.ip, b.ip, 'request', upA.mac);
  t.true(toFabric.length >= 3, `${a.id}'s requests went from ${a.host} to the fabric host:${dump}`);
  t.is(frames(upB.mac, a.ip, b.ip, 'request').length, toFabric.length, `and each from the fabric host on to ${b.host}:${dump}`);
  t.true(frames(fabMac, b.ip, a.ip, 'reply', upB.mac).length >= 3, `${b.id}'s replies went to the fabric host:${dump}`);
  t.is(frames(upA.mac, b.ip, a.ip, 'reply').length, frames(fabMac, b.ip, a.ip, 'reply', upB.mac).length, `and each from it on to ${a.host}:${dump}`);
  // Nothing else: every request of a to b is on the bridge exactly twice.
  t.is(lines.filter((l) => l.includes(`${a.ip} > ${b.ip}: ICMP echo request`)).length, 2 * toFabric.length, `no other path:${dump}`);
  const hairpinAfter = await hairpinned();
  // The stage counts what it decides on the slow path: each new flow (a ping's requests, its replies), not each frame.
  t.true(hairpinAfter >= hairpinBefore + 4, `the fabric host hairpinned both pings' requests and replies: ${hairpinBefore} -> ${hairpinAfter}`);
  const [pa, pb] = [await fabricPort(a.id), await fabricPort(b.id)];
  t.true(pa.rxFrames >= 6 && pb.rxFrames >= 6, `and their frames entered through the two fabric endpoints: ${JSON.stringify([pa, pb])}`);
});

test.serial("a per-address policy on the fabric host stops that pair and nothing else", async (t) => {
  const [a, b] = desc.lan.containers;
  const fab = fabric();
  const out = desc.lan.outside;
  const add = await sh('node', [CLI, '--socket', fab.socket, 'policy', 'acl', 'add', b.id, '--action', 'block', '--priority', '10', '--direction', 'in', '--src-prefix', `${a.ip}/32`]);
  t.is(add.code, 0, add.stderr);
  t.false(await ping(a.netns, b.ip, 2), `${a.id} still reaches ${b.id}`);
  t.true(await ping(a.netns, out.ip, 2), `${a.id} no longer reaches the outside host`);
  t.true(await ping(out.netns, b.ip, 2), `the outside host no longer reaches ${b.id}`);
  t.true(await ping(b.netns, out.ip, 2), `${b.id} no longer reaches the outside host`);
  t.true(await ping(out.netns, a.ip, 2), `the outside host no longer reaches ${a.id}`);
  // Stateful: the rule stops connections from a to b, not the answers to b's own.
  t.true(await ping(b.netns, a.ip, 2), `${b.id} no longer reaches ${a.id}`);
  t.true(((await fabricPort(b.id)).drops.policyBlock ?? 0) > 0, `the drops are ${b.id}'s, on the fabric host`);
  t.is((await fabricPort(a.id)).drops.policyBlock ?? 0, 0, `${a.id}'s fabric endpoint blocked nothing`);
  for (const h of desc.hosts) {
    const stats = await vswJson<Stats>(h.socket, ['stats', '--json']);
    t.is(stats.ports.reduce((n, p) => n + (p.drops.policyBlock ?? 0), 0), 0, `host ${h.name} blocked nothing: policy is the fabric host's`);
  }
});

test.serial('down leaves no namespace, link or process of the lab, the fabric host and the top-of-rack switch included', async (t) => {
  const r = await lab(['down', '--prefix', prefix], 60_000);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await namespacesWithPrefix(prefix), []);
  t.deepEqual(await linksWithPrefix(prefix), []);
  t.false(processAlive(fabric().pid), "the fabric host's daemon still runs");
  for (const h of desc.hosts) t.false(processAlive(h.pid), `${h.name}'s daemon still runs`);
  t.false(processAlive(desc.lan.dhcp.pid), 'dnsmasq still runs');
  t.deepEqual(processesMentioning(prefix), [], 'processes whose command line names the lab');
  t.deepEqual(readdirSync('/run/vsw-lab').filter((f) => f.startsWith(prefix)), [], 'files of the lab in /run/vsw-lab');
});

/**
 * `scripts/lab up --lan-mode l2bridge`: the lab's LAN (see lab-lan.test.ts)
 * with an l2bridge network on every host's uplink instead of a transparent
 * one. Each host's eth1 gets its own LAN address (l2bridge requires it); the
 * outside host and the containers reach each other (ping both ways, TCP),
 * and a capture on the LAN bridge never holds a container's MAC, only the
 * hosts' uplink MACs; `down` leaves nothing of the lab.
 */
import test from 'ava';
import { readFileSync, rmSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { capture, processAlive } from './helpers/daemon.js';
import { inNetns, linksWithPrefix, namespacesWithPrefix, ping, processesMentioning, removeEverything, runPrefix, sh, type CommandResult } from './helpers/env.js';
import { macsOnWire } from './helpers/pcap-macs.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const LAB = `${REPO}scripts/lab`;
const CLI = `${REPO}dist/src/cli/main.js`;
const prefix = runPrefix();
const STATE = `/run/vsw-lab/${prefix}.json`;
const PCAP = `/tmp/${prefix}-lan.pcap`;

interface LabJson {
  hosts: { name: string; index: number; netns: string; socket: string; pid: number }[];
  lan: {
    netns: string;
    bridge: string;
    dhcp: { pid: number };
    router: { netns: string };
    outside: { netns: string; ip: string };
    network: { driver: string };
    uplinks: { host: string; ifname: string; hostAddress: string | null }[];
    containers: { id: string; host: string; netns: string; ip: string; mac: string; ifname: string }[];
  };
}

let desc: LabJson;

function lab(args: string[], timeoutMs = 120_000): Promise<CommandResult> {
  return sh('bash', [LAB, ...args], { timeoutMs });
}

test.before(async () => {
  // --lan-mode alone implies --lan.
  const r = await lab(['up', '--lan-mode', 'l2bridge', '--hosts', '2', '--containers', '1', '--prefix', prefix]);
  if (r.code !== 0) throw new Error(`scripts/lab up --lan-mode l2bridge exited ${r.code}:\n${r.stderr}\n${r.stdout}`);
  desc = JSON.parse(readFileSync(STATE, 'utf8')) as LabJson;
});

test.after.always(async () => {
  rmSync(PCAP, { force: true });
  const down = await lab(['down', '--prefix', prefix], 60_000);
  await removeEverything(prefix);
  if (down.code !== 0) throw new Error(`scripts/lab down --prefix ${prefix} exited ${down.code}: ${down.stderr.trim()}`);
});

test.serial('every host\'s uplink has its own LAN address and carries an l2bridge network', async (t) => {
  t.is(desc.lan.network.driver, 'l2bridge');
  for (const h of desc.hosts) {
    const up = desc.lan.uplinks.find((u) => u.host === h.name)!;
    t.is(up.hostAddress, `192.168.57.${10 + h.index}`);
    const addr = await sh('ip', ['-n', h.netns, '-4', '-br', 'addr', 'show', 'dev', up.ifname]);
    t.true(addr.stdout.includes(`${up.hostAddress}/24`), `${h.name}'s ${up.ifname}: ${addr.stdout}`);
    const net = JSON.parse((await sh('node', [CLI, '--socket', h.socket, 'network', 'inspect', 'lan'])).stdout) as { driver: string; uplink?: { interface: string; hostAddress?: string } };
    t.is(net.driver, 'l2bridge');
    t.is(net.uplink?.hostAddress, up.hostAddress ?? undefined);
  }
});

test.serial('the outside host and the containers reach each other, and the LAN sees only the hosts\' MACs', async (t) => {
  const lan = desc.lan;
  // Forget every neighbour, so that the pings below make ARP cross the LAN too.
  await sh('ip', ['-n', lan.router.netns, 'neigh', 'flush', 'dev', 'eth0']);
  for (const c of lan.containers) await inNetns(c.netns, 'ip', ['neigh', 'flush', 'dev', c.ifname]);
  const cap = await capture(lan.netns, lan.bridge, [], PCAP);
  for (const c of lan.containers) {
    t.true(await ping(c.netns, lan.outside.ip, 3), `${c.id} cannot ping the outside host`);
    t.true(await ping(lan.outside.netns, c.ip, 3), `the outside host cannot ping ${c.id}`);
  }
  const lines = await cap.stop();
  t.true(lines.some((l) => l.includes('ARP')), 'ARP crossed the LAN');
  // Ethernet headers and ARP payloads alike.
  const macs = (await macsOnWire(PCAP)).all;
  for (const c of lan.containers) t.false(macs.has(c.mac.toLowerCase()), `${c.id}'s own MAC ${c.mac} appeared on the LAN`);
  for (const h of desc.hosts) {
    const mac = (JSON.parse((await sh('ip', ['-n', h.netns, '-j', 'link', 'show', 'eth1'])).stdout) as { address: string }[])[0].address;
    t.true(macs.has(mac), `${h.name}'s uplink MAC ${mac} carried its container's traffic`);
  }
  const r = await lab(['iperf', '--prefix', prefix, '--from', 'out', '--to', 'h1-l1', '--time', '1']);
  t.is(r.code, 0, r.stderr);
  t.regex(r.stdout, /[\d.]+ (Gbit|Mbit)\/s received/);
});

test.serial('down leaves no namespace, link or process of the lab', async (t) => {
  const r = await lab(['down', '--prefix', prefix], 60_000);
  t.is(r.code, 0, r.stderr);
  t.deepEqual(await namespacesWithPrefix(prefix), []);
  t.deepEqual(await linksWithPrefix(prefix), []);
  t.false(processAlive(desc.lan.dhcp.pid), 'dnsmasq still runs');
  t.deepEqual(processesMentioning(prefix), [], 'processes whose command line names the lab');
});

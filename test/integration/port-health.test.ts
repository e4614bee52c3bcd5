/**
 * Port health on a real daemon: what happens to a port when something other
 * than vsw takes its interface or its namespace away.
 *
 * - An endpoint TAP deleted inside its namespace (`ip -n NS link del eth0`)
 *   is shown down with the reason, then the health check (every second)
 *   recreates it with its MAC, address and route, and ping works again.
 *   While another interface holds its name it stays down, saying why.
 * - The nat network's host TAP deleted on the host: `network inspect` shows
 *   hostInterfaceDown, then it comes back and the container reaches the
 *   outside namespace again.
 * - An endpoint whose namespace is deleted while the daemon runs is removed
 *   and its address handed out again; one whose namespace is deleted while
 *   the daemon is stopped is removed by the next start, with a log line.
 *
 * Network i (internal, 10.92.0.0/24): h1..h4, then h5 and h6 on the freed
 * addresses. Network n (nat, 172.26.0.0/24): c1, and an "outside" namespace
 * routed through the host by a veth pair (198.18.K.0/24).
 */
import test from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Network } from '../../src/service/api-types.js';
import type { RestoreReport } from '../../src/service/restore.js';
import { addNetns, inNetns, ping, runPrefix, sh } from './helpers/env.js';
import {
  api,
  createEndpoint,
  createNetworkWithEndpoints,
  type DaemonHandle,
  type EndpointJson,
  linksIn,
  restartDaemon,
  startDaemon,
  teardown,
} from './helpers/daemon.js';
import { addOutsideNamespace, freeNet24, hostLinkExists, natState, type Outside, prefixNumber, readIpForward, removeNatLeftovers } from './helpers/nat.js';

const prefix = runPrefix();
const netI = `${prefix}-i`;
/** A nat network's name is also its host interface's name: at most 15 characters. */
const netN = `${prefix}-n`;
const nsH = [1, 2, 3, 4].map((i) => `${prefix}-h${i}`);
const nsH5 = `${prefix}-h5`;
const nsH6 = `${prefix}-h6`;
const nsC1 = `${prefix}-c1`;
/** What the data plane reports when a TAP's read() fails because the interface was deleted. */
const TAP_DELETED = 'its TAP was deleted (read: EBADFD)';

let d: DaemonHandle;
let forwardBefore: string | undefined;
let outside: Outside;
let h: EndpointJson[] = [];
let c1: EndpointJson;
let netNInfo: Network;

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  h = await createNetworkWithEndpoints(d, netI, '10.92.0.0/24', nsH);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.26.0.0/24', netN]);
  netNInfo = await d.vswJson<Network>(['network', 'inspect', netN]);
  await addNetns(nsC1);
  c1 = await createEndpoint(d, netN, nsC1);
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', ((prefixNumber(prefix) + 151) % 254) + 1));
});

test.after.always(async () => {
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

/**
 * Polls `probe` (a few milliseconds apart) until it returns a value; undefined after timeoutMs.
 * The down state of a deleted TAP lasts until the next health check, at most a second and
 * sometimes only the tens of milliseconds that check takes, so this reads the API over its
 * socket (the JSON `vsw endpoint ls --json` prints) rather than starting a CLI process per look.
 */
async function pollFor<T>(probe: () => Promise<T | undefined>, timeoutMs: number, intervalMs = 5): Promise<{ value: T; ms: number } | undefined> {
  const started = Date.now();
  for (;;) {
    const value = await probe();
    if (value !== undefined) return { value, ms: Date.now() - started };
    if (Date.now() - started > timeoutMs) return undefined;
    await sleep(intervalMs);
  }
}

/** The daemon's JSON log line with this message that names `subject` (an endpoint id, a network), parsed; undefined until there is one. */
async function logLine(log: string, msg: string, subject: string): Promise<{ reason?: string } | undefined> {
  const line = log.split('\n').find((l) => l.includes(`"msg":"${msg}"`) && l.includes(`"${subject}"`));
  return line === undefined ? undefined : (JSON.parse(line) as { reason?: string });
}

async function endpointView(id: string): Promise<EndpointJson> {
  const r = await api<EndpointJson>(d, 'GET', `/v1/endpoints/${id}`);
  if (r.status !== 200) throw new Error(`GET /v1/endpoints/${id}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

async function networkView(name: string): Promise<Network> {
  const r = await api<Network>(d, 'GET', `/v1/networks/${name}`);
  if (r.status !== 200) throw new Error(`GET /v1/networks/${name}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Pings until one gets through (each with a 1 s wait); the time it took, or undefined. */
async function pingWorksWithin(ns: string, ip: string, timeoutMs: number): Promise<number | undefined> {
  const r = await pollFor(async () => ((await inNetns(ns, 'ping', ['-c', '1', '-W', '1', ip])).code === 0 ? true : undefined), timeoutMs, 50);
  return r?.ms;
}

/** The interface as the namespace shows it: MAC, IPv4 addresses with their prefix, and the routes through it. */
async function interfaceIn(ns: string, ifname: string): Promise<{ mac: string; addr: string[]; routes: string }> {
  const link = JSON.parse((await sh('ip', ['-n', ns, '-j', 'addr', 'show', 'dev', ifname])).stdout || '[]') as { address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
  const routes = (await sh('ip', ['-n', ns, 'route', 'show', 'dev', ifname])).stdout;
  return { mac: link[0]?.address ?? 'none', addr: (link[0]?.addr_info ?? []).filter((x) => x.family === 'inet').map((x) => `${x.local}/${x.prefixlen}`), routes };
}

test.serial('an endpoint whose TAP is deleted is shown down with the reason, then recreated with its MAC, address and route, and ping works again', async (t) => {
  const [h1, h2] = h;
  t.true(await ping(nsH[0], h2.ip, 1), 'h1 -> h2 before');
  const del = await sh('ip', ['-n', nsH[1], 'link', 'del', h2.ifname]);
  t.is(del.code, 0, del.stderr);
  // The down state lasts until the next health check (under a second): the daemon's log line is what
  // cannot be missed on a busy machine; the API's view of a lasting down state is the next test's.
  const down = await pollFor(async () => logLine(d.log(), 'endpoint is down; vsw keeps trying to bring it back', h2.id), 2_000, 20);
  t.truthy(down, `the daemon did not take h2 down within 2 s of its TAP being deleted:\n${d.log().split('\n').slice(-5).join('\n')}`);
  t.is(down?.value.reason, TAP_DELETED);
  const up = await pollFor(async () => ((await endpointView(h2.id)).state === 'up' ? true : undefined), 5_000);
  t.truthy(up, `h2 was not brought back within 5 s: ${JSON.stringify(await endpointView(h2.id))}`);
  t.is((await endpointView(h2.id)).stateReason, undefined, 'no reason once it is up');

  const iface = await interfaceIn(nsH[1], h2.ifname);
  t.is(iface.mac, h2.mac, 'the recreated TAP has the endpoint\'s MAC');
  t.deepEqual(iface.addr, [`${h2.ip}/24`], 'and its address');
  t.regex(iface.routes, /^10\.92\.0\.0\/24 /m, `and the subnet route: ${iface.routes}`);
  const pingMs = await pingWorksWithin(nsH[0], h2.ip, 5_000);
  t.not(pingMs, undefined, 'h1 -> h2 after the TAP came back');
  t.true(await ping(nsH[1], h1.ip, 2), 'h2 -> h1 as well');
  t.regex(d.log(), /"tap":"recreated".*"msg":"endpoint is up again"|"msg":"endpoint is up again".*"tap":"recreated"/, 'the log says the TAP was recreated');
  t.log(`TAP deleted: shown down after ${down?.ms} ms, up again ${up?.ms} ms later, ping through ${pingMs} ms after that`);
});

test.serial('while another interface holds the TAP\'s name the endpoint stays down in `vsw endpoint ls` with the reason, and comes back once the name is free', async (t) => {
  const [h1, h2] = h;
  // A veth pair made beforehand; one `ip -batch` deletes the TAP and gives its name to the veth, microseconds
  // apart, so the health check cannot recreate the TAP in between.
  const [vethA, vethB] = [`${prefix}a`, `${prefix}b`];
  const veth = await sh('ip', ['-n', nsH[1], 'link', 'add', vethA, 'type', 'veth', 'peer', 'name', vethB]);
  t.is(veth.code, 0, veth.stderr);
  const swap = await sh('ip', ['-n', nsH[1], '-batch', '-'], { input: `link del ${h2.ifname}\nlink set ${vethA} name ${h2.ifname}\n` });
  t.is(swap.code, 0, swap.stderr);

  const stuck = await pollFor(async () => {
    const e = await endpointView(h2.id);
    return e.state === 'down' && e.stateReason !== TAP_DELETED ? e : undefined;
  }, 5_000);
  t.truthy(stuck, `h2 is not shown down for a blocked name: ${JSON.stringify(await endpointView(h2.id))}`);
  t.regex(stuck?.value.stateReason ?? '', /^its TAP could not be attached again: .*in the way/, stuck?.value.stateReason);
  // Through the CLI, as an operator sees it: the STATE column of the table, and --json.
  const table = await d.vswOk(['endpoint', 'ls']);
  const row = table.split('\n').find((l) => l.startsWith(h2.id)) ?? '';
  t.regex(row, /down: its TAP could not be attached again: .*in the way/, `vsw endpoint ls row of h2: ${row}`);
  t.regex(table.split('\n')[0], /\bSTATE\b/, 'the table has a STATE column');
  t.regex(table.split('\n').find((l) => l.startsWith(h1.id)) ?? '', /\bup\s*$/, 'h1 is up');
  const json = (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).find((e) => e.id === h2.id);
  t.is(json?.state, 'down');
  t.is(json?.stateReason, stuck?.value.stateReason);
  t.false(await ping(nsH[0], h2.ip, 1), 'h2 is unreachable while down');
  t.deepEqual((await linksIn(nsH[1])).sort(), [h2.ifname, 'lo', vethB].sort(), 'vsw did not touch the veth in its way');

  // Deleting one end of the pair deletes both; the next check recreates the TAP.
  const free = await sh('ip', ['-n', nsH[1], 'link', 'del', h2.ifname]);
  t.is(free.code, 0, free.stderr);
  const up = await pollFor(async () => ((await endpointView(h2.id)).state === 'up' ? true : undefined), 5_000);
  t.truthy(up, `h2 did not come back once its name was free: ${JSON.stringify(await endpointView(h2.id))}`);
  t.not(await pingWorksWithin(nsH[0], h2.ip, 5_000), undefined, 'h1 -> h2 again');
  t.log(`up ${up?.ms} ms after the name was freed`);
});

test.serial('the nat host interface deleted on the host is shown down in network inspect, then comes back and the container reaches the outside again', async (t) => {
  const nat = netNInfo.nat!;
  t.not(await pingWorksWithin(nsC1, outside.ip, 5_000), undefined, 'c1 -> outside before');
  const del = await sh('ip', ['link', 'del', nat.hostInterface]);
  t.is(del.code, 0, del.stderr);
  const down = await pollFor(async () => logLine(d.log(), 'nat network host interface is down; vsw keeps trying to bring it back', netN), 2_000, 20);
  t.truthy(down, `the daemon did not take the host interface down within 2 s:\n${d.log().split('\n').slice(-5).join('\n')}`);
  t.is(down?.value.reason, TAP_DELETED);

  const up = await pollFor(async () => ((await networkView(netN)).nat?.hostInterfaceDown === undefined ? true : undefined), 5_000);
  t.truthy(up, `the host interface did not come back within 5 s: ${JSON.stringify((await networkView(netN)).nat)}`);
  const inspect = await d.vswJson<Network>(['network', 'inspect', netN]);
  t.is(inspect.nat?.hostInterfaceDown, undefined, 'vsw network inspect shows it up');
  t.true(await hostLinkExists(nat.hostInterface), `host interface ${nat.hostInterface} exists again`);
  const addr = await sh('ip', ['-4', '-o', 'addr', 'show', 'dev', nat.hostInterface]);
  t.true(addr.stdout.includes(` ${nat.hostIp}/30 `), `its address: ${addr.stdout}`);
  const pingMs = await pingWorksWithin(nsC1, outside.ip, 5_000);
  t.not(pingMs, undefined, 'c1 -> outside through the NAT again');
  // Translated, not leaked: the outside's replies found c1 through a translation made after the host TAP came back.
  const icmp = (await natState(d, netN)).translations.filter((x) => x.protocol === 'icmp' && x.endpoint === c1.name);
  t.true(icmp.length >= 1, `vsw nat ls has c1's ICMP translation: ${JSON.stringify(icmp)}`);
  t.log(`host TAP deleted: shown down after ${down?.ms} ms, up again ${up?.ms} ms later, c1 -> outside ${pingMs} ms after that`);
});

test.serial('an endpoint whose namespace is deleted while the daemon runs is removed, and its address is handed out again', async (t) => {
  const victim = h[2];
  const del = await sh('ip', ['netns', 'delete', nsH[2]]);
  t.is(del.code, 0, del.stderr);
  const gone = await pollFor(async () => {
    const eps = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
    return eps.some((e) => e.id === victim.id) ? undefined : eps;
  }, 5_000, 100);
  t.truthy(gone, `endpoint ${victim.id} is still listed 5 s after its namespace was deleted`);
  t.deepEqual(gone?.value.map((e) => e.id).sort(), [h[0].id, h[1].id, h[3].id, c1.id].sort(), 'only that endpoint went');
  t.regex(d.log(), new RegExp(`"endpoint":"${victim.id}".*"msg":"endpoint removed: its network namespace is gone`), 'the log says why');
  const net = await d.vswJson<Network & { endpoints: string[] }>(['network', 'inspect', netI]);
  t.false(net.endpoints.includes(victim.id), 'network inspect no longer lists it');

  await addNetns(nsH5);
  const h5 = await createEndpoint(d, netI, nsH5);
  t.is(h5.ip, victim.ip, 'the freed address is the lowest free one, and is handed out again');
  t.not(await pingWorksWithin(nsH[0], h5.ip, 5_000), undefined, 'h1 -> h5 on the reused address');
  t.log(`removed ${gone?.ms} ms after ip netns delete`);
});

test.serial('an endpoint whose namespace is deleted while the daemon is stopped is removed at the next start, and its address is handed out again', async (t) => {
  const victim = h[3];
  t.is(await d.stop('SIGTERM'), 0, d.log().split('\n').slice(-5).join('\n'));
  const del = await sh('ip', ['netns', 'delete', nsH[3]]);
  t.is(del.code, 0, del.stderr);
  // The log file is appended to: only what the new daemon wrote counts.
  const logBefore = d.log().length;
  d = await restartDaemon(d);
  const newLog = (): string => d.log().slice(logBefore);

  const removedLine = newLog()
    .split('\n')
    .find((l) => l.includes('endpoint removed: its network namespace is gone') && l.includes(victim.id));
  t.truthy(removedLine, `the new daemon's log has no "endpoint removed" line for ${victim.id}:\n${newLog().split('\n').slice(-10).join('\n')}`);
  const restored = newLog()
    .split('\n')
    .filter((l) => l.includes('"msg":"state restored"'))
    .map((l) => JSON.parse(l) as RestoreReport);
  t.is(restored.length, 1, 'one restore');
  t.is(restored[0]?.endpoints.removed, 1, JSON.stringify(restored[0]?.endpoints));
  const eps = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  t.false(eps.some((e) => e.id === victim.id), 'the endpoint is gone');
  t.true(eps.every((e) => e.state === 'up'), JSON.stringify(eps.map((e) => [e.name, e.state, e.stateReason])));

  await addNetns(nsH6);
  const h6 = await createEndpoint(d, netI, nsH6);
  t.is(h6.ip, victim.ip, 'the address of the removed endpoint is handed out again');
  t.not(await pingWorksWithin(nsH[0], h6.ip, 5_000), undefined, 'h1 -> h6 on the reused address');
  t.not(await pingWorksWithin(nsH[0], h[1].ip, 5_000), undefined, 'h1 -> h2 after the restart');
});

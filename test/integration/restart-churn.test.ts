/**
 * Fifty daemon restarts in a row, SIGTERM and SIGKILL alternating, with
 * endpoints, compartments, a published port and a nat network created and
 * removed through the REST API between them. The test keeps its own model of
 * what the API acknowledged (the objects it answered with) and, after every
 * restart, holds the daemon and the host to it exactly:
 * - the network and endpoint lists equal the acknowledged objects field by
 *   field (ids, names, IPs, MACs, port ids, published ports), with no
 *   duplicate, and the saved compartments equal the acknowledged ones;
 * - every namespace holds lo plus the TAPs of its endpoints, each with its
 *   MAC and address, and nothing else; no compartment namespace outlives its
 *   compartment; the host has exactly the host TAPs and nftables tables of
 *   the live nat networks; the state directory holds state.json and the
 *   lock only (the runtime.bin of a clean stop is taken by the next start);
 * - the published host port is listened on exactly once, by the new daemon,
 *   and answers; the only process of this run is the daemon, and the only
 *   one in its namespaces the test's HTTP server;
 * - the daemon reports every TAP adopted (none recreated or repaired).
 * The random choices come from a seed that is logged (VSW_CHURN_SEED=N
 * repeats a run). Subnets: 10.81.0.0/24 (internal i), 10.82.0.0/24 (nat n),
 * 10.84.0.0/24 (nat m, which comes and goes).
 */
import test from 'ava';
import { readdirSync, readFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import type { Endpoint, Network, PortMapping } from '../../src/service/api-types.js';
import type { SavedState } from '../../src/service/state-file.js';
import { addNetns, linksWithPrefix, namespacesWithPrefix, runPrefix, sh } from './helpers/env.js';
import { api, type DaemonHandle, restartDaemon, startDaemon, teardown, waitAnswering } from './helpers/daemon.js';
import { hostPortBase, httpGet, nftIpTables, PEER_HTTP_SERVER, readIpForward, removeNatLeftovers, startServer } from './helpers/nat.js';
import { mulberry32 } from '../unit/helpers/random.js';

const prefix = runPrefix();
const RESTARTS = 50;
const seed = process.env.VSW_CHURN_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.VSW_CHURN_SEED);
const netI = `${prefix}-i`;
const netN = `${prefix}-n`;
const netM = `${prefix}-m`;
const SUBNET = { [netI]: '10.81.0.0/24', [netN]: '10.82.0.0/24', [netM]: '10.84.0.0/24' } as const;
const userNs = [0, 1, 2].map((i) => `${prefix}-u${i}`);
/** The namespace of the endpoint that publishes PUB; an HTTP server runs there on 8080 throughout. */
const pubNs = `${prefix}-p`;
const PUB = hostPortBase(prefix) + 7;
const MAX_PER_NS = 3;
const MAX_COMPARTMENTS = 3;

let d: DaemonHandle | undefined;
let forwardBefore: string | undefined;


/** What the API acknowledged: the objects exactly as it answered them. */
interface Model {
  networks: Map<string, Network>;
  endpoints: Map<string, Endpoint>;
  compartments: Set<string>;
}

test.before(async () => {
  forwardBefore = readIpForward();
  // The daemon runs in the host namespace (its compartments must be visible to the test, see
  // reset.test.ts). With ip_forward already 1 it never owns the host's ip_forward, so its nat
  // networks coming and going cannot switch it off under another run's nat network.
  if (forwardBefore !== '1') {
    const r = await sh('sysctl', ['-q', '-w', 'net.ipv4.ip_forward=1']);
    if (r.code !== 0) throw new Error(`sysctl net.ipv4.ip_forward=1: ${r.stderr}`);
  }
  for (const ns of [...userNs, pubNs]) await addNetns(ns);
  d = await startDaemon(prefix);
});

test.after.always(async () => {
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

async function apiOk<T>(method: string, path: string, body?: unknown): Promise<T> {
  const r = await api<T>(d!, method, path, body);
  const want = method === 'POST' ? 201 : method === 'DELETE' ? 204 : 200;
  if (r.status !== want) throw new Error(`${method} ${path} ${body === undefined ? '' : JSON.stringify(body)}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

const tableOf = (hostInterface: string): string => `vsw_nat_${hostInterface.replace(/[^A-Za-z0-9_]/g, '_')}`;
const sorted = <T>(xs: Iterable<T>): T[] => [...xs].sort();
const withoutEndpoints = (n: Network): Omit<Network, 'endpoints'> => {
  const { endpoints: _ignored, ...rest } = n;
  return rest;
};

/** Everything that must hold after a restart; returns what does not, one line each. */
async function check(model: Model, h: DaemonHandle, serverPid: number): Promise<string[]> {
  const problems: string[] = [];
  const expect = (ok: boolean, what: string): void => {
    if (!ok) problems.push(what);
  };

  // The daemon's lists against what it acknowledged.
  const networks = await apiOk<Network[]>('GET', '/v1/networks');
  expect(new Set(networks.map((n) => n.name)).size === networks.length && new Set(networks.map((n) => n.id)).size === networks.length, `duplicate networks: ${networks.map((n) => `${n.name}#${n.id}`).join(' ')}`);
  expect(isDeepStrictEqual(sorted(networks.map((n) => n.name)), sorted(model.networks.keys())), `networks ${sorted(networks.map((n) => n.name)).join(' ')} instead of ${sorted(model.networks.keys()).join(' ')}`);
  for (const n of networks) {
    const acked = model.networks.get(n.name);
    if (!acked) continue;
    expect(isDeepStrictEqual(withoutEndpoints(n), withoutEndpoints(acked)), `network ${n.name} is ${JSON.stringify(withoutEndpoints(n))}, acknowledged as ${JSON.stringify(withoutEndpoints(acked))}`);
    const on = [...model.endpoints.values()].filter((e) => e.network === n.name).map((e) => e.id);
    expect(isDeepStrictEqual(sorted(n.endpoints ?? []), sorted(on)), `network ${n.name} lists endpoints ${sorted(n.endpoints ?? []).join(' ')} instead of ${sorted(on).join(' ')}`);
  }
  const endpoints = await apiOk<Endpoint[]>('GET', '/v1/endpoints');
  expect(new Set(endpoints.map((e) => e.id)).size === endpoints.length, `duplicate endpoint ids: ${endpoints.map((e) => e.id).join(' ')}`);
  expect(new Set(endpoints.map((e) => `${e.netns}/${e.ifname}`)).size === endpoints.length, `two endpoints on one interface: ${endpoints.map((e) => `${e.netns}/${e.ifname}`).join(' ')}`);
  expect(new Set(endpoints.map((e) => `${e.network}/${e.ip}`)).size === endpoints.length, `two endpoints with one address: ${endpoints.map((e) => `${e.network}/${e.ip}`).join(' ')}`);
  expect(isDeepStrictEqual(sorted(endpoints.map((e) => e.id)), sorted(model.endpoints.keys())), `endpoints ${sorted(endpoints.map((e) => e.id)).join(' ')} instead of ${sorted(model.endpoints.keys()).join(' ')}`);
  for (const e of endpoints) {
    const acked = model.endpoints.get(e.id);
    if (acked) expect(isDeepStrictEqual(e, acked), `endpoint ${e.id} is ${JSON.stringify(e)}, acknowledged as ${JSON.stringify(acked)}`);
  }
  // There is no API listing of compartments: the saved state is the daemon's record of them.
  const saved = JSON.parse(readFileSync(`${h.stateDir}/state.json`, 'utf8')) as SavedState;
  const stateFiles = readdirSync(h.stateDir).sort();
  expect(isDeepStrictEqual(stateFiles, ['lock', 'state.json']), `the state directory holds ${stateFiles.join(' ')}, expected lock and state.json (runtime.bin is taken at start)`);
  expect(isDeepStrictEqual(sorted(saved.compartments.map((c) => c.name)), sorted(model.compartments)), `saved compartments ${saved.compartments.map((c) => c.name).join(' ')} instead of ${sorted(model.compartments).join(' ')}`);

  // The host.
  const namespaces = await namespacesWithPrefix(prefix);
  expect(isDeepStrictEqual(sorted(namespaces), sorted([...userNs, pubNs, ...model.compartments])), `namespaces ${sorted(namespaces).join(' ')}, expected ${sorted([...userNs, pubNs, ...model.compartments]).join(' ')}`);
  for (const ns of [...userNs, pubNs, ...model.compartments]) {
    const r = await sh('ip', ['-n', ns, '-j', 'addr', 'show']);
    if (r.code !== 0) {
      problems.push(`ip -n ${ns} addr: ${r.stderr.trim()}`);
      continue;
    }
    const links = JSON.parse(r.stdout) as { ifname: string; address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
    const mine = [...model.endpoints.values()].filter((e) => e.netns === ns);
    expect(isDeepStrictEqual(sorted(links.map((l) => l.ifname)), sorted(['lo', ...mine.map((e) => e.ifname)])), `${ns} has ${sorted(links.map((l) => l.ifname)).join(' ')}, expected lo ${sorted(mine.map((e) => e.ifname)).join(' ')}`);
    for (const e of mine) {
      const link = links.find((l) => l.ifname === e.ifname);
      if (!link) continue;
      const v4 = link.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
      expect(link.address === e.mac && isDeepStrictEqual(v4, [`${e.ip}/${e.prefixLength}`]), `${ns}/${e.ifname} has ${link.address} ${v4.join(' ')}, expected ${e.mac} ${e.ip}/${e.prefixLength}`);
    }
  }
  const natNets = [...model.networks.values()].filter((n) => n.nat);
  const hostLinks = await linksWithPrefix(prefix);
  expect(isDeepStrictEqual(sorted(hostLinks), sorted(natNets.map((n) => n.nat!.hostInterface))), `host links ${sorted(hostLinks).join(' ')}, expected the host TAPs ${sorted(natNets.map((n) => n.nat!.hostInterface)).join(' ')}`);
  const tables = (await nftIpTables()).filter((x) => x.startsWith(tableOf(prefix)));
  const wantTables = natNets.filter((n) => n.nat!.masqueradeVia.length > 0).map((n) => tableOf(n.nat!.hostInterface));
  expect(isDeepStrictEqual(sorted(tables), sorted(wantTables)), `nftables tables ${sorted(tables).join(' ')}, expected ${sorted(wantTables).join(' ')}`);
  const published = [...model.endpoints.values()].some((e) => e.publish?.some((m) => m.hostPort === PUB));
  const ss = await sh('ss', ['-Hltnp', `sport = :${PUB}`]);
  const listeners = ss.stdout.split('\n').filter(Boolean);
  if (published) expect(listeners.length === 1 && listeners[0].includes(`pid=${h.pid},`), `port ${PUB} listeners (the daemon is ${h.pid}): ${listeners.join(' | ') || 'none'}`);
  else expect(listeners.length === 0, `port ${PUB} is listened on with no endpoint publishing it: ${listeners.join(' | ')}`);
  for (const ns of [...userNs, pubNs, ...model.compartments]) {
    const inside = (await sh('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean).map(Number);
    const want = ns === pubNs ? [serverPid] : [];
    expect(isDeepStrictEqual(inside, want), `processes in ${ns}: ${inside.join(' ') || 'none'}, expected ${want.join(' ') || 'none'}`);
  }
  const pgrep = await sh('pgrep', ['-f', `/tmp/${prefix}/`]);
  const pids = pgrep.stdout.split('\n').filter(Boolean).map(Number);
  expect(isDeepStrictEqual(pids, [h.pid]), `processes of this run: ${pids.join(' ') || 'none'}, expected only the daemon ${h.pid}`);

  // The daemon's own account of the restart: every TAP found as saved, nothing made twice.
  const restored = h
    .log()
    .split('\n')
    .filter((l) => l.includes('"state restored"'))
    .map((l) => JSON.parse(l) as { endpoints: Record<string, number>; compartments: Record<string, number>; networks: number; tablesRemoved: string[] })
    .pop();
  if (!restored) problems.push('no "state restored" line in the daemon log');
  else {
    const want = { adopted: model.endpoints.size, repaired: 0, recreated: 0, down: 0, removed: 0 };
    expect(isDeepStrictEqual(restored.endpoints, want), `restore report endpoints ${JSON.stringify(restored.endpoints)}, expected ${JSON.stringify(want)}`);
    expect(isDeepStrictEqual(restored.compartments, { kept: model.compartments.size, removed: 0 }), `restore report compartments ${JSON.stringify(restored.compartments)}`);
    expect(restored.networks === model.networks.size && restored.tablesRemoved.length === 0, `restore report networks ${restored.networks}, tables removed ${restored.tablesRemoved.join(' ')}`);
  }
  return problems;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s[Math.floor((s.length - 1) / 2)];
}

test.serial(`${RESTARTS} restarts with endpoints, compartments, a published port and a nat network churning between them leave exactly what the API acknowledged, and nothing else`, async (t) => {
  t.timeout(6 * 60_000);
  t.log(`seed ${seed} (VSW_CHURN_SEED=${seed} repeats this run)`);
  const rand = mulberry32(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const server = await startServer(t, pubNs, PEER_HTTP_SERVER, 8080);
  const model: Model = { networks: new Map(), endpoints: new Map(), compartments: new Set() };
  const history: string[] = [];
  let compartmentSeq = 0;

  const createNetwork = async (name: string, driver: 'internal' | 'nat'): Promise<void> => {
    model.networks.set(name, await apiOk<Network>('POST', '/v1/networks', { name, driver, subnet: SUBNET[name as keyof typeof SUBNET] }));
    history.push(`network create ${name}`);
  };
  const createEndpoint = async (network: string, netns: string, publish?: PortMapping[]): Promise<void> => {
    const e = await apiOk<Endpoint>('POST', '/v1/endpoints', { network, netns, ...(publish ? { publish } : {}) });
    model.endpoints.set(e.id, e);
    history.push(`endpoint create ${e.id} ${network} ${netns}/${e.ifname} ${e.ip}${publish ? ` -p ${PUB}` : ''}`);
  };
  const removeEndpoint = async (id: string): Promise<void> => {
    await apiOk('DELETE', `/v1/endpoints/${id}`);
    model.endpoints.delete(id);
    history.push(`endpoint rm ${id}`);
  };
  const liveNets = (): string[] => [...model.networks.keys()];

  await createNetwork(netI, 'internal');
  await createNetwork(netN, 'nat');

  /** One random change the API must accept. */
  const churn = async (): Promise<void> => {
    const userEps = [...model.endpoints.values()].filter((e) => userNs.includes(e.netns));
    const publisher = [...model.endpoints.values()].find((e) => e.netns === pubNs);
    const roomy = userNs.filter((ns) => userEps.filter((e) => e.netns === ns).length < MAX_PER_NS);
    const mEmpty = ![...model.endpoints.values()].some((e) => e.network === netM);
    const ops: [number, () => Promise<void>][] = [
      [roomy.length > 0 ? 4 : 0, () => createEndpoint(pick(liveNets()), pick(roomy))],
      [userEps.length > 0 ? 3 : 0, () => removeEndpoint(pick(userEps).id)],
      [
        model.compartments.size < MAX_COMPARTMENTS ? 2 : 0,
        async () => {
          const name = `${prefix}-c${++compartmentSeq}`;
          await apiOk('POST', '/v1/compartments', { name });
          model.compartments.add(name);
          history.push(`compartment create ${name}`);
          await createEndpoint(pick(liveNets()), name);
        },
      ],
      [
        model.compartments.size > 0 ? 2 : 0,
        async () => {
          const name = pick([...model.compartments]);
          await apiOk('DELETE', `/v1/compartments/${name}`);
          model.compartments.delete(name);
          for (const e of [...model.endpoints.values()]) if (e.netns === name) model.endpoints.delete(e.id);
          history.push(`compartment rm ${name}`);
        },
      ],
      [2, () => (publisher ? removeEndpoint(publisher.id) : createEndpoint(netN, pubNs, [{ protocol: 'tcp', hostPort: PUB, containerPort: 8080 }]))],
      [
        !model.networks.has(netM) || mEmpty ? 1 : 0,
        async () => {
          if (!model.networks.has(netM)) return createNetwork(netM, 'nat');
          await apiOk('DELETE', `/v1/networks/${netM}`);
          model.networks.delete(netM);
          history.push(`network rm ${netM}`);
        },
      ],
    ];
    const total = ops.reduce((s, [w]) => s + w, 0);
    let x = rand() * total;
    for (const [w, op] of ops) {
      if ((x -= w) < 0) return op();
    }
  };

  const times: { signal: string; stopMs: number; readyMs: number }[] = [];
  let objectsSeen = 0;
  for (let r = 1; r <= RESTARTS; r++) {
    const changes = 1 + Math.floor(rand() * 3);
    for (let i = 0; i < changes; i++) await churn();
    // Alternating, so both the clean stop (runtime.bin handed over) and the crash are taken every other time.
    const signal: NodeJS.Signals = r % 2 === 1 ? 'SIGTERM' : 'SIGKILL';
    const h = d!;
    const stopStarted = Date.now();
    const code = await h.stop(signal);
    const stopMs = Date.now() - stopStarted;
    if (code !== (signal === 'SIGTERM' ? 0 : 137)) {
      t.fail(`restart ${r}: ${signal} gave exit code ${code}:\n${h.log().split('\n').slice(-8).join('\n')}`);
      break;
    }
    d = await restartDaemon(h, { noWait: true });
    const readyMs = await waitAnswering(d);
    times.push({ signal, stopMs, readyMs });
    const problems = await check(model, d, server.child.pid!);
    if (problems.length === 0 && (r % 5 === 0 || r === RESTARTS) && [...model.endpoints.values()].some((e) => e.netns === pubNs)) {
      // The listener is not only there: it reaches the container behind the nat network.
      let got = await httpGet(null, `http://127.0.0.1:${PUB}/`, 2);
      for (let i = 0; i < 5 && !got.ok; i++) got = await httpGet(null, `http://127.0.0.1:${PUB}/`, 2);
      if (!got.ok) problems.push(`http://127.0.0.1:${PUB}/ after restart ${r}: ${got.body}`);
    }
    objectsSeen = Math.max(objectsSeen, model.endpoints.size);
    t.deepEqual(problems, [], `after restart ${r} (${signal}); last operations: ${history.slice(-6).join('; ')}`);
    if (problems.length > 0) break;
  }

  for (const signal of ['SIGTERM', 'SIGKILL']) {
    const of = times.filter((x) => x.signal === signal);
    t.log(
      `${signal}: ${of.length} restarts; stop median ${median(of.map((x) => x.stopMs))} ms (max ${Math.max(...of.map((x) => x.stopMs))}), ` +
        `start to first API answer median ${median(of.map((x) => x.readyMs))} ms (max ${Math.max(...of.map((x) => x.readyMs))})`,
    );
  }
  t.log(`${history.length} acknowledged changes; at most ${objectsSeen} endpoints at once; at the end ${model.endpoints.size} endpoints, ${model.compartments.size} compartments, networks ${liveNets().join(' ')}`);
  t.is(times.length, RESTARTS, 'every restart was made and checked');
});

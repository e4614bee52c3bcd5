/**
 * Crash consistency: the daemon is killed with SIGKILL at random instants
 * while the test drives a loop of REST calls that create and remove
 * endpoints, compartments and nat networks (each with a host TAP and an
 * nftables table, and ip_forward). An operation counts as acknowledged only
 * once its answer arrived. After each kill, and again after the restart:
 * - state.json is whole (valid JSON, format version 1, a generation that
 *   never goes back) and names exactly the acknowledged objects, possibly
 *   with the one operation that was in flight applied;
 * - the daemon lists exactly that (every acknowledged endpoint with its id,
 *   IP, MAC and interface), and the host agrees: an endpoint that is listed
 *   has its TAP with its address and MAC, one that is not has none; a
 *   compartment is saved exactly when its namespace exists;
 * - a nat network that is listed has its host TAP and its nftables table,
 *   and no table of the run is left that no listed network owns;
 * - the state directory holds no temporary file of an interrupted write.
 * A separate test leaves such a temporary file the way a kill during a write
 * does, and asks the next start to clear it.
 *
 * The kill instants come from a seed that is logged (VSW_CRASH_SEED=N
 * repeats a run). Before a kill the daemon is stopped (SIGSTOP) so that the
 * helper processes it started (ip) are known, and the restart waits until
 * they have finished: a killed daemon's `ip netns add` still completing
 * after the new daemon looked is a race of the test's making, not the one
 * under test. Subnet 10.83.0.0/24 (network a), 10.84.N.0/24 (nat networks).
 */
import test from 'ava';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomInt } from 'node:crypto';
import { isDeepStrictEqual } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Endpoint } from '../../src/service/api-types.js';
import type { SavedState } from '../../src/service/state-file.js';
import { addNetns, namespacesWithPrefix, runPrefix, sh } from './helpers/env.js';
import { api, type DaemonHandle, processAlive, restartDaemon, startDaemon, teardown, waitAnswering } from './helpers/daemon.js';
import { mulberry32 } from '../unit/helpers/random.js';

const prefix = runPrefix();
const KILLS = 18;
const seed = process.env.VSW_CRASH_SEED === undefined ? randomInt(2 ** 31) : Number(process.env.VSW_CRASH_SEED);
const netA = `${prefix}-a`;
const userNs = [0, 1, 2, 3].map((i) => `${prefix}-u${i}`);
const MAX_PER_NS = 3;
const MAX_COMPARTMENTS = 3;
/** The files a state directory may hold between daemon lives (runtime.bin only after a clean stop). */
const STATE_FILES = ['lock', 'runtime.bin', 'state.json'];

let d: DaemonHandle | undefined;

test.before(async () => {
  for (const ns of userNs) await addNetns(ns);
  d = await startDaemon(prefix);
  const r = await api(d, 'POST', '/v1/networks', { name: netA, driver: 'internal', subnet: '10.83.0.0/24' });
  if (r.status !== 201) throw new Error(`network create: ${r.status} ${JSON.stringify(r.body)}`);
});

test.after.always(async () => {
  await teardown(prefix, d);
});


type Op =
  | { kind: 'create endpoint'; netns: string }
  | { kind: 'remove endpoint'; id: string }
  | { kind: 'create compartment'; name: string }
  | { kind: 'remove compartment'; name: string }
  | { kind: 'create nat network'; name: string }
  | { kind: 'remove nat network'; name: string };

const describeOp = (op: Op): string => `${op.kind} ${'netns' in op ? op.netns : 'id' in op ? op.id : op.name}`;
let natSeq = 0;

interface Model {
  endpoints: Map<string, Endpoint>;
  compartments: Set<string>;
  natNetworks: Set<string>;
}

const MAX_NAT_NETWORKS = 2;
/** nft from the system's directories (npm's PATH has a JavaScript one that answers anything). */
const NFT = '/usr/sbin/nft';
const tableOf = (network: string): string => `vsw_nat_${network.replace(/[^A-Za-z0-9_]/g, '_')}`;

/** The run's nftables tables on the host now. */
async function runTables(): Promise<string[]> {
  const out = (await sh(NFT, ['list', 'tables', 'ip'])).stdout;
  return out.split('\n').map((l) => l.replace(/^table ip /, '').trim()).filter((name) => name.startsWith(tableOf(prefix)));
}

/** Listed nat networks against the acknowledged ones (give or take the one in flight), and the host against the list. */
async function natProblems(model: Model, inflight: Op | undefined, listed: string[]): Promise<string[]> {
  const problems: string[] = [];
  const changing = inflight?.kind === 'create nat network' || inflight?.kind === 'remove nat network' ? inflight.name : undefined;
  for (const n of model.natNetworks) if (!listed.includes(n) && n !== changing) problems.push(`acknowledged nat network ${n} is gone`);
  for (const n of listed) if (!model.natNetworks.has(n) && n !== changing) problems.push(`nat network ${n} was never acknowledged`);
  const links = (JSON.parse((await sh('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[]).map((l) => l.ifname);
  for (const n of listed) if (!links.includes(n)) problems.push(`nat network ${n} is listed but its host interface is gone`);
  for (const l of links) if (l.startsWith(`${prefix}-n`) && !listed.includes(l)) problems.push(`host interface ${l} belongs to no listed nat network`);
  const tables = sorted(await runTables());
  const wanted = sorted(listed.map(tableOf));
  if (!isDeepStrictEqual(tables, wanted)) problems.push(`nftables tables ${tables.join(' ') || 'none'}, expected ${wanted.join(' ') || 'none'} (those of the listed nat networks)`);
  return problems;
}

/**
 * SIGKILL, with the daemon frozen first so that its child processes are
 * known; resolves once they are gone too (they finish on their own).
 */
async function killHard(h: DaemonHandle): Promise<{ orphans: number }> {
  process.kill(h.pid, 'SIGSTOP');
  const children = (await sh('pgrep', ['-P', String(h.pid)])).stdout.split('\n').filter(Boolean).map(Number);
  const code = await h.stop('SIGKILL');
  if (code !== 137) throw new Error(`SIGKILL gave exit code ${code}`);
  const deadline = Date.now() + 10_000;
  while (children.some(processAlive)) {
    if (Date.now() > deadline) throw new Error(`processes the killed daemon started are still running: ${children.filter(processAlive).join(' ')}`);
    await sleep(10);
  }
  return { orphans: children.length };
}

function readSaved(h: DaemonHandle): SavedState {
  const text = readFileSync(`${h.stateDir}/state.json`, 'utf8');
  const saved = JSON.parse(text) as SavedState;
  if (saved.version !== 1) throw new Error(`state.json has version ${String(saved.version)}`);
  return saved;
}

const sorted = <T>(xs: Iterable<T>): T[] => [...xs].sort();

/**
 * Which endpoints and compartments may exist besides the acknowledged ones, given the operation
 * in flight: returns the problems with `ids` and `compartments` as found (saved or listed).
 */
function againstModel(model: Model, inflight: Op | undefined, ids: string[], extra: (id: string) => Endpoint | undefined, compartments: string[]): string[] {
  const problems: string[] = [];
  const acked = new Set(model.endpoints.keys());
  const missing = [...acked].filter((id) => !ids.includes(id));
  const added = ids.filter((id) => !acked.has(id));
  const removableId = inflight?.kind === 'remove endpoint' ? inflight.id : undefined;
  const removableNs = inflight?.kind === 'remove compartment' ? inflight.name : undefined;
  for (const id of missing) {
    const e = model.endpoints.get(id)!;
    if (id !== removableId && e.netns !== removableNs) problems.push(`acknowledged endpoint ${id} (${e.netns}/${e.ifname} ${e.ip}) is gone`);
  }
  if (removableNs !== undefined) {
    // A compartment being removed is kept with all its endpoints, or gone with all of them.
    const inside = [...acked].filter((id) => model.endpoints.get(id)!.netns === removableNs);
    const kept = inside.filter((id) => ids.includes(id));
    const whole = compartments.includes(removableNs) ? kept.length === inside.length : kept.length === 0;
    if (!whole) problems.push(`compartment ${removableNs} is ${compartments.includes(removableNs) ? 'kept' : 'gone'} with ${kept.length} of its ${inside.length} endpoints`);
  }
  if (added.length > 1) problems.push(`${added.length} endpoints nobody acknowledged: ${added.join(' ')}`);
  for (const id of added) {
    const e = extra(id);
    const ok = inflight?.kind === 'create endpoint' && e !== undefined && e.netns === inflight.netns && e.network === netA;
    if (!ok) problems.push(`endpoint ${id} (${e?.netns}/${e?.ifname}) was never requested${inflight ? ` (in flight: ${describeOp(inflight)})` : ''}`);
  }
  const addable = inflight?.kind === 'create compartment' ? inflight.name : undefined;
  for (const c of compartments) if (!model.compartments.has(c) && c !== addable) problems.push(`compartment ${c} was never acknowledged`);
  for (const c of model.compartments) if (!compartments.includes(c) && c !== removableNs) problems.push(`acknowledged compartment ${c} is gone`);
  return problems;
}

test.serial(`${KILLS} kills at random instants during endpoint, compartment and nat network churn leave the acknowledged state, at most plus the operation in flight, on disk, in the API and on the host`, async (t) => {
  t.timeout(5 * 60_000);
  t.log(`seed ${seed} (VSW_CRASH_SEED=${seed} repeats this run)`);
  const rand = mulberry32(seed);
  const pick = <T>(xs: T[]): T => xs[Math.floor(rand() * xs.length)];
  const model: Model = { endpoints: new Map(), compartments: new Set(), natNetworks: new Set() };
  const forwardBefore = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
  let seq = 0;
  let lastGeneration = readSaved(d!).generation;
  const stats = { acked: 0, inflightApplied: 0, inflightNotApplied: 0, betweenOps: 0, orphans: 0, tempAfterKill: 0, recreated: 0, readyMs: [] as number[] };
  const inflightKinds: string[] = [];
  const strayFiles: string[] = [];
  const seenTemps = new Set<string>();

  const chooseOp = (): Op => {
    const eps = [...model.endpoints.values()];
    const spaces = [...userNs, ...model.compartments].filter((ns) => eps.filter((e) => e.netns === ns).length < (userNs.includes(ns) ? MAX_PER_NS : 2));
    const choices: [number, () => Op][] = [
      [spaces.length > 0 ? 5 : 0, () => ({ kind: 'create endpoint', netns: pick(spaces) })],
      [eps.length > 0 ? 4 : 0, () => ({ kind: 'remove endpoint', id: pick(eps).id })],
      [model.compartments.size < MAX_COMPARTMENTS ? 2 : 0, () => ({ kind: 'create compartment', name: `${prefix}-c${++seq}` })],
      [model.compartments.size > 0 ? 2 : 0, () => ({ kind: 'remove compartment', name: pick([...model.compartments]) })],
      [model.natNetworks.size < MAX_NAT_NETWORKS ? 1 : 0, () => ({ kind: 'create nat network', name: `${prefix}-n${++natSeq}` })],
      [model.natNetworks.size > 0 ? 1 : 0, () => ({ kind: 'remove nat network', name: pick([...model.natNetworks]) })],
    ];
    let x = rand() * choices.reduce((s, [w]) => s + w, 0);
    for (const [w, make] of choices) if ((x -= w) < 0) return make();
    throw new Error('no operation applies');
  };

  /** Runs operations back to back until one gets no answer; returns that one (undefined: the kill fell between two). */
  const churn = async (h: DaemonHandle, killed: () => boolean): Promise<Op | undefined> => {
    for (;;) {
      if (killed()) return undefined;
      const op = chooseOp();
      let r;
      try {
        if (op.kind === 'create endpoint') r = await api<Endpoint>(h, 'POST', '/v1/endpoints', { network: netA, netns: op.netns });
        else if (op.kind === 'remove endpoint') r = await api(h, 'DELETE', `/v1/endpoints/${op.id}`);
        else if (op.kind === 'create compartment') r = await api(h, 'POST', '/v1/compartments', { name: op.name });
        else if (op.kind === 'remove compartment') r = await api(h, 'DELETE', `/v1/compartments/${op.name}`);
        else if (op.kind === 'create nat network') r = await api(h, 'POST', '/v1/networks', { name: op.name, driver: 'nat', subnet: `10.84.${natSeq % 250}.0/24` });
        else r = await api(h, 'DELETE', `/v1/networks/${op.name}`);
      } catch {
        // No answer: the daemon died under this request. Whether it took effect is what the test finds out.
        return op;
      }
      const want = op.kind.startsWith('create') ? 201 : 204;
      if (r.status !== want) throw new Error(`${describeOp(op)} was answered ${r.status} ${JSON.stringify(r.body)}`);
      if (op.kind === 'create endpoint') model.endpoints.set((r.body as Endpoint).id, r.body as Endpoint);
      else if (op.kind === 'remove endpoint') model.endpoints.delete(op.id);
      else if (op.kind === 'create compartment') model.compartments.add(op.name);
      else if (op.kind === 'create nat network') model.natNetworks.add(op.name);
      else if (op.kind === 'remove nat network') model.natNetworks.delete(op.name);
      else {
        model.compartments.delete(op.name);
        for (const e of [...model.endpoints.values()]) if (e.netns === op.name) model.endpoints.delete(e.id);
      }
      stats.acked++;
    }
  };

  for (let k = 1; k <= KILLS; k++) {
    const h = d!;
    const delay = 20 + Math.floor(rand() * 1200);
    let killedAt = 0;
    const killer = sleep(delay).then(async () => {
      killedAt = Date.now();
      return killHard(h);
    });
    const inflight = await churn(h, () => killedAt > 0);
    const { orphans } = await killer;
    stats.orphans += orphans;
    if (inflight) inflightKinds.push(inflight.kind);
    else stats.betweenOps++;
    const where = `kill ${k} after ${delay} ms${inflight ? `, in flight: ${describeOp(inflight)}` : ', between two operations'}`;

    // On disk, before anyone reads it: a whole file, newer than the last, holding what was acknowledged.
    let saved: SavedState;
    try {
      saved = readSaved(h);
    } catch (err) {
      t.fail(`${where}: state.json is not a whole version-1 state: ${(err as Error).message}`);
      break;
    }
    const temps = readdirSync(h.stateDir).filter((f) => !STATE_FILES.includes(f));
    const newTemps = temps.filter((f) => !seenTemps.has(f));
    for (const f of newTemps) seenTemps.add(f);
    if (newTemps.length > 0) stats.tempAfterKill++;
    const onDisk = againstModel(
      model,
      inflight,
      saved.endpoints.map((e) => e.endpoint.id),
      (id) => saved.endpoints.find((e) => e.endpoint.id === id)?.endpoint,
      saved.compartments.map((c) => c.name),
    );
    for (const e of saved.endpoints) {
      const acked = model.endpoints.get(e.endpoint.id);
      if (acked && !isDeepStrictEqual({ ...e.endpoint, state: 'up' }, acked)) onDisk.push(`saved endpoint ${e.endpoint.id} is ${JSON.stringify(e.endpoint)}, acknowledged as ${JSON.stringify(acked)}`);
    }
    if (saved.generation < lastGeneration) onDisk.push(`generation ${saved.generation} after ${lastGeneration}: an older state came back`);
    const savedNat = saved.networks.filter((n) => n.nat).map((n) => n.network.name);
    const changing = inflight?.kind === 'create nat network' || inflight?.kind === 'remove nat network' ? inflight.name : undefined;
    for (const n of model.natNetworks) if (!savedNat.includes(n) && n !== changing) onDisk.push(`acknowledged nat network ${n} is not saved`);
    // Every table on the host is in the ledger (recorded before it was installed), so a restart can find it.
    for (const table of await runTables()) if (!saved.host.nftTables.includes(table)) onDisk.push(`nftables table ${table} is on the host but not in the saved ledger`);
    t.deepEqual(onDisk, [], `${where}: state.json against the acknowledged operations`);

    d = await restartDaemon(h, { noWait: true });
    stats.readyMs.push(await waitAnswering(d));

    // What the new daemon lists.
    const listed = await api<Endpoint[]>(d, 'GET', '/v1/endpoints');
    t.is(listed.status, 200);
    const eps = listed.body;
    const after = readSaved(d);
    const problems = againstModel(
      model,
      inflight,
      eps.map((e) => e.id),
      (id) => eps.find((e) => e.id === id),
      after.compartments.map((c) => c.name),
    );
    if (new Set(eps.map((e) => e.id)).size !== eps.length) problems.push(`duplicate endpoints: ${eps.map((e) => e.id).join(' ')}`);
    for (const e of eps) {
      const acked = model.endpoints.get(e.id);
      if (acked && !isDeepStrictEqual(e, acked)) problems.push(`endpoint ${e.id} is listed as ${JSON.stringify(e)}, acknowledged as ${JSON.stringify(acked)}`);
      if (e.state !== 'up') problems.push(`endpoint ${e.id} is ${e.state}: ${e.stateReason}`);
    }
    // ...and what the host has: never half an operation.
    const compartments = after.compartments.map((c) => c.name);
    const namespaces = await namespacesWithPrefix(prefix);
    const expectedNs = [...userNs, ...compartments];
    if (!isDeepStrictEqual(sorted(namespaces), sorted(expectedNs))) problems.push(`namespaces ${sorted(namespaces).join(' ')}, expected ${sorted(expectedNs).join(' ')} (the saved compartments and the test's own)`);
    for (const ns of expectedNs) {
      const r = await sh('ip', ['-n', ns, '-j', 'addr', 'show']);
      if (r.code !== 0) {
        problems.push(`ip -n ${ns} addr: ${r.stderr.trim()}`);
        continue;
      }
      const links = JSON.parse(r.stdout) as { ifname: string; address: string; addr_info: { family: string; local: string; prefixlen: number }[] }[];
      const mine = eps.filter((e) => e.netns === ns);
      if (!isDeepStrictEqual(sorted(links.map((l) => l.ifname)), sorted(['lo', ...mine.map((e) => e.ifname)]))) {
        problems.push(`${ns} has ${sorted(links.map((l) => l.ifname)).join(' ')}, but the daemon lists ${sorted(mine.map((e) => e.ifname)).join(' ') || 'no endpoint'} there`);
      }
      for (const e of mine) {
        const link = links.find((l) => l.ifname === e.ifname);
        const v4 = link?.addr_info.filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`) ?? [];
        if (link && (link.address !== e.mac || !isDeepStrictEqual(v4, [`${e.ip}/${e.prefixLength}`]))) problems.push(`${ns}/${e.ifname} has ${link.address} ${v4.join(' ')}, expected ${e.mac} ${e.ip}/${e.prefixLength}`);
      }
    }
    // Asserted once at the end, so that a stray file does not hide what the remaining kills would show.
    const leftInDir = readdirSync(d.stateDir).filter((f) => !STATE_FILES.includes(f));
    const keptFromKill = leftInDir.filter((f) => newTemps.includes(f));
    const appeared = leftInDir.filter((f) => !seenTemps.has(f));
    if (keptFromKill.length > 0) strayFiles.push(`kill ${k} (in flight: ${inflight ? describeOp(inflight) : 'nothing'}) left ${keptFromKill.join(' ')}, still there after the restart`);
    if (appeared.length > 0) strayFiles.push(`the restart after kill ${k} left ${appeared.join(' ')}`);
    if (after.generation <= saved.generation) problems.push(`generation ${after.generation} after the restart, ${saved.generation} before`);
    const networks = await api<{ name: string; driver: string }[]>(d, 'GET', '/v1/networks');
    const listedNat = networks.body.filter((n) => n.driver === 'nat').map((n) => n.name);
    problems.push(...(await natProblems(model, inflight, listedNat)));
    const forward = readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
    if (listedNat.length > 0 && forward !== '1') problems.push(`ip_forward is ${forward} with nat networks ${listedNat.join(' ')}`);
    if (listedNat.length === 0 && forwardBefore === '0' && forward !== '0') problems.push(`ip_forward is ${forward} with no nat network, and was 0 before the test`);
    t.deepEqual(problems, [], `${where}: after the restart`);
    if (problems.length > 0 || onDisk.length > 0) break;

    // The operation in flight is settled now: the model takes what the restart found.
    const before = model.endpoints.size + model.compartments.size + model.natNetworks.size;
    for (const id of [...model.endpoints.keys()]) if (!eps.some((e) => e.id === id)) model.endpoints.delete(id);
    for (const e of eps) model.endpoints.set(e.id, e);
    model.compartments = new Set(compartments);
    model.natNetworks = new Set(listedNat);
    if (inflight) {
      if (model.endpoints.size + model.compartments.size + model.natNetworks.size !== before) stats.inflightApplied++;
      else stats.inflightNotApplied++;
    }
    const restored = d
      .log()
      .split('\n')
      .filter((l) => l.includes('"state restored"'))
      .map((l) => JSON.parse(l) as { endpoints: { recreated: number } })
      .pop();
    stats.recreated += restored?.endpoints.recreated ?? 0;
    lastGeneration = after.generation;
  }

  t.log(`${KILLS} kills; ${stats.acked} operations acknowledged; in flight at the kill: ${inflightKinds.join(', ') || 'none'}; ${stats.betweenOps} kills fell between operations`);
  t.log(`in-flight operations found applied after the restart: ${stats.inflightApplied}, not applied: ${stats.inflightNotApplied}; TAPs recreated by restores: ${stats.recreated}`);
  t.log(`kills that left a new temporary file in the state directory: ${stats.tempAfterKill}; helper processes of killed daemons waited for: ${stats.orphans}`);
  const ready = [...stats.readyMs].sort((a, b) => a - b);
  t.log(`start to first API answer: median ${ready[Math.floor((ready.length - 1) / 2)]} ms, max ${ready[ready.length - 1]} ms`);
  t.log(`at the end: ${model.endpoints.size} endpoints, ${model.compartments.size} compartments`);
  t.deepEqual(strayFiles, [], `the state directory after each restart holds only ${STATE_FILES.join(', ')}: temporary files of interrupted writes must not accumulate`);
});

test.serial('a temporary file left by a write the kill interrupted is removed by the next start, and state.json is the last whole one', async (t) => {
  const h = d!;
  const before = readSaved(h);
  // What write-file-atomic leaves when the process dies between creating its temporary file and the
  // rename: state.json.<uint32> with part of a newer state in it.
  const temp = `${h.stateDir}/state.json.${randomInt(2 ** 31)}`;
  writeFileSync(temp, JSON.stringify({ ...before, generation: before.generation + 1 }).slice(0, 100));
  await killHard(h);
  d = await restartDaemon(h, { noWait: true });
  await waitAnswering(d);
  const after = readSaved(d);
  t.is(after.generation, before.generation + 1, 'the restart saved the state it read (the whole one), once');
  t.false(existsSync(temp), `${temp} is still there after the restart`);
  t.deepEqual(readdirSync(d.stateDir).filter((f) => !STATE_FILES.includes(f)), [], 'nothing but the state files is left in the state directory');
});

/**
 * VFP policy of endpoints on a real daemon: ACL rules and layer defaults
 * installed with the `vsw policy` CLI (and the REST API where the exact
 * status matters), checked with real traffic between namespaces (ping, curl
 * to python's http.server, a python TCP echo). Subnet 10.71.0.0/24 (network p).
 */
import test, { type ExecutionContext } from 'ava';
import { setTimeout as sleep } from 'node:timers/promises';
import type { AclRule, EndpointPolicy, FlowEntry, FlowsResponse, TraceResponse } from '../../src/service/api-types.js';
import { inNetns, ping, runPrefix, spawnInNetns } from './helpers/env.js';
import {
  api,
  assertOneSentence,
  createNetworkWithEndpoints,
  type DaemonHandle,
  dropCount,
  type EndpointJson,
  readLines,
  startDaemon,
  teardown,
} from './helpers/daemon.js';
import { TCP_ECHO_CLIENT, TCP_ECHO_SERVER } from './helpers/echo.js';

const prefix = runPrefix();
const netP = `${prefix}-p`;
const nsP = [`${prefix}-p1`, `${prefix}-p2`, `${prefix}-p3`];

let d: DaemonHandle;
/** a, b, c: the endpoints in p1, p2, p3. */
const ep: EndpointJson[] = [];

test.before(async () => {
  d = await startDaemon(prefix);
  ep.push(...(await createNetworkWithEndpoints(d, netP, '10.71.0.0/24', nsP)));
});

test.after.always(async () => {
  await teardown(prefix, d);
});

// ------------------------------------------------------------------ helpers

/** python3 -m http.server in `ns`; resolves once it answers on the namespace's own loopback. */
async function startHttpServer(t: ExecutionContext, ns: string, port: number): Promise<void> {
  const child = spawnInNetns(ns, 'python3', ['-m', 'http.server', String(port), '--bind', '0.0.0.0']);
  child.stdout?.resume();
  child.stderr?.resume();
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const r = await inNetns(ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--max-time', '2', `http://127.0.0.1:${port}/`]);
    if (r.stdout === '200') return;
    if (Date.now() > deadline) throw new Error(`http.server on port ${port} in ${ns} did not answer: curl ${r.code} ${r.stdout} ${r.stderr}`);
    await sleep(100);
  }
}

/** curl from `ns`; ok when the server answered 200 within a few seconds. */
async function httpGet(ns: string, ip: string, port: number): Promise<{ ok: boolean; detail: string }> {
  const r = await inNetns(ns, 'curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '--connect-timeout', '2', '--max-time', '4', `http://${ip}:${port}/`], {
    timeoutMs: 15_000,
  });
  return { ok: r.code === 0 && r.stdout === '200', detail: `curl exit ${r.code}, status ${r.stdout || '-'} ${r.stderr.trim()}` };
}

async function aclLs(endpoint: string): Promise<AclRule[]> {
  return d.vswJson<AclRule[]>(['policy', 'acl', 'ls', endpoint, '--json']);
}

async function policyOf(endpoint: string): Promise<EndpointPolicy> {
  const r = await api<EndpointPolicy>(d, 'GET', `/v1/endpoints/${endpoint}/policy`);
  if (r.status !== 200) throw new Error(`GET policy of ${endpoint}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Back to the default policy: no rules, layer acl allowing both ways. Through the API so a CLI bug cannot leak into the next test. */
async function resetPolicy(endpoint: string): Promise<void> {
  const layer = await api(d, 'PUT', `/v1/endpoints/${endpoint}/layers/acl`, { defaultIn: 'allow', defaultOut: 'allow' });
  if (layer.status >= 300) throw new Error(`resetting layer acl of ${endpoint}: HTTP ${layer.status} ${JSON.stringify(layer.body)}`);
  const rules = await api<AclRule[]>(d, 'GET', `/v1/endpoints/${endpoint}/acl`);
  for (const rule of rules.body ?? []) {
    const r = await api(d, 'DELETE', `/v1/endpoints/${endpoint}/acl/${rule.id}`);
    if (r.status !== 204) throw new Error(`removing rule ${rule.id} of ${endpoint}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  }
}

/** Adds a rule with the CLI and returns it as `policy acl ls --json` lists it (the one rule that was not there before). */
async function addRule(endpoint: string, args: string[]): Promise<AclRule> {
  const before = new Set((await aclLs(endpoint)).map((r) => r.id));
  await d.vswOk(['policy', 'acl', 'add', endpoint, ...args]);
  const added = (await aclLs(endpoint)).filter((r) => !before.has(r.id));
  if (added.length !== 1) throw new Error(`policy acl add ${args.join(' ')} added ${added.length} rules: ${JSON.stringify(added)}`);
  return added[0];
}

// -------------------------------------------------------------------- tests

test.serial('the default policy of an endpoint is one layer "acl" allowing both ways, with spoof guard on', async (t) => {
  const p = await policyOf(ep[0].id);
  t.is(p.endpoint, ep[0].id);
  t.deepEqual(
    p.layers.map((l) => [l.name, l.defaultIn, l.defaultOut]),
    [['acl', 'allow', 'allow']],
  );
  t.true(p.spoofGuard.enabled);
  t.is(p.qos, null);
  t.deepEqual(await aclLs(ep[0].id), []);
  t.true(await ping(nsP[0], ep[1].ip), 'a -> b with the default policy');
});

test.serial('a block rule on inbound TCP/80 stops HTTP but not ping, and removing it lets HTTP through again', async (t) => {
  const [a, b] = ep;
  t.teardown(() => resetPolicy(b.id));
  await startHttpServer(t, nsP[1], 80);
  const first = await httpGet(nsP[0], b.ip, 80);
  t.true(first.ok, `HTTP a -> b before any rule: ${first.detail}`);

  const blocksBefore = await dropCount(d, b.id, 'policyBlock');
  const rule = await addRule(b.id, ['--action', 'block', '--direction', 'in', '--protocol', 'tcp', '--dst-ports', '80', '--priority', '100']);
  t.is(rule.action, 'block');
  t.is(rule.direction, 'in');
  t.is(rule.priority, 100);
  t.is(rule.layer, 'acl');
  t.is(rule.group, 'default');
  t.is(String(rule.match?.dstPorts), '80');

  const blocked = await httpGet(nsP[0], b.ip, 80);
  t.false(blocked.ok, `HTTP a -> b got through the block rule: ${blocked.detail}`);
  t.true(await ping(nsP[0], b.ip), 'ping a -> b still works');
  t.true(await ping(nsP[1], a.ip), 'ping b -> a still works');
  const blocksAfter = await dropCount(d, b.id, 'policyBlock');
  t.true(blocksAfter > blocksBefore, `policyBlock on b: ${blocksBefore} -> ${blocksAfter}`);
  t.is(await dropCount(d, a.id, 'policyBlock'), 0, 'nothing was blocked at a');
  const listed = (await aclLs(b.id)).find((r) => r.id === rule.id);
  t.true((listed?.hits ?? 0) >= 1, `hits of the block rule: ${JSON.stringify(listed)}`);

  const rm = await d.vsw(['policy', 'acl', 'rm', b.id, rule.id]);
  t.is(rm.code, 0, rm.stderr);
  t.deepEqual(await aclLs(b.id), []);
  const again = await httpGet(nsP[0], b.ip, 80);
  t.true(again.ok, `HTTP a -> b after the rule was removed: ${again.detail}`);
});

test.serial('an outbound-only endpoint reaches others and gets its replies, but nobody reaches it', async (t) => {
  const [a, b] = ep;
  t.teardown(() => resetPolicy(a.id));
  await startHttpServer(t, nsP[1], 80);
  await startHttpServer(t, nsP[0], 8080);
  const open = await httpGet(nsP[1], a.ip, 8080);
  t.true(open.ok, `HTTP b -> a before the change: ${open.detail}`);

  await d.vswOk(['policy', 'layer', 'set', a.id, 'acl', '--default-in', 'block']);
  const layer = (await policyOf(a.id)).layers.find((l) => l.name === 'acl');
  t.is(layer?.defaultIn, 'block');
  t.is(layer?.defaultOut, 'allow', 'the outbound default was left alone');

  const blocksBefore = await dropCount(d, a.id, 'policyBlock');
  const out = await httpGet(nsP[0], b.ip, 80);
  t.true(out.ok, `HTTP a -> b (the replies come back in through the connection): ${out.detail}`);
  const inbound = await httpGet(nsP[1], a.ip, 8080);
  t.false(inbound.ok, `HTTP b -> a got through a's inbound block: ${inbound.detail}`);
  t.true(await ping(nsP[0], b.ip), 'ping a -> b');
  t.false(await ping(nsP[1], a.ip), 'ping b -> a answered although a blocks inbound');
  t.true(await ping(nsP[2], b.ip), 'c -> b is not affected by a\'s policy');
  const blocksAfter = await dropCount(d, a.id, 'policyBlock');
  t.true(blocksAfter > blocksBefore, `policyBlock on a: ${blocksBefore} -> ${blocksAfter}`);

  await d.vswOk(['policy', 'layer', 'set', a.id, 'acl', '--default-in', 'allow']);
  const reopened = await httpGet(nsP[1], a.ip, 8080);
  t.true(reopened.ok, `HTTP b -> a once inbound is allowed again: ${reopened.detail}`);
  t.true(await ping(nsP[1], a.ip), 'ping b -> a once inbound is allowed again');
});

test.serial('a block rule added under a live TCP connection stops it at its next packet', async (t) => {
  const [, b] = ep;
  t.teardown(() => resetPolicy(b.id));
  const server = spawnInNetns(nsP[1], 'python3', ['-c', TCP_ECHO_SERVER, '7000']);
  t.teardown(() => {
    server.kill('SIGKILL');
  });
  await readLines(server).waitFor(/^listening$/);
  const client = spawnInNetns(nsP[0], 'python3', ['-c', TCP_ECHO_CLIENT, b.ip, '7000']);
  t.teardown(() => {
    client.kill('SIGKILL');
  });
  const out = readLines(client);
  await out.waitFor(/^echo \d+$/, 5, 10_000);

  const blocksBefore = await dropCount(d, b.id, 'policyBlock');
  const rule = await addRule(b.id, ['--action', 'block', '--direction', 'in', '--protocol', 'tcp', '--dst-ports', '7000', '--priority', '100']);
  t.is(rule.action, 'block');
  // Echoes already on the wire when the rule lands may still arrive; after that, none.
  await sleep(500);
  const echoes = (): number => out.lines.filter((l) => l.startsWith('echo ')).length;
  const settled = echoes();
  await sleep(2500);
  t.is(echoes(), settled, `echoes kept coming after the block rule: ${out.lines.slice(-5).join(' | ')}`);
  t.false(client.exitCode !== null || out.exited(), `the client exited instead of stalling: ${out.lines.slice(-3).join(' | ')} ${out.stderr()}`);
  t.false(out.lines.some((l) => l === 'eof' || l.startsWith('error')), `the connection was closed, not blocked: ${out.lines.slice(-3).join(' | ')}`);
  const blocksAfter = await dropCount(d, b.id, 'policyBlock');
  t.true(blocksAfter > blocksBefore, `policyBlock on b: ${blocksBefore} -> ${blocksAfter}`);
  t.true(await ping(nsP[0], b.ip), 'other traffic a -> b still flows');
});

test.serial('vsw trace names the layer, group and rule that decided; vsw flows lists the flows of real traffic', async (t) => {
  const [a, b] = ep;
  t.teardown(() => resetPolicy(b.id));
  const allow = await addRule(b.id, ['--action', 'allow', '--direction', 'in', '--protocol', 'tcp', '--dst-ports', '8080', '--priority', '50']);
  const block = await addRule(b.id, ['--action', 'block', '--direction', 'in', '--protocol', 'tcp', '--dst-ports', '80', '--priority', '100']);

  const traceIn = async (packet: string): Promise<TraceResponse> => {
    const r = await api<TraceResponse>(d, 'POST', '/v1/trace', { endpoint: b.id, direction: 'in', packet });
    if (r.status !== 200) throw new Error(`trace ${packet}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  };
  const blocked = await traceIn(`tcp ${a.ip}:40000 > ${b.ip}:80 syn`);
  t.is(blocked.verdict, 'block', JSON.stringify(blocked));
  t.true(
    blocked.steps.some((s) => s.layer === 'acl' && s.group === 'default' && s.rule === block.id && s.action === 'block'),
    `no step names layer acl, group default, rule ${block.id}: ${JSON.stringify(blocked.steps)}`,
  );
  t.is(blocked.egress, null);
  const allowed = await traceIn(`tcp ${a.ip}:40000 > ${b.ip}:8080 syn`);
  t.is(allowed.verdict, 'allow', JSON.stringify(allowed));
  t.true(
    allowed.steps.some((s) => s.layer === 'acl' && s.group === 'default' && s.rule === allow.id && s.action === 'allow'),
    `no step names layer acl, group default, rule ${allow.id}: ${JSON.stringify(allowed.steps)}`,
  );

  // The CLI, from the sender's side: the frame a sends toward b's blocked port.
  const cli = await d.vsw(['trace', '--endpoint', a.id, '--out', `tcp ${a.ip}:40000 > ${b.ip}:80 syn`]);
  t.is(cli.code, 0, cli.stderr);
  t.true(cli.stdout.includes(block.id), `vsw trace --out does not name rule ${block.id}:\n${cli.stdout}`);
  t.regex(cli.stdout, /\bacl\b/);
  t.regex(cli.stdout, /block/);
  const cliAllowed = await d.vsw(['trace', '--endpoint', a.id, '--out', `tcp ${a.ip}:40000 > ${b.ip}:8080 syn`]);
  t.is(cliAllowed.code, 0, cliAllowed.stderr);
  t.true(cliAllowed.stdout.includes(allow.id), `vsw trace --out does not name rule ${allow.id}:\n${cliAllowed.stdout}`);

  await startHttpServer(t, nsP[1], 8080);
  const get = await httpGet(nsP[0], b.ip, 8080);
  t.true(get.ok, `HTTP a -> b:8080 (allowed): ${get.detail}`);
  t.true(await ping(nsP[0], b.ip, 3), 'ping a -> b');
  const raw = await d.vswJson<FlowsResponse | FlowEntry[]>(['flows', '--endpoint', a.id, '--json']);
  const flows = Array.isArray(raw) ? raw : raw.flows;
  const icmp = flows.find((f) => f.protocol === 1 && f.src === a.ip && f.dst === b.ip);
  t.truthy(icmp, `no ICMP flow a -> b in ${JSON.stringify(flows)}`);
  t.true((icmp?.packets ?? 0) > 0, `ICMP flow packets: ${JSON.stringify(icmp)}`);
  t.is(icmp?.egress, b.id);
  t.is(icmp?.action, 'forward');
  const http = flows.find((f) => f.protocol === 6 && f.src === a.ip && f.dst === b.ip && f.dstPort === 8080);
  t.truthy(http, `no TCP flow a -> b:8080 in ${JSON.stringify(flows)}`);
  t.true((http?.packets ?? 0) > 0, `TCP flow packets: ${JSON.stringify(http)}`);
  // Flows dropped on their way to a (by a's inbound policy in the previous tests) have no egress but belong to a too.
  const strangers = flows.filter((f) => f.endpoint !== a.id && f.egress !== a.id && !(f.action === 'drop' && f.dst === a.ip));
  t.deepEqual(strangers, [], '--endpoint a lists only flows entering or leaving a');
  const text = await d.vsw(['flows', '--endpoint', a.id]);
  t.is(text.code, 0, text.stderr);
  t.true(text.stdout.includes(b.ip), `vsw flows (table) does not show ${b.ip}:\n${text.stdout}`);
});

test.serial('invalid policies are refused with a 4xx and one sentence, and leave the existing rules as they were', async (t) => {
  const [, b] = ep;
  t.teardown(() => resetPolicy(b.id));
  const keep = await addRule(b.id, ['--action', 'block', '--direction', 'in', '--protocol', 'udp', '--dst-ports', '5353', '--priority', '10']);
  const rulesBefore = await aclLs(b.id);
  const policyBefore = await policyOf(b.id);
  t.deepEqual(rulesBefore.map((r) => r.id), [keep.id]);

  const valid = { priority: 100, action: 'block', direction: 'in', match: { protocol: 'tcp', dstPorts: '80' } };
  const cases: [string, string, unknown, number, RegExp | null][] = [
    ['unknown endpoint', '/v1/endpoints/ffffffffffff/acl', valid, 404, /ffffffffffff/],
    ['bad prefix', `/v1/endpoints/${b.id}/acl`, { ...valid, match: { srcPrefix: '10.0.0.300/24' } }, 400, /10\.0\.0\.300\/24/],
    ['reversed port range', `/v1/endpoints/${b.id}/acl`, { ...valid, match: { protocol: 'tcp', dstPorts: '80-20' } }, 400, /80-20/],
    ['priority 70000', `/v1/endpoints/${b.id}/acl`, { ...valid, priority: 70000 }, 400, /70000|65535/],
    ['action explode', `/v1/endpoints/${b.id}/acl`, { ...valid, action: 'explode' }, 400, /explode/],
    ['dstPorts without protocol', `/v1/endpoints/${b.id}/acl`, { ...valid, match: { dstPorts: '80' } }, 400, /protocol/],
  ];
  for (const [what, path, body, status, mentions] of cases) {
    const r = await api<{ error?: unknown }>(d, 'POST', path, body);
    t.is(r.status, status, `${what}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
    const error = r.body?.error;
    t.is(typeof error, 'string', `${what}: body ${JSON.stringify(r.body)}`);
    if (typeof error !== 'string') continue;
    t.false(error.includes('\n'), `${what}: error has more than one line: ${error}`);
    t.regex(error, /\.$/, `${what}: error does not end with a period: ${error}`);
    if (mentions) t.regex(error, mentions, `${what}: ${error}`);
  }
  t.deepEqual(await aclLs(b.id), rulesBefore, 'the rules after the refused POSTs');

  // A group replace with one bad rule among good ones is refused as a whole.
  const group = await api<{ error?: string }>(d, 'PUT', `/v1/endpoints/${b.id}/layers/acl/groups/default`, {
    priority: 100,
    rules: [
      { priority: 1, action: 'allow', match: { protocol: 'tcp', dstPorts: '22' } },
      { priority: 2, action: 'block', match: { protocol: 'tcp', dstPorts: '80-20' } },
    ],
  });
  t.is(group.status, 400, `group with a bad rule: HTTP ${group.status} ${JSON.stringify(group.body)}`);
  t.regex(String(group.body?.error), /80-20/);
  const layer = await api<{ error?: string }>(d, 'PUT', `/v1/endpoints/${b.id}/layers/acl`, { defaultIn: 'maybe' });
  t.is(layer.status, 400, `layer default "maybe": HTTP ${layer.status} ${JSON.stringify(layer.body)}`);
  t.deepEqual(await aclLs(b.id), rulesBefore, 'the rules after the refused group and layer');
  t.deepEqual(await policyOf(b.id), policyBefore, 'the whole policy after all the refusals');

  const add = (...args: string[]) => ['policy', 'acl', 'add', b.id, '--priority', '100', '--action', 'block', ...args];
  const cliCases: [string, string[], RegExp][] = [
    ['CLI: bad prefix', add('--src-prefix', '10.0.0.300/24'), /10\.0\.0\.300\/24/],
    ['CLI: reversed port range', add('--protocol', 'tcp', '--dst-ports', '80-20'), /80-20/],
    ['CLI: dst-ports without protocol', add('--dst-ports', '80'), /protocol/],
    ['CLI: priority 70000', ['policy', 'acl', 'add', b.id, '--priority', '70000', '--action', 'block'], /70000|65535/],
    ['CLI: unknown endpoint', ['policy', 'acl', 'add', 'ffffffffffff', '--priority', '100', '--action', 'block'], /ffffffffffff/],
    ['CLI: rm of an unknown rule', ['policy', 'acl', 'rm', b.id, 'r999'], /r999/],
  ];
  for (const [what, args, mentions] of cliCases) {
    const r = await d.vsw(args);
    assertOneSentence(t, r, what);
    t.regex(r.stderr, mentions, what);
  }
  t.deepEqual(await aclLs(b.id), rulesBefore, 'the rules after the refused CLI calls');
  t.true(await ping(nsP[0], b.ip), 'b is still reachable');
});

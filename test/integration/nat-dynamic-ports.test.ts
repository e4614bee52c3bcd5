/**
 * Host ports vsw picks (`-p 8080`, `-p 127.0.0.1::8080`): on a real daemon,
 * the port chosen comes from the host's ephemeral range, is shown by
 * `vsw endpoint ls`, `vsw nat ls` and the API, answers from the host, and is
 * the endpoint's across a restart. A container port published twice is
 * refused with one sentence and leaves nothing.
 */
import { readFileSync } from 'node:fs';
import test from 'ava';
import type { NatNetworkState } from '../../src/service/api-types.js';
import { addNetns, runPrefix } from './helpers/env.js';
import { api, assertOneSentence, createEndpoint, type DaemonHandle, type EndpointJson, linksIn, restartDaemon, startDaemon, teardown } from './helpers/daemon.js';
import { httpGet, PEER_HTTP_SERVER, readIpForward, removeNatLeftovers, startServer } from './helpers/nat.js';

const prefix = runPrefix();
const net = `${prefix}-n`;
const nsWeb = `${prefix}-w`;
const nsOther = `${prefix}-o`;

let d: DaemonHandle;
let forwardBefore: string | undefined;

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.21.7.0/24', net]);
  await addNetns(nsWeb);
  await addNetns(nsOther);
});

test.after.always(async () => {
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

function ephemeralRange(): [number, number] {
  const [first, last] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
  return [first, last];
}

test.serial('-p CONTAINERPORT and -p IP::CONTAINERPORT get host ports from the ephemeral range that answer, and keep them across a restart', async (t) => {
  const web = await createEndpoint(d, net, nsWeb, ['--name', `${prefix}-web`, '-p', '8080', '-p', '127.0.0.1::8081']);
  const [first, last] = ephemeralRange();
  const chosen = web.publish ?? [];
  t.is(chosen.length, 2);
  for (const m of chosen) t.true(m.hostPort >= first && m.hostPort <= last, `host port ${m.hostPort} is outside the ephemeral range ${first}-${last}`);
  t.not(chosen[0].hostPort, chosen[1].hostPort);
  t.like(chosen[1], { hostIp: '127.0.0.1', containerPort: 8081 });

  // What the CLI and the API show is what was chosen.
  const listed = (await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).find((e) => e.id === web.id);
  t.deepEqual(listed?.publish, chosen);
  t.regex(await d.vswOk(['endpoint', 'ls']), new RegExp(`${chosen[0].hostPort}->8080/tcp, 127\\.0\\.0\\.1:${chosen[1].hostPort}->8081/tcp`));
  const nat = await d.vswJson<NatNetworkState[]>(['nat', 'ls', '--json', '--network', net]);
  const published = nat[0].published.map((p) => p.external);
  for (const m of chosen) t.true(published.some((e) => e.endsWith(`:${m.hostPort}`)), `vsw nat ls does not show host port ${m.hostPort}: ${published.join(', ')}`);

  await startServer(t, nsWeb, PEER_HTTP_SERVER, 8080);
  const before = await httpGet(null, `http://127.0.0.1:${chosen[0].hostPort}/`);
  t.true(before.ok, `GET through the picked host port: ${before.body}`);

  t.is(await d.stop('SIGTERM'), 0);
  d = await restartDaemon(d);
  const again = await d.vswJson<EndpointJson>(['endpoint', 'inspect', web.id]);
  t.deepEqual(again.publish, chosen, 'the host ports after a restart');
  const after = await httpGet(null, `http://127.0.0.1:${chosen[0].hostPort}/`);
  t.true(after.ok, `GET through the picked host port after the restart: ${after.body}`);

  await d.vswOk(['endpoint', 'rm', web.id]);
});

test.serial('a container port published twice is refused with one sentence, and nothing is made', async (t) => {
  const r = await d.vsw(['endpoint', 'create', '--network', net, '--netns', nsOther, '-p', '8090', '-p', '18190:8090']);
  t.not(r.code, 0);
  assertOneSentence(t, r, 'a container port published twice');
  t.regex(r.stderr, /^vsw: container port 8090\/tcp is published twice \(on a host port vsw picks and on host port 18190\): vsw publishes a container port on one host port; drop one mapping\.\n$/);
  const viaApi = await api(d, 'POST', '/v1/endpoints', { network: net, netns: nsOther, publish: [{ protocol: 'udp', hostPort: 0, containerPort: 53 }, { protocol: 'udp', hostPort: 0, containerPort: 53 }] });
  t.is(viaApi.status, 400);
  t.deepEqual(await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']), []);
  t.deepEqual((await linksIn(nsOther)).filter((l) => l !== 'lo'), []);
  // The host port 0 only means "pick one" in a request; the CLI refuses it spelled out.
  const zero = await d.vsw(['endpoint', 'create', '--network', net, '--netns', nsOther, '-p', '0:8090']);
  t.not(zero.code, 0);
  assertOneSentence(t, zero, '-p 0:8090');
});

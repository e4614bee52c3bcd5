/**
 * What nat networks and published ports refuse, on a real daemon: each bad
 * request through the CLI (non-zero exit, one sentence naming the problem)
 * and, where the CLI lets it through, the REST API (the 4xx status); after
 * each, nothing of it was left on the host (no network, no interface, no
 * nftables table, no TAP, no compartment) and what was running still works:
 * a nat network (e, 172.20.0.0/24) with one endpoint publishing an HTTP port,
 * and an internal network (i, 10.72.0.0/24). A veth pair in the host namespace
 * holds a host route (198.19.K.0/24) for the transit check.
 */
import test, { type ExecutionContext } from 'ava';
import type { Endpoint, Network } from '../../src/service/api-types.js';
import { addNetns, namespacesWithPrefix, ping, runPrefix, sh } from './helpers/env.js';
import { api, assertOneSentence, createEndpoint, type DaemonHandle, type EndpointJson, linksIn, startDaemon, teardown } from './helpers/daemon.js';
import { freeNet24, hostLinkExists, hostPortBase, httpGet, nftIpTables, PEER_HTTP_SERVER, prefixNumber, readIpForward, removeNatLeftovers, startServer } from './helpers/nat.js';

const prefix = runPrefix();
const netE = `${prefix}-e`;
const netI = `${prefix}-i`;
const nsHolder = `${prefix}-h`;
const nsOther = `${prefix}-o`;
/** A veth pair in the host namespace, only there for the route its address brings (no traffic). */
const dummy = `${prefix}-d`;
const dummyPeer = `${prefix}-dp`;
/** Three octets of the /24 the veth pair routes, free on the host (198.19.K). */
let ROUTE_NET: string;
const PUB = hostPortBase(prefix) + 5;

let d: DaemonHandle;
let forwardBefore: string | undefined;
let holder: EndpointJson;
let ext: string;
let transitE: string;

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.20.0.0/24', netE]);
  const info = await d.vswJson<Network>(['network', 'inspect', netE]);
  ext = info.nat!.externalIp;
  transitE = info.nat!.transit;
  await d.vswOk(['network', 'create', '-d', 'internal', '--subnet', '10.72.0.0/24', netI]);
  await addNetns(nsHolder);
  holder = await createEndpoint(d, netE, nsHolder, ['--name', `${prefix}-holder`, '-p', `${PUB}:8080`]);
  await addNetns(nsOther);
  ROUTE_NET = await freeNet24('198.19', (prefixNumber(prefix) % 254) + 1);
  for (const args of [
    ['link', 'add', dummy, 'type', 'veth', 'peer', 'name', dummyPeer],
    ['address', 'add', `${ROUTE_NET}.1/24`, 'dev', dummy],
    ['link', 'set', dummy, 'up'],
    ['link', 'set', dummyPeer, 'up'],
  ]) {
    const r = await sh('ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
  }
});

test.after.always(async () => {
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

const tableOf = (name: string): string => `vsw_nat_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;

/** A refused network create left nothing: not listed, no host interface, no nftables table. */
async function assertNoNetwork(t: ExecutionContext, name: string): Promise<void> {
  const networks = await d.vswJson<Network[]>(['network', 'ls', '--json']);
  t.deepEqual(networks.map((n) => n.name).sort(), [netE, netI].sort(), `networks after refusing ${name}`);
  t.false(await hostLinkExists(name), `host interface ${name} was left behind`);
  t.false((await nftIpTables()).includes(tableOf(name)), `nftables table ${tableOf(name)} was left behind`);
}

/** A refused endpoint create left nothing: only the holder is listed, no TAP in the namespace. */
async function assertNoEndpoint(t: ExecutionContext): Promise<void> {
  const eps = await d.vswJson<Endpoint[]>(['endpoint', 'ls', '--json']);
  t.deepEqual(eps.map((e) => e.id), [holder.id], 'endpoints after the refusal');
  t.deepEqual((await linksIn(nsOther)).filter((l) => l !== 'lo'), [], `links left in ${nsOther}`);
}

async function refuseNetwork(t: ExecutionContext, what: string, name: string, args: string[], status: number, re: RegExp, body: Record<string, unknown>): Promise<void> {
  const r = await d.vsw(['network', 'create', ...args, name]);
  assertOneSentence(t, r, what);
  t.regex(r.stderr, re, what);
  const viaApi = await api<{ error?: string }>(d, 'POST', '/v1/networks', { name, ...body });
  t.is(viaApi.status, status, `${what} via the API: ${JSON.stringify(viaApi.body)}`);
  t.regex(viaApi.body?.error ?? '', re, `${what} via the API`);
  await assertNoNetwork(t, name);
}

async function refuseEndpoint(t: ExecutionContext, what: string, args: string[], status: number, re: RegExp, body: Record<string, unknown> | undefined): Promise<void> {
  const r = await d.vsw(['endpoint', 'create', '--netns', nsOther, ...args]);
  assertOneSentence(t, r, what);
  t.regex(r.stderr, re, what);
  if (body) {
    const viaApi = await api<{ error?: string }>(d, 'POST', '/v1/endpoints', { netns: nsOther, ...body });
    t.is(viaApi.status, status, `${what} via the API: ${JSON.stringify(viaApi.body)}`);
    t.true(typeof viaApi.body?.error === 'string' && viaApi.body.error.length > 0, `${what} via the API: ${JSON.stringify(viaApi.body)}`);
  }
  await assertNoEndpoint(t);
}

test.serial('a subnet overlapping an existing network, or its transit subnet, is refused', async (t) => {
  await refuseNetwork(t, 'nat subnet inside nat network e', `${prefix}-x1`, ['-d', 'nat', '--subnet', '172.20.0.128/25'], 409, new RegExp(`overlaps network ${netE}`), {
    driver: 'nat',
    subnet: '172.20.0.128/25',
  });
  await refuseNetwork(t, 'nat subnet around internal network i', `${prefix}-x2`, ['-d', 'nat', '--subnet', '10.72.0.0/16'], 409, new RegExp(`overlaps network ${netI}`), {
    driver: 'nat',
    subnet: '10.72.0.0/16',
  });
  await refuseNetwork(t, 'subnet on the transit of e', `${prefix}-x3`, ['-d', 'nat', '--subnet', transitE], 409, new RegExp(`overlaps the transit subnet ${transitE.replace(/\./g, '\\.')}`), {
    driver: 'nat',
    subnet: transitE,
  });
});

test.serial('a --gateway outside the subnet is refused', async (t) => {
  await refuseNetwork(t, '--gateway outside', `${prefix}-x4`, ['-d', 'nat', '--subnet', '172.21.0.0/24', '--gateway', '172.21.1.1'], 400, /gateway 172\.21\.1\.1 is outside/, {
    driver: 'nat',
    subnet: '172.21.0.0/24',
    gateway: '172.21.1.1',
  });
});

test.serial('an inverted --nat-ports range is refused, and nat options on an internal network too', async (t) => {
  await refuseNetwork(t, '--nat-ports 10-5', `${prefix}-x5`, ['-d', 'nat', '--subnet', '172.22.0.0/24', '--nat-ports', '10-5'], 400, /--nat-ports 10-5 is not a port range/, {
    driver: 'nat',
    subnet: '172.22.0.0/24',
    natPorts: '10-5',
  });
  await refuseNetwork(t, '--nat-ports 0-70000', `${prefix}-x5`, ['-d', 'nat', '--subnet', '172.22.0.0/24', '--nat-ports', '0-70000'], 400, /--nat-ports 0-70000 is not a port range/, {
    driver: 'nat',
    subnet: '172.22.0.0/24',
    natPorts: '0-70000',
  });
  await refuseNetwork(t, '--nat-ports on internal', `${prefix}-x6`, ['-d', 'internal', '--subnet', '172.22.0.0/24', '--nat-ports', '40000-40001'], 400, /belong to nat networks/, {
    driver: 'internal',
    subnet: '172.22.0.0/24',
    natPorts: '40000-40001',
  });
});

test.serial('a --transit overlapping a host route, or a vsw network, is refused', async (t) => {
  await refuseNetwork(
    t,
    '--transit on a host route',
    `${prefix}-x7`,
    ['-d', 'nat', '--subnet', '172.23.0.0/24', '--transit', `${ROUTE_NET}.0/30`],
    409,
    new RegExp(`overlaps the host's route to ${ROUTE_NET.replace(/\./g, '\\.')}\\.0/24`),
    { driver: 'nat', subnet: '172.23.0.0/24', transit: `${ROUTE_NET}.0/30` },
  );
  await refuseNetwork(t, '--transit on network i', `${prefix}-x8`, ['-d', 'nat', '--subnet', '172.23.0.0/24', '--transit', '10.72.0.0/30'], 409, new RegExp(`overlaps 10\\.72\\.0\\.0/24`), {
    driver: 'nat',
    subnet: '172.23.0.0/24',
    transit: '10.72.0.0/30',
  });
  await refuseNetwork(t, '--external-ip without --transit', `${prefix}-x9`, ['-d', 'nat', '--subnet', '172.23.0.0/24', '--external-ip', '100.127.9.2'], 400, /--external-ip needs --transit/, {
    driver: 'nat',
    subnet: '172.23.0.0/24',
    externalIp: '100.127.9.2',
  });
});

test.serial('a host port another endpoint publishes is refused, naming that endpoint', async (t) => {
  await refuseEndpoint(t, 'host port taken', ['--network', netE, '-p', `${PUB}:81`], 409, new RegExp(`host port ${PUB}/tcp is already published by endpoint ${holder.name}`), {
    network: netE,
    publish: [{ protocol: 'tcp', hostPort: PUB, containerPort: 81 }],
  });
  await refuseEndpoint(t, 'host port taken on one address', ['--network', netE, '-p', `127.0.0.1:${PUB}:81`], 409, new RegExp(`already published by endpoint ${holder.name}`), {
    network: netE,
    publish: [{ protocol: 'tcp', hostIp: '127.0.0.1', hostPort: PUB, containerPort: 81 }],
  });
  await refuseEndpoint(t, 'one host port twice in a request', ['--network', netE, '-p', `${PUB + 1}:81`, '-p', `${PUB + 1}:82`], 400, /published twice/, {
    network: netE,
    publish: [
      { protocol: 'tcp', hostPort: PUB + 1, containerPort: 81 },
      { protocol: 'tcp', hostPort: PUB + 1, containerPort: 82 },
    ],
  });
  const again = await tcpListening(PUB + 1);
  t.false(again, `host port ${PUB + 1} of the refused request is not listened on`);
});

test.serial('ports out of range in -p are refused', async (t) => {
  // Host port 0 is not in the list: in a request it asks vsw to pick one (nat-dynamic-ports.test.ts).
  for (const [mapping, hostPort, containerPort, bad] of [
    ['70000:80', 70000, 80, 'host port 70000'],
    [`${PUB + 2}:0`, PUB + 2, 0, 'container port 0'],
  ] as const) {
    await refuseEndpoint(t, `-p ${mapping}`, ['--network', netE, '-p', mapping], 400, new RegExp(`${bad} is out of range: ports are 1 to 65535`), {
      network: netE,
      publish: [{ protocol: 'tcp', hostPort, containerPort }],
    });
  }
});

test.serial('a -p that is not a mapping is refused by the CLI, and a malformed publish by the API', async (t) => {
  // A bare container port (-p 8080) is a mapping now: the host port is picked (nat-dynamic-ports.test.ts).
  for (const mapping of ['abc', '127.0.0.1:8080', '8080:80/sctp', '1.2.3:8080:80']) {
    await refuseEndpoint(t, `-p ${mapping}`, ['--network', netE, '-p', mapping], 0, /is not a port mapping/, undefined);
  }
  for (const publish of [[{ protocol: 'tcp', hostPort: 'abc', containerPort: 80 }], [{ protocol: 'sctp', hostPort: PUB + 3, containerPort: 80 }], [{ hostPort: PUB + 3 }], 'abc']) {
    const r = await api<{ error?: string }>(d, 'POST', '/v1/endpoints', { network: netE, netns: nsOther, publish });
    t.is(r.status, 400, `publish ${JSON.stringify(publish)}: ${JSON.stringify(r.body)}`);
  }
  await assertNoEndpoint(t);
  // vsw run refuses the same way and leaves no compartment.
  const run = await d.vsw(['run', '--network', netE, '--name', `${prefix}-r1`, '-p', '0:80', '--', 'true']);
  assertOneSentence(t, run, 'vsw run -p 0:80');
  t.deepEqual(await namespacesWithPrefix(`${prefix}-r1`), [], 'vsw run left its compartment');
});

test.serial('-p on an internal network is refused', async (t) => {
  await refuseEndpoint(t, '-p on internal', ['--network', netI, '-p', `${PUB + 4}:80`], 400, new RegExp(`network ${netI} is not a nat network \\(its driver is internal\\): publish ports \\(-p\\) on a nat network`), {
    network: netI,
    publish: [{ protocol: 'tcp', hostPort: PUB + 4, containerPort: 80 }],
  });
});

test.serial('after all the refusals, what was running still works and nothing extra is on the host', async (t) => {
  t.false(d.exited(), 'the daemon is running');
  await startServer(t, nsHolder, PEER_HTTP_SERVER, 8080);
  const loop = await httpGet(null, `http://127.0.0.1:${PUB}/`);
  t.true(loop.ok, `host -> 127.0.0.1:${PUB}: ${loop.body}`);
  const viaExt = await httpGet(null, `http://${ext}:${PUB}/`);
  t.true(viaExt.ok, `host -> ${ext}:${PUB}: ${viaExt.body}`);
  t.true(await ping(nsHolder, '172.20.0.1'), 'the holder pings its gateway');
  const eps = await d.vswJson<Endpoint[]>(['endpoint', 'ls', '--json']);
  t.deepEqual(eps.map((e) => e.id), [holder.id]);
  t.deepEqual(eps[0].publish?.map((m) => [m.protocol, m.hostPort, m.containerPort]), [['tcp', PUB, 8080]]);
  const hostLinks = JSON.parse((await sh('ip', ['-j', 'link', 'show'])).stdout) as { ifname: string }[];
  t.deepEqual(hostLinks.map((l) => l.ifname).filter((n) => n.startsWith(prefix)).sort(), [dummy, dummyPeer, netE].sort(), 'host links of this run');
  const tables = (await nftIpTables()).filter((n) => n.startsWith(tableOf(prefix)));
  t.true(tables.every((n) => n === tableOf(netE)), `nftables tables of this run: ${tables.join(' ')}`);
  t.is(readIpForward(), '1', 'ip_forward is on while nat network e exists');
  // The API's exact status for removing a network with endpoints.
  const rm = await api<{ error?: string }>(d, 'DELETE', `/v1/networks/${netE}`);
  t.is(rm.status, 409);
  t.regex(rm.body?.error ?? '', new RegExp(`still has endpoints ${prefix}-holder`));
});

async function tcpListening(port: number): Promise<boolean> {
  const r = await sh('ss', ['-Htln', `sport = :${port}`]);
  return r.stdout.trim().length > 0;
}

/**
 * The API as fastify serves it from the TypeBox schemas: the sentences bad
 * input gets, the OpenAPI document, what the CLI loads, and the one lock
 * policy changes share with every other mutation. The app is the daemon's
 * own (buildApi) over a NetworkService with no data plane behind it: these
 * requests are answered before anything reaches one.
 */
import test from 'ava';
import type { FastifyInstance } from 'fastify';
import { readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { buildApi, OPENAPI_PATH } from '../../src/service/api.js';
import { CreateNetworkBody, QosBody } from '../../src/service/schemas.js';
import { NetworkService, type DataPlaneHandle } from '../../src/service/service.js';

const silent = pino({ level: 'silent' });
/** Nothing here reaches the data plane: the service reads only its port count. */
const noDataPlane = { maxPorts: 16 } as DataPlaneHandle;

interface Built {
  app: FastifyInstance;
  service: NetworkService;
  /** "METHOD /path/:param" of every route the app registered (HEAD ones aside: fastify adds them to each GET). */
  routes: string[];
}

async function build(): Promise<Built> {
  const service = new NetworkService(noDataPlane, silent);
  const app = buildApi(service, silent, '0.0.0-test');
  const routes: string[] = [];
  app.addHook('onRoute', (r) => {
    for (const method of [r.method].flat()) if (method !== 'HEAD') routes.push(`${method} ${r.url}`);
  });
  await app.ready();
  return { app, service, routes };
}

let built: Built;
test.before(async () => {
  built = await build();
});
test.after.always(async () => {
  await built?.app.close();
});

const long = (n: number) => 'a'.repeat(n);

// What the API answered before its schemas were TypeBox objects, to the letter.
const REFUSALS: [string, string, unknown, string][] = [
  ['POST', '/v1/networks', {}, 'body.name is required: pass a network NAME such as mynet.'],
  ['POST', '/v1/networks', { name: 'x', driver: 'bogus', subnet: '10.0.0.0/24' }, 'body.driver must be one of internal, nat, transparent, l2bridge, l2tunnel, overlay: pass -d internal.'],
  ['POST', '/v1/networks', { name: '-x', driver: 'internal', subnet: '10.0.0.0/24' }, "body.name must be a string of 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit: pass a network NAME such as mynet."],
  ['POST', '/v1/networks', { name: 'x', driver: 'internal', subnet: 5 }, 'body.subnet must be a CIDR string such as 10.88.0.0/24: pass --subnet CIDR.'],
  ['POST', '/v1/networks', { name: 'x', driver: 'internal', subnet: '10.0.0.0/24', extra: 1 }, 'unknown field "extra" in the request body.'],
  ['POST', '/v1/networks', { name: 'x', driver: 'overlay', subnet: '10.0.0.0/24', vni: 1.5 }, 'body.vni must be a whole number from 1 to 16777215: pass --vni N.'],
  ['POST', '/v1/networks', { name: 'x', driver: 'overlay', subnet: '10.0.0.0/24', peers: [''] }, 'body.peers.0 must NOT have fewer than 1 characters.'],
  ['POST', '/v1/networks', [], 'the request body must be a JSON object.'],
  ['POST', '/v1/endpoints', { network: 'n', netns: 'n', publishVia: 'nft' }, 'body.publishVia must be one of proxy, dnat: leave it out for proxy.'],
  ['POST', '/v1/endpoints', { network: 'n', netns: 'n', publish: [{ protocol: 'sctp', hostPort: 1, containerPort: 2 }] }, 'body.publish.0.protocol must be one of tcp, udp.'],
  ['POST', '/v1/endpoints', { network: 'n', netns: 'n', publish: [{ protocol: 'tcp', hostPort: 1 }] }, 'body.containerPort is required.'],
  ['POST', '/v1/endpoints', { network: 'n', netns: 'n', publish: [{ protocol: 'tcp', hostPort: 1, containerPort: 2, x: 1 }] }, 'unknown field "x" in the request body.'],
  ['POST', '/v1/endpoints', { network: 'n', netns: 'n', spoofGuard: 'no' }, 'body.spoofGuard must be true or false: pass --no-spoof-guard or leave it out.'],
  ['GET', '/v1/endpoints?bogus=1', undefined, 'unknown field "bogus" in the query string.'],
  ['GET', `/v1/endpoints?owner=${long(256)}`, undefined, 'querystring.owner must be an owner key such as cni:CONTAINERID/eth0: leave it out.'],
  ['GET', '/v1/nat?counters=all', undefined, 'querystring.counters must be one of only: pass counters=only to leave the translations out, or leave it out.'],
  ['PUT', '/v1/networks/x/peers', {}, 'body.peers is required: send {"peers": ["192.168.56.12"]}.'],
  ['PUT', '/v1/networks/x/peers', { peers: [1] }, 'body.peers.0 must be string.'],
  ['DELETE', `/v1/networks/x/remotes/${long(33)}`, undefined, 'params.mac must be a MAC address: name the remote endpoint by MAC in the URL.'],
  ['POST', '/v1/endpoints/e/acl', 'x', 'the request body must be a JSON object.'],
  ['DELETE', `/v1/endpoints/e/acl/${long(65)}`, undefined, 'params.rule must be a rule id: see `vsw policy acl ls ENDPOINT`.'],
  ['PUT', '/v1/endpoints/e/layers/l', { priority: 70000 }, 'body.priority must be a whole number from 0 to 65535: pass --priority N.'],
  ['PUT', `/v1/endpoints/e/layers/${long(65)}`, {}, 'params.layer must NOT have more than 64 characters.'],
  ['PUT', '/v1/endpoints/e/qos', { maxEgress: 5 }, 'body.maxEgress must be a rate such as 100mbit: pass --max-egress RATE.'],
  ['PUT', '/v1/endpoints/e/spoof-guard', { enabled: true, allowedIps: Array(65).fill('1.1.1.1') }, 'body.allowedIps must be a list of IPv4 addresses: pass --allow-ip ADDRESS.'],
  ['POST', '/v1/trace', { endpoint: 'e', direction: 'up', packet: 'p' }, 'body.direction must be one of in, out: pass --in or --out.'],
];

test('bad input gets a 400 and the same one sentence as before the schemas were TypeBox objects', async (t) => {
  for (const [method, url, body, error] of REFUSALS) {
    const payload = body === undefined ? {} : { payload: JSON.stringify(body), headers: { 'content-type': 'application/json' } };
    const answer = await built.app.inject({ method: method as 'GET', url, ...payload });
    t.is(answer.statusCode, 400, `${method} ${url}`);
    t.deepEqual(answer.json(), { error }, `${method} ${url}`);
  }
});

test('good input passes the schema and reaches the service', async (t) => {
  const answer = await built.app.inject({ url: '/v1/endpoints?network=nonet' });
  t.is(answer.statusCode, 404);
  t.regex(answer.json<{ error: string }>().error, /nonet/);
  t.deepEqual((await built.app.inject({ url: '/v1/networks' })).json(), []);
});

interface OpenApiDocument {
  openapi: string;
  info: { title: string; version: string };
  paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: unknown }> }; parameters?: { in: string; name: string }[] }>>;
}

async function openApi(app: FastifyInstance): Promise<OpenApiDocument> {
  const answer = await app.inject({ url: OPENAPI_PATH });
  if (answer.statusCode !== 200) throw new Error(`${OPENAPI_PATH} answered ${answer.statusCode}: ${answer.body}`);
  return answer.json<OpenApiDocument>();
}

test('the OpenAPI document lists every route the API registers, and no other', async (t) => {
  const doc = await openApi(built.app);
  t.is(doc.info.title, 'vsw');
  t.is(doc.info.version, '0.0.0-test');
  t.true(built.routes.length >= 30, `the API registered ${built.routes.length} routes`);
  const documented = Object.entries(doc.paths).flatMap(([path, operations]) => Object.keys(operations).map((m) => `${m.toUpperCase()} ${path}`));
  const registered = built.routes.map((r) => r.replace(/:(\w+)/g, '{$1}'));
  t.deepEqual([...documented].sort(), [...registered].sort());
});

test('the OpenAPI document carries the TypeBox schemas the routes validate with', async (t) => {
  const doc = await openApi(built.app);
  const json = (schema: unknown) => JSON.parse(JSON.stringify(schema)) as unknown;
  t.deepEqual(doc.paths['/v1/networks'].post.requestBody?.content['application/json'].schema, json(CreateNetworkBody));
  t.deepEqual(doc.paths['/v1/endpoints/{id}/qos'].put.requestBody?.content['application/json'].schema, json(QosBody));
  t.deepEqual(
    doc.paths['/v1/endpoints/{id}/layers/{layer}/groups/{group}'].delete.parameters?.map((p) => `${p.in} ${p.name}`),
    ['path id', 'path layer', 'path group'],
  );
});

/** The packages a compiled entry point loads before it runs: its static imports, followed through the project's own files. */
function staticPackages(entry: string): Set<string> {
  const importFrom = /^\s*(?:import|export)\s[^;]*?\bfrom\s+['"]([^'"]+)['"]|^\s*import\s+['"]([^'"]+)['"]/gm;
  const packages = new Set<string>();
  const seen = new Set<string>();
  const todo = [entry];
  while (todo.length > 0) {
    const file = todo.pop()!;
    if (seen.has(file)) continue;
    seen.add(file);
    for (const m of readFileSync(file, 'utf8').matchAll(importFrom)) {
      const specifier = m[1] ?? m[2];
      if (specifier.startsWith('.')) todo.push(fileURLToPath(new URL(specifier, `file://${dirname(file)}/`)));
      else packages.add(specifier);
    }
  }
  return packages;
}

test('the CLI and the CNI plugin load neither fastify nor TypeBox (they start once per command)', (t) => {
  for (const entry of ['../../src/cli/main.js', '../../src/cni/main.js']) {
    const packages = staticPackages(fileURLToPath(new URL(entry, import.meta.url)));
    t.true(packages.size > 0, `${entry} was read`);
    const heavy = [...packages].filter((p) => /^(fastify|@fastify\/|@sinclair\/typebox)/.test(p));
    t.deepEqual(heavy, [], entry);
  }
  // The check itself can see them: the daemon's API loads both.
  const api = staticPackages(fileURLToPath(new URL('../../src/service/routes.js', import.meta.url)));
  t.true(api.has('@sinclair/typebox'));
});

test('policy changes and the service\'s other mutations take turns under one lock, taken once', async (t) => {
  const log: string[] = [];
  // An internal network touches nothing on the host: the data plane is a stand-in, and the save is slow so that it shows.
  const dataPlane = { maxPorts: 16, addNetwork: async () => undefined, removeNetwork: async () => undefined } as unknown as DataPlaneHandle;
  const save = async (): Promise<void> => {
    log.push('save start');
    await sleep(20);
    log.push('save end');
  };
  const service = new NetworkService(dataPlane, silent, { save });
  const created = service.createNetwork({ name: 'n1', driver: 'internal', subnet: '10.99.0.0/24' });
  const changed = service.changePolicy(async () => {
    log.push('policy start');
    await sleep(20);
    log.push('policy end');
  });
  const deleted = service.deleteNetwork('n1');
  await Promise.all([created, changed, deleted]);
  t.deepEqual(log, ['save start', 'save end', 'policy start', 'policy end', 'save start', 'save end']);
  // PolicyService takes no lock of its own: under changePolicy it would wait for itself forever.
  const refused = await t.throwsAsync(
    Promise.race([service.changePolicy((c) => c.addAclRule('noendpoint', { priority: 100, action: 'block' })), sleep(2000).then(() => 'timed out')]),
  );
  t.regex(refused?.message ?? '', /noendpoint/);
});

import test from 'ava';
import { CNI_ERR, CniError, Plugin, buildResult, parseConfig, readEnv, versionInfo, type CniEnv, type DaemonApi } from '../../src/cni/plugin.js';
import { DaemonError, UnreachableError } from '../../src/cli/errors.js';
import type { Endpoint, Network } from '../../src/service/api-types.js';

const env: CniEnv = { command: 'ADD', containerId: 'c0ffee', netns: '/proc/self/ns/net', ifname: 'eth0', args: '', path: '' };
const network: Network = { name: 'web', id: 1, driver: 'nat', subnet: '10.89.0.0/24', gateway: '10.89.0.1', created: '' };
const endpoint: Endpoint = {
  id: 'aaaaaaaaaaaa',
  name: 'cni-c0ffee',
  network: 'web',
  netns: '/proc/self/ns/net',
  ifname: 'eth0',
  mac: '02:76:0a:59:00:02',
  ip: '10.89.0.2',
  prefixLength: 24,
  portId: 1,
  created: '',
  ownedCompartment: false,
};

function code(fn: () => unknown): number | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CniError ? err.code : -1;
  }
  return undefined;
}

test('readEnv checks the CNI_* variables each command needs', (t) => {
  t.is(readEnv({ CNI_COMMAND: 'VERSION' }).command, 'VERSION');
  t.is(code(() => readEnv({ CNI_COMMAND: 'BOGUS' })), CNI_ERR.invalidEnvironment);
  t.is(code(() => readEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'x', CNI_IFNAME: 'eth0', CNI_NETNS: 'relative' })), CNI_ERR.invalidEnvironment);
  t.is(code(() => readEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: 'x', CNI_IFNAME: 'a-name-longer-than-15', CNI_NETNS: '/run/netns/x' })), CNI_ERR.invalidEnvironment);
  t.is(code(() => readEnv({ CNI_COMMAND: 'ADD', CNI_CONTAINERID: '../x', CNI_IFNAME: 'eth0', CNI_NETNS: '/run/netns/x' })), CNI_ERR.invalidEnvironment);
  // DEL comes without a namespace once the container's is gone.
  t.is(readEnv({ CNI_COMMAND: 'DEL', CNI_CONTAINERID: 'x', CNI_IFNAME: 'eth0' }).netns, '');
});

test('parseConfig refuses unknown versions, missing networks and bad JSON with their CNI codes', (t) => {
  t.is(code(() => parseConfig('{')), CNI_ERR.decodeFailure);
  t.is(code(() => parseConfig('{"cniVersion":"1.1.0","network":"n"}')), CNI_ERR.incompatibleVersion);
  t.is(code(() => parseConfig('{"cniVersion":"0.2.0","network":"n"}')), CNI_ERR.incompatibleVersion);
  t.is(code(() => parseConfig('{"cniVersion":"1.0.0"}')), CNI_ERR.invalidConfig);
  t.is(code(() => parseConfig('{"cniVersion":"1.0.0","network":"n","socket":"relative.sock"}')), CNI_ERR.invalidConfig);
  t.is(code(() => parseConfig('{"cniVersion":"1.0.0","network":"n","policy":{"rules":[]}}')), CNI_ERR.invalidConfig);
  t.is(parseConfig('{"cniVersion":"0.3.1","name":"x","type":"vsw-cni","network":"n"}').network, 'n');
  t.deepEqual(versionInfo('0.4.0'), { cniVersion: '0.4.0', supportedVersions: ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] });
});

test('buildResult speaks the config\'s version: 0.3.x and 0.4.0 tag ips with "version", 1.0.0 does not', (t) => {
  const current = buildResult('1.0.0', env, endpoint, network, { nameservers: ['10.89.0.1'] });
  t.deepEqual(current, {
    cniVersion: '1.0.0',
    interfaces: [{ name: 'eth0', mac: '02:76:0a:59:00:02', sandbox: '/proc/self/ns/net' }],
    ips: [{ address: '10.89.0.2/24', gateway: '10.89.0.1', interface: 0 }],
    routes: [{ dst: '0.0.0.0/0', gw: '10.89.0.1' }],
    dns: { nameservers: ['10.89.0.1'] },
  });
  const legacy = buildResult('0.4.0', env, endpoint, { ...network, gateway: null }, undefined);
  t.deepEqual(legacy.ips, [{ version: '4', address: '10.89.0.2/24', interface: 0 }]);
  t.deepEqual(legacy.routes, []);
  t.false('dns' in legacy);
  const resolved = buildResult('1.0.0', env, endpoint, { ...network, resolver: '10.89.0.1' }, undefined);
  t.deepEqual(resolved.dns, { nameservers: ['10.89.0.1'], search: [network.name] }, "without a dns of its own the config gets the network's resolver in the switch");
  t.deepEqual(buildResult('1.0.0', env, endpoint, { ...network, resolver: '10.89.0.1' }, { nameservers: ['9.9.9.9'] }).dns, { nameservers: ['9.9.9.9'] }, "the config's own dns wins");
});

/** A daemon that records the calls and answers from a script. */
function fakeDaemon(answers: Record<string, () => unknown>): DaemonApi & { calls: string[] } {
  const calls: string[] = [];
  const answer = async (key: string): Promise<never> => {
    calls.push(key);
    const fn = answers[key] ?? answers[key.split('?')[0]];
    if (!fn) throw new DaemonError(`no route ${key}.`, 404);
    return fn() as never;
  };
  return {
    calls,
    get: (path) => answer(`GET ${path}`),
    post: (path, body) => answer(`POST ${path} ${JSON.stringify(body)}`),
    put: (path) => answer(`PUT ${path}`),
    delete: (path) => answer(`DELETE ${path}`),
  };
}

test('ADD sends the owner, the name, the ports of the portMappings capability; refusals become CNI errors', async (t) => {
  let posted = '';
  const api = fakeDaemon({
    'GET /networks/web': () => network,
    'GET /endpoints': () => [],
  });
  api.post = async (_path, body) => {
    posted = JSON.stringify(body);
    return endpoint as never;
  };
  const config = parseConfig(
    JSON.stringify({ cniVersion: '1.0.0', name: 'web', type: 'vsw-cni', network: 'web', runtimeConfig: { portMappings: [{ hostPort: 18081, containerPort: 80, protocol: 'tcp', hostIP: '' }, { hostPort: 18081, containerPort: 80, protocol: 'tcp', hostIP: '::' }] } }),
  );
  const result = await new Plugin(api, '/run/vsw/vsw.sock').add(env, config);
  t.is(result.ips?.[0].address, '10.89.0.2/24');
  t.deepEqual(JSON.parse(posted), {
    network: 'web',
    netns: '/proc/self/ns/net',
    ifname: 'eth0',
    owner: 'cni:c0ffee/eth0',
    name: 'cni-c0ffee',
    publish: [{ protocol: 'tcp', hostPort: 18081, containerPort: 80 }],
    publishVia: 'dnat',
  });

  const sctp = parseConfig(JSON.stringify({ cniVersion: '1.0.0', network: 'web', runtimeConfig: { portMappings: [{ hostPort: 1, containerPort: 1, protocol: 'sctp' }] } }));
  const err = await t.throwsAsync(new Plugin(api, 's').add(env, sctp));
  t.is((err as CniError).code, CNI_ERR.unsupportedField);

  const missing = await t.throwsAsync(new Plugin(fakeDaemon({}), 's').add(env, parseConfig('{"cniVersion":"1.0.0","network":"nope"}')));
  t.is((missing as CniError).code, CNI_ERR.invalidConfig);
  t.regex(missing?.message ?? '', /^vsw network nope does not exist: create it/);

  const down = fakeDaemon({});
  down.get = async () => {
    throw new UnreachableError('cannot reach the vsw daemon at /x.sock: start it.');
  };
  const unreachable = await t.throwsAsync(new Plugin(down, '/x.sock').add(env, config));
  t.is((unreachable as CniError).code, CNI_ERR.tryAgainLater);
  t.regex(unreachable?.message ?? '', /^the vsw daemon is not running at \/x\.sock/);
});

test('ADD with a policy that the daemon refuses removes the endpoint it made', async (t) => {
  const api = fakeDaemon({
    'GET /networks/web': () => network,
    'GET /endpoints': () => [],
    'DELETE /endpoints/aaaaaaaaaaaa': () => undefined,
  });
  api.post = async () => endpoint as never;
  api.put = async () => {
    throw new DaemonError('rule 1 is invalid: fix it.', 400);
  };
  const config = parseConfig(JSON.stringify({ cniVersion: '1.0.0', network: 'web', policy: { name: 'web', rules: [{ priority: 1, action: 'bogus' }] } }));
  const err = await t.throwsAsync(new Plugin(api, 's').add(env, config));
  t.is((err as CniError).code, CNI_ERR.invalidConfig);
  t.deepEqual(api.calls, ['GET /networks/web', 'GET /endpoints?owner=cni%3Ac0ffee%2Feth0', 'DELETE /endpoints/aaaaaaaaaaaa']);

  // A repeated ADD whose policy fails keeps the endpoint the first ADD made.
  const again = fakeDaemon({ 'GET /networks/web': () => network, 'GET /endpoints': () => [endpoint] });
  again.post = async () => endpoint as never;
  again.put = api.put;
  await t.throwsAsync(new Plugin(again, 's').add(env, config));
  t.false(again.calls.some((c) => c.startsWith('DELETE')), `calls: ${again.calls.join(', ')}`);
});

test('DEL is done when the endpoint is already gone, and removes every endpoint of the owner otherwise', async (t) => {
  const none = fakeDaemon({ 'GET /endpoints': () => [] });
  await new Plugin(none, 's').del({ ...env, command: 'DEL', netns: '' });
  t.deepEqual(none.calls, ['GET /endpoints?owner=cni%3Ac0ffee%2Feth0']);

  const raced = fakeDaemon({ 'GET /endpoints': () => [endpoint] });
  raced.delete = async () => {
    throw new DaemonError('endpoint aaaaaaaaaaaa not found.', 404);
  };
  await t.notThrowsAsync(new Plugin(raced, 's').del(env));
});

test('endpoint names are unique per container and interface, and valid vsw names', async (t) => {
  const { endpointName } = await import('../../src/cni/plugin.js');
  const hex = 'c0ffee'.padEnd(64, '0');
  t.is(endpointName({ containerId: hex, ifname: 'eth0' }), 'cni-c0ffee000000');
  t.is(endpointName({ containerId: hex, ifname: 'net1' }), 'cni-c0ffee000000-net1');
  // ctr passes NAMESPACE-ID: two containers of one namespace must not share a name.
  t.not(endpointName({ containerId: 'default-web1', ifname: 'eth0' }), endpointName({ containerId: 'default-web2', ifname: 'eth0' }));
  const long = 'k8s_'.padEnd(100, 'x');
  const a = endpointName({ containerId: `${long}a`, ifname: 'eth0' });
  const b = endpointName({ containerId: `${long}b`, ifname: 'eth0' });
  t.not(a, b);
  for (const name of [a, b]) t.regex(name, /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/);
});

/**
 * nat networks on a real daemon, configured with the `vsw` CLI: containers
 * (namespaces with an endpoint, and one `vsw run` compartment) on nat network
 * n (172.18.0.0/24), and an "outside" namespace routed through the host
 * namespace by a veth pair (198.18.K.0/24, the host at .1, outside at .2).
 * Checked with real traffic: python HTTP/UDP/TCP servers that report the peer
 * address they see, ping, tcpdump. Network p (172.19.0.0/24) has a pool of
 * two ports, to exhaust it. The last test removes everything and checks that
 * the host is as it was (interfaces, nftables, net.ipv4.ip_forward).
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Network } from '../../src/service/api-types.js';
import { addNetns, inNetns, ping, runPrefix, sh } from './helpers/env.js';
import {
  api,
  assertOneSentence,
  capture,
  CLI,
  createEndpoint,
  type DaemonHandle,
  dropCount,
  type EndpointJson,
  readLines,
  startDaemon,
  teardown,
} from './helpers/daemon.js';
import {
  addOutsideNamespace,
  echoCount,
  freeNet24,
  hostLinkExists,
  hostPortBase,
  httpGet,
  natState,
  NFT,
  nftIpTables,
  type Outside,
  PEER_HTTP_SERVER,
  PEER_UDP_SERVER,
  prefixNumber,
  readIpForward,
  removeNatLeftovers,
  startEchoClient,
  startServer,
  tcpConnect,
  udpRequest,
} from './helpers/nat.js';
import { TCP_ECHO_SERVER } from './helpers/echo.js';

const prefix = runPrefix();
/** Names of nat networks are also their host interfaces' names: at most 15 characters. */
const netN = `${prefix}-n`;
const netP = `${prefix}-p`;
const nsC = [`${prefix}-c1`, `${prefix}-c2`];
const nsWeb = `${prefix}-web`;
const nsP = [`${prefix}-p1`, `${prefix}-p2`];
const PORT_BASE = hostPortBase(prefix);
/** Published by the web compartment: HTTP (to 8080 inside) and UDP (to 5353 inside). */
const PUB_HTTP = PORT_BASE;
const PUB_UDP = PORT_BASE + 1;
/** Servers in the outside namespace. */
const OUT_HTTP = 8000;
const OUT_UDP = 9000;
const OUT_UDP_CLOSED = 9999;
const OUT_ECHO = 7000;

let d: DaemonHandle;
let forwardBefore: string | undefined;
let outside: Outside;
let netInfo: Network;
let ext: string;
const c: EndpointJson[] = [];
let web: EndpointJson;
let webRun: ChildProcess | undefined;
let webRunExit: Promise<number | null> | undefined;

test.before(async () => {
  forwardBefore = readIpForward();
  d = await startDaemon(prefix);
  outside = await addOutsideNamespace(`${prefix}-out`, `${prefix}-ov`, await freeNet24('198.18', (prefixNumber(prefix) % 254) + 1));
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.18.0.0/24', netN]);
  netInfo = await d.vswJson<Network>(['network', 'inspect', netN]);
  if (!netInfo.nat) throw new Error(`network inspect ${netN} has no nat section: ${JSON.stringify(netInfo)}`);
  ext = netInfo.nat.externalIp;
  for (const ns of nsC) {
    await addNetns(ns);
    c.push(await createEndpoint(d, netN, ns));
  }
  // The web container: `vsw run -p` with an HTTP server reporting its peers; a UDP one joins it below.
  webRun = spawn('node', [CLI, '--socket', d.socket, 'run', '--network', netN, '--name', nsWeb, '-p', `${PUB_HTTP}:8080`, '-p', `${PUB_UDP}:5353/udp`, '--', 'python3', '-c', PEER_HTTP_SERVER, '8080'], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  webRunExit = new Promise((resolve) => webRun!.on('exit', (code) => resolve(code)));
  const webOut = readLines(webRun);
  await webOut.waitFor(/^listening$/, 1, 15_000);
  web = await d.vswJson<EndpointJson>(['endpoint', 'inspect', nsWeb]);
});

test.after.always(async () => {
  if (webRun && webRun.exitCode === null && webRun.signalCode === null) {
    webRun.kill('SIGTERM');
    await Promise.race([webRunExit, sleep(5_000)]);
  }
  await teardown(prefix, d);
  await removeNatLeftovers(prefix, forwardBefore);
});

const url = (ip: string, port: number): string => `http://${ip}:${port}/`;

test.serial('a nat network has a host interface on its transit subnet, an nftables table, ip_forward on, and a gateway that answers ping', async (t) => {
  const nat = netInfo.nat!;
  t.is(netInfo.driver, 'nat');
  t.is(netInfo.gateway, '172.18.0.1');
  t.is(nat.hostInterface, netN, 'the host interface is named like the network');
  t.regex(nat.transit, /^100\.127\.\d+\.\d+\/30$/);
  const [base] = nat.transit.split('/');
  const b = base.split('.').map(Number);
  t.is(nat.hostIp, `${b[0]}.${b[1]}.${b[2]}.${b[3] + 1}`);
  t.is(nat.externalIp, `${b[0]}.${b[1]}.${b[2]}.${b[3] + 2}`);
  t.is(nat.ports, '1024-65535');
  const addr = await sh('ip', ['-4', '-o', 'addr', 'show', 'dev', nat.hostInterface]);
  t.true(addr.stdout.includes(` ${nat.hostIp}/30 `), `ip addr of ${nat.hostInterface}: ${addr.stdout}`);
  const tables = await nftIpTables();
  const table = `vsw_nat_${netN.replace(/-/g, '_')}`;
  if (nat.masqueradeVia.length > 0) {
    // The daemon reports the table in hostChanges; nft(8) itself must list it (see NFT in helpers/nat.ts for
    // the `nft` that shadows it on npm's PATH).
    t.true(
      tables.includes(table),
      `network inspect says masqueradeVia ${JSON.stringify(nat.masqueradeVia)} and "${nat.hostChanges.find((h) => h.includes('nftables')) ?? ''}", but \`nft list tables ip\` has no table ${table} (tables: ${tables.join(' ') || 'none'})`,
    );
    const rules = await sh(NFT, ['list', 'table', 'ip', table]);
    t.true(rules.stdout.includes(`ip saddr ${ext}`) && rules.stdout.includes('masquerade'), rules.stdout);
    t.false(rules.stdout.includes(outside.hostIf), 'the outside veth is not masqueraded');
  } else {
    t.false(tables.includes(table), 'no default route: no masquerade table');
  }
  t.is(readIpForward(), '1');
  t.true(nat.hostChanges.length >= 1, JSON.stringify(nat.hostChanges));
  for (const [i, ep] of c.entries()) {
    t.regex(ep.ip, /^172\.18\.0\.\d+$/);
    const route = await sh('ip', ['-n', nsC[i], 'route', 'show', 'default']);
    t.regex(route.stdout, /default via 172\.18\.0\.1 /, `default route in ${nsC[i]}`);
  }
  t.true(await ping(nsC[0], '172.18.0.1'), 'the gateway answers ping');
  t.true(await ping(nsC[0], ext), 'the external address answers ping from inside');
});

test.serial('a container reaches an HTTP server outside, which sees the external address, and ping goes through', async (t) => {
  const server = await startServer(t, outside.ns, PEER_HTTP_SERVER, OUT_HTTP);
  const r = await httpGet(nsC[0], url(outside.ip, OUT_HTTP));
  t.true(r.ok, `HTTP c1 -> outside: ${r.body}`);
  t.regex(r.body, new RegExp(`^peer ${ext.replace(/\./g, '\\.')}:\\d+$`), 'the server saw the external address');
  t.deepEqual(
    server.lines.filter((l) => l.startsWith('peer ')),
    [`peer ${ext}`],
    'the server log names only the external address',
  );
  t.false(server.lines.some((l) => l.includes('172.18.')), 'no container address reached the outside');
  const extPort = Number(r.body.split(':').pop());
  const state = await natState(d, netN);
  const tr = state.translations.find((x) => x.protocol === 'tcp' && x.external === `${ext}:${extPort}`);
  t.truthy(tr, `vsw nat ls has the translation to ${ext}:${extPort}: ${JSON.stringify(state.translations)}`);
  t.regex(tr?.inside ?? '', new RegExp(`^${c[0].ip.replace(/\./g, '\\.')}:\\d+$`));
  t.is(tr?.remote, `${outside.ip}:${OUT_HTTP}`);
  t.is(tr?.endpoint, c[0].name);

  const cap = await capture(outside.ns, 'eth0', ['icmp'], `/tmp/${prefix}/ping-out.pcap`);
  const p = await inNetns(nsC[0], 'ping', ['-c', '3', '-i', '0.2', '-W', '2', outside.ip]);
  await sleep(200);
  const seen = await cap.stop();
  t.is(p.code, 0, `ping c1 -> outside: ${p.stdout}${p.stderr}`);
  t.true(
    seen.filter((l) => l.includes(`${ext} > ${outside.ip}: ICMP echo request`)).length >= 3,
    `tcpdump outside: ${seen.join(' | ')}`,
  );
  t.false(seen.some((l) => l.includes('172.18.')), `a container address reached the outside: ${seen.join(' | ')}`);
});

test.serial('UDP request and response go through the NAT, and a port unreachable reaches the container\'s connected socket', async (t) => {
  const server = await startServer(t, outside.ns, PEER_UDP_SERVER, OUT_UDP);
  const reply = await udpRequest(nsC[0], outside.ip, OUT_UDP);
  t.regex(reply, new RegExp(`^peer ${ext.replace(/\./g, '\\.')}:\\d+$`), `UDP c1 -> outside: ${reply}`);
  t.deepEqual(server.lines.filter((l) => l.startsWith('peer ')), [`peer ${ext}`]);
  const state = await natState(d, netN);
  t.true(
    state.translations.some((x) => x.protocol === 'udp' && x.remote === `${outside.ip}:${OUT_UDP}` && x.endpoint === c[0].name),
    `vsw nat ls: ${JSON.stringify(state.translations)}`,
  );
  // Nothing listens on OUT_UDP_CLOSED: the outside kernel answers port unreachable to the external
  // address; only a correctly translated embedded header makes the container's socket see ECONNREFUSED.
  const cap = await capture(nsC[0], 'eth0', ['icmp'], `/tmp/${prefix}/unreach-c1.pcap`);
  const refused = await udpRequest(nsC[0], outside.ip, OUT_UDP_CLOSED);
  await sleep(200);
  const seen = await cap.stop();
  t.is(refused, 'refused', `UDP to a closed port outside: ${refused}; tcpdump in c1: ${seen.join(' | ')}`);
  t.true(
    seen.some((l) => l.includes(`${outside.ip} > ${c[0].ip}: ICMP ${outside.ip} udp port ${OUT_UDP_CLOSED} unreachable`)),
    `tcpdump in c1: ${seen.join(' | ')}`,
  );
});

test.serial('TTL exceeded and fragmentation needed from the host reach the container translated', async (t) => {
  const nat = netInfo.nat!;
  const ttl = await inNetns(nsC[0], 'ping', ['-c', '1', '-t', '1', '-W', '2', outside.ip]);
  t.regex(ttl.stdout, new RegExp(`From ${nat.hostIp.replace(/\./g, '\\.')}.*Time to live exceeded`), `ping -t 1: ${ttl.stdout}${ttl.stderr}`);

  t.teardown(async () => {
    await sh('ip', ['link', 'set', 'dev', outside.hostIf, 'mtu', '1500']);
    await sh('ip', ['-n', outside.ns, 'link', 'set', 'dev', 'eth0', 'mtu', '1500']);
  });
  for (const args of [['link', 'set', 'dev', outside.hostIf, 'mtu', '1400'], ['-n', outside.ns, 'link', 'set', 'dev', 'eth0', 'mtu', '1400']]) {
    const r = await sh('ip', args);
    t.is(r.code, 0, r.stderr);
  }
  // c2 has not talked to the outside before: its path MTU starts at its own 1500.
  const big = await inNetns(nsC[1], 'ping', ['-c', '1', '-M', 'do', '-s', '1472', '-W', '2', outside.ip]);
  t.regex(big.stdout + big.stderr, /Frag needed and DF set \(mtu = 1400\)/, `ping -M do -s 1472: ${big.stdout}${big.stderr}`);
  const route = await sh('ip', ['-n', nsC[1], 'route', 'get', outside.ip]);
  t.regex(route.stdout, /mtu 1400/, `ip route get in c2: ${route.stdout}`);
  const small = await inNetns(nsC[1], 'ping', ['-c', '1', '-M', 'do', '-s', '1372', '-W', '2', outside.ip]);
  t.is(small.code, 0, `a packet that fits the path MTU gets through: ${small.stdout}${small.stderr}`);
});

test.serial('a published port answers on the host (loopback and external address) and from outside (external address and the host\'s address)', async (t) => {
  const peerOf = (body: string): string => body.replace(/^peer /, '').replace(/:\d+$/, '');
  const viaLoopback = await httpGet(null, url('127.0.0.1', PUB_HTTP));
  t.true(viaLoopback.ok, `host -> 127.0.0.1:${PUB_HTTP}: ${viaLoopback.body}`);
  const viaExt = await httpGet(null, url(ext, PUB_HTTP));
  t.true(viaExt.ok, `host -> ${ext}:${PUB_HTTP}: ${viaExt.body}`);
  const fromOutside = await httpGet(outside.ns, url(ext, PUB_HTTP));
  t.true(fromOutside.ok, `outside -> ${ext}:${PUB_HTTP}: ${fromOutside.body}`);
  t.is(peerOf(fromOutside.body), outside.ip, 'the container sees the outside client\'s own address');
  const viaHostIp = await httpGet(outside.ns, url(outside.hostIp, PUB_HTTP));
  t.true(viaHostIp.ok, `outside -> ${outside.hostIp}:${PUB_HTTP} (the host listener): ${viaHostIp.body}`);
  t.log(`peers seen by the web container: loopback ${peerOf(viaLoopback.body)}, host->external ${peerOf(viaExt.body)}, outside ${peerOf(fromOutside.body)}, outside->host ${peerOf(viaHostIp.body)}`);
  for (const body of [viaLoopback.body, viaExt.body, viaHostIp.body]) t.false(body.includes('172.18.'), body);

  const state = await natState(d, netN);
  t.deepEqual(
    state.published.map((p) => [p.protocol, p.external, p.target, p.endpoint]).sort(),
    [
      ['tcp', `${ext}:${PUB_HTTP}`, `${web.ip}:8080`, nsWeb],
      ['udp', `${ext}:${PUB_UDP}`, `${web.ip}:5353`, nsWeb],
    ],
  );
  t.deepEqual(
    web.publish?.map((m) => [m.protocol, m.hostPort, m.containerPort]).sort(),
    [
      ['tcp', PUB_HTTP, 8080],
      ['udp', PUB_UDP, 5353],
    ],
  );

  // UDP published the same way: through the host listener and through the external address.
  const udp = await startServer(t, nsWeb, PEER_UDP_SERVER, 5353);
  const udpLoopback = await udpRequest(null, '127.0.0.1', PUB_UDP);
  t.regex(udpLoopback, /^peer [\d.]+:\d+$/, `UDP host -> 127.0.0.1:${PUB_UDP}: ${udpLoopback}`);
  const udpOutside = await udpRequest(outside.ns, ext, PUB_UDP);
  t.is(udpOutside.replace(/:\d+$/, ''), `peer ${outside.ip}`, `UDP outside -> ${ext}:${PUB_UDP}: ${udpOutside}`);
  t.true(udp.lines.filter((l) => l.startsWith('peer ')).length >= 2, udp.lines.join(' | '));
});

test.serial('hairpin: containers reach the published port on the external address, their own too', async (t) => {
  const other = await httpGet(nsC[1], url(ext, PUB_HTTP));
  t.true(other.ok, `c2 -> ${ext}:${PUB_HTTP}: ${other.body}`);
  t.regex(other.body, new RegExp(`^peer ${ext.replace(/\./g, '\\.')}:\\d+$`), 'the web container sees the hairpinned client as the external address');
  const self = await httpGet(nsWeb, url(ext, PUB_HTTP));
  t.true(self.ok, `web -> ${ext}:${PUB_HTTP} (itself): ${self.body}`);
  t.regex(self.body, new RegExp(`^peer ${ext.replace(/\./g, '\\.')}:\\d+$`));
});

test.serial('two containers on the same nat network are switched directly, not translated', async (t) => {
  const server = await startServer(t, nsC[1], PEER_HTTP_SERVER, 8081);
  const before = await natState(d, netN);
  const r = await httpGet(nsC[0], url(c[1].ip, 8081));
  t.true(r.ok, `c1 -> c2: ${r.body}`);
  t.regex(r.body, new RegExp(`^peer ${c[0].ip.replace(/\./g, '\\.')}:\\d+$`), 'c2 sees c1\'s own address');
  t.deepEqual(server.lines.filter((l) => l.startsWith('peer ')), [`peer ${c[0].ip}`]);
  t.true(await ping(nsC[0], c[1].ip), 'ping c1 -> c2');
  const after = await natState(d, netN);
  t.is(after.counters.created, before.counters.created, 'no translation was created');
  const between = (x: { inside: string; remote: string }, a: string, b: string): boolean => x.inside.startsWith(`${a}:`) && x.remote.startsWith(`${b}:`);
  const involving = after.translations.filter((x) => between(x, c[0].ip, c[1].ip) || between(x, c[1].ip, c[0].ip));
  t.deepEqual(involving, [], 'vsw nat ls lists nothing between c1 and c2');
});

test.serial('a two-port pool: a third flow is refused and counted, the two held flows keep carrying data, and a freed port is reused', async (t) => {
  await d.vswOk(['network', 'create', '-d', 'nat', '--subnet', '172.19.0.0/24', '--nat-ports', '40000-40001', netP]);
  const info = await d.vswJson<Network>(['network', 'inspect', netP]);
  t.is(info.nat?.ports, '40000-40001');
  t.is(info.nat?.hostInterface, netP);
  t.not(info.nat?.transit, netInfo.nat?.transit, 'each nat network has its own transit subnet');
  const extP = info.nat!.externalIp;
  const p: EndpointJson[] = [];
  for (const ns of nsP) {
    await addNetns(ns);
    p.push(await createEndpoint(d, netP, ns));
  }
  const server = await startServer(t, outside.ns, TCP_ECHO_SERVER, OUT_ECHO);
  const held = [await startEchoClient(t, nsP[0], outside.ip, OUT_ECHO), await startEchoClient(t, nsP[0], outside.ip, OUT_ECHO)];
  for (const h of held) await h.waitFor(/^echo \d+$/, 3, 5_000);
  const full = await natState(d, netP);
  t.is(full.counters.poolSize, 2);
  t.deepEqual(
    full.translations.filter((x) => x.protocol === 'tcp').map((x) => x.external).sort(),
    [`${extP}:40000`, `${extP}:40001`],
    JSON.stringify(full.translations),
  );
  t.is(full.counters.refused, 0);

  const dropsBefore = await dropCount(d, p[1].id, 'natPoolExhausted');
  const third = await tcpConnect(nsP[1], outside.ip, OUT_ECHO, 3);
  t.regex(third, /^failed/, `a third TCP flow with the pool full: ${third}`);
  const refusedState = await natState(d, netP);
  t.true(refusedState.counters.refused > 0, `counters: ${JSON.stringify(refusedState.counters)}`);
  const dropsAfter = await dropCount(d, p[1].id, 'natPoolExhausted');
  t.true(dropsAfter > dropsBefore, `natPoolExhausted on p2: ${dropsBefore} -> ${dropsAfter}`);
  t.is(server.lines.filter((l) => l.startsWith('accepted ')).length, 2, `the outside server accepted: ${server.lines.join(' | ')}`);
  t.true(server.lines.filter((l) => l.startsWith('accepted ')).every((l) => l === `accepted ${extP}`), server.lines.join(' | '));

  // The held flows still carry data after the refusal.
  const counts = held.map(echoCount);
  await sleep(1_000);
  for (const [i, h] of held.entries()) {
    t.true(echoCount(h) >= counts[i] + 5, `held flow ${i + 1}: ${counts[i]} -> ${echoCount(h)} echoes in 1 s`);
    t.false(h.lines.some((l) => l === 'eof' || l.startsWith('error')), h.lines.slice(-3).join(' | '));
  }
  // The pools are per protocol: UDP still has its two ports.
  const udpServer = await startServer(t, outside.ns, PEER_UDP_SERVER, OUT_UDP);
  const udp = await udpRequest(nsP[1], outside.ip, OUT_UDP);
  t.regex(udp, new RegExp(`^peer ${extP.replace(/\./g, '\\.')}:4000[01]$`), `UDP with the TCP pool full: ${udp}`);
  t.true(udpServer.lines.includes(`peer ${extP}`));

  // A connection that ends (a RST) frees its port: a new flow gets it once the connection is gone.
  held[0].child.kill('SIGTERM');
  await held[0].waitFor(/^reset$/, 1, 5_000).catch(() => undefined);
  const deadline = Date.now() + 15_000;
  let fourth = '';
  for (;;) {
    fourth = await tcpConnect(nsP[1], outside.ip, OUT_ECHO, 2);
    if (fourth === 'connected' || Date.now() > deadline) break;
    await sleep(500);
  }
  t.is(fourth, 'connected', 'a new flow after one held flow was reset');
  const kept = echoCount(held[1]);
  await sleep(500);
  t.true(echoCount(held[1]) > kept, 'the other held flow still carries data');
});

test.serial('removing nat networks needs their endpoints gone first, then undoes every host change', async (t) => {
  const rm = await d.vsw(['network', 'rm', netN]);
  assertOneSentence(t, rm, 'network rm with endpoints');
  t.regex(rm.stderr, /still has endpoints/, rm.stderr);
  const viaApi = await api<{ message?: string }>(d, 'DELETE', `/v1/networks/${netN}`);
  t.is(viaApi.status, 409, JSON.stringify(viaApi.body));
  t.true(await hostLinkExists(netN), 'the refused removal left the host interface');
  t.true((await httpGet(null, url('127.0.0.1', PUB_HTTP))).ok, 'and the published port');

  // The vsw run compartment goes when its command ends; the others by endpoint rm.
  webRun!.kill('SIGTERM');
  const code = await Promise.race([webRunExit, sleep(10_000).then(() => 'timeout')]);
  t.is(code, 143, 'vsw run passed SIGTERM to its command and exited with its status (128 + 15)');
  const eps = await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json']);
  t.false(eps.some((e) => e.name === nsWeb), 'vsw run removed its endpoint');
  const ids = eps.filter((e) => e.network === netN || e.network === netP).map((e) => e.id);
  if (ids.length > 0) await d.vswOk(['endpoint', 'rm', ...ids]);
  const closed = await tcpConnect(null, '127.0.0.1', PUB_HTTP, 2);
  t.regex(closed, /^failed ConnectionRefusedError/, `the host listener of the published port is gone: ${closed}`);

  const tableOf = (name: string): string => `vsw_nat_${name.replace(/-/g, '_')}`;
  await d.vswOk(['network', 'rm', netP]);
  t.false(await hostLinkExists(netP), `host interface ${netP} is gone`);
  t.false((await nftIpTables()).includes(tableOf(netP)), `nftables table ${tableOf(netP)} is gone`);
  t.is(readIpForward(), '1', 'ip_forward stays on while another nat network exists');

  await d.vswOk(['network', 'rm', netN]);
  t.false(await hostLinkExists(netN), `host interface ${netN} is gone`);
  t.false((await nftIpTables()).includes(tableOf(netN)), `nftables table ${tableOf(netN)} is gone`);
  t.is(readIpForward(), forwardBefore!, 'ip_forward is back to what it was before the test');
  const left = await d.vswJson<Network[]>(['network', 'ls', '--json']);
  t.deepEqual(left.map((n) => n.name).filter((n) => n.startsWith(prefix)), []);
  const states = await d.vswJson<unknown[]>(['nat', 'ls', '--json']);
  t.deepEqual(states, []);
});

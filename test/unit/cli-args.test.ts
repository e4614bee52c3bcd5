import test from 'ava';
import { parseLbPort, parseProbe } from '../../src/cli/commands/lb.js';
import { Command } from 'commander';
import { connectionError } from '../../src/cli/client.js';
import { programSocketOption, socketOf } from '../../src/cli/commands/common.js';
import { runCommand } from '../../src/cli/commands/run.js';
import { UnreachableError } from '../../src/cli/errors.js';
import {
  exitCodeOf,
  formatDrops,
  formatEndpoints,
  formatNetworks,
  formatStats,
  formatSwitchStats,
  formatTable,
  randomCompartmentName,
} from '../../src/cli/format.js';
import type { Endpoint, Network, StatsResponse } from '../../src/service/api-types.js';

test('formatTable pads columns two spaces apart and trims trailing spaces', (t) => {
  const out = formatTable(['NAME', 'X'], [
    ['a', '1'],
    ['longer', ''],
  ]);
  t.is(out, ['NAME    X', 'a       1', 'longer'].join('\n'));
});

test('formatTable with no rows prints the header only', (t) => {
  t.is(formatTable(['A', 'BB'], []), 'A  BB');
});

test('formatNetworks shows - for a missing gateway and counts endpoints', (t) => {
  const networks: Network[] = [
    { name: 'default', id: 1, driver: 'internal', subnet: '10.88.0.0/24', gateway: null, created: '', endpoints: ['a', 'b'] },
    { name: 'blue', id: 2, driver: 'internal', subnet: '10.90.0.0/24', gateway: '10.90.0.1', created: '' },
  ];
  t.is(
    formatNetworks(networks),
    [
      'NAME     DRIVER    SUBNET        GATEWAY    ENDPOINTS',
      'default  internal  10.88.0.0/24  -          2',
      'blue     internal  10.90.0.0/24  10.90.0.1  0',
    ].join('\n'),
  );
});

test('formatEndpoints writes the address with its prefix', (t) => {
  const endpoint: Endpoint = {
    id: '0123456789ab',
    name: 'c1-eth0',
    network: 'default',
    netns: 'c1',
    ifname: 'eth0',
    mac: '02:76:0a:58:00:02',
    ip: '10.88.0.2',
    prefixLength: 24,
    portId: 1,
    created: '',
    ownedCompartment: false,
    state: 'up',
  };
  t.is(
    formatEndpoints([endpoint]),
    [
      'ID            NAME     NETWORK  NETNS  IFNAME  IP            MAC                STATE',
      '0123456789ab  c1-eth0  default  c1     eth0    10.88.0.2/24  02:76:0a:58:00:02  up',
    ].join('\n'),
  );
});

test('formatEndpoints says why an endpoint is down', (t) => {
  const endpoint: Endpoint = {
    id: '0123456789ab',
    name: 'c1',
    network: 'default',
    netns: 'c1',
    ifname: 'eth0',
    mac: '02:76:0a:58:00:02',
    ip: '10.88.0.2',
    prefixLength: 24,
    portId: 1,
    created: '',
    ownedCompartment: true,
    state: 'down',
    stateReason: 'its TAP was deleted (read: EBADFD)',
  };
  t.is(formatEndpoints([endpoint]).split('\n')[1].split(/ {2,}/).pop(), 'down: its TAP was deleted (read: EBADFD)');
});

test('formatEndpoints adds a PORTS column when an endpoint publishes ports', (t) => {
  const base = { network: 'mynat', ifname: 'eth0', prefixLength: 24, created: '', ownedCompartment: true };
  const web: Endpoint = { ...base, id: 'aaaaaaaaaaaa', name: 'web', netns: 'web', mac: '02:76:ac:12:00:02', ip: '172.18.0.2', portId: 1 };
  web.publish = [
    { protocol: 'tcp', hostIp: '0.0.0.0', hostPort: 8080, containerPort: 80 },
    { protocol: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
  ];
  const db: Endpoint = { ...base, id: 'bbbbbbbbbbbb', name: 'db', netns: 'db', mac: '02:76:ac:12:00:03', ip: '172.18.0.3', portId: 2, publish: [] };
  t.is(
    formatEndpoints([web, db]),
    [
      'ID            NAME  NETWORK  NETNS  IFNAME  IP             MAC                PORTS                                 STATE',
      'aaaaaaaaaaaa  web   mynat    web    eth0    172.18.0.2/24  02:76:ac:12:00:02  8080->80/tcp, 127.0.0.1:5353->53/udp  up',
      'bbbbbbbbbbbb  db    mynat    db     eth0    172.18.0.3/24  02:76:ac:12:00:03  -                                     up',
    ].join('\n'),
  );
});

test('formatDrops lists only the reasons that happened, after the total', (t) => {
  t.is(formatDrops({}), '0');
  t.is(formatDrops({ runt: 0 }), '0');
  t.is(formatDrops({ runt: 1, txFailed: 2, badArp: 0 }), '3 (runt=1, txFailed=2)');
});

const vfp = {
  flows: 4,
  flowCapacity: 1024,
  flowsCreated: 6,
  flowsRevalidated: 1,
  flowsExpired: 2,
  flowTableFull: 0,
  slowPathRuns: 9,
  connections: { created: 3, expired: 1, refused: 5, restarted: 0, live: 2, capacity: 1048576 },
};

test('formatSwitchStats puts entries over the limit first, then flows and connections', (t) => {
  const out = formatSwitchStats({ macTable: { entries: 3, maxEntries: 8192, learned: 5, moved: 1 }, batches: 7, ports: 2, vfp });
  t.is(
    out,
    [
      'MAC table: entries 3/8192, learned 5, moved 1',
      'switch: ports 2, batches 7',
      'flows: 4/1024 cached, created 6, re-evaluated 1, expired 2, slow path 9, uncached 0',
      'connections: 2 live, created 3, expired 1, refused 5',
    ].join('\n'),
  );
});

test('formatStats prints the port table, a blank line, then the switch counters', (t) => {
  const stats: StatsResponse = {
    ports: [
      { endpoint: 'abc', name: 'c1-eth0', network: 'n', netns: 'c1', ifname: 'eth0', rxFrames: 1, rxBytes: 60, txFrames: 2, txBytes: 120, drops: { noEgress: 1 }, dropsTotal: 1 },
    ],
    uplinks: [],
    switch: { macTable: { entries: 1, maxEntries: 10 }, batches: 1, ports: 1, vfp },
  };
  const lines = formatStats(stats).split('\n');
  t.is(lines[0], 'ENDPOINT  NETWORK  NETNS/IF  RX-FRAMES  RX-BYTES  TX-FRAMES  TX-BYTES  DROPS');
  t.is(lines[1], 'abc       n        c1/eth0   1          60        2          120       1 (noEgress=1)');
  t.is(lines[2], '');
  t.is(lines[3], 'MAC table: entries 1/10');
});

test('formatStats prints the uplinks of transparent networks in a table of their own, a down one with its reason', (t) => {
  const stats: StatsResponse = {
    ports: [],
    uplinks: [
      { interface: 'eth1', network: 'lan', rxFrames: 5, rxBytes: 300, txFrames: 4, txBytes: 240, drops: { uplinkNotLocal: 2 }, dropsTotal: 2 },
      { interface: 'eth2', network: 'lan2', down: 'the interface is down', rxFrames: 0, rxBytes: 0, txFrames: 0, txBytes: 0, drops: {}, dropsTotal: 0 },
    ],
    switch: { macTable: { entries: 1, maxEntries: 10 }, batches: 1, ports: 1, vfp },
  };
  const lines = formatStats(stats).split('\n');
  const at = lines.indexOf('UPLINK  NETWORK  RX-FRAMES  RX-BYTES  TX-FRAMES  TX-BYTES  DROPS');
  t.true(at > 0, lines.join('\n'));
  t.is(lines[at + 1], 'eth1    lan      5          300       4          240       2 (uplinkNotLocal=2)');
  t.is(lines[at + 2], 'eth2    lan2     0          0         0          0         down: the interface is down');
});

test('exitCodeOf follows the shell: the code, else 128 + signal number', (t) => {
  t.is(exitCodeOf(0, null), 0);
  t.is(exitCodeOf(7, null), 7);
  t.is(exitCodeOf(null, 'SIGINT'), 130);
  t.is(exitCodeOf(null, 'SIGTERM'), 143);
  t.is(exitCodeOf(null, 'SIGKILL'), 137);
  t.is(exitCodeOf(null, null), 1);
});

test('randomCompartmentName is vsw- and 8 hex digits, and varies', (t) => {
  const a = randomCompartmentName();
  t.regex(a, /^vsw-[0-9a-f]{8}$/);
  t.not(a, randomCompartmentName());
});

test('connectionError says how to start the daemon or fix permissions', (t) => {
  const err = (code: string) => Object.assign(new Error(code), { code });
  const missing = connectionError(err('ENOENT'), '/run/vsw/vsw.sock');
  t.true(missing instanceof UnreachableError);
  t.is(missing.message, 'cannot reach the vsw daemon at /run/vsw/vsw.sock: start it with `vsw daemon` (or `npm start`) or pass --socket.');
  t.is(connectionError(err('ECONNREFUSED'), '/s').message, missing.message.replace('/run/vsw/vsw.sock', '/s'));
  t.is(connectionError(err('EACCES'), '/s').message, 'permission denied on /s: run vsw as root or with sudo -E.');
});

/** A program like main.ts builds, with `run`'s action replaced by one that records what it got. */
function parseRun(args: string[]): { argv: string[]; opts: Record<string, unknown>; socket: string } {
  let seen: { argv: string[]; opts: Record<string, unknown>; socket: string } | undefined;
  const program = new Command('vsw').addOption(programSocketOption()).enablePositionalOptions().exitOverride();
  const run = runCommand().exitOverride().configureOutput({ writeErr: () => undefined });
  run.action((argv: string[], opts: Record<string, unknown>, command: Command) => {
    seen = { argv, opts, socket: socketOf(command) };
  });
  program.addCommand(run);
  program.parse(args, { from: 'user' });
  if (!seen) throw new Error('run action not called');
  return seen;
}

test('vsw run passes the options after the command to the command', (t) => {
  const got = parseRun(['run', '--network', 'default', 'ping', '-c', '1', '10.88.0.2']);
  t.deepEqual(got.argv, ['ping', '-c', '1', '10.88.0.2']);
  t.is(got.opts.network, 'default');
});

test('vsw run accepts -- before the command', (t) => {
  const got = parseRun(['run', '--network', 'n', '--ip', '10.88.0.9', '--', 'sh', '-c', 'exit 3']);
  t.deepEqual(got.argv, ['sh', '-c', 'exit 3']);
  t.is(got.opts.ip, '10.88.0.9');
});

test('--socket works before and after the subcommand; the nearer one wins', (t) => {
  t.is(parseRun(['--socket', '/a', 'run', '--network', 'n', 'true']).socket, '/a');
  t.is(parseRun(['run', '--socket', '/b', '--network', 'n', 'true']).socket, '/b');
  t.is(parseRun(['--socket', '/a', 'run', '--socket', '/b', '--network', 'n', 'true']).socket, '/b');
});

test('vsw run without --network is a usage error', (t) => {
  const err = t.throws(() => parseRun(['run', 'true']));
  t.regex(err?.message ?? '', /--network/);
});

test('parsePublish reads docker-style -p mappings', async (t) => {
  const { parsePublish, formatPublish } = await import('../../src/cli/format.js');
  t.deepEqual(parsePublish('8080:80'), { protocol: 'tcp', hostPort: 8080, containerPort: 80 });
  t.deepEqual(parsePublish('127.0.0.1:5353:53/udp'), { protocol: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 });
  t.is(formatPublish(parsePublish('127.0.0.1:5353:53/udp')), '127.0.0.1:5353->53/udp');
  t.is(formatPublish(parsePublish('8080:80/tcp')), '8080->80/tcp');
  // No host port: the daemon picks one (0 in the request).
  t.deepEqual(parsePublish('80'), { protocol: 'tcp', hostPort: 0, containerPort: 80 });
  t.deepEqual(parsePublish(':80/udp'), { protocol: 'udp', hostPort: 0, containerPort: 80 });
  t.deepEqual(parsePublish('127.0.0.1::80'), { protocol: 'tcp', hostIp: '127.0.0.1', hostPort: 0, containerPort: 80 });
  t.throws(() => parsePublish('0:80'), { message: /^host port 0 in -p 0:80 is out of range: leave the host port out/ });
  for (const bad of ['abc', '8080:80/sctp', '8080:', '1.2.3:80:80', '127.0.0.1:80', '1:2:3']) {
    t.throws(() => parsePublish(bad), { message: new RegExp(`^-p ${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')} is not a port mapping: write HOSTPORT:CONTAINERPORT`) }, bad);
  }
});

test('formatNat prints each network, its host interface and published ports, then the translations', async (t) => {
  const { formatNat } = await import('../../src/cli/format.js');
  const text = formatNat([
    {
      network: 'mynat',
      externalIp: '100.127.0.2',
      counters: { created: 3, expired: 1, refused: 0, active: 2, poolSize: 64512 },
      hostPort: { ifname: 'mynat', rxFrames: 10, rxBytes: 1000, txFrames: 9, txBytes: 900, drops: { natNoMapping: 1 }, dropsTotal: 1 },
      published: [{ protocol: 'tcp', external: '100.127.0.2:8080', target: '172.18.0.2:80', endpoint: 'web' }],
      translations: [{ protocol: 'tcp', inside: '172.18.0.2:40000', external: '100.127.0.2:1024', remote: '198.18.0.2:80', endpoint: 'web', state: 'ESTABLISHED', idleSeconds: 0.5 }],
    },
  ]);
  t.is(
    text,
    [
      'mynat: external 100.127.0.2, 2 active, 3 created, 1 expired, 0 refused (pool 64512 ports per protocol)',
      '  host interface mynat: rx 10 frames, tx 9 frames, drops 1 (natNoMapping=1)',
      '  published 100.127.0.2:8080/tcp -> 172.18.0.2:80 (web)',
      '',
      'NETWORK  PROTO  INSIDE            EXTERNAL          REMOTE         ENDPOINT  STATE        IDLE',
      'mynat    tcp    172.18.0.2:40000  100.127.0.2:1024  198.18.0.2:80  web       ESTABLISHED  0.5',
    ].join('\n'),
  );
});

test('vsw lb: --port PORT[/tcp|udp] and --probe tcp|http[:/PATH], anything else one sentence saying what to write', (t) => {
  t.deepEqual(parseLbPort('80'), { port: 80, protocol: 'tcp' });
  t.deepEqual(parseLbPort('53/udp'), { port: 53, protocol: 'udp' });
  for (const bad of ['0', '65536', '80/sctp', 'http', '']) t.throws(() => parseLbPort(bad), { message: /is not PORT\[\/tcp\|udp\].*pass e\.g\. --port 80/ });
  t.deepEqual(parseProbe('tcp'), { kind: 'tcp' });
  t.deepEqual(parseProbe('http'), { kind: 'http', path: '/' });
  t.deepEqual(parseProbe('http:/healthz'), { kind: 'http', path: '/healthz' });
  for (const bad of ['udp', 'http:healthz', 'https:/']) t.throws(() => parseProbe(bad), { message: /is neither tcp nor http/ });
});

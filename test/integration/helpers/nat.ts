/**
 * Helpers of the nat network tests: an "outside" namespace routed through
 * the host namespace (a veth pair, the host end with an address, the far end
 * with a default route back via the host), small python servers and clients
 * that report the peer address they see, and the host-side state a nat
 * network changes (nftables tables, net.ipv4.ip_forward) with the cleanup of
 * it for a test run's prefix. Traffic only ever goes between namespaces the
 * test created, the host namespace and loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import type { ExecutionContext } from 'ava';
import type { NatNetworkState, NatTranslation } from '../../../src/service/api-types.js';
import { addNetns, inNetns, sh, spawnInNetns, type CommandResult } from './env.js';
import { readLines, teardown, type DaemonHandle, type LineReader } from './daemon.js';
import { TCP_ECHO_CLIENT } from './echo.js';

// ------------------------------------------------------------ addresses

/** A number from the run prefix's random hex digits: spreads ports and subnets of concurrent runs apart. */
export function prefixNumber(prefix: string): number {
  return parseInt(prefix.slice(4, 8), 16) || 0;
}

/** Ten consecutive host ports for a run, between 20000 and 31999 (below the usual ephemeral range). */
export function hostPortBase(prefix: string): number {
  return 20000 + (prefixNumber(prefix) % 1200) * 10;
}

function ipToInt(ip: string): number {
  return ip.split('.').reduce((acc, o) => acc * 256 + Number(o), 0);
}

/** [first, last] address of a CIDR ("default" is 0.0.0.0/0; a bare address is a /32). */
function cidrRange(cidr: string): [number, number] {
  const [addr, len] = cidr === 'default' ? ['0.0.0.0', '0'] : cidr.split('/');
  const bits = len === undefined ? 32 : Number(len);
  const size = 2 ** (32 - bits);
  const first = Math.floor(ipToInt(addr) / size) * size;
  return [first, first + size - 1];
}

/**
 * Three octets `<a>.<b>.K` such that `<a>.<b>.K.0/24` overlaps no route of
 * the host (other runs and benchmarks route their own /24s there), trying K
 * from `start` (1 to 254) on. `a_b` is like "198.18".
 */
export async function freeNet24(a_b: string, start: number): Promise<string> {
  const r = await sh('ip', ['-4', '-j', 'route', 'show', 'table', 'all']);
  const routes = (JSON.parse(r.stdout || '[]') as { dst: string; type?: string }[]).filter((x) => x.dst !== 'default' && (x.type ?? 'unicast') === 'unicast');
  const taken = routes.map((x) => cidrRange(x.dst));
  for (let i = 0; i < 254; i++) {
    const k = ((start - 1 + i) % 254) + 1;
    const [first, last] = cidrRange(`${a_b}.${k}.0/24`);
    if (!taken.some(([f, l]) => f <= last && first <= l)) return `${a_b}.${k}`;
  }
  throw new Error(`every ${a_b}.K.0/24 overlaps a route of this host`);
}

// ------------------------------------------------------- outside namespace

export interface Outside {
  ns: string;
  /** The veth end in the host namespace. */
  hostIf: string;
  /** Its address, the outside namespace's default gateway. */
  hostIp: string;
  /** The outside namespace's own address. */
  ip: string;
}

/**
 * A namespace `ns` reachable from the host through a veth pair: `hostIf`
 * (host side) holds `<net>.1/24`, eth0 inside holds `<net>.2/24` with a
 * default route via `<net>.1`. `net` is three octets, e.g. "198.18.7".
 */
export async function addOutsideNamespace(ns: string, hostIf: string, net: string): Promise<Outside> {
  await addNetns(ns);
  const steps: string[][] = [
    ['link', 'add', hostIf, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns],
    ['link', 'set', hostIf, 'up'],
    ['address', 'add', `${net}.1/24`, 'dev', hostIf],
    ['-n', ns, 'link', 'set', 'lo', 'up'],
    ['-n', ns, 'link', 'set', 'eth0', 'up'],
    ['-n', ns, 'address', 'add', `${net}.2/24`, 'dev', 'eth0'],
    ['-n', ns, 'route', 'add', 'default', 'via', `${net}.1`],
  ];
  for (const args of steps) {
    const r = await sh('ip', args);
    if (r.code !== 0) throw new Error(`ip ${args.join(' ')}: ${r.stderr.trim()}`);
    if (args[0] === 'link' && args[1] === 'add') await sh('sysctl', ['-q', '-w', `net.ipv6.conf.${hostIf}.disable_ipv6=1`]);
  }
  return { ns, hostIf, hostIp: `${net}.1`, ip: `${net}.2` };
}

// ------------------------------------------------------ host-side state

/**
 * The system's nft(8). Not a PATH lookup: under npm and npx, PATH starts with
 * node_modules/.bin, where ava's dependency @vercel/nft installs an `nft` of
 * its own (a file tracer that exits 0 whatever it is asked).
 */
export const NFT = ((): string => {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir === '' || dir.includes('node_modules')) continue;
    if (existsSync(`${dir}/nft`)) return `${dir}/nft`;
  }
  return '/usr/sbin/nft';
})();

/** The names of the nftables tables of family ip. */
export async function nftIpTables(): Promise<string[]> {
  const r = await sh(NFT, ['list', 'tables', 'ip']);
  if (r.code !== 0) throw new Error(`nft list tables ip: ${r.stderr.trim()}`);
  return r.stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .filter((w) => w[0] === 'table' && w[1] === 'ip')
    .map((w) => w[2]);
}

export function readIpForward(): string {
  return readFileSync('/proc/sys/net/ipv4/ip_forward', 'utf8').trim();
}

export async function hostLinkExists(name: string): Promise<boolean> {
  return (await sh('ip', ['link', 'show', 'dev', name])).code === 0;
}

/**
 * What a killed daemon would leave of its nat networks: nftables tables
 * vsw_nat_<prefix>*, and ip_forward turned on. Called after the daemon was
 * stopped. ip_forward goes back to `forwardBefore` only when no vsw nat
 * table of anybody remains (another run's nat network would need it).
 */
export async function removeNatLeftovers(prefix: string, forwardBefore: string | undefined): Promise<void> {
  const mine = `vsw_nat_${prefix.replace(/[^A-Za-z0-9_]/g, '_')}`;
  let tables: string[] = [];
  try {
    tables = await nftIpTables();
  } catch {
    return;
  }
  for (const table of tables.filter((n) => n.startsWith(mine))) await sh(NFT, ['delete', 'table', 'ip', table]);
  const others = tables.filter((n) => n.startsWith('vsw_nat_') && !n.startsWith(mine));
  if (forwardBefore !== undefined && others.length === 0 && readIpForward() !== forwardBefore) {
    try {
      writeFileSync('/proc/sys/net/ipv4/ip_forward', forwardBefore);
    } catch {
      // best effort
    }
  }
}

/** `vsw nat ls --network NAME --json`: that network's state. */
/**
 * The end of a nat test's after hook: the daemon's strict teardown, then the host's leftovers
 * removed; every problem the hook collected, and the teardown's, thrown together at the end.
 */
export async function finishNatTest(prefix: string, d: DaemonHandle | undefined, forwardBefore: string | undefined, problems: string[]): Promise<void> {
  try {
    await teardown(prefix, d);
  } catch (err) {
    problems.push((err as Error).message);
  }
  await removeNatLeftovers(prefix, forwardBefore);
  if (problems.length > 0) throw new Error(problems.join('; '));
}

export async function natState(d: DaemonHandle, network: string): Promise<NatNetworkState & { translations: NatTranslation[] }> {
  const states = await d.vswJson<NatNetworkState[]>(['nat', 'ls', '--network', network, '--json']);
  const s = states.find((x) => x.network === network);
  if (!s) throw new Error(`vsw nat ls --network ${network} --json has no entry for it: ${JSON.stringify(states)}`);
  const { translations } = s;
  if (!translations) throw new Error(`vsw nat ls --network ${network} --json lists no translations field: ${JSON.stringify(s)}`);
  return { ...s, translations };
}

// --------------------------------------------------------------- python

/** An HTTP server answering every GET with "peer IP:PORT"; prints "listening", then "peer IP" per request. */
export const PEER_HTTP_SERVER = `
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("peer %s:%d\\n" % self.client_address[:2]).encode()
        print("peer " + self.client_address[0], flush=True)
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
ThreadingHTTPServer.allow_reuse_address = True
srv = ThreadingHTTPServer(("0.0.0.0", int(sys.argv[1])), H)
print("listening", flush=True)
srv.serve_forever()
`;

/** A UDP server answering every datagram with "peer IP:PORT"; prints "listening", then "peer IP" per datagram. */
export const PEER_UDP_SERVER = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
print("listening", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    print("peer " + peer[0], flush=True)
    s.sendto(("peer %s:%d\\n" % peer).encode(), peer)
`;

const HTTP_GET = `
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=float(sys.argv[2])).read().decode().strip())
except Exception as e:
    print("error %s: %s" % (type(e).__name__, e))
    sys.exit(1)
`;

/** One request on a connected UDP socket: prints the reply, "refused" (ECONNREFUSED) or "timeout"; retries a lost datagram twice. */
const UDP_REQUEST = `
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(float(sys.argv[3]))
s.connect((sys.argv[1], int(sys.argv[2])))
for attempt in range(3):
    try:
        s.send(b"hello")
        print(s.recv(2048).decode().strip())
        sys.exit(0)
    except ConnectionRefusedError:
        print("refused")
        sys.exit(0)
    except socket.timeout:
        continue
print("timeout")
`;

/** One TCP connect: prints "connected" or "failed ERROR". */
const TCP_CONNECT = `
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print("connected")
except OSError as e:
    print("failed %s: %s" % (type(e).__name__, e))
`;

function python(ns: string | null, script: string, args: string[], timeoutMs: number): Promise<CommandResult> {
  return ns === null ? sh('python3', ['-c', script, ...args], { timeoutMs }) : inNetns(ns, 'python3', ['-c', script, ...args], { timeoutMs });
}

/** Starts a python server in `ns` (null: the host) and waits for its "listening"; killed by t.teardown. */
export async function startServer(t: ExecutionContext, ns: string | null, script: string, port: number): Promise<LineReader & { child: ChildProcess }> {
  const child = ns === null ? spawn('python3', ['-c', script, String(port)], { stdio: ['ignore', 'pipe', 'pipe'] }) : spawnInNetns(ns, 'python3', ['-c', script, String(port)]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const lines = readLines(child);
  await lines.waitFor(/^listening$/);
  return Object.assign(lines, { child });
}

/** A long-lived TCP echo client in `ns`, waited for until it is connected; SIGKILLed by t.teardown. */
export async function startEchoClient(t: ExecutionContext, ns: string, ip: string, port: number): Promise<LineReader & { child: ChildProcess }> {
  const child = spawnInNetns(ns, 'python3', ['-c', TCP_ECHO_CLIENT, ip, String(port)]);
  t.teardown(() => {
    child.kill('SIGKILL');
  });
  const lines = readLines(child);
  await lines.waitFor(/^connected$/, 1, 10_000);
  return Object.assign(lines, { child });
}

export function echoCount(lines: LineReader): number {
  return lines.lines.filter((l) => l.startsWith('echo ')).length;
}

/** GET `url` from `ns` (null: the host); `body` is the answer, or "error ..." when there was none. */
export async function httpGet(ns: string | null, url: string, timeoutS = 3): Promise<{ ok: boolean; body: string }> {
  const r = await python(ns, HTTP_GET, [url, String(timeoutS)], (timeoutS + 10) * 1000);
  const body = (r.stdout.trim() || r.stderr.trim()).split('\n').pop() ?? '';
  return { ok: r.code === 0, body };
}

export async function udpRequest(ns: string | null, ip: string, port: number, timeoutS = 1): Promise<string> {
  const r = await python(ns, UDP_REQUEST, [ip, String(port), String(timeoutS)], (timeoutS * 3 + 10) * 1000);
  return r.stdout.trim() || `exit ${r.code}: ${r.stderr.trim()}`;
}

export async function tcpConnect(ns: string | null, ip: string, port: number, timeoutS = 3): Promise<string> {
  const r = await python(ns, TCP_CONNECT, [ip, String(port), String(timeoutS)], (timeoutS + 10) * 1000);
  return r.stdout.trim() || `exit ${r.code}: ${r.stderr.trim()}`;
}

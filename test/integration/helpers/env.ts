/**
 * Shared plumbing for integration tests: a per-run name prefix starting with
 * `vswt`, commands inside namespaces, and a cleanup list that runs even when a
 * test fails. Traffic only ever goes between namespaces a test created.
 */
import { createServer } from 'node:net';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * Polls `check` every `intervalMs` until it returns something other than undefined, and returns
 * that; after timeoutMs it fails with "WHAT: not within N ms". For waiting on a condition instead
 * of sleeping a fixed time.
 */
export async function pollFor<T>(what: string, timeoutMs: number, check: () => Promise<T | undefined>, intervalMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

export function runPrefix(): string {
  return `vswt${randomBytes(2).toString('hex')}`;
}

export interface CommandResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a command and returns its exit code and output; never throws for a non-zero exit. */
export async function sh(file: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

export async function must(file: string, args: string[]): Promise<string> {
  const { stdout } = await execFileP(file, args, { maxBuffer: 64 * 1024 * 1024 });
  return stdout;
}

export function inNetns(ns: string, cmd: string, args: string[], opts: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> {
  return sh('ip', ['netns', 'exec', ns, cmd, ...args], opts);
}

export function spawnInNetns(ns: string, cmd: string, args: string[]): ChildProcess {
  return spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
}

export async function ping(ns: string, ip: string, count = 2): Promise<boolean> {
  const r = await inNetns(ns, 'ping', ['-c', String(count), '-i', '0.2', '-W', '2', ip]);
  return r.code === 0;
}

/** Namespaces whose names start with prefix, as the kernel sees them now. */
export async function namespacesWithPrefix(prefix: string): Promise<string[]> {
  const out = await must('ip', ['netns', 'list']);
  return out.split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(prefix));
}

export async function linksWithPrefix(prefix: string): Promise<string[]> {
  const links = JSON.parse(await must('ip', ['-j', 'link', 'show'])) as { ifname: string }[];
  return links.map((l) => l.ifname).filter((n) => n.startsWith(prefix));
}

/** Removes every namespace (and the processes inside) and host link carrying the prefix. */
export async function removeEverything(prefix: string): Promise<void> {
  for (const ns of await namespacesWithPrefix(prefix)) {
    const pids = (await sh('ip', ['netns', 'pids', ns])).stdout.split('\n').filter(Boolean);
    for (const pid of pids) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
    await sh('ip', ['netns', 'delete', ns]);
  }
  for (const link of await linksWithPrefix(prefix)) await sh('ip', ['link', 'delete', link]);
}

/** Sends raw frames (hex strings) out of `ifname` inside `ns` through an AF_PACKET socket; returns how many the kernel accepted. */
export async function injectFrames(ns: string, ifname: string, framesHex: string[]): Promise<{ sent: number; refused: number }> {
  const script = [
    'import json, socket, sys',
    'frames = json.load(sys.stdin)',
    's = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)',
    `s.bind((${JSON.stringify(ifname)}, 0))`,
    'sent = refused = 0',
    'for f in frames:',
    '    try:',
    '        s.send(bytes.fromhex(f)); sent += 1',
    '    except OSError:',
    '        refused += 1',
    'print(json.dumps({"sent": sent, "refused": refused}))',
  ].join('\n');
  const r = await inNetns(ns, 'python3', ['-c', script], { input: JSON.stringify(framesHex) });
  if (r.code !== 0) throw new Error(`frame injection failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { sent: number; refused: number };
}

/**
 * `ip netns add` a namespace for a test, with IPv6 off: IPv6 router
 * solicitations, MLD reports and DAD probes are multicast, which a switch
 * floods, and they would make "this port saw no frames" assertions racy.
 */
export async function addNetns(name: string): Promise<void> {
  const add = await sh('ip', ['netns', 'add', name]);
  if (add.code !== 0) throw new Error(`ip netns add ${name}: ${add.stderr}`);
  const sysctl = await sh('ip', ['netns', 'exec', name, 'sysctl', '-q', '-w', 'net.ipv6.conf.all.disable_ipv6=1', 'net.ipv6.conf.default.disable_ipv6=1']);
  if (sysctl.code !== 0) throw new Error(`sysctl in ${name}: ${sysctl.stderr}`);
}

/** Live processes whose command line mentions the text (zombies have none, so they do not count). */
export function processesMentioning(text: string): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    if (Number(pid) === process.pid) continue;
    let cmdline = '';
    try {
      cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
    } catch {
      continue;
    }
    if (cmdline.includes(text)) found.push(`${pid}: ${cmdline}`);
  }
  return found;
}

/** A TCP port free on 127.0.0.1 a moment ago (for a daemon's --metrics, a Prometheus server). */
export async function freeLoopbackPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

import { execFile } from 'node:child_process';
import { HostError } from './errors.js';
import { isNetnsPath, validateNetnsRef } from './names.js';

export interface RunOptions {
  /** Kill the command after this many milliseconds (default 30 s): a hung ip(8) must not hang the daemon. */
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

interface RawResult extends RunResult {
  ok: boolean;
  /** Exit code, or a Node error code such as ENOENT when the program could not be started. */
  code: number | string | null;
  signal: NodeJS.Signals | null;
}

const DEFAULT_TIMEOUT_MS = 30_000;

// ip(8) and the kernel's strerror texts are matched below; a translated locale would break that.
const ENV = { ...process.env, LC_ALL: 'C', LANG: 'C' };

export function execRaw(file: string, args: readonly string[], opts: RunOptions): Promise<RawResult> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { env: ENV, timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        if (!err) {
          resolve({ ok: true, code: 0, signal: null, stdout, stderr });
          return;
        }
        const e = err as NodeJS.ErrnoException & { code?: number | string; signal?: NodeJS.Signals | null };
        resolve({ ok: false, code: e.code ?? null, signal: e.signal ?? null, stdout: stdout ?? '', stderr: stderr ?? '' });
      },
    );
  });
}

/** Quote a command line for messages only; nothing here goes through a shell. */
export function formatCommand(file: string, args: readonly string[]): string {
  return [file, ...args].map((a) => (/^[\w@%+=:,./-]+$/.test(a) ? a : JSON.stringify(a))).join(' ');
}

function firstLine(text: string): string {
  const line = text.trim().split('\n')[0] ?? '';
  return line.replace(/^(Error|RTNETLINK answers):\s*/, '').replace(/\.\s*$/, '');
}

function notStartedMessage(file: string, raw: RawResult, command: string): string | undefined {
  if (raw.code === 'ENOENT') {
    return file === 'ip'
      ? 'the "ip" command was not found: install iproute2 (apt-get install iproute2).'
      : `the "${file}" command was not found: install it or check PATH.`;
  }
  if (raw.code === 'EACCES') return `"${file}" cannot be executed (permission denied): check its permissions.`;
  if (raw.signal === 'SIGTERM' && raw.code === null) {
    return `"${command}" did not finish in time and was stopped: check whether the system is overloaded or a namespace is stuck.`;
  }
  return undefined;
}

/**
 * Run a program without a shell. Resolves with its output when it exits with 0;
 * otherwise throws a HostError quoting the command and the first line of stderr.
 */
export async function run(file: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const raw = await execRaw(file, args, opts);
  if (raw.ok) return { stdout: raw.stdout, stderr: raw.stderr };
  const command = formatCommand(file, args);
  const message =
    notStartedMessage(file, raw, command) ??
    `"${command}" failed${raw.stderr.trim() ? `: ${firstLine(raw.stderr)}` : ` with exit code ${String(raw.code)}`}; run it by hand to see the details.`;
  throw new HostError(message, { command, stderr: raw.stderr.trim(), system: true });
}

function where(netns: string | undefined): string {
  return netns === undefined ? 'the host network namespace' : `network namespace "${netns}"`;
}

function ipCmd(netns: string | undefined, rest: string): string {
  if (netns === undefined) return `ip ${rest}`;
  return isNetnsPath(netns) ? `nsenter --net=${netns} ip ${rest}` : `ip -n ${netns} ${rest}`;
}

/** The value following `key` in an ip(8) argument list, e.g. argAfter(['dev','eth0'],'dev') = 'eth0'. */
function argAfter(args: readonly string[], ...keys: string[]): string | undefined {
  for (let i = 0; i < args.length - 1; i++) if (keys.includes(args[i])) return args[i + 1];
  return undefined;
}

/**
 * Turn the stderr of a failed ip(8) call into one sentence. Exported for tests;
 * returns undefined when the text is not one of the failures recognised here.
 */
export function explainIpFailure(args: readonly string[], netns: string | undefined, stderr: string): string | undefined {
  const text = stderr.trim();
  const [object, verb] = args.filter((a) => !a.startsWith('-'));
  let m: RegExpMatchArray | null;

  if (/^nsenter: (cannot open|reassociate to namespace)/m.test(text) && netns !== undefined) {
    return `network namespace ${netns} cannot be entered (${firstLine(text).replace(/^nsenter: /, '')}): check that the path is a network namespace that still exists.`;
  }
  if ((m = text.match(/Cannot open network namespace "([^"]+)": No such file or directory/))) {
    return `network namespace "${m[1]}" does not exist: create it first or check the name with "ip netns list".`;
  }
  if (/Cannot open network namespace: No such file or directory/.test(text)) {
    const name = args[args.length - 1];
    return `network namespace "${name}" does not exist: create it first or check the name with "ip netns list".`;
  }
  if ((m = text.match(/Cannot create namespace file "\/run\/netns\/([^"]+)": File exists/))) {
    return `network namespace "${m[1]}" already exists: delete it first or pick another name.`;
  }
  if (/Operation not permitted|Permission denied/.test(text)) {
    return `"${ipCmd(netns, args.join(' '))}" was refused by the kernel: vsw needs root privileges (CAP_NET_ADMIN), so run it as root or with sudo -E.`;
  }
  if ((m = text.match(/Cannot find device "([^"]+)"/) ?? text.match(/Device "([^"]+)" does not exist/))) {
    return `interface "${m[1]}" does not exist in ${where(netns)}: check the name with "${ipCmd(netns, 'link')}".`;
  }
  if ((m = text.match(/argument "([^"]*)" is wrong: "(name|dev|peer)" not a valid ifname/))) {
    return `interface name "${m[1]}" is invalid: use 1 to 15 bytes without '/', ':' or whitespace.`;
  }
  if (/Address already assigned/.test(text)) {
    const addr = args.find((a) => a.includes('/')) ?? 'the address';
    return `address ${addr} is already assigned in ${where(netns)}: remove it first or pick another address.`;
  }
  if (/File exists/.test(text)) {
    if (object === 'link' && verb === 'add') {
      const name = argAfter(args, 'name') ?? args[args.indexOf('add') + 1];
      return `an interface named "${name}" (or its peer) already exists in ${where(netns)}: delete it first or pick another name.`;
    }
    if (object?.startsWith('r') && 'route'.startsWith(object)) {
      return `that route already exists in ${where(netns)}: delete it first or use "ip route replace".`;
    }
    if (object?.startsWith('a') && 'address'.startsWith(object)) {
      return `that address already exists in ${where(netns)}: remove it first or pick another address.`;
    }
    return `"${ipCmd(netns, args.join(' '))}" failed because the object already exists: remove it first or pick another name.`;
  }
  if (/Nexthop has invalid gateway|Network is unreachable/.test(text)) {
    const gw = argAfter(args, 'via') ?? 'the gateway';
    const dev = argAfter(args, 'dev');
    return `gateway ${gw} is not reachable${dev ? ` through interface "${dev}"` : ''} in ${where(netns)}: the interface must be up and have an address in the gateway's subnet.`;
  }
  if (/mtu less than device minimum|mtu greater than device maximum|Invalid argument/.test(text) && args.includes('mtu')) {
    const dev = argAfter(args, 'dev') ?? 'the interface';
    return `MTU ${argAfter(args, 'mtu')} is outside the range "${dev}" accepts: choose a value between 68 and the device's maximum (1500 is always safe).`;
  }
  if (/Cannot assign requested address/.test(text) && args.includes('address')) {
    return `MAC address ${argAfter(args, 'address')} was refused for "${argAfter(args, 'dev') ?? 'the interface'}": use a unicast, non-zero MAC such as 02:76:0a:32:00:05.`;
  }
  if ((m = text.match(/"([^"]*)" is invalid lladdr/))) {
    return `"${m[1]}" is not a valid MAC address: write six hex bytes separated by colons, such as 02:76:0a:32:00:05.`;
  }
  if (/Unknown device type/.test(text)) {
    const type = argAfter(args, 'type') ?? 'this';
    return `the kernel does not support interfaces of type "${type}": load its module (modprobe ${type}) or use another type.`;
  }
  if (/Device or resource busy/.test(text)) {
    return `"${ipCmd(netns, args.join(' '))}" failed because the device is busy: stop whatever holds it (another vsw daemon?) and retry.`;
  }
  if (/Attribute failed policy validation/.test(text)) {
    return `"${ipCmd(netns, args.join(' '))}" was rejected by the kernel as invalid: check interface names (at most 15 bytes) and values.`;
  }
  return undefined;
}

/**
 * Run ip(8), as `ip -n NETNS ARGS...` when netns is given, and return stdout.
 * Failures become HostErrors with a sentence from explainIpFailure.
 */
export async function ip(args: readonly string[], netns?: string, opts: RunOptions = {}): Promise<string> {
  if (netns !== undefined) validateNetnsRef(netns);
  // ip -n takes only names under /run/netns; a namespace known by path (CNI_NETNS, a docker sandbox) is entered with nsenter.
  const [file, full] =
    netns === undefined ? ['ip', [...args]] : isNetnsPath(netns) ? ['nsenter', [`--net=${netns}`, 'ip', ...args]] : ['ip', ['-n', netns, ...args]];
  const raw = await execRaw(file, full, opts);
  if (raw.ok) return raw.stdout;
  const command = formatCommand(file, full);
  const stderr = raw.stderr.trim();
  const explained = notStartedMessage(file, raw, command) === undefined ? explainIpFailure(args, netns, stderr) : undefined;
  const message =
    explained ??
    notStartedMessage(file, raw, command) ??
    `"${command}" failed${stderr ? `: ${firstLine(stderr)}` : ` with exit code ${String(raw.code)}`}; run it by hand to see the details.`;
  throw new HostError(message, { command, stderr, system: explained === undefined });
}

/** `ip -j ...` parsed; an empty answer (some objects print nothing) becomes []. */
export async function ipJson<T = unknown>(args: readonly string[], netns?: string, opts: RunOptions = {}): Promise<T> {
  const out = await ip(['-j', ...args], netns, opts);
  if (out.trim() === '') return [] as T;
  try {
    return JSON.parse(out) as T;
  } catch (cause) {
    throw new HostError(`"ip -j ${args.join(' ')}" printed output that is not JSON: check that iproute2 is recent (5.0 or later).`, {
      system: true,
      command: formatCommand('ip', ['-j', ...args]),
      cause,
    });
  }
}

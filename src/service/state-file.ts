/**
 * The daemon's state directory (default /var/lib/vsw):
 *
 *   state.json   the desired state: networks with their IPAM, endpoints with
 *                their policies, compartments, and the host changes vsw owns.
 *                Rewritten whole, atomically, before the API answers a change.
 *   runtime.bin  written only by a clean stop (SIGTERM): the connections and
 *                NAT translations in flight, for the next daemon to restore
 *                (src/switch/snapshot.ts). Read once at start, then deleted.
 *   lock         flock-ed by the daemon (and by `vsw system reset`) for as
 *                long as it runs; the kernel drops the lock when the holder
 *                dies, so a crash never leaves a stale one.
 *
 * Atomicity: write-file-atomic writes a temporary file in the same directory,
 * fsyncs it and renames it over state.json; then the directory itself is
 * fsynced so the rename is on disk too. A crash at any instant leaves either
 * the old or the new file, never a torn one.
 *
 * A state file that cannot be read (not JSON, not a vsw state, a format
 * version this build does not know) stops the daemon with one sentence naming
 * the file. It is never overwritten or discarded: it may be the only record
 * of what vsw made on the host.
 */
import { ftruncateSync, readlinkSync, writeSync } from 'node:fs';
import { mkdir, open, readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import writeFileAtomic from 'write-file-atomic';
import { closeFd, lockFile } from '../native/index.js';
import type { SwitchSnapshot } from '../switch/snapshot.js';
import type { PortPolicy } from '../vfp/policy.js';
import type { Compartment, Endpoint, LoadBalancer, NatInfo, Network, OverlayInfo, RemoteEndpointRequest, UplinkInfo } from './api-types.js';

/** The format version of state.json; a file with any other one is refused. */
export const STATE_VERSION = 1;
const RUNTIME_VERSION = 1;

export const STATE_FILE = 'state.json';
export const RUNTIME_FILE = 'runtime.bin';
export const LOCK_FILE = 'lock';
/** write-file-atomic names its temporary file after the target, a dot and a number. */
const TEMPORARY = /^(state\.json|runtime\.bin)\.\d+$/;

export interface SavedNetwork {
  network: Omit<Network, 'endpoints'>;
  ipam: {
    gateway?: string;
    range?: { first: string; last: string };
    /** The addresses handed out, endpoints' and reserved ones alike. */
    allocated: string[];
  };
  nat?: { info: NatInfo; portId: number; table: string | null };
  overlay?: { info: OverlayInfo; tunnelPortId: number; uplinkId: number; remotes: RemoteEndpointRequest[] };
  uplink?: { info: UplinkInfo; portId: number };
  fabric?: { info: UplinkInfo; portId: number };
}

export interface SavedEndpoint {
  endpoint: Endpoint;
  policy: PortPolicy;
}

/** Changes to the host that vsw owns beyond what the networks describe: recorded before they are made. */
export interface HostLedger {
  /** vsw turned net.ipv4.ip_forward on (it was 0) and turns it off with its last nat network. */
  forwardingSetByVsw: boolean;
  /** nftables tables vsw may have installed; any not owned by a nat network is removed at start. */
  nftTables: string[];
  /**
   * The network namespace the daemon runs in ("net:[4026531840]" for the host's own): host
   * interfaces, tables and ip_forward above are that namespace's, and only a reset run there
   * may undo them.
   */
  netns?: string;
}

/** The network namespace this process runs in, as /proc/self/ns/net names it. */
export function currentNetns(): string {
  return readlinkSync('/proc/self/ns/net');
}

export interface SavedState {
  version: typeof STATE_VERSION;
  /** Random, made with the first write and kept: the runtime snapshot names the state it belongs to by this and the generation. */
  id: string;
  /** One more with every write; the runtime snapshot names the generation it was taken at. */
  generation: number;
  /** ISO 8601 time of the write. */
  written: string;
  networks: SavedNetwork[];
  endpoints: SavedEndpoint[];
  compartments: Compartment[];
  /** Absent in files written before load balancers existed. */
  loadBalancers?: LoadBalancer[];
  host: HostLedger;
}

export interface RuntimeState {
  snapshot: SwitchSnapshot;
  /** How long the data plane was gone: the saved connections are that much older. */
  downtimeMs: number;
}

export class StateFileError extends Error {
  override name = 'StateFileError';
}

/** Observes every write of state.json: its duration and size (for the metrics). */
export type WriteObserver = (seconds: number, bytes: number) => void;

export class StateStore {
  private lockFd: number;
  private observer?: WriteObserver;
  /** Size of the last state.json written or read. */
  lastBytes = 0;

  private constructor(
    readonly dir: string,
    lockFd: number,
  ) {
    this.lockFd = lockFd;
  }

  get statePath(): string {
    return join(this.dir, STATE_FILE);
  }

  get runtimePath(): string {
    return join(this.dir, RUNTIME_FILE);
  }

  /**
   * Creates the directory (mode 0700) if needed and takes its lock; `who`
   * says what is asking, for the refusal when another process holds it.
   */
  static async open(dir: string, who = 'the daemon'): Promise<StateStore> {
    try {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    } catch (err) {
      throw new StateFileError(`cannot create the state directory ${dir} (${(err as Error).message}): pass --state-dir with a writable directory.`);
    }
    const lockPath = join(dir, LOCK_FILE);
    let fd: number;
    try {
      fd = lockFile(lockPath);
    } catch (err) {
      const message = (err as Error).message;
      if (/EWOULDBLOCK/.test(message)) {
        const holder = await readFile(lockPath, 'utf8').then((t) => t.trim(), () => '');
        const pid = /^\d+$/.test(holder) ? ` (pid ${holder})` : '';
        throw new StateFileError(`another vsw daemon${pid} is using the state directory ${dir}: stop it first, or give ${who} another --state-dir.`);
      }
      throw new StateFileError(`cannot lock ${lockPath} (${message.replace(/\.$/, '')}): check the permissions of ${dir}.`);
    }
    // The holder's pid, for the refusal above; the lock itself is the flock, not this text.
    ftruncateSync(fd, 0);
    writeSync(fd, `${process.pid}\n`, 0);
    const store = new StateStore(dir, fd);
    await store.removeTemporaries();
    return store;
  }

  /**
   * write-file-atomic's temporary files (state.json.<n>) that a holder killed
   * mid-write left behind: it removes its own only on signals it can catch.
   * With the lock held no one else is writing, so every one of them is stale.
   */
  private async removeTemporaries(): Promise<void> {
    for (const name of await readdir(this.dir)) {
      if (TEMPORARY.test(name)) await rm(join(this.dir, name), { force: true });
    }
  }

  /** The saved state, or null when there is none yet (a first start). */
  async load(): Promise<SavedState | null> {
    const path = this.statePath;
    let text: string;
    try {
      text = await readFile(path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      throw new StateFileError(`cannot read the state file ${path} (${(err as Error).message}): check its permissions; it was left untouched.`);
    }
    this.lastBytes = Buffer.byteLength(text);
    return parseState(text, path);
  }

  onWrite(observer: WriteObserver): void {
    this.observer = observer;
  }

  /** Writes state.json atomically and durably; resolves once it is on disk. */
  async save(state: SavedState): Promise<void> {
    const started = process.hrtime.bigint();
    const text = `${JSON.stringify(state)}\n`;
    await writeFileAtomic(this.statePath, text, { mode: 0o600, fsync: true });
    await fsyncDir(this.dir);
    this.lastBytes = Buffer.byteLength(text);
    this.observer?.(Number(process.hrtime.bigint() - started) / 1e9, this.lastBytes);
  }

  /** The connections and translations of a clean stop, tied to the state generation they belong to. */
  async saveRuntime(snapshot: SwitchSnapshot, stateId: string, generation: number): Promise<number> {
    const header = {
      version: RUNTIME_VERSION,
      stateId,
      generation,
      savedAt: Date.now(),
      conntrack: snapshot.conntrack.length,
      nat: snapshot.nat.map((n) => ({ networkId: n.networkId, words: n.mappings.length })),
    };
    const head = Buffer.from(`${JSON.stringify(header)}\n`);
    const parts = [head, wordsToBuffer(snapshot.conntrack), ...snapshot.nat.map((n) => wordsToBuffer(n.mappings))];
    const data = Buffer.concat(parts);
    await writeFileAtomic(this.runtimePath, data, { mode: 0o600, fsync: true });
    await fsyncDir(this.dir);
    return data.length;
  }

  /**
   * The runtime snapshot left by the last clean stop, if it belongs to this
   * state (`stateId`) at generation `generation`; it is deleted either way, so
   * it is used at most once (a later crash must not bring back connections
   * from before it). Call it at every start, with no state too (null). A
   * snapshot that does not fit is reported through `discarded`, never fatal:
   * connections are a bonus on top of the state.
   */
  async takeRuntime(state: { id: string; generation: number } | null, discarded: (reason: string) => void): Promise<RuntimeState | null> {
    let data: Buffer;
    try {
      data = await readFile(this.runtimePath);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
      discarded(`cannot read ${this.runtimePath}: ${(err as Error).message}`);
      return null;
    } finally {
      await rm(this.runtimePath, { force: true });
    }
    try {
      const nl = data.indexOf(10);
      if (state === null) throw new Error('there is no saved state it could belong to');
      const header = JSON.parse(data.subarray(0, nl).toString('utf8')) as {
        version: number;
        stateId: string;
        generation: number;
        savedAt: number;
        conntrack: number;
        nat: { networkId: number; words: number }[];
      };
      if (header.version !== RUNTIME_VERSION) throw new Error(`format version ${header.version}, not ${RUNTIME_VERSION}`);
      if (header.stateId !== state.id) throw new Error(`it belongs to another state (${header.stateId}, this one is ${state.id})`);
      if (header.generation !== state.generation) throw new Error(`it was saved at state generation ${header.generation}, the state is at ${state.generation}`);
      let at = nl + 1;
      const take = (words: number): Uint32Array => {
        const bytes = words * 4;
        if (!Number.isInteger(words) || words < 0 || at + bytes > data.length) throw new Error('it is truncated');
        const out = new Uint32Array(words);
        for (let i = 0; i < words; i++) out[i] = data.readUInt32LE(at + i * 4);
        at += bytes;
        return out;
      };
      const conntrack = take(header.conntrack);
      const nat = header.nat.map((n) => ({ networkId: n.networkId, mappings: take(n.words) }));
      if (at !== data.length) throw new Error('it has trailing bytes');
      return { snapshot: { conntrack, nat }, downtimeMs: Math.max(0, Date.now() - header.savedAt) };
    } catch (err) {
      discarded(`${this.runtimePath} does not fit: ${(err as Error).message}`);
      return null;
    }
  }

  /** Releases the lock; the store is unusable afterwards. */
  close(): void {
    if (this.lockFd < 0) return;
    closeFd(this.lockFd);
    this.lockFd = -1;
  }

  /** Removes state.json and runtime.bin (vsw system reset); the lock goes with close(). */
  async removeFiles(): Promise<void> {
    await rm(this.statePath, { force: true });
    await rm(this.runtimePath, { force: true });
    await this.removeTemporaries();
    await fsyncDir(this.dir);
  }
}

function wordsToBuffer(words: Uint32Array): Buffer {
  const out = Buffer.alloc(words.length * 4);
  for (let i = 0; i < words.length; i++) out.writeUInt32LE(words[i], i * 4);
  return out;
}

/** The rename of a new state.json is durable only once its directory is. */
async function fsyncDir(dir: string): Promise<void> {
  const handle = await open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** Parses and checks state.json; every refusal is one sentence naming the file. */
export function parseState(text: string, path: string): SavedState {
  const leaveIt = 'it was left untouched: restore it from a backup, or move it away to start with no networks (what it describes stays on the host until removed by hand)';
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new StateFileError(`the state file ${path} is not valid JSON (${(err as Error).message.replace(/\.$/, '')}); ${leaveIt}.`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !('version' in raw)) {
    throw new StateFileError(`the state file ${path} is not a vsw state file (it has no "version"); ${leaveIt}.`);
  }
  const version = (raw as { version: unknown }).version;
  if (version !== STATE_VERSION) {
    throw new StateFileError(
      `the state file ${path} has format version ${JSON.stringify(version)}, which this vsw does not know (it reads version ${STATE_VERSION}): run the vsw that wrote it, or move the file away to start with no networks.`,
    );
  }
  const problem = shapeProblem(raw as Record<string, unknown>);
  if (problem) throw new StateFileError(`the state file ${path} is damaged (${problem}); ${leaveIt}.`);
  return raw as SavedState;
}

/** What is wrong with the structure of a version-1 state, or undefined. Values are checked again where they are used. */
function shapeProblem(s: Record<string, unknown>): string | undefined {
  if (!Number.isInteger(s.generation)) return 'its "generation" is not a whole number';
  if (typeof s.id !== 'string' || s.id.length === 0) return 'it has no "id"';
  for (const key of ['networks', 'endpoints', 'compartments'] as const) {
    if (!Array.isArray(s[key])) return `its "${key}" is not a list`;
  }
  const host = s.host as HostLedger | undefined;
  if (typeof host !== 'object' || host === null || typeof host.forwardingSetByVsw !== 'boolean' || !Array.isArray(host.nftTables)) return 'its "host" ledger is missing or malformed';
  const networks = s.networks as SavedNetwork[];
  for (const [i, n] of networks.entries()) {
    const net = n?.network;
    if (typeof net?.name !== 'string' || !Number.isInteger(net.id) || typeof net.subnet !== 'string' || typeof net.driver !== 'string') return `networks[${i}] lacks a name, id, driver or subnet`;
    if (!Array.isArray(n.ipam?.allocated)) return `network ${net.name} has no IPAM allocations`;
    if ((net as { ipam?: unknown }).ipam !== undefined && (net as { ipam?: unknown }).ipam !== 'dhcp') return `network ${net.name} has an unknown address source`;
    if (n.nat && (typeof n.nat.info?.hostInterface !== 'string' || !Number.isInteger(n.nat.portId))) return `nat network ${net.name} lacks its host interface or port`;
    if (n.overlay && (!Number.isInteger(n.overlay.info?.vni) || !Number.isInteger(n.overlay.tunnelPortId) || !Number.isInteger(n.overlay.uplinkId) || !Array.isArray(n.overlay.remotes))) {
      return `overlay network ${net.name} lacks its VNI, ports or remotes`;
    }
    if (n.uplink && (typeof n.uplink.info?.interface !== 'string' || typeof n.uplink.info.mac !== 'string' || !Number.isInteger(n.uplink.portId))) {
      return `${net.driver} network ${net.name} lacks its uplink interface or port`;
    }
    if (n.fabric && (typeof n.fabric.info?.interface !== 'string' || typeof n.fabric.info.mac !== 'string' || !Number.isInteger(n.fabric.portId))) {
      return `network ${net.name} lacks its fabric port's interface or port`;
    }
  }
  const names = new Set(networks.map((n) => n.network.name));
  for (const [i, e] of (s.endpoints as SavedEndpoint[]).entries()) {
    const ep = e?.endpoint;
    if (typeof ep?.id !== 'string' || typeof ep.netns !== 'string' || typeof ep.ifname !== 'string' || typeof ep.ip !== 'string' || typeof ep.mac !== 'string' || !Number.isInteger(ep.portId)) {
      return `endpoints[${i}] lacks an id, namespace, interface, address, MAC or port`;
    }
    if (!names.has(ep.network)) return `endpoint ${ep.id} is on network ${String(ep.network)}, which the file does not have`;
    if (typeof e.policy !== 'object' || e.policy === null || !Array.isArray(e.policy.layers)) return `endpoint ${ep.id} has no policy`;
  }
  for (const [i, c] of (s.compartments as Compartment[]).entries()) {
    if (typeof c?.name !== 'string') return `compartments[${i}] has no name`;
  }
  if (s.loadBalancers !== undefined) {
    if (!Array.isArray(s.loadBalancers)) return 'its "loadBalancers" is not a list';
    for (const [i, lb] of (s.loadBalancers as LoadBalancer[]).entries()) {
      if (typeof lb?.name !== 'string' || typeof lb.id !== 'string' || typeof lb.vip !== 'string' || !Number.isInteger(lb.port) || !Array.isArray(lb.backends)) return `loadBalancers[${i}] lacks a name, id, VIP, port or backends`;
      if (!names.has(lb.network)) return `load balancer ${lb.name} is on network ${String(lb.network)}, which the file does not have`;
    }
  }
  return undefined;
}

/**
 * A buggy or malicious guest against the vhost-user port (native/src/vhost.rs,
 * virtq.rs, guest_mem.rs), driven by the independent front-end of
 * helpers/vhost_frontend.py (the role QEMU plays) instead of a VM: it writes
 * deliberately broken rings into the memory it shares with the daemon.
 *
 * What the issue asks: every guest address is checked against the memory
 * table before use, and a guest that breaks the ring rules (descriptor loops,
 * out-of-range or wrapping addresses, oversized chains, bad indices, indirect
 * descriptors vsw never offered, bad receive buffers) gets its port stopped
 * and counted, never a crash of the daemon nor a read or write outside its
 * memory. For each kind of break, in a connection of its own:
 *
 * - the daemon is alive and answers (`vsw endpoint ls`);
 * - the VM endpoint is down with a reason naming what the guest did,
 *   vhost.state "broken", and vhost.brokenCount grew by exactly one (one
 *   warning in the daemon's log), however often the guest kicks afterwards;
 * - the harness's own view of the rings: no used entry since the break on
 *   either queue (the broken chain was not given back, and a well-formed frame
 *   sent after the break is not taken), the connection stays, and a read-only
 *   receive buffer was not written;
 * - the other two endpoints (TAPs in namespaces A and B) still ping each other;
 * - a new connection (new rings) gets a frame through again, and A's answer
 *   back: the port recovered without a daemon restart.
 *
 * A frame that fills a good receive buffer and goes on into a broken one is
 * stopped and counted the same way; that the filled buffer is not given to the
 * guest either is a known failure for now (test.failing, see there).
 *
 * A chain shorter than the virtio-net header is the contrast: a runt is given
 * back used (the harness sees that entry, so "no used entry" above is a check
 * that can fail) and the port keeps running. A memory table that lies (a file
 * shorter than the region it claims, a region wrapping the address space),
 * sent by the harness's own Frontend with its setup_memory replaced, is
 * refused without a crash. Removing the VM endpoint while a front-end is
 * connected closes the connection and the socket file.
 *
 * Network (internal, 10.166.0.0/24): A and B by IPAM, V the VM at .50.
 */
import test, { type ExecutionContext } from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, lstatSync, readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { injectFrames, linksWithPrefix, namespacesWithPrefix, ping, processesMentioning, runPrefix, sh } from './helpers/env.js';
import { api, createNetworkWithEndpoints, type DaemonHandle, type EndpointJson, linksIn, processAlive, readLines, startDaemon, teardown, type LineReader } from './helpers/daemon.js';

/** The harness, from the source tree: this file runs from dist/test/integration/. */
const HARNESS = fileURLToPath(new URL('../../../test/integration/helpers/vhost_frontend.py', import.meta.url));

const prefix = runPrefix();
const net = `${prefix}-i`;
const nsA = `${prefix}-a`;
const nsB = `${prefix}-b`;
const V_IP = '10.166.0.50';
const V_MAC = '52:54:00:a6:00:32';
/** The harness's defaults: a 256-entry ring, one 16 MiB region at guest-physical 0x100000. */
const QUEUE = 256;
const REGION_END = '0x1100000';

let d: DaemonHandle;
let a: EndpointJson;
let b: EndpointJson;
let v: EndpointJson;
let vmSocket: string;

test.before(async () => {
  d = await startDaemon(prefix);
  vmSocket = `${d.dir}/${prefix}-vm.sock`;
  [a, b] = await createNetworkWithEndpoints(d, net, '10.166.0.0/24', [nsA, nsB]);
  const id = (await d.vswOk(['endpoint', 'create', '--network', net, '--vhost-user', vmSocket, '--ip', V_IP, '--mac', V_MAC, '--name', `${prefix}-v`])).trim();
  if (!/^[0-9a-f]{12}$/.test(id)) throw new Error(`vsw endpoint create --vhost-user printed ${JSON.stringify(id)}, not an endpoint id`);
  v = await d.vswJson<EndpointJson>(['endpoint', 'inspect', id]);
});

test.after.always(async () => {
  // The harness runs in the root namespace, where removeEverything does not look: each is ended by its own pid.
  for (const s of [...sessions]) await s.kill();
  await teardown(prefix, d);
});

// ---- the harness in session mode -------------------------------------------------------------

interface QueueStatus {
  avail_idx: number;
  used_idx: number;
  used_since_break: { id: number; len: number }[];
}
interface HarnessStatus {
  socket_closed: boolean;
  pid_alive: boolean | null;
  rx: QueueStatus;
  tx: QueueStatus;
  rx_readonly_written?: boolean;
}
interface SendAnswer {
  sent: number;
  used: number;
  used_lens: number[];
}
interface HarnessFrame {
  hex?: string;
  len?: number;
  error?: string;
  overrun?: boolean;
}
interface BreakAnswer {
  how: string;
  queue: 'rx' | 'tx';
  head: number | null;
}

const sessions = new Set<Session>();

/** One front-end connection (`vhost_frontend.py session`): one JSON line per command, matched by id. */
class Session {
  private consumed = 0;
  private lastId = 0;
  private readonly closed: Promise<number>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly out: LineReader,
  ) {
    this.closed = new Promise((resolve) => child.on('close', (code, signal) => resolve(code ?? (signal === null ? -1 : 128))));
    // A harness that died is reported by the next answer it does not give; the pipe's EPIPE adds nothing.
    child.stdin?.on('error', () => undefined);
  }

  /**
   * Connects to the VM endpoint's socket and sets up memory and both rings. The device serves one
   * VMM at a time, so a session a failed test leaves open is ended with that test, not after the file.
   */
  static async open(t: ExecutionContext): Promise<Session> {
    const child = spawn('python3', [HARNESS, 'session', '--socket', vmSocket], { stdio: ['pipe', 'pipe', 'pipe'] });
    const s = new Session(child, readLines(child));
    sessions.add(s);
    t.teardown(() => s.kill());
    const ready = await s.next(10_000);
    if (ready.ok !== true || ready.ready !== true) throw new Error(`the harness did not set up: ${JSON.stringify(ready)} ${s.out.stderr()}`);
    return s;
  }

  private async next(timeoutMs: number): Promise<Record<string, unknown>> {
    await this.out.waitFor(/^\{/, this.consumed + 1, timeoutMs);
    return JSON.parse(this.out.lines.filter((l) => l.startsWith('{'))[this.consumed++]) as Record<string, unknown>;
  }

  async cmd<T>(command: Record<string, unknown>, timeoutMs = 10_000): Promise<T> {
    const id = ++this.lastId;
    this.child.stdin!.write(`${JSON.stringify({ ...command, id })}\n`);
    const answer = await this.next(timeoutMs);
    if (answer.id !== id) throw new Error(`the harness answered ${JSON.stringify(answer)} to command ${id} (${JSON.stringify(command)})`);
    if (answer.ok !== true) throw new Error(`harness ${String(command.cmd)}: ${String(answer.error)}`);
    return answer as T;
  }

  status(): Promise<HarnessStatus> {
    return this.cmd<HarnessStatus>({ cmd: 'status', pid: d.pid });
  }

  /** Ends the connection; the harness must exit 0. */
  async close(): Promise<void> {
    await this.cmd({ cmd: 'close' });
    this.child.stdin!.end();
    const code = await Promise.race([this.closed, sleep(5_000, 'timeout' as const, { ref: false })]);
    if (code === 'timeout') {
      await this.kill();
      throw new Error('the harness did not exit within 5 s of close');
    }
    sessions.delete(this);
    if (code !== 0) throw new Error(`the harness exited ${code}: ${this.out.stderr()}`);
  }

  async kill(): Promise<void> {
    sessions.delete(this);
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    await this.closed;
  }
}

// ---- frames --------------------------------------------------------------------------------

const macHex = (mac: string): string => mac.replace(/:/g, '').toLowerCase();
const ipHex = (ip: string): string => ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');

/** A broadcast ARP request (padded to 60 bytes) from sender MAC/IP for `targetIp`. */
function arpRequest(mac: string, ip: string, targetIp: string): string {
  const hex = `ffffffffffff${macHex(mac)}0806` + `0001080006040001${macHex(mac)}${ipHex(ip)}000000000000${ipHex(targetIp)}`;
  return hex.padEnd(120, '0');
}

/** Whether `hex` is `from`'s ARP reply to V. */
function isArpReply(hex: string, from: EndpointJson): boolean {
  return (
    hex.startsWith(`${macHex(V_MAC)}${macHex(from.mac)}0806`) &&
    hex.slice(28, 44) === '0001080006040002' &&
    hex.slice(44, 64) === `${macHex(from.mac)}${ipHex(from.ip)}` &&
    hex.slice(64, 84) === `${macHex(V_MAC)}${ipHex(V_IP)}`
  );
}

/**
 * V asks for A's address and A's reply arrives in V's receive buffers: a frame through the
 * transmit ring, the switch and A's TAP, and one back. What went wrong, or null.
 */
async function roundTrip(s: Session): Promise<string | null> {
  // Receive buffers first, as a driver posts them before it transmits: A's reply comes back at once.
  const seen = (await s.cmd<{ frames: HarnessFrame[] }>({ cmd: 'receive', count: 0, wait_ms: 20 })).frames;
  const sent = await s.cmd<SendAnswer>({ cmd: 'send', frame: arpRequest(V_MAC, V_IP, a.ip), wait_ms: 2_000 });
  if (sent.used !== 1) return `the backend took ${sent.used} of 1 transmitted chain(s): ${JSON.stringify(sent)}`;
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline) {
    const got = await s.cmd<{ frames: HarnessFrame[] }>({ cmd: 'receive', count: 1, wait_ms: 500 });
    seen.push(...got.frames);
    const bad = seen.find((f) => f.error !== undefined || f.overrun === true);
    if (bad !== undefined) return `a received frame is wrong: ${JSON.stringify(bad)}`;
    if (seen.some((f) => isArpReply(f.hex ?? '', a))) return null;
  }
  return `no ARP reply from A arrived in V's receive ring within 5 s (received: ${JSON.stringify(seen.map((f) => f.hex))})`;
}

// ---- the daemon's view ---------------------------------------------------------------------

/** V as `vsw endpoint inspect` shows it, over the API socket (no CLI process per poll). */
async function view(): Promise<EndpointJson> {
  const r = await api<EndpointJson>(d, 'GET', `/v1/endpoints/${v.id}`);
  if (r.status !== 200) throw new Error(`GET /v1/endpoints/${v.id}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

/** Polls V until `ok`; throws with the last view after timeoutMs. `poke` runs between looks (a trigger that may need repeating). */
async function waitView(what: string, ok: (e: EndpointJson) => boolean, timeoutMs = 5_000, poke?: () => Promise<unknown>): Promise<EndpointJson> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const e = await view();
    if (ok(e)) return e;
    if (d.exited()) throw new Error(`the daemon exited while waiting for V to be ${what}:\n${d.log().split('\n').slice(-8).join('\n')}`);
    if (Date.now() > deadline) throw new Error(`V is not ${what} after ${timeoutMs} ms: ${JSON.stringify(e)}`);
    if (poke !== undefined) await poke();
    await sleep(20);
  }
}

const running = (e: EndpointJson): boolean => e.state === 'up' && e.vhost?.state === 'running';
const waiting = (e: EndpointJson): boolean => e.state === 'down' && e.vhost?.state === 'waiting';

/** The daemon's "the guest broke its virtio ring" warnings, in order. */
function breakWarnings(): { detail?: string; endpoint?: string }[] {
  return d
    .log()
    .split('\n')
    .filter((l) => l.includes('the guest broke its virtio ring'))
    .map((l) => JSON.parse(l) as { detail?: string; endpoint?: string });
}

// ---- tests ---------------------------------------------------------------------------------

test.serial('before any VMM connects, the VM endpoint is down and waits on a socket vsw serves', async (t) => {
  const e = await d.vswJson<EndpointJson>(['endpoint', 'inspect', v.id]);
  t.is(e.state, 'down');
  t.is(e.stateReason, `waiting for its VMM to connect to ${vmSocket}`);
  t.deepEqual(e.vhostUser, { socket: vmSocket, mode: 'server' });
  t.like(e.vhost, { state: 'waiting', connections: 0, brokenCount: 0 });
  t.is(e.ip, V_IP);
  t.is(e.mac, V_MAC);
  t.true(lstatSync(vmSocket).isSocket(), `${vmSocket} is a socket`);
});

test.serial('a well-formed frame goes through the harness: the endpoint is up while connected and A answers into its receive ring', async (t) => {
  const s = await Session.open(t);
  const up = await waitView('running', running);
  t.is(up.stateReason, undefined);
  t.like(up.vhost, { connections: 1, brokenCount: 0 });
  t.regex(up.vhost?.features ?? '', /^0x[0-9a-f]+$/, 'the acked features are shown while connected');
  t.is(await roundTrip(s), null);
  // Twice: the ring goes on after its first use (used and avail indices move on together).
  t.is(await roundTrip(s), null);
  t.true(await ping(nsA, b.ip, 1), 'A -> B');
  await s.close();
  const after = await waitView('waiting again', waiting);
  t.is(after.stateReason, `waiting for its VMM to connect to ${vmSocket}`);
  t.is(after.vhost?.features, undefined, 'no features once the VMM left');
});

interface Kind {
  how: string;
  title: string;
  /** What vhost.broken must say, given the head the harness wrote. */
  reason: (head: number | null) => RegExp;
}

const KINDS: Kind[] = [
  { how: 'loop', title: 'a descriptor loop', reason: (h) => new RegExp(`^transmit queue: the chain at descriptor ${h} is longer than the queue \\(${QUEUE}\\): a loop$`) },
  { how: 'out-of-range', title: 'a buffer address outside its memory', reason: (h) => new RegExp(`^transmit queue: descriptor ${h} points at 0xdead0000, outside the guest's memory$`) },
  // The first 32 bytes are the guest's own; the rest is not.
  { how: 'straddle', title: "a buffer running past the end of its memory", reason: (h) => new RegExp(`^transmit queue: descriptor ${h} points at ${REGION_END}, outside the guest's memory$`) },
  { how: 'wrap', title: 'a buffer whose address plus length wraps 64 bits', reason: (h) => new RegExp(`^transmit queue: descriptor ${h} points at 0xfffffffffffffff0, outside the guest's memory$`) },
  { how: 'oversized', title: 'a 160 KiB transmit chain', reason: (h) => new RegExp(`^transmit queue: the transmit chain at descriptor ${h} holds more than \\d+ bytes$`) },
  { how: 'bad-index', title: 'an available entry beyond the queue', reason: (h) => new RegExp(`^transmit queue: available entry \\d+ names descriptor ${h}, beyond the queue's ${QUEUE}$`) },
  { how: 'bad-next', title: 'a next index beyond the queue', reason: (h) => new RegExp(`^transmit queue: descriptor ${h} chains to ${QUEUE + 3}, beyond the queue's ${QUEUE}$`) },
  { how: 'avail-jump', title: 'an available index jumping more than the queue', reason: () => new RegExp(`^transmit queue: the available index ran ${QUEUE + 1} entries ahead of the device, more than the queue's ${QUEUE}$`) },
  { how: 'indirect', title: 'an indirect descriptor without the feature', reason: (h) => new RegExp(`^transmit queue: descriptor ${h} is indirect, a feature vsw did not offer$`) },
  { how: 'rx-out-of-range', title: 'a receive buffer outside its memory', reason: (h) => new RegExp(`^receive queue: descriptor ${h} points at 0xdead0000, outside the guest's memory$`) },
  { how: 'rx-straddle', title: 'a receive buffer running past the end of its memory', reason: (h) => new RegExp(`^receive queue: descriptor ${h} points at ${REGION_END}, outside the guest's memory$`) },
  { how: 'rx-readonly', title: 'a read-only receive buffer', reason: (h) => new RegExp(`^receive queue: descriptor ${h} is read-only in a receive chain$`) },
];

/** V's counters before a break, to check that it is counted exactly once. */
interface Before {
  count: number;
  connections: number;
  warnings: number;
}

async function before(): Promise<Before> {
  const e = await view();
  return { count: e.vhost!.brokenCount, connections: e.vhost!.connections, warnings: breakWarnings().length };
}

/**
 * What every break must leave: the daemon alive and answering, V down with the reason and counted
 * once, nothing more taken from or given to the guest, A and B unharmed. Returns the harness's
 * status of the rings, taken after a well-formed frame was kicked into the broken port.
 */
async function assertStopped(t: ExecutionContext, s: Session, b0: Before, reason: RegExp, poke?: () => Promise<unknown>): Promise<HarnessStatus> {
  const broken = await waitView('broken', (e) => e.vhost?.state === 'broken', 5_000, poke);
  t.false(d.exited(), 'the daemon is running');
  t.true(processAlive(d.pid), `daemon ${d.pid} is alive`);
  const ls = await d.vsw(['endpoint', 'ls']);
  t.is(ls.code, 0, `vsw endpoint ls: ${ls.stderr}`);
  t.regex(ls.stdout.split('\n').find((l) => l.startsWith(v.id)) ?? '', /down: the guest broke its ring/);

  const e = await d.vswJson<EndpointJson>(['endpoint', 'inspect', v.id]);
  t.is(e.state, 'down');
  t.is(e.vhost?.state, 'broken');
  t.regex(e.vhost?.broken ?? '', reason, 'vhost.broken names what the guest did');
  t.is(e.stateReason, `the guest broke its ring (${e.vhost?.broken}): its queues are stopped until the guest resets its NIC or the VMM reconnects`);
  t.is(e.vhost?.brokenCount, b0.count + 1, 'counted once');
  t.is(e.vhost?.connections, b0.connections + 1);
  t.is(broken.vhost?.broken, e.vhost?.broken);
  const logged = breakWarnings();
  t.is(logged.length, b0.warnings + 1, 'one warning in the log');
  t.like(logged[logged.length - 1], { endpoint: v.id, detail: e.vhost?.broken });

  // A stopped port moves nothing more: a well-formed frame kicked now is not taken, nor counted again.
  const late = await s.cmd<SendAnswer>({ cmd: 'send', frame: arpRequest(V_MAC, V_IP, a.ip), wait_ms: 300 });
  t.is(late.used, 0, `a frame sent after the break was taken: ${JSON.stringify(late)}`);
  const st = await s.status();
  t.false(st.socket_closed, 'the connection stays: the VMM may reset the queues');
  t.true(st.pid_alive, 'the harness sees the daemon alive');

  t.true(await ping(nsA, b.ip, 1), 'A -> B while V is broken');
  t.true(await ping(nsB, a.ip, 1), 'B -> A while V is broken');
  t.is((await view()).vhost?.brokenCount, b0.count + 1, 'still counted once');
  return st;
}

/** Closes the broken connection; a new one (fresh memory and rings, no daemon restart) gets a frame through and back. */
async function assertRecovers(t: ExecutionContext, s: Session, b0: Before): Promise<void> {
  await s.close();
  const left = await waitView('waiting again', waiting);
  t.is(left.vhost?.brokenCount, b0.count + 1, 'the count stays after the VMM left');
  t.is(left.vhost?.broken, undefined);
  const again = await Session.open(t);
  const up = await waitView('running again', running);
  t.is(up.stateReason, undefined);
  t.is(await roundTrip(again), null, 'a frame through after the reconnect');
  await again.close();
  await waitView('waiting again', waiting);
}

/** A asks for V's address: a broadcast for V's receive queue (`size` bytes, padded). */
const fromA = (size = 60) => () => injectFrames(nsA, a.ifname, [arpRequest(a.mac, a.ip, V_IP).padEnd(2 * size, '0')]);

for (const kind of KINDS) {
  test.serial(`${kind.how}: a guest that writes ${kind.title} gets its port stopped and counted; the daemon and the other ports go on, and a new connection works`, async (t) => {
    const rx = kind.how.startsWith('rx-');
    const b0 = await before();
    const s = await Session.open(t);
    await waitView('running', running);
    // A receive break must be the first buffer the backend takes, so the harness posts none before it.
    if (!rx) t.is(await roundTrip(s), null, 'a frame through before the break');
    const br = await s.cmd<BreakAnswer>({ cmd: 'break', how: kind.how });
    t.is(br.queue, rx ? 'rx' : 'tx');
    // Something for V's receive queue, again until the backend has looked.
    const poke = rx ? fromA() : undefined;
    if (poke !== undefined) await poke();
    const st = await assertStopped(t, s, b0, kind.reason(br.head), poke);
    t.deepEqual(st.tx.used_since_break, [], 'no used entry on the transmit queue since the break');
    t.deepEqual(st.rx.used_since_break, [], 'no used entry on the receive queue since the break');
    if (kind.how === 'rx-readonly') t.false(st.rx_readonly_written, 'the backend wrote into a buffer the guest lent it read-only');
    await assertRecovers(t, s, b0);
  });
}

/** The rings after a frame that began in a good receive buffer and went on into a broken one. */
let spanning: HarnessStatus | undefined;

test.serial('a frame that fills a good receive buffer and goes on into an out-of-range one stops the port and is counted; the daemon goes on', async (t) => {
  const b0 = await before();
  const s = await Session.open(t);
  await waitView('running', running);
  // One 64-byte buffer, then the broken one: a 100-byte frame (112 with its header) needs both.
  await s.cmd({ cmd: 'receive', buffers: 1, buffer_size: 64, count: 0, wait_ms: 20 });
  const br = await s.cmd<BreakAnswer>({ cmd: 'break', how: 'rx-out-of-range' });
  const poke = fromA(100);
  await poke();
  spanning = await assertStopped(t, s, b0, new RegExp(`^receive queue: descriptor ${br.head} points at 0xdead0000, outside the guest's memory$`), poke);
  t.deepEqual(spanning.tx.used_since_break, []);
  await assertRecovers(t, s, b0);
});

// A frame whose second receive chain is broken gives back the first too (put_frame rewinds):
// the guest never sees part of a frame it could not reassemble.
test.serial('... and no part of that frame is given to the guest (no used entry since the break)', (t) => {
  t.truthy(spanning, 'the test before got as far as the break');
  t.deepEqual(spanning?.rx.used_since_break, []);
});

test.serial('a chain shorter than the virtio-net header is a runt, not a break: given back used, and the port keeps running', async (t) => {
  const count = (await view()).vhost!.brokenCount;
  const s = await Session.open(t);
  await waitView('running', running);
  const br = await s.cmd<BreakAnswer>({ cmd: 'break', how: 'short-header' });
  const deadline = Date.now() + 5_000;
  let st = await s.status();
  while (st.tx.used_since_break.length === 0 && Date.now() < deadline) {
    await sleep(20);
    st = await s.status();
  }
  // The harness sees a used entry when there is one: the empty lists of the breaks above are not blind.
  t.deepEqual(st.tx.used_since_break, [{ id: br.head!, len: 0 }]);
  const e = await view();
  t.is(e.vhost?.state, 'running');
  t.is(e.state, 'up');
  t.is(e.vhost?.brokenCount, count);
  t.is(await roundTrip(s), null, 'frames go on in the same connection');
  await s.close();
  await waitView('waiting again', waiting);
});

/**
 * A front-end whose SET_MEM_TABLE lies, from the harness's own Frontend with its setup_memory
 * replaced (the harness has no option for it). Prints {"refused": bool, "error": ...}.
 */
const LYING_TABLE = `
import json, os, struct, sys, types
sys.path.insert(0, sys.argv[1])
import vhost_frontend as vf
how = sys.argv[3]
class Lying(vf.Frontend):
    def setup_memory(self, off):
        self.memfd = os.memfd_create("vsw-test-lying", os.MFD_CLOEXEC)
        if how == "short-file":  # a region of 16 MiB in a file of 8: touching its second half is SIGBUS
            os.ftruncate(self.memfd, self.size // 2)
            region = (vf.GPA_BASE, self.size, vf.UA_BASE, 0)
        else:  # "wrap": guest-physical address + size overflows 64 bits
            os.ftruncate(self.memfd, self.size)
            region = (2**64 - 4096, self.size, vf.UA_BASE, 0)
        self.msg(vf.SET_MEM_TABLE, struct.pack("=II", 1, 0) + struct.pack("=QQQQ", *region), fds=[self.memfd])
        raise vf.HarnessError("ACCEPTED")
a = types.SimpleNamespace(socket=sys.argv[2], queue_size=256, mem_mb=16, mmap_offset=0, timeout_ms=3000,
                          features=[int(b) for b in vf.DEFAULT_FEATURES.split(",")], no_reply_ack=False)
try:
    Lying(a)
    out = {"refused": False, "error": "the rings were set up"}
except vf.HarnessError as e:
    out = {"refused": str(e) != "ACCEPTED", "error": str(e)}
print(json.dumps(out))
`;

test.serial('a memory table that lies (a file shorter than its region, a region wrapping the address space) is refused without a crash', async (t) => {
  const cases = [
    { how: 'short-file', detail: 'memory region 0 needs 16777216 bytes but its file has 8388608' },
    { how: 'wrap', detail: 'memory region 0 wraps around the address space' },
  ];
  for (const c of cases) {
    const connections = (await view()).vhost!.connections;
    const r = await sh('python3', ['-c', LYING_TABLE, dirname(HARNESS), vmSocket, c.how], { timeoutMs: 10_000 });
    t.is(r.code, 0, `${c.how}: ${r.stderr}`);
    const out = JSON.parse(r.stdout) as { refused: boolean; error: string };
    t.true(out.refused, `${c.how}: the backend took the table (${out.error})`);
    t.regex(out.error, /^request 5: (backend closed the socket|backend refused it)/, c.how);
    t.false(d.exited(), `${c.how}: the daemon is running`);
    const e = await waitView(`waiting after the ${c.how} table`, (x) => waiting(x) && x.vhost!.connections === connections + 1);
    t.is(e.vhost?.broken, undefined, c.how);
    const said = d
      .log()
      .split('\n')
      .filter((l) => l.includes(`"detail":"${c.detail}"`));
    t.is(said.length, 1, `${c.how}: the daemon says why it dropped the VMM`);
  }
  t.is((await d.vsw(['endpoint', 'ls'])).code, 0);
  const s = await Session.open(t);
  await waitView('running', running);
  t.is(await roundTrip(s), null, 'an honest front-end afterwards');
  await s.close();
  await waitView('waiting again', waiting);
});

/** The harness's Frontend handing over pipes where the protocol says eventfds. Prints {"refused": bool, "error": ...}. */
const PIPES_FOR_EVENTFDS = `
import json, os, sys, types
sys.path.insert(0, sys.argv[1])
import vhost_frontend as vf
os.eventfd = lambda *args, **kwargs: os.pipe()[1]
a = types.SimpleNamespace(socket=sys.argv[2], queue_size=256, mem_mb=16, mmap_offset=0, timeout_ms=3000,
                          features=[int(b) for b in vf.DEFAULT_FEATURES.split(",")], no_reply_ack=False)
try:
    vf.Frontend(a)
    out = {"refused": False, "error": "the rings were set up"}
except vf.HarnessError as e:
    out = {"refused": True, "error": str(e)}
print(json.dumps(out))
`;

test.serial('a pipe handed over as a kick eventfd is refused: vsw would block or spin on it', async (t) => {
  const connections = (await view()).vhost!.connections;
  const r = await sh('python3', ['-c', PIPES_FOR_EVENTFDS, dirname(HARNESS), vmSocket], { timeoutMs: 10_000 });
  t.is(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { refused: boolean; error: string };
  t.true(out.refused, out.error);
  t.regex(out.error, /^request 12: /, 'refused at the first kick fd (SET_VRING_KICK)');
  t.false(d.exited(), 'the daemon is running');
  await waitView('waiting after the pipes', (x) => waiting(x) && x.vhost!.connections === connections + 1);
  t.is(d.log().split('\n').filter((l) => l.includes('request 12: the file descriptor is not an eventfd')).length, 1, 'the daemon says why it dropped the VMM');
});

/** The harness's Frontend, its guest memory a memfd that allows sealing ("sealable") or not ("plain"); truncates it when told. */
const SHRINKING_VMM = `
import json, os, sys, types
sys.path.insert(0, sys.argv[1])
import vhost_frontend as vf
plain_memfd = os.memfd_create
extra = os.MFD_ALLOW_SEALING if sys.argv[3] == "sealable" else 0
os.memfd_create = lambda name, flags=os.MFD_CLOEXEC: plain_memfd(name, flags | extra)
a = types.SimpleNamespace(socket=sys.argv[2], queue_size=256, mem_mb=16, mmap_offset=0, timeout_ms=3000,
                          features=[int(b) for b in vf.DEFAULT_FEATURES.split(",")], no_reply_ack=False)
fe = vf.Frontend(a)
print(json.dumps({"ready": True}), flush=True)
if sys.stdin.readline().strip() == "shrink":
    try:
        os.ftruncate(fe.memfd, 0)
        out = {"shrunk": True}
    except OSError as e:
        out = {"shrunk": False, "error": e.strerror, "send": fe.send([bytes(60)], wait_ms=2000)}
    print(json.dumps(out), flush=True)
    sys.stdin.readline()
`;

test.serial("a VMM cannot pull the guest's memory from under vsw: a memfd is sealed against shrinking, and one that cannot be sealed is reported", async (t) => {
  for (const kind of ['sealable', 'plain'] as const) {
    const vmm = spawn('python3', ['-c', SHRINKING_VMM, dirname(HARNESS), vmSocket, kind], { stdio: ['pipe', 'pipe', 'pipe'] });
    try {
      const lines = readLines(vmm);
      await lines.waitFor(/"ready": true/, 1, 10_000);
      const e = await waitView(`running with a ${kind} memfd`, running);
      t.is(e.vhost?.memorySealed, kind === 'sealable', `${kind}: vhost.memorySealed`);
      if (kind === 'sealable') {
        vmm.stdin.write('shrink\n');
        await lines.waitFor(/"shrunk"/, 1, 10_000);
        const out = JSON.parse(lines.lines.find((l) => l.includes('"shrunk"'))!) as { shrunk: boolean; error?: string; send?: { used: number } };
        t.false(out.shrunk, 'the kernel refused to shrink the sealed memfd');
        t.is(out.error, 'Operation not permitted');
        t.is(out.send?.used, 1, 'the ring works on after the attempt');
        t.false(d.exited(), 'the daemon is running');
      }
    } finally {
      vmm.kill('SIGKILL');
    }
    await waitView(`waiting after the ${kind} VMM`, waiting);
  }
});

test.serial('removing the VM endpoint while a front-end is connected closes the connection and the socket; nothing with the prefix is left', async (t) => {
  // The kinds, and the frame spanning a good and a broken receive buffer.
  t.is(breakWarnings().length, KINDS.length + 1, 'one warning per break in the whole run');
  t.is((await view()).vhost?.brokenCount, KINDS.length + 1);
  const s = await Session.open(t);
  await waitView('running', running);
  const rm = await d.vsw(['endpoint', 'rm', v.id]);
  t.is(rm.code, 0, rm.stderr);
  t.false(existsSync(vmSocket), `${vmSocket} is gone`);
  const deadline = Date.now() + 2_000;
  let st = await s.status();
  while (!st.socket_closed && Date.now() < deadline) {
    await sleep(20);
    st = await s.status();
  }
  t.true(st.socket_closed, 'the daemon closed the connection');
  await s.close();
  t.false((await d.vswJson<EndpointJson[]>(['endpoint', 'ls', '--json'])).some((e) => e.id === v.id));
  t.true(await ping(nsA, b.ip, 1), 'A -> B after V is gone');

  await d.vswOk(['endpoint', 'rm', a.id, b.id]);
  await d.vswOk(['network', 'rm', net]);
  t.deepEqual(await linksIn(nsA), ['lo']);
  t.deepEqual(await linksIn(nsB), ['lo']);
  for (const ns of [nsA, nsB]) {
    const del = await sh('ip', ['netns', 'delete', ns]);
    t.is(del.code, 0, del.stderr);
  }
  // Asserted before teardown's helpers remove anything.
  t.deepEqual(await namespacesWithPrefix(prefix), []);
  t.deepEqual(await linksWithPrefix(prefix), []);
  t.deepEqual(processesMentioning(vmSocket), [], 'no front-end left');
  t.is(sessions.size, 0, 'every harness session was closed');
  t.deepEqual(readdirSync(d.dir).filter((f) => f.endsWith('.sock')), ['vsw.sock'], 'only the daemon\'s own API socket is left');
});

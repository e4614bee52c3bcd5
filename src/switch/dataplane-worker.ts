/**
 * The data-plane thread. It owns the receive engine (so readiness callbacks
 * run on this thread's event loop, never behind an API call) and the Switch,
 * and takes declarative commands from the control plane by message.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { completeChecksum, packetSendBatch, RX_BATCH, RX_HEADROOM, RX_SLOT_SIZE, RxEngine, segmentTso, udpSendBatch, VhostDevice, VhostEvent, vhostTransmit, VNET_HDR_LEN, vxlanGro, vxlanGroSlots, writeBatch } from '../native/index.js';
import { buildArpRequest } from '../packet/builders.js';
import type { CaptureRecorder } from './capture.js';
import { CaptureSessions } from './capture-sessions.js';
import { MacTable } from './mac-table.js';
import type { DataPlaneCapture, DataPlaneCommand, DataPlaneDhcpReply, DataPlaneDnsQuery, DataPlaneEvent, DataPlaneLog, DataPlaneReply, DataPlaneRequest, DataPlaneVhostEvent, DataPlaneWorkerData, OverlayDataPlaneState, SwitchCounters, VhostPortStatus } from './messages.js';
import { exportSwitchState, importSwitchState } from './snapshot.js';
import { Switch, type FrameIo } from './switch.js';

const MAC_SWEEP_INTERVAL_MS = 1000;
/** Flow and connection expiry runs in slices, so a million entries never stall a batch for long. */
const STATE_SWEEP_INTERVAL_MS = 250;
const STATE_SWEEP_BUDGET = 32768;
/** A cached flow idle this long is forgotten; its connection state (if any) lives on in conntrack. */
const FLOW_IDLE_MS = 30_000;

/**
 * The data plane's clock starts a day in: connection ages restored from a
 * snapshot (src/switch/snapshot.ts) are subtracted from it, and every idle
 * timeout (two hours at most) must fit below it. Only differences of this
 * clock mean anything, so the offset changes nothing else.
 */
const CLOCK_ORIGIN_MS = 86_400_000;
const clock = (): number => performance.now() + CLOCK_ORIGIN_MS;

const data = workerData as DataPlaneWorkerData;
const port = parentPort!;

function log(entry: DataPlaneLog): void {
  port.postMessage(entry);
}

/**
 * The tunnel's arena after the rx slots. Sending, a batch of 64 super-frames cut into 1450-byte
 * segments needs about 4.5 MiB (a full arena is sent early); receiving, 64 coalesced slots of
 * 64 KiB become at most 4.3 MiB of frames.
 */
const TUNNEL_ARENA_BYTES = 6 << 20;

let sw: Switch;
let captures: CaptureSessions;
let recorder: CaptureRecorder;
const engine = new RxEngine((portId, count) => {
  sw.receive(portId, count);
  if (recorder.active) captures.afterBatch();
}, TUNNEL_ARENA_BYTES);

const io: FrameIo = {
  buffer: engine.buffer,
  lengths: engine.lengths,
  slotSize: RX_SLOT_SIZE,
  headroom: RX_HEADROOM,
  vnetHdrLen: VNET_HDR_LEN,
  batchSize: RX_BATCH,
  transmit: writeBatch,
  transmitPackets: packetSendBatch,
  transmitVhost: vhostTransmit,
  sources: engine.sources,
  tunnel: { sendUdp: udpSendBatch, segmentTso, completeChecksum, vxlanGro, vxlanGroSlots, txOffset: engine.txOffset, txSize: TUNNEL_ARENA_BYTES },
};

const pausedPorts = new Map<number, NodeJS.Timeout>();

/** Client mode: how often a vhost-user port tries its VMM's socket while nobody serves it. */
const VHOST_RECONNECT_MS = 1000;

/** vhost-user ports' devices, and the reconnect timer of each client-mode one that is not connected. */
const vhostPorts = new Map<number, { device: VhostDevice; retry: NodeJS.Timeout | null }>();

function addVhostPort(c: Extract<DataPlaneCommand, { op: 'addPort' }>): void {
  const { socket, server } = c.vhostUser!;
  const entry: { device: VhostDevice; retry: NodeJS.Timeout | null } = { device: null as unknown as VhostDevice, retry: null };
  const onEvent = (code: number, detail: string): void => {
    const event: DataPlaneVhostEvent = { event: 'vhost', portId: c.portId, socket, code, detail };
    port.postMessage(event);
    if (code === VhostEvent.DISCONNECTED && !server && vhostPorts.get(c.portId) === entry) scheduleVhostConnect(c.portId, entry);
  };
  entry.device = new VhostDevice(socket, server, onEvent);
  try {
    sw.addPort(c, entry.device.handle);
    try {
      engine.addVhostPort(c.portId, entry.device);
    } catch (err) {
      sw.removePort(c.portId);
      throw err;
    }
  } catch (err) {
    entry.device.close();
    throw err;
  }
  vhostPorts.set(c.portId, entry);
  if (!server) scheduleVhostConnect(c.portId, entry, 0);
}

function scheduleVhostConnect(portId: number, entry: { device: VhostDevice; retry: NodeJS.Timeout | null }, delay = VHOST_RECONNECT_MS): void {
  if (entry.retry !== null) return;
  entry.retry = setTimeout(() => {
    entry.retry = null;
    if (vhostPorts.get(portId) !== entry) return;
    let connected = false;
    try {
      connected = entry.device.connect();
    } catch (err) {
      log({ log: 'warn', msg: 'vhost-user port cannot connect to its VMM', fields: { portId, socket: entry.device.path, err: (err as Error).message } });
    }
    if (!connected) scheduleVhostConnect(portId, entry);
  }, delay);
}

function removeVhostPort(portId: number): void {
  const entry = vhostPorts.get(portId);
  if (entry === undefined) return;
  vhostPorts.delete(portId);
  if (entry.retry !== null) clearTimeout(entry.retry);
  entry.device.close();
}

function vhostStatus(portId?: number): VhostPortStatus[] {
  const out: VhostPortStatus[] = [];
  for (const [id, { device }] of vhostPorts) if (portId === undefined || id === portId) out.push({ portId: id, socket: device.path, server: device.server, ...device.status() });
  return out;
}

function resumePort(portId: number): void {
  pausedPorts.delete(portId);
  if (sw.hasPort(portId)) engine.setPaused(portId, false);
}

const vfpOptions = data.vfp ?? {};
sw = new Switch(
  io,
  new Float64Array(data.counters),
  new MacTable(data.macTable),
  {
    portStopped(portId, errno) {
      engine.removePort(portId);
      const event: DataPlaneEvent = { event: 'portDown', portId, errno, fd: sw.portFd(portId) };
      port.postMessage(event);
    },
    dhcpReply(networkId, frame, partial) {
      const reply: DataPlaneDhcpReply = { dhcpReply: true, networkId, frame, partial };
      port.postMessage(reply, [frame.buffer as ArrayBuffer]);
    },
    dnsQuery(networkId, portId, frame) {
      const query: DataPlaneDnsQuery = { dnsQuery: true, networkId, portId, fd: sw.portFd(portId), frame };
      port.postMessage(query, [frame.buffer as ArrayBuffer]);
    },
    pausePort(portId, ms) {
      // The egress shaper: stop reading until the port's bucket is out of debt; the TAP queue holds the rest.
      if (pausedPorts.has(portId) || !engine.setPaused(portId, true)) return;
      pausedPorts.set(portId, setTimeout(resumePort, Math.max(1, Math.ceil(ms)), portId));
    },
  },
  clock,
  {
    vfp: {
      maxFlows: vfpOptions.maxFlows,
      conntrack: vfpOptions.maxConnectionsPerPort !== undefined ? { maxPerPort: vfpOptions.maxConnectionsPerPort } : undefined,
    },
  },
);

recorder = sw.capture;
captures = new CaptureSessions(
  recorder,
  clock,
  (message: DataPlaneCapture, transfer?: ArrayBuffer[]) => port.postMessage(message, transfer),
  data.captureInFlight ? new Int32Array(data.captureInFlight) : null,
);

const sweepTimer = setInterval(() => {
  const now = clock();
  sw.macTable.sweep(now);
  sw.sweepOverlay(now);
}, MAC_SWEEP_INTERVAL_MS);

// Refusals at the connection bound are logged at most once per interval, with the count since the last line.
let refusedLogged = 0;
const stateTimer = setInterval(() => {
  const now = clock();
  sw.vfp.conntrack.sweep(now, STATE_SWEEP_BUDGET);
  sw.sweepFlows(now, STATE_SWEEP_BUDGET, FLOW_IDLE_MS);
  sw.sweepNat(now, STATE_SWEEP_BUDGET);
  sw.sweepLb(now, STATE_SWEEP_BUDGET);
}, STATE_SWEEP_INTERVAL_MS);
const limitTimer = setInterval(() => {
  const { refused } = sw.vfp.conntrack.counters();
  const full = sw.vfp.stats.flowTableFull;
  if (refused > refusedLogged) {
    log({
      log: 'warn',
      msg: 'new connections refused at the per-port connection bound; raise --max-connections-per-port or find the port opening them',
      fields: { refusedSinceLastReport: refused - refusedLogged, refusedTotal: refused },
    });
    refusedLogged = refused;
  }
  for (const nat of sw.natCounters()) {
    const refusedNat = nat.counters.refused;
    const logged = natRefusedLogged.get(nat.networkId) ?? 0;
    if (refusedNat > logged) {
      log({
        log: 'warn',
        msg: 'NAT port pool exhausted: new flows dropped; widen the network\'s --nat-ports range or find the container opening them',
        fields: { networkId: nat.networkId, refusedSinceLastReport: refusedNat - logged, refusedTotal: refusedNat, poolSize: nat.counters.poolSize },
      });
      natRefusedLogged.set(nat.networkId, refusedNat);
    }
  }
  if (full > flowTableFullLogged) {
    log({ log: 'warn', msg: 'flow table full: new flows run uncached through the slow path; raise --max-flows', fields: { uncachedSinceLastReport: full - flowTableFullLogged } });
    flowTableFullLogged = full;
  }
}, 10_000);
let flowTableFullLogged = 0;
const natRefusedLogged = new Map<number, number>();

/**
 * TAP writes of gratuitous ARP per loop turn (each is flooded to its whole
 * network, so a thousand endpoints on one network make a million writes):
 * about 3 ms of work, after which the frames waiting to be forwarded go first.
 */
const ANNOUNCE_FRAMES_PER_TURN = 2048;

/**
 * A gratuitous ARP from each endpoint into its network, paced. A container
 * whose TAP lost its carrier (the daemon was away) has flushed its neighbours
 * and retries an unanswered ARP only once a second; hearing the peer announce
 * itself, its kernel updates the waiting entry and sends at once.
 */
function announce(endpoints: { portId: number; ip: string; mac: string }[], from = 0): void {
  let budget = ANNOUNCE_FRAMES_PER_TURN;
  let i = from;
  while (i < endpoints.length && budget > 0) {
    const e = endpoints[i++];
    if (sw.inject(e.portId, buildArpRequest({ srcMac: e.mac, srcIp: e.ip, targetIp: e.ip }))) budget -= sw.floodSize(e.portId);
  }
  if (i < endpoints.length) setImmediate(announce, endpoints, i);
}

type Op = DataPlaneCommand['op'];
type CommandOf<K extends Op> = Extract<DataPlaneCommand, { op: K }>;
/** What one feature contributes to the worker: a handler for each of its commands. */
type Handlers<K extends Op> = { [P in K]: (command: CommandOf<P>) => unknown };

/** Networks and ports: the switch's own. */
const portCommands: Handlers<'addNetwork' | 'removeNetwork' | 'addPort' | 'removePort' | 'vhostStatus' | 'switchCounters' | 'macEntries' | 'stages'> = {
  addNetwork: (c) => {
    sw.addNetwork(c.networkId, c.name, c.spec);
    captures.networkAdded(c.networkId);
    if (c.spec.overlay) captures.portAdded(c.spec.overlay.tunnelPortId, c.networkId);
  },
  removeNetwork: (c) => {
    sw.removeNetwork(c.networkId);
    captures.networkRemoved(c.networkId);
  },
  addPort: (c) => {
    if (c.vhostUser !== undefined) {
      addVhostPort(c);
      captures.portAdded(c.portId, c.networkId);
      return;
    }
    sw.addPort(c);
    try {
      // A fabric address has no fd of its own: its frames come in through its fabric port's.
      // An uplink or fabric port's fd is a packet socket (uplinkMac says so): read in batches.
      if (c.fd >= 0 && c.uplinkMac !== undefined) engine.addPacketPort(c.portId, c.fd);
      else if (c.fd >= 0) engine.addPort(c.portId, c.fd);
    } catch (err) {
      sw.removePort(c.portId);
      throw err;
    }
    captures.portAdded(c.portId, c.networkId);
  },
  removePort: (c) => {
    // Stop polling first: once this returns, the fd is out of epoll and the caller may close it.
    engine.removePort(c.portId);
    const timer = pausedPorts.get(c.portId);
    if (timer) clearTimeout(timer);
    pausedPorts.delete(c.portId);
    sw.removePort(c.portId);
    removeVhostPort(c.portId);
    captures.portRemoved(c.portId);
  },
  vhostStatus: (c) => vhostStatus(c.portId),
  switchCounters: (): SwitchCounters => ({ macTable: sw.macTable.counters(), batches: sw.batches, ports: sw.portCount, vfp: sw.vfp.counters() }),
  macEntries: () => sw.macTable.entries(clock()),
  stages: (c) => sw.stages(c.networkId),
};

/** VFP: policies and what inspects them. */
const policyCommands: Handlers<'setPolicy' | 'flows' | 'trace' | 'ruleHits'> = {
  setPolicy: (c) => {
    sw.setPolicy(c.portId, c.policy);
    // A new policy starts with a full bucket: a port paused under the old cap reads again now.
    const timer = pausedPorts.get(c.portId);
    if (timer) {
      clearTimeout(timer);
      resumePort(c.portId);
    }
  },
  flows: (c) => sw.flowEntries(clock(), c.portId),
  trace: (c) => sw.trace(c.portId, c.direction === 'out' ? 0 : 1, c.frame),
  ruleHits: (c) => sw.ruleHits(c.portId),
};

/** nat networks. */
const natCommands: Handlers<'setPublished' | 'nat'> = {
  setPublished: (c) => sw.setPublished(c.networkId, c.published),
  nat: (c) => sw.natState(clock(), c.networkId, c.countersOnly),
};

/** Load balancers, on any network. */
const lbCommands: Handlers<'setBalancers' | 'lb' | 'setNames' | 'deliver'> = {
  setBalancers: (c) => sw.setBalancers(c.networkId, c.balancers),
  lb: (c) => sw.lbState(clock(), c.networkId),
  setNames: (c) => sw.setNames(c.networkId, c.records),
  // The fd too: the port the query came from may have gone and its id been given to another.
  deliver: (c) => sw.portFd(c.portId) === c.fd && sw.deliver(c.portId, c.frame),
};

/** overlay networks: the underlay sockets, peers and remote endpoints. */
const overlayCommands: Handlers<'addUplink' | 'removeUplink' | 'setPeers' | 'addRemote' | 'removeRemote' | 'overlay'> = {
  addUplink: (c) => {
    const { op: _op, ...cfg } = c;
    sw.addUplink(cfg);
    try {
      engine.addUdpPort(cfg.uplinkId, cfg.fds[0]);
    } catch (err) {
      sw.removeUplink(cfg.uplinkId);
      throw err;
    }
  },
  removeUplink: (c) => {
    sw.removeUplink(c.uplinkId);
    engine.removePort(c.uplinkId);
  },
  setPeers: (c) => sw.setPeers(c.networkId, c.peers),
  addRemote: (c) => sw.addRemote(c.networkId, c.remote),
  removeRemote: (c) => sw.removeRemote(c.networkId, c.remote),
  overlay: (c): OverlayDataPlaneState => ({ networks: sw.overlayState(clock(), c.networkId, c.countersOnly), decap: sw.decapCounters() }),
};

/** `vsw capture`: sessions on the switch's recorder (src/switch/capture-sessions.ts). */
const captureCommands: Handlers<'startCapture' | 'stopCapture'> = {
  startCapture: (c) => captures.start(c.target, c.points, c.snaplen),
  stopCapture: (c) => captures.stop(c.slot),
};

/** Restarts: handing the state to the next daemon, taking it from the last, announcing endpoints that came back; and the stop. */
const lifecycleCommands: Handlers<'snapshot' | 'importState' | 'announce' | 'inject' | 'stop'> = {
  snapshot: () => {
    // Nothing may change the tables after they are read: every port stops receiving first, for good.
    for (const id of sw.receivingPortIds()) engine.removePort(id);
    return exportSwitchState(sw, clock());
  },
  importState: (c) => importSwitchState(sw, c.snapshot, clock(), c.downtimeMs, c.portIds),
  announce: (c) => announce(c.endpoints),
  inject: (c) => sw.inject(c.portId, c.frame),
  stop: () => {
    clearInterval(sweepTimer);
    clearInterval(stateTimer);
    clearInterval(limitTimer);
    captures.close();
    for (const timer of pausedPorts.values()) clearTimeout(timer);
    for (const id of [...vhostPorts.keys()]) removeVhostPort(id);
    engine.close();
    port.close();
  },
};

/** Every command, from the features that contribute them; the type makes a missing one a compile error. */
const handlers: Handlers<Op> = { ...portCommands, ...policyCommands, ...natCommands, ...lbCommands, ...overlayCommands, ...captureCommands, ...lifecycleCommands };

function execute(command: DataPlaneCommand): unknown {
  return (handlers[command.op] as (c: DataPlaneCommand) => unknown)(command);
}

port.on('message', (request: DataPlaneRequest) => {
  let reply: DataPlaneReply;
  try {
    reply = { id: request.id, ok: true, result: execute(request.command) };
  } catch (err) {
    reply = { id: request.id, ok: false, error: err instanceof Error ? err.message : String(err) };
  }
  if (request.command.op === 'stop') return; // the port is closed; the worker exits on its own
  port.postMessage(reply);
});

port.postMessage({ ready: true });

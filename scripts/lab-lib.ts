/**
 * A multi-host vsw lab on one machine: what `scripts/lab` (scripts/lab.ts)
 * builds and removes, and what the overlay scenario of `npm run bench`
 * (scripts/bench/scenario-overlay.ts) builds on.
 *
 * Topology (P is the prefix, `vswlab` by default; tests and the bench use
 * vswtXXXX so that scripts/cleanup.sh finds their leftovers):
 *
 *   P-ul: the underlay, a namespace holding bridge br0 (192.168.56.0/24 is
 *   only ever configured inside the lab's namespaces: the real host is not
 *   touched)
 *        br0
 *       /   \          (one veth per host: h1, h2, ... enslaved to br0)
 *   P-h1     P-h2      "hosts": eth0 192.168.56.11/24, .12/24, ...
 *   vsw daemon         one daemon per host, run inside its namespace with
 *   in P-h1            `ip netns exec`, socket /run/vsw-lab/P-hI.sock,
 *     |                log /run/vsw-lab/P-hI.log; overlay network "blue"
 *   P-h1-c1, P-h1-c2   (VNI 4096, 10.10.0.0/24, VTEP = the host's eth0,
 *                      peers = the other hosts); containers are namespaces
 *                      attached with `vsw endpoint create --name cJ`
 *
 * What was built is recorded in /run/vsw-lab/P.json (the LabDescription
 * below), written as the build goes, so `down` finds the daemons even after
 * an `up` that was killed half-way. `down` also works without it: it stops
 * every process inside a P-* namespace and deletes all P-* namespaces.
 *
 * With --lan (buildLan) the lab also gets a physical LAN, the network that
 * transparent and l2bridge networks put containers on:
 *
 *   P-out 198.51.100.2 --- P-rt (router, ip_forward) 192.168.57.1
 *                                  |
 *   P-lan: bridge br0 192.168.57.2/24, dnsmasq serving DHCP on it for
 *          192.168.57.50-.99 (leases in /run/vsw-lab/P-dnsmasq.leases)
 *        /      \           (ports h1, h2, ...: veths whose other end is
 *   P-h1 eth1   P-h2 eth1    eth1 in the host namespace, where the daemons run)
 *   vsw network "lan": -d transparent --uplink eth1 --gateway 192.168.57.1,
 *   addresses from the host's own /28 of 192.168.57.128/25 (outside the
 *   DHCP pool); one container P-hI-l1 per host. With --lan-mode l2bridge
 *   the network is -d l2bridge and eth1 has the host's own address
 *   192.168.57.(10+i)/24, which l2bridge requires.
 *
 * With --lan-mode l2tunnel (buildFabric) the hosts are not on the LAN
 * themselves: a fabric host stands between them and it (container host ->
 * fabric host -> the rest of the network, Azure's model):
 *
 *   P-lan br0 ---- port fab ---- P-fab eth1 192.168.57.9/24: its own vsw
 *                                daemon, network "lan" -d l2bridge --uplink
 *                                eth1 --fabric eth2, one fabric endpoint
 *                                hI-l1 per container (vsw fabric add: the
 *                                container's address at its host's MAC)
 *                                P-fab eth2
 *                                    |
 *   P-tor: bridge br0, the "top of rack" switch: port fab (not isolated,
 *          no learning) and ports h1, h2, ... (isolated: they reach only fab)
 *        /      \
 *   P-h1 eth1   P-h2 eth1        192.168.57.(10+i)/24; network "lan" -d
 *                                l2tunnel --uplink eth1: every container
 *                                frame goes to the fabric host
 *
 * With --controller (buildControl) the hosts' overlay is not configured
 * host by host but through the network controller (docs/CONTROLLER.md):
 *
 *   P-ul: br0 also gets 192.168.56.1/24, and the namespace runs
 *     etcd e1, e2, e3   a 3-member cluster: peers on the namespace's loopback
 *                       (http://127.0.0.1:2380, :2480, :2580), clients on
 *                       br0's address (http://192.168.56.1:2379, :2479,
 *                       :2579), data in /run/vsw-lab/P-etcd-eK
 *     vsw controller    --etcd <the three client URLs>, socket
 *                       /run/vsw-lab/P-controller.sock
 *   P-hI: the daemon is an agent (`--agent --etcd <the three client URLs>
 *     --host hI --vtep 192.168.56.(10+i)`); the overlay network (--hosts
 *     h1,...) and one endpoint per container (--host hI --name hI-cJ) are
 *     made with `vsw --controller P-controller.sock`, and the agents apply
 *     them. The clients listen on br0 because each host namespace has a
 *     loopback of its own: 127.0.0.1 in P-hI is not the underlay's.
 *
 * For the bench there is a second topology on the same underlay, the
 * kernel's own VXLAN (kernelVxlanUp): namespaces P-k1, P-k2 with eth0
 * 192.168.56.101, .102, a kernel vxlan0 (same VNI, UDP 4789, nolearning,
 * an all-zeros FDB entry per peer), a Linux bridge, and a veth to a
 * container namespace P-kI-c1 (10.11.0.0/24, MTU underlay - 50).
 *
 * The lab drives vsw only through its CLI, as a user would (only its waits
 * and `status` read the controller's and the daemons' APIs directly, with
 * one GET each instead of a CLI start per look). Commands go
 * through scripts/bench-lib.ts (cmd, start, waitFor, iperf3 -J parsing), so
 * an interrupt (SIGINT) cuts them short the same way it does in the bench.
 */
import { spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdir, readFile, readdir, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import {
  BenchError,
  intOption,
  Interrupted,
  cmd,
  exited,
  ifMtu,
  parseIperfJson,
  parsePrefix,
  prefixesOverlap,
  sleep,
  start,
  stop,
  tcpResult,
  udpResult,
  waitFor,
  type CmdOptions,
  type CmdResult,
  type TcpResult,
  type UdpResult,
} from './bench-lib.js';

/** The checkout: this file runs from dist/scripts/. */
export const REPO_ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const CLI = path.join(REPO_ROOT, 'dist/src/cli/main.js');
/** Sockets, logs and the state file of every lab on this machine. */
export const LAB_DIR = '/run/vsw-lab';
export const UNDERLAY_SUBNET = '192.168.56.0/24';
export const UNDERLAY_BRIDGE = 'br0';
/** Host i (1-based) of the lab: 192.168.56.(10+i). */
export const underlayIp = (i: number): string => `192.168.56.${10 + i}`;
/** Host i of the kernel VXLAN baseline: 192.168.56.(100+i). */
export const kernelUnderlayIp = (i: number): string => `192.168.56.${100 + i}`;
export const VXLAN_PORT = 4789;
/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;
export const IPERF_PORT = 5201;

/**
 * The LAN of `up --lan`. 192.168.57.0/24 is also the Vagrant lab's LAN (its
 * VMs' second private network), so commands carry over; 198.51.100.0/24
 * (TEST-NET-2, never routed on the Internet) is what lies behind the router.
 */
export const LAN = {
  subnet: '192.168.57.0/24',
  prefixLength: 24,
  bridge: 'br0',
  mtu: 1500,
  routerIp: '192.168.57.1',
  /** The bridge's own address: dnsmasq answers from it. */
  dhcpServerIp: '192.168.57.2',
  dhcpRangeStart: '192.168.57.50',
  dhcpRangeEnd: '192.168.57.99',
  dhcpLeaseTime: '1h',
  outsideSubnet: '198.51.100.0/24',
  routerOutsideIp: '198.51.100.1',
  outsideIp: '198.51.100.2',
  /** The uplink's name in each host namespace (the Vagrant VMs' LAN NIC plays the same part). */
  uplink: 'eth1',
  network: 'lan',
} as const;
/**
 * Host i's containers on the LAN take addresses from 192.168.57.(112+16i)/28
 * (.128/28 for h1 up to .240/28 for h8): outside dnsmasq's pool, and one slice
 * per host because each daemon hands out its transparent network's addresses
 * on its own, unaware of the others on the same LAN.
 */
export const lanIpRange = (i: number): string => `192.168.57.${112 + 16 * i}/28`;
/**
 * The vsw drivers that put a lab host's containers on the LAN: N MACs
 * (transparent), the host's one MAC (l2bridge), or the host's one MAC toward
 * a fabric host that is on the LAN for them (l2tunnel).
 */
export const LAN_MODES = ['transparent', 'l2bridge', 'l2tunnel'] as const;
export type LanMode = (typeof LAN_MODES)[number];
/** "transparent, l2bridge or l2tunnel", for help texts and messages. */
export const LAN_MODE_LIST = `${LAN_MODES.slice(0, -1).join(', ')} or ${LAN_MODES[LAN_MODES.length - 1]}`;
/** Host i's own address on the LAN, in l2bridge and l2tunnel mode (the Vagrant VMs' LAN NICs have the same). */
export const lanHostIp = (i: number): string => `192.168.57.${10 + i}`;

/**
 * The fabric host of `--lan-mode l2tunnel` (buildFabric): a LAN station at
 * 192.168.57.9 through its uplink eth1 (port fab of the LAN bridge), and
 * through eth2, its fabric port, on the top-of-rack bridge with every lab
 * host's uplink. Its own network hands out 192.168.57.112/28 (lanIpRange(0):
 * the slice before h1's), which none of the lab's containers use.
 */
export const FABRIC = {
  name: 'fab',
  ip: '192.168.57.9',
  uplink: 'eth1',
  /** Its end of the cable to the LAN bridge, in the LAN namespace. */
  lanPort: 'fab',
  /** The fabric port, facing the container hosts. */
  fabricIf: 'eth2',
  ipRange: lanIpRange(0),
  torBridge: 'br0',
  /** The fabric port's end of its cable, in the top-of-rack namespace. */
  torPort: 'fab',
} as const;

/**
 * The control plane of `up --controller` (buildControl), all in the underlay
 * namespace: etcd member k (1-based) takes peers on 127.0.0.1:(2280+100k)
 * and clients on br0's address 192.168.56.1:(2279+100k), so 2380/2379 for
 * e1, 2480/2479 for e2, 2580/2579 for e3.
 */
export const CONTROL = {
  /** br0's own address: where the agents in the host namespaces reach etcd. */
  ip: '192.168.56.1',
  members: 3,
} as const;
export const etcdClientUrl = (k: number): string => `http://${CONTROL.ip}:${2279 + 100 * k}`;
export const etcdPeerUrl = (k: number): string => `http://127.0.0.1:${2280 + 100 * k}`;

export const LIMITS = {
  hosts: { min: 2, max: 8 },
  containers: { min: 1, max: 16 },
  vni: { min: 1, max: 16_777_215 },
  underlayMtu: { min: 1280, max: 9000 },
} as const;

export type LabDriver = 'overlay' | 'internal';

export interface LabOptions {
  prefix: string;
  hosts: number;
  containers: number;
  subnet: string;
  vni: number;
  network: string;
  underlayMtu: number;
  /** overlay (the point of the lab); internal: one separate network per host, for trying the lab without overlay support. */
  driver: LabDriver;
  /** Daemon log level. */
  logLevel: string;
  /** Also build the physical LAN (buildLan) and put one container per host on it. */
  lan: boolean;
  lanMode: LanMode;
  /**
   * Build the overlay through the network controller: a 3-member etcd
   * cluster and `vsw controller` in the underlay namespace, the hosts'
   * daemons as agents (buildControl). Absent: false.
   */
  controller?: boolean;
}

export const LAB_DEFAULTS: LabOptions = {
  prefix: 'vswlab',
  hosts: 2,
  containers: 2,
  subnet: '10.10.0.0/24',
  vni: 4096,
  network: 'blue',
  underlayMtu: 1500,
  driver: 'overlay',
  logLevel: 'info',
  lan: false,
  lanMode: 'transparent',
  controller: false,
};

export interface LabContainer {
  /** "h1-c1": host and container, what `scripts/lab iperf --from/--to` take. */
  id: string;
  /** "c1": the endpoint's name on its host's daemon. */
  name: string;
  host: string;
  netns: string;
  /** The vsw endpoint id (12 hex). */
  endpoint: string;
  ip: string;
  prefixLength: number;
  mac: string;
  ifname: string;
  mtu: number | null;
}

export interface LabHost {
  /** "h1". */
  name: string;
  index: number;
  netns: string;
  underlayIp: string;
  socket: string;
  log: string;
  /** The daemon's --state-dir; everything it names lives in the lab's namespaces and goes with them. */
  stateDir: string;
  /** The daemon's pid (node, after `ip netns exec` has exec'd it); null before it started. */
  pid: number | null;
  containers: LabContainer[];
}

export interface LabLan {
  netns: string;
  bridge: string;
  subnet: string;
  mtu: number;
  dhcp: {
    serverIp: string;
    rangeStart: string;
    rangeEnd: string;
    leaseFile: string;
    pidFile: string;
    log: string;
    /** dnsmasq's pid (it runs in the foreground of its `ip netns exec`); null before it started. */
    pid: number | null;
  };
  router: { netns: string; lanIp: string; outsideIp: string };
  /** A host one routed hop away from the LAN. */
  outside: { netns: string; ip: string; subnet: string };
  /** The vsw network on every lab host, with its uplink. */
  network: { name: string; driver: LanMode; gateway: string };
  /**
   * hostAddress: the host's own address on the uplink (l2bridge and l2tunnel). bridgePort is the other end of
   * the uplink's cable, a port of the LAN bridge or (l2tunnel) of the top-of-rack bridge in bridgeNetns; mac
   * is the uplink's MAC (absent in state files from before l2tunnel).
   */
  uplinks: { host: string; ifname: string; bridgePort: string; bridgeNetns?: string; ipRange: string; hostAddress: string | null; mac?: string }[];
  /** One per host (P-hI-l1), attached to the LAN network. */
  containers: LabContainer[];
  /** The fabric host between the lab hosts and the LAN (--lan-mode l2tunnel); null or absent otherwise. */
  fabric?: LabFabric | null;
}

/**
 * The fabric host of `--lan-mode l2tunnel`: a namespace with a vsw daemon of
 * its own (run like the lab hosts' daemons), whose l2bridge network "lan" has
 * the LAN as uplink and the top-of-rack bridge as fabric port, and one fabric
 * endpoint per lab container (its address at its host's uplink MAC, named
 * after the container: h1-l1, ...), where that container's policy runs.
 */
export interface LabFabric {
  /** "fab". */
  name: string;
  netns: string;
  socket: string;
  log: string;
  stateDir: string;
  /** The daemon's pid; null before it started. */
  pid: number | null;
  /** Its uplink eth1 (port lanPort of the LAN bridge) and its address there. */
  uplink: string;
  lanPort: string;
  lanIp: string;
  /** Its fabric port eth2 (port torPort of the top-of-rack bridge). */
  fabricIf: string;
  network: { name: string; driver: 'l2bridge'; ipRange: string };
  /** The top-of-rack switch: a namespace with a bridge, the fabric port's cable and every lab host's uplink. */
  tor: { netns: string; bridge: string; port: string };
  /** One per lab container: the fabric endpoint (its id and name on the fabric daemon) for the container's address. */
  addresses: { container: string; name: string; endpoint: string; ip: string; hostMac: string }[];
}

/** One etcd member of `up --controller`, run in the underlay namespace. */
export interface LabEtcdMember {
  /** "e1". */
  name: string;
  /** On br0's address, where the agents and the controller connect. */
  clientUrl: string;
  /** On the underlay namespace's loopback: only the members talk there. */
  peerUrl: string;
  dataDir: string;
  log: string;
  /** etcd's pid (`ip netns exec` execs it); null before it started. */
  pid: number | null;
}

/**
 * The control plane of `up --controller`: the etcd cluster and the
 * controller, both in the underlay namespace (netns), whose br0 has address
 * `ip`. The hosts' daemons are its agents.
 */
export interface LabControl {
  netns: string;
  ip: string;
  members: LabEtcdMember[];
  /** The members' client URLs, comma-separated: the controller's and the agents' --etcd. */
  etcd: string;
  socket: string;
  log: string;
  /** The controller's pid (node, after `ip netns exec`); null before it started. */
  pid: number | null;
}

export interface LabDescription {
  prefix: string;
  created: string;
  /** The state file this description is stored in. */
  stateFile: string;
  cli: string;
  underlay: { netns: string; bridge: string; subnet: string; mtu: number };
  network: { name: string; driver: LabDriver; subnet: string; vni: number | null };
  hosts: LabHost[];
  /** The physical LAN of `up --lan`; null (or absent, in a state file from before --lan) without it. */
  lan?: LabLan | null;
  /** etcd and the network controller of `up --controller`; null (or absent) without it. */
  controller?: LabControl | null;
  /** False while `up` is still building (a state file left by a killed `up`). */
  complete: boolean;
}

// ---------------------------------------------------------------- validation

const PREFIX_RE = /^[A-Za-z][A-Za-z0-9]{0,11}$/;
const NETWORK_RE = /^[A-Za-z0-9_.-]{1,64}$/;

export function checkPrefix(prefix: string): string {
  if (!PREFIX_RE.test(prefix)) {
    throw new BenchError(`--prefix takes 1 to 12 letters and digits starting with a letter (the lab's namespaces are PREFIX-ul, PREFIX-h1, ...), not "${prefix}".`);
  }
  return prefix;
}

/** Checks every option; throws one sentence about the first that is wrong. */
export function checkLabOptions(o: LabOptions): LabOptions {
  checkPrefix(o.prefix);
  intOption('hosts', String(o.hosts), 0, LIMITS.hosts.min, LIMITS.hosts.max);
  intOption('containers', String(o.containers), 0, LIMITS.containers.min, LIMITS.containers.max);
  intOption('vni', String(o.vni), 0, LIMITS.vni.min, LIMITS.vni.max);
  intOption('underlay-mtu', String(o.underlayMtu), 0, LIMITS.underlayMtu.min, LIMITS.underlayMtu.max);
  const subnet = /^\d+\.\d+\.\d+\.\d+\/\d+$/.test(o.subnet) ? parsePrefix(o.subnet) : null;
  if (!subnet || subnet.len < 8 || subnet.len > 28) {
    throw new BenchError(`--subnet takes an IPv4 subnet from /8 to /28, e.g. 10.10.0.0/24, not "${o.subnet}".`);
  }
  if (prefixesOverlap(subnet, parsePrefix(UNDERLAY_SUBNET)!)) {
    throw new BenchError(`--subnet ${o.subnet} overlaps the lab's underlay ${UNDERLAY_SUBNET}: pick another subnet.`);
  }
  if (!NETWORK_RE.test(o.network)) {
    throw new BenchError(`--network-name takes 1 to 64 letters, digits, '_', '.' or '-', not "${o.network}".`);
  }
  if (o.driver !== 'overlay' && o.driver !== 'internal') {
    throw new BenchError(`--driver takes overlay or internal, not "${o.driver as string}".`);
  }
  if (o.lan) {
    for (const [what, cidr] of [['LAN', LAN.subnet], ['outside network', LAN.outsideSubnet]]) {
      if (prefixesOverlap(subnet, parsePrefix(cidr)!)) throw new BenchError(`--subnet ${o.subnet} overlaps the lab's ${what} ${cidr} (--lan): pick another subnet.`);
    }
  }
  if (!(LAN_MODES as readonly string[]).includes(o.lanMode)) {
    throw new BenchError(`--lan-mode takes ${LAN_MODE_LIST}, not "${o.lanMode as string}".`);
  }
  if (o.controller && o.driver !== 'overlay') {
    throw new BenchError(`--controller builds an overlay network (the controller makes no ${o.driver} networks): leave out --driver ${o.driver}.`);
  }
  return o;
}

// ---------------------------------------------------------------- names and state

export const stateFile = (prefix: string): string => path.join(LAB_DIR, `${prefix}.json`);
export const hostNetns = (prefix: string, i: number): string => `${prefix}-h${i}`;
export const containerNetns = (prefix: string, i: number, j: number): string => `${prefix}-h${i}-c${j}`;
export const underlayNetns = (prefix: string): string => `${prefix}-ul`;
export const lanNetns = (prefix: string): string => `${prefix}-lan`;
export const routerNetns = (prefix: string): string => `${prefix}-rt`;
export const outsideNetns = (prefix: string): string => `${prefix}-out`;
export const lanContainerNetns = (prefix: string, i: number): string => `${prefix}-h${i}-l1`;
export const fabricNetns = (prefix: string): string => `${prefix}-${FABRIC.name}`;
export const torNetns = (prefix: string): string => `${prefix}-tor`;
/** dnsmasq's files: named PREFIX-*, so down removes them with the rest of the lab's files. */
export const dnsmasqFile = (prefix: string, ext: 'leases' | 'pid' | 'log'): string => path.join(LAB_DIR, `${prefix}-dnsmasq.${ext}`);
/** etcd member k's data directory and log, the controller's socket and log: named PREFIX-*, so down removes them too. */
export const etcdDataDir = (prefix: string, k: number): string => path.join(LAB_DIR, `${prefix}-etcd-e${k}`);
export const etcdLog = (prefix: string, k: number): string => path.join(LAB_DIR, `${prefix}-etcd-e${k}.log`);
export const controllerSocket = (prefix: string): string => path.join(LAB_DIR, `${prefix}-controller.sock`);
export const controllerLog = (prefix: string): string => path.join(LAB_DIR, `${prefix}-controller.log`);

async function saveState(desc: LabDescription): Promise<void> {
  await mkdir(LAB_DIR, { recursive: true });
  const tmp = `${desc.stateFile}.tmp`;
  await writeFile(tmp, JSON.stringify(desc, null, 2) + '\n');
  await rename(tmp, desc.stateFile);
}

/** The recorded lab with this prefix, or null when there is no state file. */
export async function readLab(prefix: string): Promise<LabDescription | null> {
  let text: string;
  try {
    text = await readFile(stateFile(prefix), 'utf8');
  } catch {
    return null;
  }
  try {
    const desc = JSON.parse(text) as LabDescription;
    if (!Array.isArray(desc.hosts)) throw new Error('no hosts');
    return desc;
  } catch {
    throw new BenchError(`${stateFile(prefix)} is not a lab description: remove the lab with \`scripts/lab down --prefix ${prefix}\`.`);
  }
}

/** A lab that `iperf` and `status` can use: recorded and completely built. */
export async function requireLab(prefix: string): Promise<LabDescription> {
  const desc = await readLab(prefix);
  if (!desc) throw new BenchError(`there is no lab with prefix ${prefix} (no ${stateFile(prefix)}): build one with \`scripts/lab up${prefix === LAB_DEFAULTS.prefix ? '' : ` --prefix ${prefix}`}\`.`);
  if (!desc.complete) throw new BenchError(`the lab with prefix ${prefix} was not completely built: remove it with \`scripts/lab down --prefix ${prefix}\` and build it again.`);
  return desc;
}

/** Namespaces named PREFIX-*, as the kernel lists them now. */
export async function labNamespaces(prefix: string): Promise<string[]> {
  const r = await cmd('ip', ['netns', 'list'], { cleanup: true });
  return r.stdout
    .split('\n')
    .map((l) => l.split(' ')[0])
    .filter((n) => n.startsWith(`${prefix}-`));
}

// ---------------------------------------------------------------- processes

/** Alive and not a zombie. */
export function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z/s.test(stat);
  } catch {
    return false;
  }
}

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

/** SIGTERM, then SIGKILL to whatever is left after graceMs; resolves when all are gone (or 2 s after the SIGKILL). */
async function terminate(pids: number[], graceMs: number): Promise<{ killed: number[] }> {
  const signal = (pid: number, sig: NodeJS.Signals): void => {
    try {
      process.kill(pid, sig);
    } catch {
      // already gone
    }
  };
  pids.forEach((p) => signal(p, 'SIGTERM'));
  const waitGone = async (ms: number): Promise<number[]> => {
    const deadline = Date.now() + ms;
    for (;;) {
      const left = pids.filter(processAlive);
      if (left.length === 0 || Date.now() > deadline) return left;
      await new Promise((r) => setTimeout(r, 50));
    }
  };
  const left = await waitGone(graceMs);
  left.forEach((p) => signal(p, 'SIGKILL'));
  if (left.length) await waitGone(2000);
  return { killed: left };
}

function logTail(file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

// ---------------------------------------------------------------- commands

const sh = (file: string, args: string[], opts: CmdOptions = {}): Promise<CmdResult> => cmd(file, args, opts);

/** The vsw CLI against one host's daemon; throws the CLI's own sentence, prefixed with the host. */
export async function vsw(host: Pick<LabHost, 'name' | 'socket'>, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  const r = await cmd(process.execPath, [CLI, '--socket', host.socket, ...args], { timeoutMs: 60_000, ...opts, allowFail: true });
  if (r.code !== 0 && !opts.allowFail) {
    const why = r.stderr.trim().replace(/^vsw: /, '') || r.stdout.trim() || `exit status ${r.code}`;
    throw new BenchError(`${host.name}: \`vsw ${args.join(' ')}\` failed: ${why}`);
  }
  return r;
}

/** Whether the machine has what the lab needs; throws one sentence otherwise. */
export async function labPreflight(tools: [string, string][] = []): Promise<void> {
  if (process.getuid?.() !== 0) {
    throw new BenchError('the lab must run as root (it creates network namespaces and starts vsw daemons): run it with sudo -E.');
  }
  if (!existsSync(CLI)) throw new BenchError(`the vsw CLI is not built (${CLI} is missing): run \`npm run build\` first.`);
  for (const [tool, pkg] of [['ip', 'iproute2'] as [string, string], ...tools]) {
    const r = await cmd('sh', ['-c', `command -v ${tool}`], { allowFail: true });
    if (r.code !== 0) throw new BenchError(`${tool} was not found: install it with \`apt-get install ${pkg}\`.`);
  }
}

async function netnsAdd(ns: string): Promise<void> {
  await sh('ip', ['netns', 'add', ns]);
  await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
}

/**
 * A veth from the underlay bridge to eth0 in namespace ns, with address ip/24
 * and the underlay MTU. `port` is the bridge end's name in the underlay
 * namespace (h1, k1, ...).
 */
async function underlayLink(prefix: string, port: string, ns: string, ip: string, mtu: number): Promise<void> {
  const ul = underlayNetns(prefix);
  await sh('ip', ['-n', ul, 'link', 'add', port, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(mtu), 'netns', ns]);
  await sh('ip', ['-n', ul, 'link', 'set', port, 'master', UNDERLAY_BRIDGE, 'up']);
  await sh('ip', ['-n', ns, 'addr', 'add', `${ip}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
}

// ---------------------------------------------------------------- up

export type Progress = (line: string) => void;

/** Whether anything of a lab with this prefix exists: its state file or any PREFIX-* namespace. */
async function existingLab(prefix: string): Promise<string | null> {
  if (existsSync(stateFile(prefix))) return stateFile(prefix);
  const ns = await labNamespaces(prefix);
  return ns.length ? `namespace${ns.length > 1 ? 's' : ''} ${ns.slice(0, 3).join(', ')}${ns.length > 3 ? ', ...' : ''}` : null;
}

/**
 * Builds the lab and returns what was built (also written to the state file).
 * Refuses when a lab with the prefix exists; removes what it built when any
 * step fails (or an interrupt arrives) and rethrows.
 */
export async function labUp(opts: LabOptions, progress: Progress = () => undefined): Promise<LabDescription> {
  const o = checkLabOptions(opts);
  const tools: [string, string][] = [];
  if (o.lan) tools.push(['dnsmasq', 'dnsmasq-base']);
  if (o.controller) tools.push(['etcd', 'etcd-server'], ['etcdctl', 'etcd-client']);
  await labPreflight(tools);
  const found = await existingLab(o.prefix);
  if (found) {
    throw new BenchError(`a lab with prefix ${o.prefix} exists already (${found}): remove it with \`scripts/lab down --prefix ${o.prefix}\` or pick another --prefix.`);
  }
  const desc: LabDescription = {
    prefix: o.prefix,
    created: new Date().toISOString(),
    stateFile: stateFile(o.prefix),
    cli: CLI,
    underlay: { netns: underlayNetns(o.prefix), bridge: UNDERLAY_BRIDGE, subnet: UNDERLAY_SUBNET, mtu: o.underlayMtu },
    network: { name: o.network, driver: o.driver, subnet: o.subnet, vni: o.driver === 'overlay' ? o.vni : null },
    hosts: [],
    lan: null,
    controller: null,
    complete: false,
  };
  try {
    await build(desc, o, progress);
    return desc;
  } catch (err) {
    // The daemons' logs go with the lab: what explains the failure is kept in the message.
    const notes: string[] = [];
    const fab = desc.lan?.fabric;
    for (const h of [...desc.hosts, ...(fab ? [fab] : [])].filter((x) => x.pid !== null && !processAlive(x.pid))) {
      const tail = logTail(h.log);
      if (tail && !(err as Error).message.includes(tail)) notes.push(`the end of ${h.name}'s daemon log (${h.log}):\n${tail}`);
    }
    const ctl = desc.controller;
    const control = ctl ? [...ctl.members.map((m) => ({ what: `etcd member ${m.name}`, pid: m.pid, log: m.log })), { what: 'the controller', pid: ctl.pid, log: ctl.log }] : [];
    for (const c of control.filter((x) => x.pid !== null && !processAlive(x.pid))) {
      const tail = logTail(c.log, 8);
      if (tail && !(err as Error).message.includes(tail)) notes.push(`the end of ${c.what}'s log (${c.log}):\n${tail}`);
    }
    progress('up failed: removing what was built');
    try {
      await labDown(o.prefix, progress);
    } catch (downErr) {
      notes.push(`removing the half-built lab failed too: ${(downErr as Error).message}`);
    }
    if (notes.length && err instanceof BenchError && !(err instanceof Interrupted)) throw new BenchError([err.message, ...notes].join('\n'));
    throw err;
  }
}

async function build(desc: LabDescription, o: LabOptions, progress: Progress): Promise<void> {
  const p = o.prefix;
  // The state file first: a `down` after a killed `up` then knows there is something to remove.
  await saveState(desc);

  progress(`underlay: namespace ${desc.underlay.netns}, bridge ${UNDERLAY_BRIDGE}, ${UNDERLAY_SUBNET}, MTU ${o.underlayMtu}`);
  await netnsAdd(desc.underlay.netns);
  await sh('ip', ['-n', desc.underlay.netns, 'link', 'add', UNDERLAY_BRIDGE, 'mtu', String(o.underlayMtu), 'type', 'bridge']);
  await sh('ip', ['-n', desc.underlay.netns, 'link', 'set', UNDERLAY_BRIDGE, 'up']);

  for (let i = 1; i <= o.hosts; i++) {
    const host: LabHost = {
      name: `h${i}`,
      index: i,
      netns: hostNetns(p, i),
      underlayIp: underlayIp(i),
      socket: path.join(LAB_DIR, `${p}-h${i}.sock`),
      log: path.join(LAB_DIR, `${p}-h${i}.log`),
      stateDir: path.join(LAB_DIR, `${p}-h${i}.state`),
      pid: null,
      containers: [],
    };
    desc.hosts.push(host);
    await netnsAdd(host.netns);
    await underlayLink(p, host.name, host.netns, host.underlayIp, o.underlayMtu);
  }
  await saveState(desc);

  const ctl = o.controller ? await buildControl(desc, o, progress) : null;

  progress(`daemons: starting ${o.hosts} (one per host namespace${ctl ? ", each an agent of the controller" : ''})`);
  for (const host of desc.hosts) {
    startLabDaemon(host, o.logLevel, ctl ? ['--agent', '--etcd', ctl.etcd, '--host', host.name, '--vtep', host.underlayIp] : []);
    await saveState(desc);
  }
  await Promise.all(desc.hosts.map((h) => waitDaemon(h)));

  if (ctl) await overlayThroughController(desc, ctl, o, progress);
  else await overlayHostByHost(desc, o, progress);
  if (o.driver === 'overlay') checkDistinctAddresses(desc);
  if (o.lan) await buildLan(desc, o, progress);
  desc.complete = true;
  await saveState(desc);
}

/** The lab's network on every daemon, and its containers, made host by host (the lab without --controller). */
async function overlayHostByHost(desc: LabDescription, o: LabOptions, progress: Progress): Promise<void> {
  const p = o.prefix;
  progress(`network: ${o.driver} ${o.network} ${o.subnet}${o.driver === 'overlay' ? `, VNI ${o.vni}` : ''} on every host`);
  for (const host of desc.hosts) {
    const args = ['network', 'create', '-d', o.driver, '--subnet', o.subnet];
    if (o.driver === 'overlay') {
      args.push('--vni', String(o.vni), '--vtep', host.underlayIp);
      for (const peer of desc.hosts) if (peer !== host) args.push('--peer', peer.underlayIp);
    }
    await vsw(host, [...args, o.network]);
  }

  progress(`containers: ${o.containers} per host`);
  for (const host of desc.hosts) {
    for (let j = 1; j <= o.containers; j++) {
      const ns = containerNetns(p, host.index, j);
      await netnsAdd(ns);
      await vsw(host, ['endpoint', 'create', '--network', o.network, '--netns', ns, '--name', `c${j}`]);
    }
    host.containers = await listContainers(host, o.network, 'c');
    await saveState(desc);
  }
}

/** What starting and waiting for a daemon needs: a lab host, or the fabric host. */
type DaemonHost = Pick<LabHost, 'name' | 'netns' | 'socket' | 'log' | 'stateDir' | 'pid'>;

/** `ip netns exec P-hI node CLI daemon ...`, detached: the daemon outlives `scripts/lab up`. */
function startLabDaemon(host: DaemonHost, logLevel: string, extraArgs: string[] = []): void {
  const fd = openSync(host.log, 'a');
  try {
    const child = spawn('ip', ['netns', 'exec', host.netns, process.execPath, CLI, 'daemon', '--socket', host.socket, '--state-dir', host.stateDir, '--log-level', logLevel, ...extraArgs], {
      stdio: ['ignore', fd, fd],
      detached: true,
    });
    child.on('error', () => undefined);
    child.unref();
    // `ip netns exec` execs the command: the pid is the daemon's own.
    host.pid = child.pid ?? null;
  } finally {
    closeSync(fd);
  }
  if (host.pid === null) throw new BenchError(`${host.name}: could not start the vsw daemon (ip netns exec ${host.netns} ...).`);
}

async function waitDaemon(host: DaemonHost): Promise<void> {
  await waitFor(`${host.name}: the vsw daemon answering on ${host.socket}`, 20_000, async () => {
    if (host.pid === null || !processAlive(host.pid)) {
      const tail = logTail(host.log);
      throw new BenchError(`${host.name}: the vsw daemon exited at start${tail ? `; the end of its log (${host.log}):\n${tail}` : '.'}`);
    }
    const r = await vsw(host, ['network', 'ls'], { allowFail: true, timeoutMs: 5000 });
    return r.code === 0 ? true : undefined;
  }, 200);
}

/**
 * The host's endpoints on the network, from `vsw endpoint ls --json`, as lab
 * containers (in namespace order): those in namespaces P-hI-cJ (kind 'c', the
 * overlay's) or P-hI-lJ (kind 'l', the LAN's).
 */
async function listContainers(host: LabHost, network: string, kind: 'c' | 'l'): Promise<LabContainer[]> {
  const r = await vsw(host, ['endpoint', 'ls', '--json']);
  let list: unknown;
  try {
    list = JSON.parse(r.stdout);
  } catch {
    throw new BenchError(`${host.name}: vsw endpoint ls --json printed something that is not JSON: ${r.stdout.slice(0, 120)}`);
  }
  const eps = (Array.isArray(list) ? list : []) as Record<string, unknown>[];
  const out: LabContainer[] = [];
  for (const ep of eps) {
    if (ep.network !== network || typeof ep.netns !== 'string' || !ep.netns.startsWith(`${host.netns}-${kind}`)) continue;
    const ip = String(ep.ip ?? '').split('/')[0];
    const ifname = typeof ep.ifname === 'string' ? ep.ifname : 'eth0';
    out.push({
      id: `${host.name}-${ep.netns.slice(host.netns.length + 1)}`,
      name: String(ep.name),
      host: host.name,
      netns: ep.netns,
      endpoint: String(ep.id),
      ip,
      prefixLength: typeof ep.prefixLength === 'number' ? ep.prefixLength : Number(String(ep.ip ?? '').split('/')[1] ?? 24),
      mac: String(ep.mac ?? ''),
      ifname,
      mtu: await ifMtu(ep.netns, ifname),
    });
  }
  const num = (c: LabContainer): number => Number(/(\d+)$/.exec(c.id)?.[1]);
  return out.sort((a, b) => num(a) - num(b));
}

/** On one overlay segment every address must be unique across hosts: each daemon hands out its own slice. */
function checkDistinctAddresses(desc: LabDescription): void {
  const seen = new Map<string, string>();
  for (const c of desc.hosts.flatMap((h) => h.containers)) {
    const other = seen.get(c.ip);
    if (other) {
      throw new BenchError(`${other} and ${c.id} both got ${c.ip} on overlay network ${desc.network.name}: the daemons did not hand out addresses from separate slices of ${desc.network.subnet}.`);
    }
    seen.set(c.ip, c.id);
  }
}

// ---------------------------------------------------------------- the controller (--controller)

/**
 * The control plane of --controller (see the top of this file): br0's
 * address in the underlay namespace, the three etcd members (peers on that
 * namespace's loopback, clients on br0's address, each started detached like
 * the daemons and recorded before it starts, so `down` finds it), then the
 * controller once the cluster is healthy. Runs before the hosts' daemons,
 * which are its agents.
 */
async function buildControl(desc: LabDescription, o: LabOptions, progress: Progress): Promise<LabControl> {
  const p = o.prefix;
  const members: LabEtcdMember[] = [];
  for (let k = 1; k <= CONTROL.members; k++) {
    members.push({ name: `e${k}`, clientUrl: etcdClientUrl(k), peerUrl: etcdPeerUrl(k), dataDir: etcdDataDir(p, k), log: etcdLog(p, k), pid: null });
  }
  const ctl: LabControl = {
    netns: desc.underlay.netns,
    ip: CONTROL.ip,
    members,
    etcd: members.map((m) => m.clientUrl).join(','),
    socket: controllerSocket(p),
    log: controllerLog(p),
    pid: null,
  };
  desc.controller = ctl;
  await saveState(desc);

  progress(`etcd: ${members.length} members in ${ctl.netns}, clients on ${CONTROL.ip} (${members.map((m) => m.clientUrl.split(':')[2]).join(', ')}), peers on its loopback`);
  await sh('ip', ['-n', ctl.netns, 'addr', 'add', `${CONTROL.ip}/24`, 'dev', UNDERLAY_BRIDGE]);
  const cluster = members.map((m) => `${m.name}=${m.peerUrl}`).join(',');
  for (const m of members) {
    m.pid = startDetached(`etcd member ${m.name}`, [
      'netns', 'exec', ctl.netns, 'etcd',
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', m.clientUrl,
      '--advertise-client-urls', m.clientUrl,
      '--listen-peer-urls', m.peerUrl,
      '--initial-advertise-peer-urls', m.peerUrl,
      '--initial-cluster', cluster,
      '--initial-cluster-state', 'new',
      '--initial-cluster-token', `vsw-lab-${p}`,
      '--logger', 'zap',
      '--log-outputs', 'stderr',
    ], m.log);
    await saveState(desc);
  }
  await waitFor(`the etcd cluster (${ctl.etcd}) healthy`, 30_000, async () => {
    for (const m of members) {
      if (m.pid === null || !processAlive(m.pid)) {
        const tail = logTail(m.log, 8);
        throw new BenchError(`etcd member ${m.name} exited at start${tail ? `; the end of its log (${m.log}):\n${tail}` : '.'}`);
      }
    }
    const r = await etcdctl(ctl, ['endpoint', 'health'], { allowFail: true, timeoutMs: 10_000 });
    return r.code === 0 ? true : undefined;
  }, 200);

  progress(`controller: vsw controller in ${ctl.netns}, socket ${ctl.socket}`);
  ctl.pid = startDetached('the controller', ['netns', 'exec', ctl.netns, process.execPath, CLI, 'controller', '--etcd', ctl.etcd, '--socket', ctl.socket, '--log-level', o.logLevel], ctl.log);
  await saveState(desc);
  await waitFor(`the controller answering on ${ctl.socket}`, 20_000, async () => {
    if (ctl.pid === null || !processAlive(ctl.pid)) {
      const tail = logTail(ctl.log, 8);
      throw new BenchError(`the controller exited at start${tail ? `; the end of its log (${ctl.log}):\n${tail}` : '.'}`);
    }
    return (await apiGet(ctl.socket, '/v1/version')) !== null ? true : undefined;
  }, 100);
  return ctl;
}

/** `ip ARGS` (an `ip netns exec NS PROGRAM ...`) detached, output to log; the pid is the program's, as `ip netns exec` execs it. */
function startDetached(what: string, args: string[], log: string): number {
  const fd = openSync(log, 'a');
  let pid: number | undefined;
  try {
    const child = spawn('ip', args, { stdio: ['ignore', fd, fd], detached: true });
    child.on('error', () => undefined);
    child.unref();
    pid = child.pid;
  } finally {
    closeSync(fd);
  }
  if (pid === undefined) throw new BenchError(`could not start ${what} (ip ${args.join(' ')}).`);
  return pid;
}

/** etcdctl against the lab's cluster, run in the underlay namespace (where the client URLs are). */
export function etcdctl(ctl: Pick<LabControl, 'netns' | 'etcd'>, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  return sh('ip', ['netns', 'exec', ctl.netns, 'etcdctl', '--endpoints', ctl.etcd, '--dial-timeout', '1s', '--command-timeout', '2s', ...args], opts);
}

/** The vsw CLI against the lab's controller (`vsw --controller SOCKET ...`); throws the CLI's own sentence. */
export async function vswController(ctl: Pick<LabControl, 'socket'>, args: string[], opts: CmdOptions = {}): Promise<CmdResult> {
  const r = await cmd(process.execPath, [CLI, '--controller', ctl.socket, ...args], { timeoutMs: 60_000, ...opts, allowFail: true });
  if (r.code !== 0 && !opts.allowFail) {
    const why = r.stderr.trim().replace(/^vsw: /, '') || r.stdout.trim() || `exit status ${r.code}`;
    throw new BenchError(`the controller: \`vsw --controller ${ctl.socket} ${args.join(' ')}\` failed: ${why}`);
  }
  return r;
}

/** One GET on a vsw API socket (a daemon's or the controller's): the parsed body of a 2xx answer, or null. */
export function apiGet(socket: string, urlPath: string, timeoutMs = 5000): Promise<unknown> {
  return new Promise((resolve) => {
    const req = httpRequest({ socketPath: socket, path: urlPath, method: 'GET', timeout: timeoutMs }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => {
        if ((res.statusCode ?? 0) < 200 || (res.statusCode ?? 0) >= 300) return resolve(null);
        try {
          resolve(JSON.parse(text));
        } catch {
          resolve(null);
        }
      });
      res.on('error', () => resolve(null));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(null));
    req.end();
  });
}

/** An object's status on one host, as the controller shows it. */
export interface ObjectStatusView {
  state: string;
  reason?: string;
}

interface ControllerEndpointView {
  name: string;
  network: string;
  host: string;
  netns: string;
  ip: string;
  mac?: string;
  status: Record<string, ObjectStatusView>;
}

interface ControllerNetworkView {
  name: string;
  subnet: string;
  vni: number;
  hosts: string[];
  status: Record<string, ObjectStatusView>;
}

/**
 * The overlay network and the containers made through the controller: wait
 * for every agent to have registered (so each network is made with every
 * peer at once), `vsw --controller S network create -d overlay --hosts
 * h1,...`, per container `ip netns add` and `vsw --controller S endpoint
 * create --host hI --name hI-cJ`; then wait until the controller shows the
 * network and every endpoint applied on its host and realized (with a MAC),
 * and each host's daemon holds every other host's endpoints as remotes. The
 * containers are then read from the hosts' daemons, as without --controller.
 */
async function overlayThroughController(desc: LabDescription, ctl: LabControl, o: LabOptions, progress: Progress): Promise<void> {
  const p = o.prefix;
  const names = desc.hosts.map((h) => h.name);
  await waitFor(`the ${names.length} agents registered with the controller`, 20_000, async () => {
    const hosts = await apiGet(ctl.socket, '/v1/hosts');
    const up = Array.isArray(hosts) ? (hosts as { name?: string }[]).map((h) => h.name) : [];
    return names.every((n) => up.includes(n)) ? true : undefined;
  }, 100);

  progress(`network: overlay ${o.network} ${o.subnet}, VNI ${o.vni} on hosts ${names.join(',')}, made through the controller`);
  await vswController(ctl, ['network', 'create', '-d', 'overlay', '--subnet', o.subnet, '--vni', String(o.vni), '--hosts', names.join(','), o.network]);

  progress(`containers: ${o.containers} per host, placed through the controller`);
  for (const host of desc.hosts) {
    for (let j = 1; j <= o.containers; j++) {
      const ns = containerNetns(p, host.index, j);
      await netnsAdd(ns);
      await vswController(ctl, ['endpoint', 'create', '--network', o.network, '--host', host.name, '--netns', ns, '--name', `${host.name}-c${j}`]);
    }
  }
  const t0 = Date.now();
  await waitApplied(desc, ctl, o.network, o.containers * desc.hosts.length);
  progress(`applied by every agent ${((Date.now() - t0) / 1000).toFixed(1)} s after the last create`);
  for (const host of desc.hosts) {
    host.containers = await listContainers(host, o.network, 'c');
    await saveState(desc);
  }
}

/**
 * Until the controller shows the network applied on every host and all
 * `count` endpoints applied and realized, and every host's daemon has the
 * other hosts' endpoints as remotes. A failed status ends the wait at once
 * with the agent's sentence.
 */
async function waitApplied(desc: LabDescription, ctl: LabControl, network: string, count: number): Promise<void> {
  let missing = 'nothing read yet';
  try {
    await waitFor(`every object applied`, 30_000, async () => {
      const net = (await apiGet(ctl.socket, `/v1/networks/${encodeURIComponent(network)}`)) as ControllerNetworkView | null;
      const eps = ((await apiGet(ctl.socket, '/v1/endpoints')) as ControllerEndpointView[] | null)?.filter((e) => e.network === network) ?? null;
      if (!net || !eps) {
        missing = 'the controller did not answer';
        return undefined;
      }
      const failed = [
        ...Object.entries(net.status).filter(([, s]) => s.state === 'failed').map(([h, s]) => `network ${network} on ${h}: ${s.reason ?? 'no reason given'}`),
        ...eps.filter((e) => e.status[e.host]?.state === 'failed').map((e) => `endpoint ${e.name} on ${e.host}: ${e.status[e.host].reason ?? 'no reason given'}`),
      ];
      if (failed.length) throw new BenchError(`an agent could not apply what the controller holds: ${failed.join('; ')}`);
      const pending = [
        ...desc.hosts.filter((h) => net.status[h.name]?.state !== 'applied').map((h) => `network ${network} on ${h.name}`),
        ...eps.filter((e) => e.status[e.host]?.state !== 'applied' || e.mac === undefined).map((e) => `endpoint ${e.name} on ${e.host}`),
      ];
      if (eps.length < count) pending.push(`${count - eps.length} of the endpoints (the controller lists ${eps.length})`);
      if (pending.length) {
        missing = `still pending: ${pending.join(', ')}`;
        return undefined;
      }
      for (const h of desc.hosts) {
        const others = eps.filter((e) => e.host !== h.name).length;
        const ov = (await apiGet(h.socket, `/v1/overlay?network=${encodeURIComponent(network)}`)) as { remotes?: unknown[] }[] | null;
        const have = ov?.[0]?.remotes?.length ?? 0;
        if (have < others) {
          missing = `${h.name}'s daemon knows ${have} of the other hosts' ${others} endpoints`;
          return undefined;
        }
      }
      return true;
    }, 100);
  } catch (err) {
    if (err instanceof BenchError && !(err instanceof Interrupted) && /did not happen/.test(err.message)) {
      throw new BenchError(`the agents did not apply the controller's state within 30 s (${missing}): look at the hosts' logs (/run/vsw-lab/${desc.prefix}-hI.log).`);
    }
    throw err;
  }
}

export interface EtcdMemberStatus {
  name: string;
  clientUrl: string;
  /** The process runs (its recorded pid, still etcd with its data directory). */
  running: boolean;
  /** It answered `etcdctl endpoint status`. */
  answers: boolean;
  leader: boolean;
  raftTerm: number | null;
  /** Bytes of its database file. */
  dbSize: number | null;
}

export interface ControlStatus {
  controller: { running: boolean; answers: boolean; hosts: string[] };
  etcd: EtcdMemberStatus[];
  networks: { name: string; status: Record<string, ObjectStatusView> }[];
  endpoints: { name: string; host: string; ip: string; status: ObjectStatusView | null }[];
}

/** Each member's `etcdctl endpoint status` (member ids kept as text: they are 64-bit). */
export async function etcdStatus(ctl: LabControl): Promise<EtcdMemberStatus[]> {
  const r = await etcdctl(ctl, ['endpoint', 'status', '-w', 'json'], { allowFail: true, timeoutMs: 15_000 });
  let list: { Endpoint: string; Status: { header: { member_id: string }; leader: string; raftTerm: number; dbSize: number } }[] = [];
  try {
    list = JSON.parse(r.stdout.replace(/:(\d{10,})/g, ':"$1"')) as typeof list;
  } catch {
    // no member answered
  }
  return ctl.members.map((m) => {
    const s = list.find((x) => x.Endpoint === m.clientUrl)?.Status;
    return {
      name: m.name,
      clientUrl: m.clientUrl,
      running: m.pid !== null && processAlive(m.pid) && cmdline(m.pid).includes(m.dataDir),
      answers: s !== undefined,
      leader: s !== undefined && String(s.header.member_id) === String(s.leader),
      raftTerm: s ? Number(s.raftTerm) : null,
      dbSize: s ? Number(s.dbSize) : null,
    };
  });
}

/** The controller and etcd of a --controller lab, and each object's status as the controller shows it; null without --controller. */
export async function controlStatus(desc: LabDescription): Promise<ControlStatus | null> {
  const ctl = desc.controller;
  if (!ctl) return null;
  const running = ctl.pid !== null && processAlive(ctl.pid) && cmdline(ctl.pid).includes(ctl.socket);
  const hosts = running ? await apiGet(ctl.socket, '/v1/hosts') : null;
  const nets = running ? ((await apiGet(ctl.socket, '/v1/networks')) as ControllerNetworkView[] | null) : null;
  const eps = running ? ((await apiGet(ctl.socket, '/v1/endpoints')) as ControllerEndpointView[] | null) : null;
  return {
    controller: { running, answers: Array.isArray(hosts), hosts: Array.isArray(hosts) ? (hosts as { name: string }[]).map((h) => h.name).sort() : [] },
    etcd: await etcdStatus(ctl),
    networks: (nets ?? []).map((n) => ({ name: n.name, status: n.status })),
    endpoints: (eps ?? []).map((e) => ({ name: e.name, host: e.host, ip: e.ip, status: e.status[e.host] ?? null })),
  };
}

// ---------------------------------------------------------------- the LAN (--lan)

/**
 * The physical LAN of `up --lan` (see the top of this file): the LAN
 * namespace and bridge with dnsmasq on it, the router and the outside host
 * behind it, an uplink veth per lab host, then on every host's daemon a vsw
 * network on that uplink and one container. Runs after the hosts' daemons
 * answer; desc.lan is saved before anything is made, so `down` after a
 * failure here knows about dnsmasq.
 */
async function buildLan(desc: LabDescription, o: LabOptions, progress: Progress): Promise<void> {
  const p = o.prefix;
  const lan: LabLan = {
    netns: lanNetns(p),
    bridge: LAN.bridge,
    subnet: LAN.subnet,
    mtu: LAN.mtu,
    dhcp: {
      serverIp: LAN.dhcpServerIp,
      rangeStart: LAN.dhcpRangeStart,
      rangeEnd: LAN.dhcpRangeEnd,
      leaseFile: dnsmasqFile(p, 'leases'),
      pidFile: dnsmasqFile(p, 'pid'),
      log: dnsmasqFile(p, 'log'),
      pid: null,
    },
    router: { netns: routerNetns(p), lanIp: LAN.routerIp, outsideIp: LAN.routerOutsideIp },
    outside: { netns: outsideNetns(p), ip: LAN.outsideIp, subnet: LAN.outsideSubnet },
    network: { name: LAN.network, driver: o.lanMode, gateway: LAN.routerIp },
    uplinks: desc.hosts.map((h) => ({
      host: h.name,
      ifname: LAN.uplink,
      bridgePort: h.name,
      // l2tunnel: the hosts are cabled to the top-of-rack switch, the fabric host to the LAN.
      bridgeNetns: o.lanMode === 'l2tunnel' ? torNetns(p) : lanNetns(p),
      ipRange: lanIpRange(h.index),
      hostAddress: o.lanMode === 'transparent' ? null : lanHostIp(h.index),
    })),
    containers: [],
    fabric: null,
  };
  desc.lan = lan;
  await saveState(desc);

  progress(`LAN: namespace ${lan.netns}, bridge ${lan.bridge} ${LAN.dhcpServerIp}/${LAN.prefixLength}, DHCP ${LAN.dhcpRangeStart}-${LAN.dhcpRangeEnd} (dnsmasq)`);
  await netnsAdd(lan.netns);
  await sh('ip', ['-n', lan.netns, 'link', 'add', lan.bridge, 'mtu', String(lan.mtu), 'type', 'bridge']);
  await sh('ip', ['-n', lan.netns, 'addr', 'add', `${LAN.dhcpServerIp}/${LAN.prefixLength}`, 'dev', lan.bridge]);
  await sh('ip', ['-n', lan.netns, 'link', 'set', lan.bridge, 'up']);
  startDnsmasq(lan);
  await saveState(desc);
  await waitDnsmasq(lan);

  progress(`LAN: router ${lan.router.netns} ${LAN.routerIp}, outside host ${lan.outside.netns} ${LAN.outsideIp} behind it`);
  await netnsAdd(lan.router.netns);
  await lanPort(lan, 'rt', lan.router.netns, 'eth0');
  await sh('ip', ['-n', lan.router.netns, 'addr', 'add', `${LAN.routerIp}/${LAN.prefixLength}`, 'dev', 'eth0']);
  await netnsAdd(lan.outside.netns);
  await sh('ip', ['-n', lan.router.netns, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', lan.outside.netns]);
  await sh('ip', ['-n', lan.router.netns, 'addr', 'add', `${LAN.routerOutsideIp}/24`, 'dev', 'eth1']);
  await sh('ip', ['-n', lan.router.netns, 'link', 'set', 'eth1', 'up']);
  // A namespace starts with forwarding off: without this the router would be two hosts, not a hop.
  await sh('ip', ['netns', 'exec', lan.router.netns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1']);
  await sh('ip', ['-n', lan.outside.netns, 'addr', 'add', `${LAN.outsideIp}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', lan.outside.netns, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', lan.outside.netns, 'route', 'add', 'default', 'via', LAN.routerOutsideIp]);

  const fabric = o.lanMode === 'l2tunnel' ? await buildFabric(desc, lan, o, progress) : null;

  const where = fabric ? `a port of ${fabric.tor.bridge} in ${fabric.tor.netns}, the fabric host's side` : `a port of ${lan.bridge}`;
  progress(`LAN: uplink ${LAN.uplink} on every host (${where}), ${o.lanMode} network ${LAN.network}, one container per host`);
  for (const host of desc.hosts) {
    const up = lan.uplinks.find((u) => u.host === host.name)!;
    if (fabric) await torPort(fabric, up.bridgePort, host.netns, up.ifname, lan.mtu);
    else await lanPort(lan, up.bridgePort, host.netns, up.ifname);
    up.mac = await linkMac(host.netns, up.ifname);
    // transparent: no address, the host's stack has no part in the LAN. l2bridge and l2tunnel: the containers go
    // out with the uplink's MAC, so the host is a station of the LAN and needs its own address there.
    if (up.hostAddress !== null) await sh('ip', ['-n', host.netns, 'addr', 'add', `${up.hostAddress}/${LAN.prefixLength}`, 'dev', up.ifname]);
    await vsw(host, ['network', 'create', '-d', o.lanMode, '--uplink', up.ifname, '--subnet', LAN.subnet, '--gateway', LAN.routerIp, '--ip-range', up.ipRange, LAN.network]);
    const ns = lanContainerNetns(p, host.index);
    await netnsAdd(ns);
    await vsw(host, ['endpoint', 'create', '--network', LAN.network, '--netns', ns, '--name', 'l1']);
    const mine = await listContainers(host, LAN.network, 'l');
    lan.containers.push(...mine);
    await saveState(desc);
    // l2tunnel: the fabric host learns each container's address, at its host's uplink MAC, as an endpoint of its own.
    for (const c of fabric ? mine : []) {
      const r = await vsw(fabric!, ['fabric', 'add', fabric!.network.name, '--ip', c.ip, '--mac', up.mac, '--name', c.id]);
      fabric!.addresses.push({ container: c.id, name: c.id, endpoint: r.stdout.trim(), ip: c.ip, hostMac: up.mac });
      await saveState(desc);
    }
  }
}

/**
 * The fabric host of --lan-mode l2tunnel (see the top of this file): its
 * namespace with eth1 on the LAN bridge (address FABRIC.ip), the top-of-rack
 * namespace and bridge with the fabric host's eth2 on it, its own vsw daemon
 * and its l2bridge network with eth2 as fabric port. lan.fabric is saved
 * before the daemon starts, so `down` after a failure finds it.
 */
async function buildFabric(desc: LabDescription, lan: LabLan, o: LabOptions, progress: Progress): Promise<LabFabric> {
  const p = o.prefix;
  const fabric: LabFabric = {
    name: FABRIC.name,
    netns: fabricNetns(p),
    socket: path.join(LAB_DIR, `${p}-${FABRIC.name}.sock`),
    log: path.join(LAB_DIR, `${p}-${FABRIC.name}.log`),
    stateDir: path.join(LAB_DIR, `${p}-${FABRIC.name}.state`),
    pid: null,
    uplink: FABRIC.uplink,
    lanPort: FABRIC.lanPort,
    lanIp: FABRIC.ip,
    fabricIf: FABRIC.fabricIf,
    network: { name: LAN.network, driver: 'l2bridge', ipRange: FABRIC.ipRange },
    tor: { netns: torNetns(p), bridge: FABRIC.torBridge, port: FABRIC.torPort },
    addresses: [],
  };
  lan.fabric = fabric;
  await saveState(desc);

  progress(`fabric host: namespace ${fabric.netns}, ${fabric.uplink} ${fabric.lanIp} on the LAN, ${fabric.fabricIf} on the top-of-rack bridge ${fabric.tor.bridge} in ${fabric.tor.netns}`);
  await netnsAdd(fabric.netns);
  await lanPort(lan, fabric.lanPort, fabric.netns, fabric.uplink);
  await sh('ip', ['-n', fabric.netns, 'addr', 'add', `${fabric.lanIp}/${LAN.prefixLength}`, 'dev', fabric.uplink]);
  await netnsAdd(fabric.tor.netns);
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'add', fabric.tor.bridge, 'mtu', String(lan.mtu), 'type', 'bridge']);
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'set', fabric.tor.bridge, 'up']);
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'add', fabric.tor.port, 'mtu', String(lan.mtu), 'type', 'veth', 'peer', 'name', fabric.fabricIf, 'mtu', String(lan.mtu), 'netns', fabric.netns]);
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'set', fabric.tor.port, 'master', fabric.tor.bridge]);
  // No learning on the fabric host's port: what the fabric host hairpins from one container host to another
  // leaves it with the sender's MAC as source (vsw rewrites only the destination), so a learning port would
  // move the sender's MAC onto it and drop the answer to that MAC here (a frame for the port it came in on).
  // What it sends goes out by the hosts' learned ports (or floods to them, and a host's uplink drops what is not
  // for its MAC); what the hosts send, the fabric host's MAC being never learned, floods to the one port an
  // isolated port may reach: this one.
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'set', fabric.tor.port, 'type', 'bridge_slave', 'learning', 'off']);
  await sh('ip', ['-n', fabric.tor.netns, 'link', 'set', fabric.tor.port, 'up']);
  await sh('ip', ['-n', fabric.netns, 'link', 'set', fabric.fabricIf, 'up']);

  progress(`fabric host: its vsw daemon, l2bridge network ${fabric.network.name} --uplink ${fabric.uplink} --fabric ${fabric.fabricIf}`);
  startLabDaemon(fabric, o.logLevel);
  await saveState(desc);
  await waitDaemon(fabric);
  await vsw(fabric, [
    'network', 'create', '-d', 'l2bridge', '--uplink', fabric.uplink, '--fabric', fabric.fabricIf,
    '--subnet', LAN.subnet, '--gateway', LAN.routerIp, '--ip-range', fabric.network.ipRange, fabric.network.name,
  ]);
  return fabric;
}

/**
 * A lab host's cable to the top-of-rack bridge (port `port` there, `ifname`
 * in namespace ns), both up. The port is isolated: it forwards only to the
 * fabric host's port, never to another host's, so what a host's containers
 * send (ARP for another host's container included) reaches the fabric host
 * and nothing else, as on a point-to-point link to it.
 */
async function torPort(fabric: LabFabric, port: string, ns: string, ifname: string, mtu: number): Promise<void> {
  const tor = fabric.tor;
  await sh('ip', ['-n', tor.netns, 'link', 'add', port, 'mtu', String(mtu), 'type', 'veth', 'peer', 'name', ifname, 'mtu', String(mtu), 'netns', ns]);
  await sh('ip', ['-n', tor.netns, 'link', 'set', port, 'master', tor.bridge]);
  await sh('ip', ['-n', tor.netns, 'link', 'set', port, 'type', 'bridge_slave', 'isolated', 'on']);
  await sh('ip', ['-n', tor.netns, 'link', 'set', port, 'up']);
  await sh('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
}

/** An interface's MAC, as `ip -j link` reports it. */
async function linkMac(ns: string, ifname: string): Promise<string> {
  const r = await sh('ip', ['-n', ns, '-j', 'link', 'show', 'dev', ifname]);
  const mac = (JSON.parse(r.stdout) as { address?: string }[])[0]?.address;
  if (!mac) throw new BenchError(`${ns}: ${ifname} has no MAC address (ip -j link show: ${r.stdout.trim().slice(0, 120)}).`);
  return mac;
}

/** A veth from the LAN bridge (port `port` in the LAN namespace) to `ifname` in namespace ns, both up. */
async function lanPort(lan: LabLan, port: string, ns: string, ifname: string): Promise<void> {
  await sh('ip', ['-n', lan.netns, 'link', 'add', port, 'mtu', String(lan.mtu), 'type', 'veth', 'peer', 'name', ifname, 'mtu', String(lan.mtu), 'netns', ns]);
  await sh('ip', ['-n', lan.netns, 'link', 'set', port, 'master', lan.bridge, 'up']);
  await sh('ip', ['-n', ns, 'link', 'set', ifname, 'up']);
}

/**
 * dnsmasq as the LAN's DHCP server, in the LAN namespace, in the foreground
 * of a detached `ip netns exec` (which execs it: the pid is dnsmasq's), so
 * down finds it by pid as well as by namespace. No DNS (--port=0), no system
 * configuration (--conf-file=/dev/null), answers only on the bridge.
 */
function startDnsmasq(lan: LabLan): void {
  const d = lan.dhcp;
  const args = [
    'netns', 'exec', lan.netns, 'dnsmasq',
    '--keep-in-foreground',
    '--conf-file=/dev/null',
    '--port=0',
    `--interface=${lan.bridge}`,
    '--bind-interfaces',
    `--dhcp-range=${d.rangeStart},${d.rangeEnd},255.255.255.0,${LAN.dhcpLeaseTime}`,
    `--dhcp-option=option:router,${LAN.routerIp}`,
    '--dhcp-authoritative',
    `--dhcp-leasefile=${d.leaseFile}`,
    `--pid-file=${d.pidFile}`,
    '--log-dhcp',
    `--log-facility=${d.log}`,
  ];
  // What dnsmasq says before its log file is open (a bad option, a busy port) lands in the same file.
  const fd = openSync(d.log, 'a');
  try {
    const child = spawn('ip', args, { stdio: ['ignore', fd, fd], detached: true });
    child.on('error', () => undefined);
    child.unref();
    d.pid = child.pid ?? null;
  } finally {
    closeSync(fd);
  }
  if (d.pid === null) throw new BenchError(`could not start dnsmasq in ${lan.netns} (ip ${args.join(' ')}).`);
}

/** dnsmasq listening on UDP 67 in the LAN namespace, or one sentence with the end of its log. */
async function waitDnsmasq(lan: LabLan): Promise<void> {
  await waitFor(`dnsmasq serving DHCP in ${lan.netns}`, 10_000, async () => {
    if (lan.dhcp.pid === null || !processAlive(lan.dhcp.pid)) {
      const tail = logTail(lan.dhcp.log);
      throw new BenchError(`dnsmasq exited at start${tail ? `; the end of its log (${lan.dhcp.log}):\n${tail}` : '.'}`);
    }
    const r = await sh('ip', ['netns', 'exec', lan.netns, 'ss', '-Hlun', 'sport = :67'], { allowFail: true });
    return r.stdout.trim() ? true : undefined;
  }, 100);
}

/** The leases in dnsmasq's lease file ("EXPIRY MAC IP HOSTNAME CLIENT-ID" per line). */
export function readLeases(file: string): { expiry: number; mac: string; ip: string; hostname: string }[] {
  let text = '';
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return [];
  }
  return text
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => {
      const [expiry, mac, ip, hostname] = l.split(' ');
      return { expiry: Number(expiry), mac, ip, hostname };
    });
}

// ---------------------------------------------------------------- down

export interface DownReport {
  /** Daemons that exited on SIGTERM, and processes that needed SIGKILL. */
  stopped: number;
  killed: number;
  namespaces: string[];
  files: string[];
}

/**
 * Removes the lab with this prefix: stops its daemons (SIGTERM, SIGKILL after
 * 5 s) and every other process in its namespaces, deletes every PREFIX-*
 * namespace, the state file, sockets and logs. Nothing there is no error.
 */
export async function labDown(prefix: string, progress: Progress = () => undefined): Promise<DownReport> {
  checkPrefix(prefix);
  let desc: LabDescription | null = null;
  try {
    desc = await readLab(prefix);
  } catch {
    // an unreadable state file: remove by name below
  }
  const namespaces = await labNamespaces(prefix);
  // A recorded pid counts only while it is still that daemon (pids are reused).
  const daemons = (desc?.hosts ?? []).map((h) => h.pid).filter((pid): pid is number => pid !== null && processAlive(pid) && cmdline(pid).includes(`${prefix}-h`));
  // The fabric host's daemon (--lan-mode l2tunnel), the same way.
  const fab = desc?.lan?.fabric;
  if (fab && fab.pid !== null && processAlive(fab.pid) && cmdline(fab.pid).includes(fab.socket)) daemons.push(fab.pid);
  // dnsmasq runs in the LAN namespace, so the loop below finds it anyway; by pid too, in case that namespace lost its name.
  const dnsmasqPid = desc?.lan?.dhcp.pid ?? null;
  const dnsmasq = dnsmasqPid !== null && processAlive(dnsmasqPid) && cmdline(dnsmasqPid).includes(dnsmasqFile(prefix, 'pid')) ? [dnsmasqPid] : [];
  // The controller and the etcd members (--controller) run in the underlay namespace: by pid too, for the same reason.
  const ctl = desc?.controller;
  const controller = ctl && ctl.pid !== null && processAlive(ctl.pid) && cmdline(ctl.pid).includes(ctl.socket) ? [ctl.pid] : [];
  const members = (ctl?.members ?? []).map((m) => m.pid).filter((pid, k): pid is number => pid !== null && processAlive(pid) && cmdline(pid).includes(ctl!.members[k].dataDir));
  const inside = new Set<number>([...daemons, ...dnsmasq, ...controller, ...members]);
  for (const ns of namespaces) {
    const r = await cmd('ip', ['netns', 'pids', ns], { cleanup: true, allowFail: true });
    for (const pid of r.stdout.split(/\s+/).filter(Boolean)) inside.add(Number(pid));
  }
  inside.delete(process.pid);
  const pids = [...inside].filter(processAlive);
  // etcd last: the agents and the controller may still talk to it while they stop.
  const isEtcd = (pid: number): boolean => members.includes(pid) || /^(\S*\/)?etcd /.test(cmdline(pid));
  const etcdPids = pids.filter(isEtcd);
  const rest = pids.filter((pid) => !isEtcd(pid));
  let killed = 0;
  if (pids.length) {
    const what = [`${daemons.length} vsw daemon${daemons.length === 1 ? '' : 's'}`];
    if (dnsmasq.length) what.push('dnsmasq');
    if (controller.length) what.push('the controller');
    if (etcdPids.length) what.push(`${etcdPids.length} etcd member${etcdPids.length === 1 ? '' : 's'}`);
    progress(`stopping ${pids.length} process${pids.length > 1 ? 'es' : ''} (${what.join(', ')})`);
    if (rest.length) killed += (await terminate(rest, 5000)).killed.length;
    // One member at a time: members stopped together each try to hand their leadership to another that is
    // stopping too, and wait for it (measured: 7 s for two; one at a time, 0.1 s for all three).
    for (const pid of etcdPids) killed += (await terminate([pid], 5000)).killed.length;
  }
  // Containers first, then hosts (and the router, the outside host, the fabric host), then the underlay,
  // the LAN and the top-of-rack switch: the order links were made in, reversed.
  const rank = (ns: string): number => (ns.endsWith('-ul') || ns.endsWith('-lan') || ns.endsWith('-tor') ? 2 : /-[cl]\d+$/.test(ns) ? 0 : 1);
  const ordered = [...namespaces].sort((a, b) => rank(a) - rank(b));
  const failed: string[] = [];
  for (const ns of ordered) {
    const r = await cmd('ip', ['netns', 'delete', ns], { cleanup: true, allowFail: true, timeoutMs: 15_000 });
    if (r.code !== 0 && existsSync(`/run/netns/${ns}`)) failed.push(`${ns} (${r.stderr.trim() || `exit status ${r.code}`})`);
  }
  const files: string[] = [];
  const entries = await readdir(LAB_DIR).catch(() => [] as string[]);
  for (const f of entries) {
    if (f === `${prefix}.json` || f === `${prefix}.json.tmp` || f.startsWith(`${prefix}-`)) {
      await rm(path.join(LAB_DIR, f), { force: true, recursive: true });
      files.push(path.join(LAB_DIR, f));
    }
  }
  if (failed.length) throw new BenchError(`could not delete namespace${failed.length > 1 ? 's' : ''} ${failed.join(', ')}: run \`ip netns delete NAME\` to see why.`);
  return { stopped: pids.length - killed, killed, namespaces: ordered, files };
}

// ---------------------------------------------------------------- iperf3

export interface IperfArgs {
  clientNs: string;
  serverNs: string;
  serverIp: string;
  seconds: number;
  /** Parallel streams (-P). */
  parallel?: number;
  udp?: boolean;
  /** UDP datagram payload (-l); default 64 with --udp. */
  len?: number;
  /** Called once the client has started, with its completion: the bench measures CPU in between. */
  during?: (done: Promise<unknown>) => Promise<void>;
  /** Reverse mode (-R): the server sends, the client receives. */
  reverse?: boolean;
}

export interface IperfOutcome {
  tcp?: TcpResult;
  udp?: UdpResult;
  /** iperf3's -J document. */
  doc: Record<string, unknown>;
}

/**
 * One iperf3 test: a one-shot server (-1) bound to serverIp in serverNs, the
 * client with -J in clientNs; TCP (with -P) or UDP at full rate (-b 0).
 */
export async function runIperf(a: IperfArgs): Promise<IperfOutcome> {
  const server = start('ip', ['netns', 'exec', a.serverNs, 'iperf3', '-s', '-1', '-B', a.serverIp, '-p', String(IPERF_PORT)], 'pipe');
  let serverOut = '';
  server.stdout?.on('data', (d: Buffer) => (serverOut += d.toString()));
  server.stderr?.on('data', (d: Buffer) => (serverOut += d.toString()));
  try {
    // The listening socket, not the "listening" line: iperf3 block-buffers stdout into a pipe.
    await waitFor(`the iperf3 server in ${a.serverNs} listening`, 10_000, async () => {
      if (server.exitCode !== null) throw new BenchError(`the iperf3 server in ${a.serverNs} exited: ${serverOut.trim()}`);
      const r = await sh('ip', ['netns', 'exec', a.serverNs, 'ss', '-Hltn', `sport = :${IPERF_PORT}`], { allowFail: true });
      return r.stdout.trim() ? true : undefined;
    }, 50);
    const args = ['netns', 'exec', a.clientNs, 'iperf3', '-c', a.serverIp, '-p', String(IPERF_PORT), '-t', String(a.seconds), '-J'];
    if ((a.parallel ?? 1) > 1) args.push('-P', String(a.parallel));
    if (a.udp) args.push('-u', '-b', '0', '-l', String(a.len ?? 64));
    if (a.reverse) args.push('-R');
    const client = sh('ip', args, { allowFail: true, timeoutMs: (a.seconds + 30) * 1000 });
    if (a.during) await a.during(client);
    const r = await client;
    const doc = parseIperfJson(r.stdout);
    return a.udp ? { udp: udpResult(doc), doc } : { tcp: tcpResult(doc), doc };
  } finally {
    if (!(await exited(server, 3000))) await stop(server, 1000);
  }
}

/** Something iperf can run in: a container, or the LAN's outside host. */
export type LabPeer = Pick<LabContainer, 'id' | 'netns' | 'ip'>;

/** A container of the lab by its id (h1-c1; with --lan also h1-l1, and "out" for the outside host). */
export function findContainer(desc: LabDescription, id: string): LabPeer {
  const peers: LabPeer[] = [...desc.hosts.flatMap((h) => h.containers), ...(desc.lan?.containers ?? [])];
  if (desc.lan) peers.push({ id: 'out', netns: desc.lan.outside.netns, ip: desc.lan.outside.ip });
  const c = peers.find((x) => x.id === id);
  if (!c) throw new BenchError(`the lab has no container ${id}: pick one of ${peers.map((x) => x.id).join(', ')}.`);
  return c;
}

/** A ping from one namespace; the round trip in ms, or null if no answer came. */
export async function pingOnce(ns: string, ip: string, tries = 3): Promise<number | null> {
  for (let k = 0; k < tries; k++) {
    const r = await sh('ip', ['netns', 'exec', ns, 'ping', '-c', '1', '-W', '1', ip], { allowFail: true, timeoutMs: 5000 });
    const m = /time=([\d.]+) ms/.exec(r.stdout);
    if (r.code === 0 && m) return Number(m[1]);
    await sleep(200);
  }
  return null;
}

// ---------------------------------------------------------------- status

export interface HostStatus {
  host: string;
  daemon: 'running' | 'not running';
  answers: boolean;
  netns: boolean;
  containers: { id: string; netns: boolean }[];
}

export interface LanStatus {
  dnsmasq: 'running' | 'not running';
  /** Leases in dnsmasq's lease file (the containers have static addresses: these are other DHCP clients'). */
  leases: number;
  /** Each namespace of the LAN (LAN, router, outside host, the LAN containers; the fabric host and top-of-rack switch with l2tunnel) and whether it exists. */
  namespaces: { netns: string; exists: boolean }[];
  /** The fabric host's daemon (--lan-mode l2tunnel); null without one. */
  fabric: { daemon: 'running' | 'not running'; answers: boolean } | null;
}

/** Whether dnsmasq (and the fabric host's daemon) runs and the LAN's namespaces exist; null for a lab without --lan. */
export async function lanStatus(desc: LabDescription): Promise<LanStatus | null> {
  const lan = desc.lan;
  if (!lan) return null;
  const pid = lan.dhcp.pid;
  const running = pid !== null && processAlive(pid) && cmdline(pid).includes(lan.dhcp.pidFile);
  const fab = lan.fabric ?? null;
  const names = [lan.netns, lan.router.netns, lan.outside.netns, ...(fab ? [fab.netns, fab.tor.netns] : []), ...lan.containers.map((c) => c.netns)];
  let fabric: LanStatus['fabric'] = null;
  if (fab) {
    const up = fab.pid !== null && processAlive(fab.pid) && cmdline(fab.pid).includes(fab.socket);
    const answers = up && (await vsw(fab, ['network', 'ls'], { allowFail: true, timeoutMs: 5000 })).code === 0;
    fabric = { daemon: up ? 'running' : 'not running', answers };
  }
  return {
    dnsmasq: running ? 'running' : 'not running',
    leases: readLeases(lan.dhcp.leaseFile).length,
    namespaces: names.map((netns) => ({ netns, exists: existsSync(`/run/netns/${netns}`) })),
    fabric,
  };
}

/** Whether each daemon runs and answers, and each namespace exists. */
export async function labStatus(desc: LabDescription): Promise<HostStatus[]> {
  const out: HostStatus[] = [];
  for (const h of desc.hosts) {
    const running = h.pid !== null && processAlive(h.pid) && cmdline(h.pid).includes(h.socket);
    const answers = running && (await vsw(h, ['network', 'ls'], { allowFail: true, timeoutMs: 5000 })).code === 0;
    out.push({
      host: h.name,
      daemon: running ? 'running' : 'not running',
      answers,
      netns: existsSync(`/run/netns/${h.netns}`),
      containers: h.containers.map((c) => ({ id: c.id, netns: existsSync(`/run/netns/${c.netns}`) })),
    });
  }
  return out;
}

// ---------------------------------------------------------------- the kernel's VXLAN, for the bench

export interface KernelVxlanHost {
  name: string;
  netns: string;
  underlayIp: string;
  containerNs: string;
  containerIp: string;
  mtu: number | null;
}

export interface KernelVxlanTopology {
  vni: number;
  subnet: string;
  hosts: KernelVxlanHost[];
}

export const kernelNetns = (prefix: string, i: number): string => `${prefix}-k${i}`;

/**
 * The kernel's answer to the lab's overlay, on the lab's underlay: per host i
 * a namespace P-kI (eth0 192.168.56.(100+i) on the same br0), a vxlan0 (VNI,
 * UDP 4789, nolearning, one all-zeros FDB entry per peer so that broadcast
 * and unknown unicast reach every peer), a Linux bridge br0 with vxlan0 and
 * a veth whose other end is eth0 in the container namespace P-kI-c1
 * (10.11.0.(i+1) by default, MTU underlay - 50, as on the vsw side).
 * kernelVxlanDown (or labDown) removes it.
 */
export async function kernelVxlanUp(lab: LabDescription, opts: { hosts?: number; vni?: number; subnet?: string } = {}): Promise<KernelVxlanTopology> {
  const n = opts.hosts ?? 2;
  const vni = opts.vni ?? lab.network.vni ?? LAB_DEFAULTS.vni;
  const subnet = opts.subnet ?? '10.11.0.0/24';
  const base = parsePrefix(subnet);
  if (!base || base.len > 28) throw new BenchError(`the kernel VXLAN subnet must be an IPv4 subnet up to /28, not "${subnet}".`);
  const innerMtu = lab.underlay.mtu - VXLAN_OVERHEAD;
  const [len] = [subnet.split('/')[1]];
  const addr = (k: number): string => {
    const v = (base.base + k) >>> 0;
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.');
  };
  const hosts: KernelVxlanHost[] = [];
  for (let i = 1; i <= n; i++) {
    const ns = kernelNetns(lab.prefix, i);
    hosts.push({ name: `k${i}`, netns: ns, underlayIp: kernelUnderlayIp(i), containerNs: `${ns}-c1`, containerIp: addr(i + 1), mtu: null });
  }
  for (const h of hosts) {
    await netnsAdd(h.netns);
    await underlayLink(lab.prefix, h.name, h.netns, h.underlayIp, lab.underlay.mtu);
    const vx = ['-n', h.netns, 'link', 'add', 'vxlan0', 'mtu', String(innerMtu), 'type', 'vxlan', 'id', String(vni), 'dstport', String(VXLAN_PORT), 'local', h.underlayIp, 'dev', 'eth0', 'nolearning'];
    const r = await sh('ip', vx, { allowFail: true });
    if (r.code !== 0) {
      throw new BenchError(`the kernel refused a VXLAN device (ip ${vx.join(' ')}: ${r.stderr.trim() || `exit status ${r.code}`}): load its module with \`modprobe vxlan\`.`);
    }
    for (const peer of hosts) {
      if (peer !== h) await sh('bridge', ['-n', h.netns, 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vxlan0', 'dst', peer.underlayIp]);
    }
    await sh('ip', ['-n', h.netns, 'link', 'add', 'br0', 'type', 'bridge']);
    await sh('ip', ['-n', h.netns, 'link', 'set', 'vxlan0', 'master', 'br0', 'up']);
    await netnsAdd(h.containerNs);
    await sh('ip', ['-n', h.netns, 'link', 'add', 'veth0', 'mtu', String(innerMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(innerMtu), 'netns', h.containerNs]);
    await sh('ip', ['-n', h.netns, 'link', 'set', 'veth0', 'master', 'br0', 'up']);
    await sh('ip', ['-n', h.netns, 'link', 'set', 'br0', 'up']);
    await sh('ip', ['-n', h.containerNs, 'addr', 'add', `${h.containerIp}/${len}`, 'dev', 'eth0']);
    await sh('ip', ['-n', h.containerNs, 'link', 'set', 'eth0', 'up']);
    h.mtu = await ifMtu(h.containerNs, 'eth0');
  }
  return { vni, subnet, hosts };
}

/** Removes the kernel VXLAN baseline (every PREFIX-k* namespace and what runs in it). */
export async function kernelVxlanDown(prefix: string): Promise<void> {
  const namespaces = (await labNamespaces(prefix)).filter((ns) => /^-k\d+(-c\d+)?$/.test(ns.slice(prefix.length)));
  const pids: number[] = [];
  for (const ns of namespaces) {
    const r = await cmd('ip', ['netns', 'pids', ns], { cleanup: true, allowFail: true });
    pids.push(...r.stdout.split(/\s+/).filter(Boolean).map(Number));
  }
  if (pids.length) await terminate(pids, 1000);
  // Containers first; the underlay's k1, k2 ports go with their peers.
  for (const ns of namespaces.sort((a, b) => b.length - a.length)) {
    await cmd('ip', ['netns', 'delete', ns], { cleanup: true, allowFail: true, timeoutMs: 15_000 });
  }
}

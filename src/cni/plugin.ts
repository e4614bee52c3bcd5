/**
 * The vsw CNI plugin (type "vsw-cni"): what a container runtime (podman's CNI
 * backend, containerd, the kubelet) runs to put a container on a vsw network.
 * It holds no state: every command asks the daemon over its socket, which
 * creates the TAP in CNI_NETNS, keeps the endpoint across restarts, and keys
 * it by container id and interface ("cni:CONTAINERID/IFNAME"), so a repeated
 * ADD finds the endpoint the first one made.
 *
 * Spec: CNI 1.0.0 (ADD, DEL, CHECK, VERSION), answering configs of 0.3.0,
 * 0.3.1 and 0.4.0 with results in their own format.
 */
import { createHash } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { isIPv6 } from 'node:net';
import { Client } from '../cli/client.js';
import { DaemonError, UnreachableError } from '../cli/errors.js';
import { DEFAULT_SOCKET_PATH, type CreateEndpointRequest, type Endpoint, type Network, type PortMapping, type PutGroupRequest } from '../service/api-types.js';

export const PLUGIN_TYPE = 'vsw-cni';
export const SUPPORTED_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0'] as const;
export const LATEST_VERSION = '1.0.0';

/** The standard error codes (CNI spec, "Error"), and vsw's own from 100 on. */
export const CNI_ERR = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnvironment: 4,
  ioFailure: 5,
  decodeFailure: 6,
  invalidConfig: 7,
  tryAgainLater: 11,
  /** The address (or name, or host port) the container asked for is taken. */
  taken: 100,
  /** The interface in the container is not what the endpoint records (CHECK). */
  checkFailed: 101,
} as const;

export class CniError extends Error {
  constructor(
    readonly code: number,
    message: string,
    readonly details = '',
  ) {
    super(message);
  }
}

/** A policy group the conflist asks for on each endpoint: PUT .../layers/LAYER/groups/NAME with the rest as the body. */
export interface CniPolicy extends PutGroupRequest {
  /** Default "acl", the layer every endpoint has. */
  layer?: string;
  name: string;
}

export interface CniDns {
  nameservers?: string[];
  domain?: string;
  search?: string[];
  options?: string[];
}

/** The network configuration on stdin (a conflist's plugin entry, flattened by the runtime). */
export interface CniConfig {
  cniVersion: string;
  name: string;
  type: string;
  /** The vsw network. */
  network: string;
  /** The daemon's API socket; default /run/vsw/vsw.sock. */
  socket?: string;
  /** A fixed address for every container of this config (one container at a time, then). */
  ip?: string;
  policy?: CniPolicy;
  dns?: CniDns;
  capabilities?: Record<string, boolean>;
  runtimeConfig?: { portMappings?: CniPortMapping[]; ips?: string[] };
  prevResult?: CniResult;
  args?: unknown;
}

export interface CniPortMapping {
  hostPort: number;
  containerPort: number;
  protocol?: string;
  hostIP?: string;
}

export interface CniEnv {
  command: string;
  containerId: string;
  netns: string;
  ifname: string;
  args: string;
  path: string;
}

export interface CniResult {
  cniVersion: string;
  interfaces?: { name: string; mac?: string; sandbox?: string }[];
  ips?: { version?: '4' | '6'; address: string; gateway?: string; interface?: number }[];
  routes?: { dst: string; gw?: string }[];
  dns?: CniDns;
}

const CONTAINER_ID = /^[A-Za-z0-9][A-Za-z0-9_.-]*$/;

/** The CNI_* variables a command needs, each checked; VERSION needs none. */
export function readEnv(env: NodeJS.ProcessEnv): CniEnv {
  const command = env.CNI_COMMAND ?? '';
  if (!['ADD', 'DEL', 'CHECK', 'VERSION', 'GC', 'STATUS'].includes(command)) {
    throw new CniError(CNI_ERR.invalidEnvironment, `CNI_COMMAND ${JSON.stringify(command)} is not a CNI command: the runtime must set ADD, DEL, CHECK or VERSION.`);
  }
  const e: CniEnv = { command, containerId: env.CNI_CONTAINERID ?? '', netns: env.CNI_NETNS ?? '', ifname: env.CNI_IFNAME ?? '', args: env.CNI_ARGS ?? '', path: env.CNI_PATH ?? '' };
  if (command === 'VERSION' || command === 'GC' || command === 'STATUS') return e;
  if (!CONTAINER_ID.test(e.containerId)) {
    throw new CniError(CNI_ERR.invalidEnvironment, `CNI_CONTAINERID ${JSON.stringify(e.containerId)} is invalid: the runtime must pass letters, digits, '_', '.' or '-'.`);
  }
  if (e.ifname === '' || Buffer.byteLength(e.ifname) > 15 || /[/:\s]/.test(e.ifname)) {
    throw new CniError(CNI_ERR.invalidEnvironment, `CNI_IFNAME ${JSON.stringify(e.ifname)} is not an interface name: the runtime must pass 1 to 15 bytes such as eth0.`);
  }
  // DEL may come without a namespace (it is gone); ADD and CHECK need one.
  if (command !== 'DEL' && !e.netns.startsWith('/')) {
    throw new CniError(CNI_ERR.invalidEnvironment, `CNI_NETNS ${JSON.stringify(e.netns)} is not a path: the runtime must pass the container's network namespace file, such as /run/netns/NAME.`);
  }
  return e;
}

/** The config on stdin, parsed and checked against what this plugin knows. */
export function parseConfig(text: string): CniConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new CniError(CNI_ERR.decodeFailure, `the network configuration on stdin is not JSON (${(err as Error).message}): check the conflist.`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new CniError(CNI_ERR.decodeFailure, 'the network configuration on stdin is not a JSON object: check the conflist.');
  const c = raw as Partial<CniConfig>;
  if (typeof c.cniVersion !== 'string' || !(SUPPORTED_VERSIONS as readonly string[]).includes(c.cniVersion)) {
    throw new CniError(
      CNI_ERR.incompatibleVersion,
      `cniVersion ${JSON.stringify(c.cniVersion)} is not supported by ${PLUGIN_TYPE}: use one of ${SUPPORTED_VERSIONS.join(', ')}.`,
      `supported: ${SUPPORTED_VERSIONS.join(',')}`,
    );
  }
  if (typeof c.network !== 'string' || c.network === '') {
    throw new CniError(CNI_ERR.invalidConfig, `the conflist ${JSON.stringify(c.name ?? '')} has no "network" naming the vsw network: write one with \`vsw cni install --network NAME\`.`);
  }
  if (c.socket !== undefined && (typeof c.socket !== 'string' || !c.socket.startsWith('/'))) {
    throw new CniError(CNI_ERR.invalidConfig, `"socket" ${JSON.stringify(c.socket)} is not an absolute path: give the daemon's API socket, such as ${DEFAULT_SOCKET_PATH}.`);
  }
  if (c.ip !== undefined && typeof c.ip !== 'string') throw new CniError(CNI_ERR.invalidConfig, '"ip" must be an address string such as 10.88.0.5: fix the conflist.');
  if (c.policy !== undefined && (typeof c.policy !== 'object' || c.policy === null || typeof c.policy.name !== 'string' || !Array.isArray(c.policy.rules))) {
    throw new CniError(CNI_ERR.invalidConfig, '"policy" must be a group {"name": ..., "rules": [...]} (with an optional "layer"): fix the conflist.');
  }
  return c as CniConfig;
}

/** {cniVersion, supportedVersions}: what VERSION prints. */
export function versionInfo(cniVersion: string = LATEST_VERSION): object {
  return { cniVersion, supportedVersions: [...SUPPORTED_VERSIONS] };
}

/** The daemon's calls the plugin makes; a separate interface so the unit tests can answer them. */
export interface DaemonApi {
  get<T>(path: string): Promise<T>;
  post<T>(path: string, body: object): Promise<T>;
  put<T>(path: string, body: object): Promise<T>;
  delete(path: string): Promise<void>;
}

export function ownerKey(env: CniEnv): string {
  return `cni:${env.containerId}/${env.ifname}`;
}

const seg = encodeURIComponent;

export class Plugin {
  constructor(
    private readonly api: DaemonApi,
    private readonly socket: string,
  ) {}

  static forConfig(config: CniConfig): Plugin {
    const socket = config.socket ?? DEFAULT_SOCKET_PATH;
    return new Plugin(new Client(socket), socket);
  }

  async add(env: CniEnv, config: CniConfig): Promise<CniResult> {
    const network = await this.network(config.network);
    await requireNetns(env.netns);
    const request: CreateEndpointRequest = {
      network: config.network,
      netns: env.netns,
      ifname: env.ifname,
      owner: ownerKey(env),
      name: endpointName(env),
    };
    const ip = config.runtimeConfig?.ips?.[0] ?? config.ip;
    if (ip !== undefined) request.ip = ip;
    const publish = portMappings(config);
    if (publish.length > 0) {
      request.publish = publish;
      // The runtime may hold the host port open itself (podman does): the kernel redirects it, as the portmap plugin would.
      request.publishVia = 'dnat';
    }
    // A repeated ADD gets the endpoint the first one made: a failure below must not take that one away.
    const existed = (await this.call(() => this.api.get<Endpoint[]>(`/endpoints?owner=${seg(ownerKey(env))}`))).length > 0;
    let endpoint: Endpoint;
    try {
      endpoint = await this.call(() => this.api.post<Endpoint>('/endpoints', request));
    } catch (err) {
      // The daemon words it for its CLI (--ip); a runtime's user set the conflist or the runtime's --ip.
      if (err instanceof CniError && err.code === CNI_ERR.taken && ip !== undefined && err.message.startsWith(`${ip.split('/')[0]} is already used`)) {
        throw new CniError(CNI_ERR.taken, `address ${ip} (the conflist's "ip", or the runtime's ips) is already used on vsw network ${config.network}: ask for another or none.`, err.message);
      }
      throw err;
    }
    if (config.policy) {
      const { layer = 'acl', name, ...group } = config.policy;
      try {
        await this.call(() => this.api.put(`/endpoints/${seg(endpoint.id)}/layers/${seg(layer)}/groups/${seg(name)}`, group));
      } catch (err) {
        // Nothing half-made: the container gets its policy or no endpoint at all.
        if (!existed) await this.api.delete(`/endpoints/${seg(endpoint.id)}`).catch(() => undefined);
        throw err;
      }
    }
    return buildResult(config.cniVersion, env, endpoint, network, config.dns);
  }

  async del(env: CniEnv): Promise<void> {
    const found = await this.call(() => this.api.get<Endpoint[]>(`/endpoints?owner=${seg(ownerKey(env))}`));
    for (const endpoint of found) {
      try {
        await this.api.delete(`/endpoints/${seg(endpoint.id)}`);
      } catch (err) {
        // Gone meanwhile (its namespace went, and the daemon's health check took it): that is the goal.
        if (err instanceof DaemonError && err.status === 404) continue;
        throw this.translate(err);
      }
    }
  }

  /** The endpoint, its interface, address and route are as ADD recorded them and prevResult says. */
  async check(env: CniEnv, config: CniConfig): Promise<void> {
    if (!config.prevResult) throw new CniError(CNI_ERR.invalidConfig, 'CHECK needs prevResult (the result of ADD) in the configuration: the runtime must pass it.');
    await this.network(config.network);
    await requireNetns(env.netns);
    const [endpoint] = await this.call(() => this.api.get<Endpoint[]>(`/endpoints?owner=${seg(ownerKey(env))}`));
    if (!endpoint) throw new CniError(CNI_ERR.unknownContainer, `container ${env.containerId} has no vsw endpoint for ${env.ifname}: run ADD first.`);
    const fail = (what: string): CniError => new CniError(CNI_ERR.checkFailed, `${env.ifname} of container ${env.containerId} ${what}: remove and add the container's network again.`);
    if (endpoint.state === 'down') throw fail(`is down in vsw (${endpoint.stateReason ?? 'no reason given'})`);
    const cidr = `${endpoint.ip}/${endpoint.prefixLength}`;
    const prev = config.prevResult;
    if (!prev.ips?.some((i) => i.address === cidr)) throw fail(`has address ${cidr}, which prevResult does not list`);
    // Loaded here: CHECK is rare, and every ADD and DEL pays for what the plugin imports at start.
    const { ipJson } = await import('../host/exec.js');
    const links = await ipJson<{ ifname: string; address?: string; operstate?: string; flags?: string[]; addr_info?: { family: string; local: string; prefixlen: number }[] }[]>(['address', 'show'], env.netns);
    const link = links.find((l) => l.ifname === env.ifname);
    if (!link) throw fail('is missing from its network namespace');
    if (link.address !== endpoint.mac) throw fail(`has MAC ${link.address ?? 'none'} instead of ${endpoint.mac}`);
    if (!link.flags?.includes('UP')) throw fail('is down');
    if (!link.addr_info?.some((a) => a.family === 'inet' && `${a.local}/${a.prefixlen}` === cidr)) throw fail(`lacks its address ${cidr}`);
    const gateway = prev.routes?.find((r) => r.dst === '0.0.0.0/0')?.gw;
    if (gateway !== undefined) {
      const routes = await ipJson<{ dst: string; gateway?: string; dev?: string }[]>(['-4', 'route', 'show', 'default'], env.netns);
      if (!routes.some((r) => r.gateway === gateway && r.dev === env.ifname)) throw fail(`has no default route via ${gateway}`);
    }
  }

  private async network(name: string): Promise<Network> {
    try {
      return await this.call(() => this.api.get<Network>(`/networks/${seg(name)}`));
    } catch (err) {
      if (err instanceof CniError && err.code === CNI_ERR.invalidConfig) {
        throw new CniError(CNI_ERR.invalidConfig, `vsw network ${name} does not exist: create it with \`vsw network create ${name} ...\` or fix "network" in the conflist.`);
      }
      throw err;
    }
  }

  /** A daemon call whose failure becomes a CNI error. */
  private async call<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn();
    } catch (err) {
      throw this.translate(err);
    }
  }

  private translate(err: unknown): CniError {
    if (err instanceof CniError) return err;
    if (err instanceof UnreachableError) {
      // No details: runtimes print msg and details joined, and the client's own wording is for the CLI.
      return new CniError(CNI_ERR.tryAgainLater, `the vsw daemon is not running at ${this.socket}: start it with \`vsw daemon\`, or set "socket" in the conflist to where it listens.`);
    }
    if (err instanceof DaemonError) {
      const code = err.status === 409 ? CNI_ERR.taken : err.status === 404 || err.status === 400 ? CNI_ERR.invalidConfig : CNI_ERR.ioFailure;
      return new CniError(code, err.message);
    }
    return new CniError(CNI_ERR.ioFailure, `talking to the vsw daemon at ${this.socket} failed: ${(err as Error).message}`);
  }
}

/**
 * A name for `vsw endpoint ls`, unique per container and interface: a 64-hex
 * id (podman, the kubelet) by its first 12 digits as the runtime shows it;
 * any other (ctr passes NAMESPACE-ID) whole, or cut with a hash of the rest.
 */
export function endpointName(env: Pick<CniEnv, 'containerId' | 'ifname'>): string {
  const suffix = env.ifname === 'eth0' ? '' : `-${env.ifname.replace(/[^A-Za-z0-9_.-]/g, '_')}`;
  const room = 64 - 'cni-'.length - suffix.length;
  let id = /^[0-9a-f]{64}$/.test(env.containerId) ? env.containerId.slice(0, 12) : env.containerId;
  if (id.length > room) id = `${id.slice(0, room - 9)}-${createHash('sha256').update(env.containerId).digest('hex').slice(0, 8)}`;
  return `cni-${id}${suffix}`;
}

async function requireNetns(path: string): Promise<void> {
  try {
    const [file, own] = await Promise.all([stat(path), stat('/proc/self/ns/net')]);
    if (file.dev === own.dev) return;
  } catch {
    // Reported below.
  }
  throw new CniError(CNI_ERR.invalidEnvironment, `network namespace ${path} (CNI_NETNS) does not exist or is not a network namespace: the runtime must create it before ADD.`);
}

/** runtimeConfig.portMappings (the portMappings capability) as vsw publish requests. */
function portMappings(config: CniConfig): PortMapping[] {
  const out: PortMapping[] = [];
  for (const m of config.runtimeConfig?.portMappings ?? []) {
    const protocol = (m.protocol ?? 'tcp').toLowerCase();
    if (protocol !== 'tcp' && protocol !== 'udp') {
      throw new CniError(CNI_ERR.unsupportedField, `port mapping ${m.hostPort}:${m.containerPort}/${protocol} uses a protocol vsw does not publish: use tcp or udp.`);
    }
    const hostIp = m.hostIP === undefined || m.hostIP === '' ? undefined : m.hostIP;
    if (hostIp !== undefined && isIPv6(hostIp)) {
      // "::" comes beside "0.0.0.0" for the same port.
      if (/^[0:]+$/.test(hostIp)) continue;
      throw new CniError(CNI_ERR.unsupportedField, `port mapping on host address ${hostIp} is IPv6, which vsw's NAT does not publish yet: publish on an IPv4 address.`);
    }
    const mapping: PortMapping = { protocol, hostPort: m.hostPort, containerPort: m.containerPort };
    if (hostIp !== undefined) mapping.hostIp = hostIp;
    out.push(mapping);
  }
  return out;
}

/** The ADD result in the config's version: 0.3.x and 0.4.0 tag each ip with "version". */
export function buildResult(cniVersion: string, env: CniEnv, endpoint: Endpoint, network: Network, dns: CniDns | undefined): CniResult {
  const legacy = cniVersion !== '1.0.0';
  const gateway = network.gateway ?? undefined;
  const result: CniResult = {
    cniVersion,
    interfaces: [{ name: endpoint.ifname, mac: endpoint.mac, sandbox: env.netns }],
    ips: [{ ...(legacy ? { version: '4' as const } : {}), address: `${endpoint.ip}/${endpoint.prefixLength}`, ...(gateway ? { gateway } : {}), interface: 0 }],
    routes: gateway ? [{ dst: '0.0.0.0/0', gw: gateway }] : [],
  };
  // The configuration's own dns wins; otherwise the network's resolver in the switch, with the network as search domain.
  const fromNetwork = network.resolver === undefined ? undefined : { nameservers: [network.resolver], search: [network.name] };
  const answer = dns ?? fromNetwork;
  if (answer) result.dns = answer;
  return result;
}

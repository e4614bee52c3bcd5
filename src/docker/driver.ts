/**
 * The docker network driver: the libnetwork remote driver API (plugin API v1)
 * served by the daemon on /run/docker/plugins/vsw.sock, so that
 * `docker network create -d vsw` and `docker run --network NET -p ...` make
 * vsw networks and endpoints through the same service the REST API uses.
 *
 * How docker 20.10 drives it (docs/DOCKER.md has the user's side):
 * - CreateNetwork carries the network id, docker's IPAM pool and gateway and
 *   the -o options, not the name: the vsw network is named by `-o vsw.name`
 *   or after the id, and owned by "docker:NETWORKID".
 * - CreateEndpoint (at container start) carries docker's address and the
 *   published ports: vsw makes the TAP in its own namespace with the MAC and
 *   MTU only, holds it, and publishes the ports.
 * - Join names the TAP; docker moves it into the container, renames it,
 *   addresses it and brings it up. vsw watches for it there and records where
 *   it went, so health checks, repairs and restarts look in the container.
 * - Leave, then docker moves it back; DeleteEndpoint removes it.
 * Both ids are kept in vsw's state as the owners of what they made, so a
 * restarted daemon answers for the networks and endpoints docker knows.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { chmod } from 'node:fs/promises';
import type { Logger } from 'pino';
import { ipJson, netnsMounted } from '../host/index.js';
import { API_PREFIX, NETWORK_DRIVERS, RESOURCE_NAME_PATTERN, type CreateNetworkRequest, type NetworkDriver, type PortMapping } from '../service/api-types.js';
import { classifyError } from '../service/api.js';
import type { NetworkService } from '../service/service.js';
import { DAEMON_NETNS, dockerTapName } from '../service/endpoint-config.js';
import { claimSocketPath, unlinkIfPresent } from '../service/socket.js';

/** How often, and how long, vsw looks for the TAP in the container after Join. */
const SETTLE_POLL_MS = 100;
const SETTLE_TIMEOUT_MS = 120_000;
const BODY_LIMIT = 1024 * 1024;

/** The -o options of `docker network create -d vsw`, and the CreateNetworkRequest field each sets. */
const NETWORK_OPTIONS: Record<string, (req: CreateNetworkRequest, value: string) => void> = {
  'vsw.driver': (req, v) => {
    if (!(NETWORK_DRIVERS as readonly string[]).includes(v)) throw new DriverError(`-o vsw.driver=${v} is not a vsw driver: use nat, internal or overlay.`);
    req.driver = v as NetworkDriver;
  },
  'vsw.name': (req, v) => {
    if (!new RegExp(RESOURCE_NAME_PATTERN).test(v)) throw new DriverError(`-o vsw.name=${v} is not a network name: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit.`);
    req.name = v;
  },
  'vsw.transit': (req, v) => (req.transit = v),
  'vsw.external-ip': (req, v) => (req.externalIp = v),
  'vsw.nat-ports': (req, v) => (req.natPorts = v),
  'vsw.vni': (req, v) => (req.vni = integer('vsw.vni', v)),
  'vsw.vtep': (req, v) => (req.vtep = v),
  'vsw.peers': (req, v) => (req.peers = v.split(',').map((p) => p.trim()).filter((p) => p !== '')),
  'vsw.vxlan-port': (req, v) => (req.vxlanPort = integer('vsw.vxlan-port', v)),
  'vsw.mtu': (req, v) => (req.mtu = integer('vsw.mtu', v)),
  'vsw.ip-range': (req, v) => (req.ipRange = v),
};

/** A refusal docker shows the user as "remote: MESSAGE". */
export class DriverError extends Error {}

function integer(option: string, value: string): number {
  if (!/^\d+$/.test(value)) throw new DriverError(`-o ${option}=${value} is not a whole number: give digits only.`);
  return Number(value);
}

interface Ipv4Data {
  AddressSpace?: string;
  Pool?: string;
  Gateway?: string;
  AuxAddresses?: Record<string, string>;
}

export interface CreateNetworkCall {
  NetworkID: string;
  Options?: { 'com.docker.network.generic'?: Record<string, unknown>; 'com.docker.network.internal'?: boolean; 'com.docker.network.enable_ipv6'?: boolean };
  IPv4Data?: Ipv4Data[];
  IPv6Data?: Ipv4Data[];
}

interface DockerPortBinding {
  Proto: number;
  Port: number;
  HostIP?: string;
  HostPort?: number;
  HostPortEnd?: number;
}

/** The vsw network a `docker network create -d vsw` asks for. */
export function networkRequest(call: CreateNetworkCall): CreateNetworkRequest {
  if (!/^[0-9a-f]{12,64}$/.test(call.NetworkID ?? '')) throw new DriverError(`network id ${JSON.stringify(call.NetworkID)} is not a docker network id: this socket serves docker only.`);
  if (call.Options?.['com.docker.network.enable_ipv6'] || (call.IPv6Data?.length ?? 0) > 0) {
    throw new DriverError('vsw networks are IPv4 only: leave out --ipv6 and the IPv6 --subnet.');
  }
  const pools = call.IPv4Data ?? [];
  if (pools.length !== 1 || !pools[0].Pool) throw new DriverError('a vsw network needs exactly one IPv4 subnet: pass one --subnet, such as --subnet 10.240.0.0/24.');
  const internal = call.Options?.['com.docker.network.internal'] === true;
  const req: CreateNetworkRequest = {
    name: `docker-${call.NetworkID.slice(0, 12)}`,
    driver: internal ? 'internal' : 'nat',
    subnet: pools[0].Pool,
    owner: `docker:${call.NetworkID}`,
  };
  if (pools[0].Gateway) req.gateway = pools[0].Gateway.split('/')[0];
  for (const [key, value] of Object.entries(call.Options?.['com.docker.network.generic'] ?? {})) {
    const set = NETWORK_OPTIONS[key];
    if (!set) throw new DriverError(`docker network option ${key} is not known to vsw: use ${Object.keys(NETWORK_OPTIONS).join(', ')}.`);
    set(req, String(value));
  }
  if (internal && req.driver === 'nat') throw new DriverError('--internal and -o vsw.driver=nat contradict each other: an internal network has no way out; drop one of them.');
  return req;
}

/** docker's port bindings (com.docker.network.portmap) as vsw publish requests; HostPort 0 (-p 80, -P) is a port vsw picks. */
export function publishRequest(bindings: DockerPortBinding[] | undefined): PortMapping[] {
  const out: PortMapping[] = [];
  for (const b of bindings ?? []) {
    const protocol = b.Proto === 6 ? 'tcp' : b.Proto === 17 ? 'udp' : undefined;
    if (!protocol) throw new DriverError(`port ${b.Port} uses IP protocol ${b.Proto}, which vsw does not publish: publish tcp or udp ports.`);
    if (b.HostPortEnd !== undefined && b.HostPortEnd !== 0 && b.HostPortEnd !== b.HostPort) {
      throw new DriverError(`host port range ${b.HostPort}-${b.HostPortEnd} for container port ${b.Port} is not supported by vsw: publish one host port, or none to have vsw pick it.`);
    }
    const mapping: PortMapping = { protocol, hostPort: b.HostPort ?? 0, containerPort: b.Port };
    if (b.HostIP) mapping.hostIp = b.HostIP;
    out.push(mapping);
  }
  return out;
}


type Handler = (body: Record<string, unknown>) => Promise<object>;

export class DockerDriver {
  private server?: Server;
  /** Endpoints docker has joined and whose TAP vsw is still looking for in the container. */
  private readonly settling = new Map<string, AbortController>();

  constructor(
    private readonly service: NetworkService,
    private readonly logger: Logger,
    private readonly version: string,
  ) {}

  async listen(socketPath: string): Promise<void> {
    await claimSocketPath(socketPath);
    const server = createServer((req, res) => void this.serve(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(socketPath, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.server = server;
    await chmod(socketPath, 0o660);
    // A daemon that stopped between a Join and seeing the TAP arrive looks for it again.
    for (const { endpoint } of this.service.state.endpoints.values()) {
      if (endpoint.owner?.startsWith('docker:') && endpoint.unplaced && endpoint.handedTo) {
        this.settle(endpoint.owner.slice('docker:'.length), endpoint.id, endpoint.mac, endpoint.handedTo);
      }
    }
    this.logger.info({ socket: socketPath }, 'docker network driver listening: docker network create -d vsw ...');
  }

  async close(socketPath: string): Promise<void> {
    for (const watch of this.settling.values()) watch.abort();
    this.settling.clear();
    if (this.server) await new Promise<void>((resolve) => this.server!.close(() => resolve()));
    await unlinkIfPresent(socketPath);
  }

  private readonly handlers: Record<string, Handler> = {
    '/Plugin.Activate': async () => ({ Implements: ['NetworkDriver'] }),
    '/NetworkDriver.GetCapabilities': async () => ({ Scope: 'local', ConnectivityScope: 'local' }),
    '/NetworkDriver.CreateNetwork': async (body) => {
      const req = networkRequest(body as unknown as CreateNetworkCall);
      const network = await this.service.createNetwork(req);
      this.logger.info({ network: network.name, dockerNetwork: body.NetworkID }, 'docker created a network');
      return {};
    },
    '/NetworkDriver.DeleteNetwork': async (body) => {
      const net = this.networkOf(String(body.NetworkID), false);
      if (net) await this.service.deleteNetwork(net);
      return {};
    },
    '/NetworkDriver.CreateEndpoint': async (body) => this.createEndpoint(body),
    '/NetworkDriver.EndpointOperInfo': async (body) => {
      const record = this.endpointOf(String(body.EndpointID), false);
      return { Value: record ? { 'vsw.endpoint': record.endpoint.id, 'vsw.publish': record.endpoint.publish ?? [] } : {} };
    },
    '/NetworkDriver.Join': async (body) => this.join(body),
    '/NetworkDriver.Leave': async (body) => {
      const id = String(body.EndpointID);
      this.settling.get(id)?.abort();
      this.settling.delete(id);
      const record = this.endpointOf(id, false);
      // docker moves the TAP back under its first name once this returns; vsw looks for it there from now on.
      if (record) await this.service.relocateEndpoint(record.endpoint.id, { netns: DAEMON_NETNS, ifname: dockerTapName(id), unplaced: true });
      return {};
    },
    '/NetworkDriver.DeleteEndpoint': async (body) => {
      const id = String(body.EndpointID);
      this.settling.get(id)?.abort();
      this.settling.delete(id);
      const record = this.endpointOf(id, false);
      if (record) await this.service.deleteEndpoint(record.endpoint.id);
      return {};
    },
    // Ports are published with the endpoint (CreateEndpoint carries them): nothing more to program.
    '/NetworkDriver.ProgramExternalConnectivity': async () => ({}),
    '/NetworkDriver.RevokeExternalConnectivity': async () => ({}),
    // Swarm and cluster discovery: vsw is a local-scope driver, so docker sends neither.
    '/NetworkDriver.DiscoverNew': async () => ({}),
    '/NetworkDriver.DiscoverDelete': async () => ({}),
    '/NetworkDriver.AllocateNetwork': async () => ({ Options: {} }),
    '/NetworkDriver.FreeNetwork': async () => ({}),
  };

  private async createEndpoint(body: Record<string, unknown>): Promise<object> {
    const dockerEndpoint = String(body.EndpointID);
    const net = this.networkOf(String(body.NetworkID), true)!;
    const iface = (body.Interface ?? {}) as { Address?: string; AddressIPv6?: string; MacAddress?: string };
    if (iface.AddressIPv6) throw new DriverError('vsw networks are IPv4 only: the endpoint cannot take an IPv6 address.');
    const options = (body.Options ?? {}) as { 'com.docker.network.portmap'?: DockerPortBinding[] };
    const record = this.service.state.networks.get(net)!;
    let publish = publishRequest(options['com.docker.network.portmap']);
    if (publish.length > 0 && !record.nat) {
      // docker's own bridge ignores -p on an internal network too.
      this.logger.warn({ network: net, dockerEndpoint }, 'ports published on a network without NAT are ignored');
      publish = [];
    }
    const { endpoint } = await this.service.createEndpoint({
      network: net,
      netns: DAEMON_NETNS,
      ifname: dockerTapName(dockerEndpoint),
      name: `docker-${dockerEndpoint.slice(0, 12)}`,
      owner: `docker:${dockerEndpoint}`,
      configure: false,
      ...(iface.Address ? { ip: iface.Address } : {}),
      ...(iface.MacAddress ? { mac: iface.MacAddress } : {}),
      ...(publish.length > 0 ? { publish } : {}),
    });
    this.logger.info({ endpoint: endpoint.id, dockerEndpoint, network: net, ip: endpoint.ip, publish: endpoint.publish }, 'docker created an endpoint');
    // docker refuses an answer that sets what it set itself: only a MAC it left empty.
    return iface.MacAddress ? {} : { Interface: { MacAddress: endpoint.mac } };
  }

  private async join(body: Record<string, unknown>): Promise<object> {
    const dockerEndpoint = String(body.EndpointID);
    const record = this.endpointOf(dockerEndpoint, true)!;
    const net = this.service.state.networks.get(record.endpoint.network)!;
    const sandbox = String(body.SandboxKey ?? '');
    if (sandbox.startsWith('/')) {
      // Saved before docker moves the TAP: a restart in between finds it there (listen()).
      await this.service.relocateEndpoint(record.endpoint.id, { netns: DAEMON_NETNS, ifname: dockerTapName(dockerEndpoint), unplaced: true, handedTo: sandbox });
      this.settle(dockerEndpoint, record.endpoint.id, record.endpoint.mac, sandbox);
    }
    const gateway = net.network.gateway;
    return {
      InterfaceName: { SrcName: dockerTapName(dockerEndpoint), DstPrefix: 'eth' },
      Gateway: gateway ?? '',
      StaticRoutes: [],
      // Without a gateway docker would add its docker_gwbridge instead.
      DisableGatewayService: gateway === null,
    };
  }

  /**
   * Follows the TAP into the container: the namespace file appears once the
   * container's runtime hook has run, and the TAP is done once docker has
   * renamed it and brought it up there.
   */
  private settle(dockerEndpoint: string, endpointId: string, mac: string, sandbox: string): void {
    this.settling.get(dockerEndpoint)?.abort();
    const watch = new AbortController();
    this.settling.set(dockerEndpoint, watch);
    const srcName = dockerTapName(dockerEndpoint);
    const deadline = Date.now() + SETTLE_TIMEOUT_MS;
    const poll = async (): Promise<void> => {
      while (!watch.signal.aborted && Date.now() < deadline) {
        if (await netnsMounted(sandbox)) {
          const links = await ipJson<{ ifname: string; address?: string; flags?: string[] }[]>(['link', 'show'], sandbox).catch(() => []);
          const link = links.find((l) => l.address === mac && l.ifname !== srcName && l.flags?.includes('UP'));
          if (link && !watch.signal.aborted) {
            await this.service.relocateEndpoint(endpointId, { netns: sandbox, ifname: link.ifname, unplaced: false });
            return;
          }
        }
        await new Promise((resolve) => setTimeout(resolve, SETTLE_POLL_MS));
      }
      if (!watch.signal.aborted) this.logger.warn({ endpoint: endpointId, sandbox }, 'docker did not move the endpoint into its container in time; vsw still holds it in its own namespace');
    };
    poll()
      .catch((err: unknown) => this.logger.warn({ err, endpoint: endpointId, sandbox }, 'could not follow the endpoint into its container'))
      .finally(() => {
        if (this.settling.get(dockerEndpoint) === watch) this.settling.delete(dockerEndpoint);
      });
  }

  private networkOf(dockerNetwork: string, required: boolean): string | undefined {
    const record = this.service.state.networkByOwner(`docker:${dockerNetwork}`);
    if (record) return record.network.name;
    if (required) throw new DriverError(`docker network ${dockerNetwork.slice(0, 12)} is not known to vsw (its state was reset?): remove it with docker network rm and create it again.`);
    return undefined;
  }

  private endpointOf(dockerEndpoint: string, required: boolean) {
    const record = this.service.state.endpointByOwner(`docker:${dockerEndpoint}`);
    if (record) return record;
    if (required) throw new DriverError(`docker endpoint ${dockerEndpoint.slice(0, 12)} is not known to vsw (its state was reset?): restart the container.`);
    return undefined;
  }

  private async serve(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const reply = (status: number, value: object): void => {
      const text = JSON.stringify(value);
      res.writeHead(status, { 'content-type': 'application/vnd.docker.plugins.v1+json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    const path = (req.url ?? '').split('?')[0];
    // claimSocketPath asks this of whatever holds the socket: a live driver answers, a stale socket does not.
    if (req.method === 'GET' && path === `${API_PREFIX}/version`) return reply(200, { version: this.version });
    const handler = req.method === 'POST' ? this.handlers[path] : undefined;
    if (!handler) return reply(404, { Err: `${req.method} ${path} is not part of the network driver API that vsw serves.` });
    let body: Record<string, unknown>;
    try {
      body = await readBody(req);
    } catch (err) {
      return reply(200, { Err: (err as Error).message });
    }
    try {
      reply(200, await handler(body));
    } catch (err) {
      const message = err instanceof DriverError ? err.message : classifyError(err).message;
      if (!(err instanceof DriverError) && classifyError(err).status >= 500) this.logger.error({ err, call: path }, 'docker driver call failed');
      else this.logger.info({ call: path, error: message }, 'docker driver call refused');
      reply(200, { Err: message });
    }
  }
}

async function readBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > BODY_LIMIT) throw new DriverError('the request body is larger than 1 MiB: this is not a docker driver call.');
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString('utf8').trim();
  if (text === '') return {};
  try {
    const value = JSON.parse(text) as unknown;
    if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // Answered below.
  }
  throw new DriverError('the request body is not a JSON object: this socket speaks the docker network driver API.');
}

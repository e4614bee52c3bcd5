/**
 * The network controller (`vsw controller --etcd URL`): the northbound REST
 * API over many hosts. It keeps nothing of its own: every request reads or
 * writes etcd (src/controller/layout.ts), so two controllers can serve side
 * by side and either can die. Host agents (src/controller/agent.ts) apply
 * what it writes and report back; their reports are the objects' status.
 *
 * Served on a unix socket with the same paths and the same error shape as a
 * daemon's API, so the vsw CLI talks to it with `--controller SOCKET`:
 *   GET  /v1/version, /v1/hosts
 *   GET|POST /v1/networks, GET|DELETE /v1/networks/NAME    networks on chosen hosts (overlay, nat, internal, transparent, l2bridge)
 *   PUT /v1/networks/NAME/hosts                            the hosts it spans, changed at run time
 *   GET|POST /v1/endpoints, GET|DELETE /v1/endpoints/NAME  endpoints placed on hosts
 *   GET|POST /v1/loadbalancers, GET|DELETE /v1/loadbalancers/NAME, POST .../backends,
 *     DELETE .../backends/B, POST|DELETE .../backends/B/drain  load balancers on a network's hosts
 *   PUT|DELETE /v1/endpoints/NAME/layers/LAYER/groups/GROUP  a group of rules for one endpoint (`vsw policy group set`)
 *   GET|POST /v1/policies, GET|PUT|DELETE /v1/policies/NAME  groups of rules for every endpoint in a prefix (PUT: created or replaced)
 */
import { timingSafeEqual } from 'node:crypto';
import { Type } from '@sinclair/typebox';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { classifyError } from '../service/api.js';
import { RESOURCE_NAME_PATTERN, RESOURCE_NAME_RULE } from '../service/api-constants.js';
import { badRequest, conflict, notFound } from '../service/errors.js';
import ipaddr from 'ipaddr.js';
import { intToIp, ipToInt, parseIpOrCidr, parseRange, parseSubnet, subnetsOverlap } from '../service/ipam.js';
import { addBackendSchema, createLoadBalancerSchema, CreateNetworkBody, field, route, routeSchema } from '../service/schemas.js';
import type { CreateLoadBalancerRequest } from '../service/api-types.js';
import { parseBackendName } from '../lb/backend-name.js';
import { compilePolicy, type MeterAllocator } from '../vfp/compile.js';
import { PolicyError, validateLayer } from '../vfp/policy.js';
import { checkSchema } from './etcd.js';
import {
  CONTROLLER_DRIVERS,
  Keys,
  sharedSegment,
  type ControllerDriver,
  type ControllerEndpoint,
  type ControllerLoadBalancer,
  type ControllerNetwork,
  type ControllerPolicy,
  type HostRecord,
  type ObjectStatus,
  type RealizedEndpoint,
  type StatusKind,
} from './layout.js';

/** A host's network request (the daemon's schema, so the same sentences), plus the hosts it spans. */
const controllerNetworkSchema = routeSchema({
  body: Type.Object(
    {
      ...CreateNetworkBody.properties,
      hosts: field(Type.Array(Type.String({ maxLength: 64 }), { maxItems: 4096 }), "a list of host names (the agents' --host)", 'pass --hosts h1,h2'),
    },
    { additionalProperties: false },
  ),
});

/** What the CLI's endpoint table reads of a daemon's endpoint, filled in for the controller's. */
interface EndpointTableFields {
  id: string;
  prefixLength: number;
  ifname: string;
  /** Once its host made it. */
  mac?: string;
  state: 'up' | 'down';
  stateReason?: string;
}

/** A network or endpoint as the API shows it: what is desired, and per host what its agent did. */
type WithStatus<T> = T & { status: Record<string, ObjectStatus | { state: 'pending' }> };

const NAME = new RegExp(RESOURCE_NAME_PATTERN);

export class Controller {
  readonly app: FastifyInstance;
  /** The TCP listener, when there is one: the same routes, each request carrying the token. */
  private tcp: FastifyInstance | null = null;

  constructor(
    private readonly etcd: Etcd3,
    private readonly logger: Logger,
    private readonly version: string,
  ) {
    this.app = this.build(null);
  }

  /** The API's routes on a fastify instance; with a token, every request must carry it (Authorization: Bearer TOKEN). */
  private build(token: string | null): FastifyInstance {
    const logger = this.logger;
    const version = this.version;
    const app = Fastify({ loggerInstance: logger.child({ component: 'controller-api' }) as FastifyBaseLogger, logController: new LogController({ disableRequestLogging: true }) });
    if (token !== null) {
      const expected = Buffer.from(`Bearer ${token}`);
      app.addHook('onRequest', async (req, reply) => {
        const given = Buffer.from(req.headers.authorization ?? '');
        if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
          return reply.code(401).send({ error: "this controller API needs its token: set VSW_TOKEN to the contents of the controller's --token-file." });
        }
      });
    }
    app.setErrorHandler((err, request, reply) => {
      const { status, message } = classifyError(err);
      if (status >= 500) request.log.error({ err }, 'request failed');
      return reply.code(status).send({ error: message });
    });
    app.setNotFoundHandler((request, reply) => reply.code(404).send({ error: `no controller route ${request.method} ${request.url}: the controller serves networks, endpoints, policies, load balancers and hosts.` }));
    app.get('/v1/version', async () => ({ version, controller: true }));
    app.get('/v1/hosts', async () => this.hosts());
    app.get('/v1/networks', async () => this.networks());
    app.post('/v1/networks', route(controllerNetworkSchema), async (req, reply) => reply.code(201).send(await this.createNetwork(req.body as Record<string, unknown>)));
    app.get<{ Params: { name: string } }>('/v1/networks/:name', async (req) => this.network(req.params.name));
    app.put<{ Params: { name: string } }>('/v1/networks/:name/hosts', async (req) => this.setHosts(req.params.name, object(req.body).hosts));
    app.delete<{ Params: { name: string } }>('/v1/networks/:name', async (req, reply) => {
      await this.deleteNetwork(req.params.name);
      return reply.code(204).send();
    });
    app.get('/v1/endpoints', async () => this.endpoints());
    app.post('/v1/endpoints', async (req, reply) => reply.code(201).send(await this.createEndpoint(req.body)));
    app.get<{ Params: { name: string } }>('/v1/endpoints/:name', async (req) => this.endpoint(req.params.name));
    type GroupParams = { Params: { name: string; layer: string; group: string } };
    app.put<GroupParams>('/v1/endpoints/:name/layers/:layer/groups/:group', async (req) => {
      const e = await this.findEndpoint(req.params.name);
      return this.putPolicy({ name: `${e.name}.${req.params.layer}.${req.params.group}`, network: e.network, endpoint: e.name, layer: req.params.layer, group: req.params.group, spec: req.body }, true);
    });
    app.delete<GroupParams>('/v1/endpoints/:name/layers/:layer/groups/:group', async (req, reply) => {
      await this.deletePolicy(`${req.params.name}.${req.params.layer}.${req.params.group}`);
      return reply.code(204).send();
    });
    app.get('/v1/policies', async () => this.policies());
    app.post('/v1/policies', async (req, reply) => {
      const b = object(req.body);
      return reply.code(201).send(await this.putPolicy({ name: b.name, network: b.network, prefix: b.prefix, layer: b.layer, group: b.group, spec: b.spec }, false));
    });
    app.get<{ Params: { name: string } }>('/v1/policies/:name', async (req) => this.policy(req.params.name));
    app.put<{ Params: { name: string } }>('/v1/policies/:name', async (req) => {
      const b = object(req.body);
      return this.putPolicy({ name: req.params.name, network: b.network, prefix: b.prefix, layer: b.layer, group: b.group, spec: b.spec }, true);
    });
    app.delete<{ Params: { name: string } }>('/v1/policies/:name', async (req, reply) => {
      await this.deletePolicy(req.params.name);
      return reply.code(204).send();
    });
    app.get('/v1/loadbalancers', async () => this.loadBalancers());
    app.post('/v1/loadbalancers', route(createLoadBalancerSchema), async (req, reply) => reply.code(201).send(await this.createLoadBalancer(req.body as CreateLoadBalancerRequest)));
    app.get<{ Params: { name: string } }>('/v1/loadbalancers/:name', async (req) => this.loadBalancer(req.params.name));
    app.delete<{ Params: { name: string } }>('/v1/loadbalancers/:name', async (req, reply) => {
      await this.deleteLoadBalancer(req.params.name);
      return reply.code(204).send();
    });
    app.post<{ Params: { name: string } }>('/v1/loadbalancers/:name/backends', route(addBackendSchema), async (req, reply) => {
      const backend = (req.body as { backend: string }).backend;
      return reply.code(201).send(await this.changeBackends(req.params.name, async (lb) => void lb.backends.push({ name: await this.checkBackend(lb, backend), draining: false })));
    });
    type BackendParams = { Params: { name: string; backend: string } };
    app.delete<BackendParams>('/v1/loadbalancers/:name/backends/:backend', async (req, reply) => {
      await this.changeBackends(req.params.name, (lb) => void lb.backends.splice(this.backendAt(lb, req.params.backend), 1));
      return reply.code(204).send();
    });
    for (const [method, draining] of [['post', true], ['delete', false]] as const) {
      app[method]<BackendParams>('/v1/loadbalancers/:name/backends/:backend/drain', async (req) =>
        this.changeBackends(req.params.name, (lb) => void (lb.backends[this.backendAt(lb, req.params.backend)].draining = draining)),
      );
    }
    app.delete<{ Params: { name: string } }>('/v1/endpoints/:name', async (req, reply) => {
      await this.deleteEndpoint(req.params.name);
      return reply.code(204).send();
    });
    return app;
  }

  /** Serves the unix socket, and TCP at `tcp` with `token` when given. */
  async start(socketPath: string, tcp?: { host: string; port: number; token: string }): Promise<void> {
    await checkSchema(this.etcd);
    await this.app.listen({ path: socketPath });
    if (tcp) {
      this.tcp = this.build(tcp.token);
      await this.tcp.listen({ host: tcp.host, port: tcp.port });
    }
  }

  async stop(): Promise<void> {
    await this.tcp?.close();
    await this.app.close();
  }

  // --- reads ---

  private async json<T>(prefix: string): Promise<T[]> {
    const all = await this.etcd.getAll().prefix(prefix).strings();
    return Object.values(all).map((v) => JSON.parse(v) as T);
  }

  private async hosts(): Promise<HostRecord[]> {
    return this.json<HostRecord>(Keys.hosts);
  }

  /** Per host: the agent's status of `kind`/`name`, or pending when the host has none yet. */
  private async statusOf(kind: StatusKind, name: string, hosts: string[]): Promise<Record<string, ObjectStatus | { state: 'pending' }>> {
    const out: Record<string, ObjectStatus | { state: 'pending' }> = {};
    for (const host of hosts) {
      const text = await this.etcd.get(Keys.objectStatus(host, kind, name)).string();
      out[host] = text === null ? { state: 'pending' } : (JSON.parse(text) as ObjectStatus);
    }
    return out;
  }

  private async networks(): Promise<WithStatus<ControllerNetwork>[]> {
    const nets = await this.json<ControllerNetwork>(Keys.networks);
    return Promise.all(nets.map(async (n) => ({ ...n, status: await this.statusOf('networks', n.name, n.hosts) })));
  }

  private async network(name: string): Promise<WithStatus<ControllerNetwork> & { endpoints: string[] }> {
    const text = await this.etcd.get(Keys.network(name)).string();
    if (text === null) throw notFound(`network ${name} not found: list networks with \`vsw --controller SOCKET network ls\`.`);
    const n = JSON.parse(text) as ControllerNetwork;
    const eps = await this.json<ControllerEndpoint>(Keys.endpointsOf(name));
    return { ...n, endpoints: eps.map((e) => e.name), status: await this.statusOf('networks', n.name, n.hosts) };
  }

  private async endpoints(): Promise<(WithStatus<ControllerEndpoint> & EndpointTableFields)[]> {
    const eps = await this.json<ControllerEndpoint>(Keys.endpoints);
    return Promise.all(eps.map((e) => this.endpointView(e)));
  }

  /**
   * The endpoint as the API shows it, with the fields of a daemon's endpoint
   * the CLI's table reads: id (on the controller, its name), prefixLength,
   * ifname and mac once its host made it (the table shows - before), and state up when its host applied
   * it, else down with the reason (failed, or not yet seen by the host).
   */
  private async endpointView(e: ControllerEndpoint): Promise<WithStatus<ControllerEndpoint> & EndpointTableFields> {
    const text = await this.etcd.get(Keys.realizedEndpoint(e.network, e.name)).string();
    const realized = text === null ? undefined : (JSON.parse(text) as RealizedEndpoint);
    const status = await this.statusOf('endpoints', `${e.network}/${e.name}`, [e.host]);
    const mine = status[e.host];
    const netText = await this.etcd.get(Keys.network(e.network)).string();
    const prefixLength = netText === null ? 32 : Number((JSON.parse(netText) as ControllerNetwork).subnet.split('/')[1]);
    return {
      ...e,
      id: e.name,
      ...(e.ip === undefined && realized !== undefined ? { ip: realized.ip } : {}),
      prefixLength,
      ifname: realized?.ifname ?? '-',
      ...(realized === undefined ? {} : { mac: realized.mac }),
      state: mine.state === 'applied' ? 'up' : 'down',
      ...(mine.state === 'applied' ? {} : { stateReason: mine.state === 'failed' ? `on ${e.host}: ${(mine as ObjectStatus).reason ?? 'failed'}` : `not yet applied on ${e.host}` }),
      status,
    };
  }

  private async findEndpoint(name: string): Promise<ControllerEndpoint> {
    const found = (await this.json<ControllerEndpoint>(Keys.endpoints)).filter((e) => e.name === name);
    if (found.length === 0) throw notFound(`endpoint ${name} not found: list endpoints with \`vsw --controller SOCKET endpoint ls\`.`);
    return found[0];
  }

  private async endpoint(name: string): Promise<WithStatus<ControllerEndpoint> & EndpointTableFields> {
    return this.endpointView(await this.findEndpoint(name));
  }

  private async policies(): Promise<(ControllerPolicy & { status: Record<string, ObjectStatus> })[]> {
    const list = await this.json<ControllerPolicy>(Keys.policies);
    return Promise.all(list.map((p) => this.policyView(p)));
  }

  private async policy(name: string): Promise<ControllerPolicy & { status: Record<string, ObjectStatus> }> {
    const text = await this.etcd.get(Keys.policy(name)).string();
    if (text === null) throw notFound(`policy ${name} not found: list them with GET /v1/policies.`);
    return this.policyView(JSON.parse(text) as ControllerPolicy);
  }

  /** Its status on every endpoint it reaches, by "HOST/ENDPOINT". */
  private async policyView(p: ControllerPolicy): Promise<ControllerPolicy & { status: Record<string, ObjectStatus> }> {
    const status: Record<string, ObjectStatus> = {};
    const all = await this.etcd.getAll().prefix(Keys.status).strings();
    for (const [key, value] of Object.entries(all)) {
      const [host, kind, endpoint, layer, group] = key.slice(Keys.status.length).split('/');
      if (kind === 'groups' && layer === p.layer && group === p.group && (JSON.parse(value) as ObjectStatus & { policy?: string }).policy === p.name) status[`${host}/${endpoint}`] = JSON.parse(value) as ObjectStatus;
    }
    return { ...p, status };
  }

  // --- writes ---

  /**
   * A group of rules for one endpoint (`vsw policy group set` through the
   * controller: replaced whole) or for every endpoint of a network in a
   * prefix (POST /v1/policies: created once). The rules are checked as a
   * host would compile them, so a bad one is a 400 here, not a failure on
   * every host.
   */
  private async putPolicy(b: Record<string, unknown>, replace: boolean): Promise<ControllerPolicy> {
    const name = text(b.name, 'name', `a policy NAME of ${RESOURCE_NAME_RULE}`);
    if (!NAME.test(name)) throw badRequest(`policy name ${name} is not ${RESOURCE_NAME_RULE}: pick another.`);
    const network = text(b.network, 'network', 'the network of the endpoints it applies to');
    const layer = text(b.layer, 'layer', 'the layer name, e.g. acl');
    const group = text(b.group, 'group', 'the group name');
    if (!NAME.test(layer) || !NAME.test(group)) throw badRequest(`layer and group names are ${RESOURCE_NAME_RULE}.`);
    await this.requireNetwork(network);
    const p: ControllerPolicy = { name, network, layer, group, spec: object(b.spec) as ControllerPolicy['spec'], created: new Date().toISOString() };
    if (b.endpoint !== undefined) p.endpoint = text(b.endpoint, 'endpoint', 'an endpoint name');
    else p.prefix = normalizePrefix(text(b.prefix, 'prefix', "a CIDR the endpoints' addresses are in, e.g. 10.10.0.0/24"));
    try {
      const checked = validateLayer({ name: layer, priority: 100, defaultIn: 'allow', defaultOut: 'allow', groups: [{ ...p.spec, name: group, priority: p.spec.priority ?? 100, rules: (p.spec.rules ?? []).map((r, i) => ({ ...r, id: r.id ?? `r${i}` })) }] });
      compilePolicy({ layers: [checked], spoofGuard: { enabled: false, mac: '00:00:00:00:00:00', ips: [] }, qos: null }, NO_METERS);
    } catch (err) {
      if (err instanceof PolicyError) throw badRequest((err as Error).message);
      throw err;
    }
    const key = Keys.policy(name);
    if (replace) {
      await this.etcd.put(key).value(JSON.stringify(p));
      return p;
    }
    const r = await this.etcd.if(key, 'Create', '==', 0).then(this.etcd.put(key).value(JSON.stringify(p))).commit();
    if (!r.succeeded) throw conflict(`policy ${name} already exists: remove it first (DELETE /v1/policies/${name}).`);
    return p;
  }

  private async deletePolicy(name: string): Promise<void> {
    const r = await this.etcd.delete().key(Keys.policy(name)).exec();
    if (Number(r.deleted) === 0) throw notFound(`policy ${name} not found.`);
  }

  /**
   * A network on its hosts. The body is a host's network request (checked
   * by the daemon's own schema, so a wrong field gets the same sentence) plus
   * `hosts`; what the agents fill in themselves (vtep, peers, owner) is
   * refused. The parts of the request the controller does not read are kept
   * as `options` and given to every host's daemon as they are.
   */
  private async createNetwork(b: Record<string, unknown>): Promise<ControllerNetwork> {
    const name = b.name as string;
    const driver = b.driver as string;
    if (!(CONTROLLER_DRIVERS as readonly string[]).includes(driver)) throw badRequest(`the controller makes ${CONTROLLER_DRIVERS.join(', ')} networks, not ${driver} ones: pass -d with one of those.`);
    for (const field of ['vtep', 'peers', 'owner', 'fabric'] as const) {
      if (b[field] !== undefined) throw badRequest(`${field} is not given to the controller: ${field === 'fabric' ? 'fabric hosts are configured on each host' : "each host's agent fills it in"}; leave it out.`);
    }
    const subnet = parseSubnet(b.subnet as string);
    const cidr = `${intToIp(subnet.network)}/${subnet.prefix}`;
    const hosts = checkHosts(b.hosts);
    const vni = b.vni as number | undefined;
    if (driver === 'overlay' && (vni === undefined || vni < 1 || vni > 0xffffff)) throw badRequest('an overlay network needs a VNI from 1 to 16777215: pass --vni N.');
    if (driver !== 'overlay' && vni !== undefined) throw badRequest(`a ${driver} network has no VNI: leave --vni out.`);
    if ((driver === 'transparent' || driver === 'l2bridge') && b.uplink === undefined) throw badRequest(`a ${driver} network rides on each host's uplink: pass --uplink IFNAME (the same interface name on every host).`);
    if (b.uplink !== undefined) {
      // Hosts not registered yet cannot be checked; their agents say so in the network's status if the interface is missing.
      const lacking = (await this.hosts()).filter((h) => hosts.includes(h.name) && h.uplinks !== undefined && !h.uplinks.includes(b.uplink as string));
      if (lacking.length > 0) throw badRequest(`host ${lacking[0].name} has no interface ${String(b.uplink)} (its interfaces when its agent registered: ${lacking[0].uplinks!.join(', ') || 'none'}): pass an --uplink every host has.`);
    }
    if (b.ipam === 'dhcp') throw badRequest('the controller hands out the addresses of its networks, so it makes no --ipam dhcp network: leave --ipam out.');
    for (const other of await this.json<ControllerNetwork>(Keys.networks)) {
      if (vni !== undefined && other.vni === vni) throw conflict(`network ${other.name} has VNI ${String(vni)} already: pick another --vni.`);
      if (subnetsOverlap(other.subnet, cidr)) throw conflict(`subnet ${cidr} overlaps network ${other.name} (${other.subnet}): pick another --subnet.`);
    }
    const net: ControllerNetwork = { name, driver: driver as ControllerDriver, subnet: cidr, hosts, created: new Date().toISOString() };
    if (vni !== undefined) net.vni = vni;
    if (b.mtu !== undefined) {
      if (!Number.isInteger(b.mtu) || (b.mtu as number) < 576 || (b.mtu as number) > 9000) throw badRequest('mtu must be a whole number from 576 to 9000.');
      net.mtu = b.mtu as number;
    }
    const options = Object.fromEntries(Object.entries(b).filter(([k]) => !['name', 'driver', 'subnet', 'vni', 'hosts', 'mtu'].includes(k)));
    if (Object.keys(options).length > 0) net.options = options;
    const key = Keys.network(name);
    const r = await this.etcd.if(key, 'Create', '==', 0).then(this.etcd.put(key).value(JSON.stringify(net))).commit();
    if (!r.succeeded) throw conflict(`network ${name} already exists: pick another name or remove it with \`vsw --controller SOCKET network rm ${name}\`.`);
    return net;
  }

  /**
   * The hosts a network spans, changed at run time: a host that joins gets
   * the network (and every member the new peer); a host that leaves must
   * have no endpoint on it left (409), and its agent removes the network.
   * The write is conditional on the revision read, so two controllers
   * changing one network cannot lose each other's change.
   */
  private async setHosts(name: string, hosts: unknown): Promise<ControllerNetwork> {
    const key = Keys.network(name);
    const res = await this.etcd.get(key).exec();
    const kv = res.kvs[0];
    if (kv === undefined) throw notFound(`network ${name} not found.`);
    const net = JSON.parse(kv.value.toString()) as ControllerNetwork;
    const list = checkHosts(hosts);
    const leaving = net.hosts.filter((h) => !list.includes(h));
    const stranded = (await this.json<ControllerEndpoint>(Keys.endpointsOf(name))).filter((e) => leaving.includes(e.host));
    if (stranded.length > 0) throw conflict(`endpoints ${stranded.map((e) => e.name).join(', ')} are on ${[...new Set(stranded.map((e) => e.host))].join(', ')}, which would leave network ${name}: remove them first.`);
    const next: ControllerNetwork = { ...net, hosts: list };
    const r = await this.etcd.if(key, 'Mod', '==', kv.mod_revision).then(this.etcd.put(key).value(JSON.stringify(next))).commit();
    if (!r.succeeded) throw conflict(`network ${name} changed while this request was made: read it again and retry.`);
    return next;
  }

  private async deleteNetwork(name: string): Promise<void> {
    const eps = await this.json<ControllerEndpoint>(Keys.endpointsOf(name));
    const lbs = (await this.json<ControllerLoadBalancer>(Keys.loadBalancers)).filter((l) => l.network === name);
    if (lbs.length > 0) throw conflict(`network ${name} still has load balancers ${lbs.map((l) => l.name).join(', ')}: remove them first.`);
    if (eps.length > 0) throw conflict(`network ${name} still has endpoints ${eps.map((e) => e.name).join(', ')}: remove them first.`);
    const r = await this.etcd.delete().key(Keys.network(name)).exec();
    if (Number(r.deleted) === 0) throw notFound(`network ${name} not found.`);
  }

  /**
   * On a shared segment the endpoint's key and its address's key are created
   * together or not at all, so two controllers cannot give one address
   * twice; on a per-host network the host's daemon allocates the address
   * (or takes the one asked for).
   */
  private async createEndpoint(body: unknown): Promise<ControllerEndpoint & { id: string }> {
    const b = object(body);
    const name = text(b.name, 'name', `an endpoint NAME of ${RESOURCE_NAME_RULE}: pass --name`);
    if (!NAME.test(name)) throw badRequest(`endpoint name ${name} is not ${RESOURCE_NAME_RULE}: pick another.`);
    const network = text(b.network, 'network', 'a network name: pass --network');
    const host = text(b.host, 'host', "the host to place it on (an agent's --host): pass --host");
    const vhostUser = b.vhostUser === undefined ? undefined : vmSocket(b.vhostUser, b.netns);
    const netns = vhostUser === undefined ? text(b.netns, 'netns', 'the network namespace on that host: pass --netns, or --vhost-user PATH for a VM') : '';
    const net = await this.requireNetwork(network);
    if (!net.hosts.includes(host)) throw badRequest(`network ${network} does not span host ${host} (its hosts: ${net.hosts.join(', ')}): pick one of those.`);
    if ((await this.etcd.getAll().prefix(Keys.endpoints).keys()).some((k) => k.endsWith(`/${name}`))) throw conflict(`an endpoint named ${name} exists already: pick another --name.`);
    const e: ControllerEndpoint = { name, network, host, netns, ...(vhostUser === undefined ? {} : { vhostUser }), created: new Date().toISOString() };
    const key = Keys.endpoint(network, name);
    if (sharedSegment(net.driver)) {
      e.ip = await this.claimAddress(net, b.ip, name, key, (ip) => JSON.stringify({ ...e, ip }));
      return { ...e, ip: e.ip, id: name };
    }
    if (b.ip !== undefined) e.ip = parseIpOrCidr(text(b.ip, 'ip', 'an address inside the subnet'), net.subnet);
    const r = await this.etcd.if(key, 'Create', '==', 0).then(this.etcd.put(key).value(JSON.stringify(e))).commit();
    if (!r.succeeded) throw conflict(`an endpoint named ${name} exists already: pick another --name.`);
    return { ...e, id: name };
  }

  /**
   * An address of a shared segment for `holder`: the one asked for, or the
   * first free one of the network's range (its gateway left out), claimed by
   * creating its address key in one transaction with `key` (the object that
   * holds it, written as `value(ip)`). A race lost to another controller
   * moves on to the next address.
   */
  private async claimAddress(net: ControllerNetwork, asked: unknown, holder: string, key: string, value: (ip: string) => string): Promise<string> {
    const prefix = Keys.addressesOf(net.name);
    const taken = new Set((await this.etcd.getAll().prefix(prefix).keys()).map((k) => k.slice(prefix.length)));
    const candidates = asked === undefined ? freeAddresses(net, taken) : [parseIpOrCidr(text(asked, 'ip', 'an address inside the subnet'), net.subnet)];
    for (const ip of candidates) {
      const r = await this.etcd
        .if(Keys.address(net.name, ip), 'Create', '==', 0)
        .and(key, 'Create', '==', 0)
        .then(this.etcd.put(Keys.address(net.name, ip)).value(holder), this.etcd.put(key).value(value(ip)))
        .commit();
      if (r.succeeded) return ip;
      if ((await this.etcd.get(key).string()) !== null) throw conflict(`${holder} exists already on network ${net.name}: pick another name.`);
      if (asked !== undefined) break;
    }
    throw conflict(asked === undefined ? `network ${net.name} has no free address left: remove endpoints or use a larger subnet.` : `${String(asked)} is taken on network ${net.name}: pick another address or leave it out.`);
  }

  private async requireNetwork(name: string): Promise<ControllerNetwork> {
    const found = await this.etcd.get(Keys.network(name)).string();
    if (found === null) throw notFound(`network ${name} not found: create it first.`);
    return JSON.parse(found) as ControllerNetwork;
  }

  private async deleteEndpoint(name: string): Promise<void> {
    const e = await this.findEndpoint(name);
    const deletes = [this.etcd.delete().key(Keys.endpoint(e.network, e.name))];
    // Only a shared segment's endpoints hold an address key; deleting one that is not there is nothing.
    if (e.ip !== undefined) deletes.push(this.etcd.delete().key(Keys.address(e.network, e.ip)));
    await this.etcd
      .if(Keys.endpoint(e.network, e.name), 'Create', '>', 0)
      .then(...deletes)
      .commit();
  }

  // --- load balancers ---

  private async loadBalancers(): Promise<LoadBalancerView[]> {
    const list = await this.json<ControllerLoadBalancer>(Keys.loadBalancers);
    return Promise.all(list.map((lb) => this.loadBalancerView(lb)));
  }

  private async loadBalancer(name: string): Promise<LoadBalancerView> {
    return this.loadBalancerView((await this.requireLoadBalancer(name)).lb);
  }

  private async requireLoadBalancer(name: string): Promise<{ lb: ControllerLoadBalancer; revision: string }> {
    const res = await this.etcd.get(Keys.loadBalancer(name)).exec();
    const kv = res.kvs[0];
    if (kv === undefined) throw notFound(`load balancer ${name} not found: list them with \`vsw --controller SOCKET lb ls\`.`);
    return { lb: JSON.parse(kv.value.toString()) as ControllerLoadBalancer, revision: kv.mod_revision };
  }

  /**
   * Like a daemon's balancer for the CLI's table, with `status` per host of
   * its network. A backend's state here is what is desired (active or
   * draining): whether its probe passes is each host's own (`vsw lb inspect`
   * on the host).
   */
  private async loadBalancerView(lb: ControllerLoadBalancer): Promise<LoadBalancerView> {
    const net = await this.etcd.get(Keys.network(lb.network)).string();
    const hosts = net === null ? [] : (JSON.parse(net) as ControllerNetwork).hosts;
    return {
      ...lb,
      id: lb.name,
      affinity: lb.affinity ?? 'none',
      backends: lb.backends.map((b) => ({ ...b, state: b.draining ? 'draining' : 'active' })),
      status: await this.statusOf('loadbalancers', lb.name, hosts),
    };
  }

  /**
   * The daemon's request (checked by its schema). The VIP of a shared
   * segment is claimed like an endpoint's address, so every host balances
   * the same VIP and no endpoint gets it; a per-host network's VIP is each
   * host's (asked for, or its daemon's next free address).
   */
  private async createLoadBalancer(req: CreateLoadBalancerRequest): Promise<ControllerLoadBalancer> {
    const net = await this.requireNetwork(req.network);
    if (net.driver === 'l2bridge') throw badRequest(`network ${net.name} is an l2bridge network, which takes no load balancers: use an internal, nat, overlay or transparent network.`);
    if (req.publish !== undefined && net.driver !== 'nat') throw badRequest(`--publish is for nat networks, and ${net.name} is ${net.driver}: leave it out.`);
    const lb: ControllerLoadBalancer = { name: req.name, network: net.name, protocol: req.protocol ?? 'tcp', port: req.port, backends: [], created: new Date().toISOString() };
    if (req.affinity !== undefined) lb.affinity = req.affinity;
    if (req.probe !== undefined) lb.probe = req.probe;
    if (req.publish !== undefined) lb.publish = req.publish;
    for (const backend of req.backends) lb.backends.push({ name: await this.checkBackend(lb, backend), draining: false });
    const key = Keys.loadBalancer(lb.name);
    if (sharedSegment(net.driver)) {
      lb.vip = await this.claimAddress(net, req.vip, `lb:${lb.name}`, key, (vip) => JSON.stringify({ ...lb, vip }));
      return lb;
    }
    if (req.vip !== undefined) lb.vip = parseIpOrCidr(req.vip, net.subnet);
    const r = await this.etcd.if(key, 'Create', '==', 0).then(this.etcd.put(key).value(JSON.stringify(lb))).commit();
    if (!r.succeeded) throw conflict(`a load balancer named ${lb.name} exists already: pick another name, or remove it with \`vsw --controller SOCKET lb rm ${lb.name}\`.`);
    return lb;
  }

  /** ENDPOINT[:PORT] with ENDPOINT one of the network's endpoints or an address in its subnet; the backend as given. */
  private async checkBackend(lb: ControllerLoadBalancer, backend: string): Promise<string> {
    const parsed = parseBackendName(backend, lb.port);
    if (!parsed) throw badRequest(`backend ${backend} is not ENDPOINT[:PORT] with a port from 1 to 65535: pass an endpoint name such as web1 or web1:8080.`);
    const { who, port } = parsed;
    const isEndpoint = (await this.etcd.get(Keys.endpoint(lb.network, who)).string()) !== null;
    if (!isEndpoint && !ipaddr.IPv4.isValidFourPartDecimal(who)) throw badRequest(`backend ${who} is not an endpoint of network ${lb.network}: pass one of its endpoints (\`vsw --controller SOCKET endpoint ls\`).`);
    const same = lb.backends.find((b) => {
      const other = parseBackendName(b.name, lb.port);
      return b.name === backend || (other?.who === who && other.port === port);
    });
    if (same !== undefined) throw conflict(`${backend} is a backend of ${lb.name} already.`);
    return backend;
  }

  /** A change of a balancer's backends, written only if nobody changed it since it was read (two controllers cannot lose each other's change). */
  private async changeBackends(name: string, change: (lb: ControllerLoadBalancer) => Promise<void> | void): Promise<LoadBalancerView> {
    const { lb, revision } = await this.requireLoadBalancer(name);
    await change(lb);
    const key = Keys.loadBalancer(name);
    const r = await this.etcd.if(key, 'Mod', '==', revision).then(this.etcd.put(key).value(JSON.stringify(lb))).commit();
    if (!r.succeeded) throw conflict(`load balancer ${name} changed while this request was made: read it again and retry.`);
    return this.loadBalancerView(lb);
  }

  private backendAt(lb: ControllerLoadBalancer, backend: string): number {
    const at = lb.backends.findIndex((b) => b.name === backend || parseBackendName(b.name, lb.port)?.who === backend);
    if (at < 0) throw notFound(`${backend} is not a backend of load balancer ${lb.name}: see its backends with \`vsw --controller SOCKET lb inspect ${lb.name}\`.`);
    return at;
  }

  private async deleteLoadBalancer(name: string): Promise<void> {
    const { lb } = await this.requireLoadBalancer(name);
    const deletes = [this.etcd.delete().key(Keys.loadBalancer(name))];
    // As for an endpoint: only a shared segment's VIP holds an address key, and deleting one that is not there is nothing.
    if (lb.vip !== undefined) deletes.push(this.etcd.delete().key(Keys.address(lb.network, lb.vip)));
    await this.etcd.if(Keys.loadBalancer(name), 'Create', '>', 0).then(...deletes).commit();
  }
}

type LoadBalancerView = WithStatus<Omit<ControllerLoadBalancer, 'backends'>> & { id: string; backends: { name: string; draining: boolean; state: 'active' | 'draining' }[] };

/** Meters are checked for their syntax only: nothing is allocated here. */
const NO_METERS: MeterAllocator = { allocate: () => 0, release: () => undefined };

/** "10.0.0.0/24" as its network address and prefix; a bare address is a /32. */
export function normalizePrefix(prefix: string): string {
  const text = prefix.includes('/') ? prefix : `${prefix}/32`;
  if (!ipaddr.IPv4.isValidCIDR(text)) throw badRequest(`prefix ${prefix} is not an IPv4 prefix: write e.g. 10.10.0.0/24 or 10.10.0.5.`);
  const [addr, bits] = ipaddr.IPv4.parseCIDR(text);
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return `${intToIp((ipToInt(addr.toString()) & mask) >>> 0)}/${bits}`;
}

/**
 * The network's addresses an agent's daemon would hand out, in order, that
 * are not taken: inside its --ip-range if it has one, with the first host
 * address (held for a gateway, as a daemon's IPAM holds it) and its gateway
 * left out.
 */
function* freeAddresses(net: ControllerNetwork, taken: ReadonlySet<string>): Generator<string> {
  const subnet = parseSubnet(net.subnet);
  const range = typeof net.options?.ipRange === 'string' ? parseRange(net.options.ipRange, net.subnet) : null;
  const gateway = typeof net.options?.gateway === 'string' ? net.options.gateway : null;
  const first = Math.max(subnet.network + 2, range === null ? 0 : ipToInt(range.first));
  const last = Math.min(subnet.network + 2 ** (32 - subnet.prefix) - 2, range === null ? Infinity : ipToInt(range.last));
  for (let n = first; n <= last; n++) {
    const ip = intToIp(n);
    if (ip !== gateway && !taken.has(ip)) yield ip;
  }
}

function checkHosts(hosts: unknown): string[] {
  if (!Array.isArray(hosts) || hosts.length === 0 || hosts.some((h) => typeof h !== 'string' || !NAME.test(h))) throw badRequest("hosts must be a list of host names (the agents' --host): pass --hosts h1,h2.");
  if (new Set(hosts).size !== hosts.length) throw badRequest('a host is named twice in hosts: name each once.');
  return hosts as string[];
}

/** A VM endpoint's socket on its host (the host's daemon checks the path itself when its agent makes it). */
function vmSocket(v: unknown, netns: unknown): NonNullable<ControllerEndpoint['vhostUser']> {
  if (netns !== undefined) throw badRequest('--netns and --vhost-user exclude each other: an endpoint is a TAP in a namespace or a VM\'s NIC.');
  const o = object(v);
  const socket = text(o.socket, 'vhostUser.socket', 'the socket path on that host: pass --vhost-user PATH');
  if (!socket.startsWith('/')) throw badRequest(`--vhost-user ${socket} must be an absolute path on the host, such as /run/vsw/vm1.sock.`);
  if (o.mode !== undefined && o.mode !== 'server' && o.mode !== 'client') throw badRequest(`--vhost-mode ${String(o.mode)} is not server or client: pass one of them or leave it out.`);
  return { socket, mode: (o.mode as 'server' | 'client' | undefined) ?? 'server' };
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw badRequest('the request body must be a JSON object.');
  return body as Record<string, unknown>;
}

function text(v: unknown, field: string, what: string): string {
  if (typeof v !== 'string' || v.length === 0 || v.length > 4095) throw badRequest(`${field} is missing or not a string: ${what}.`);
  return v;
}

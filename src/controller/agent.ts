/**
 * The host agent (`vsw daemon --agent --etcd URL --host NAME --vtep IP`):
 * registers the host under a lease that expires when it dies, keeps a copy of
 * the controller's state (one read at a revision, then a watch from the next
 * one), and reconciles its daemon with it through the same service calls the
 * local API makes:
 *
 *   - the overlay networks that span this host, with every other member's
 *     VTEP as a peer;
 *   - the endpoints placed on this host, each published back as "realized"
 *     (its MAC, address and this VTEP) under the agent's lease;
 *   - every other member's realized endpoints as static remote endpoints
 *     (MAC, IP -> VTEP), so no frame to a known MAC is flooded and ARP
 *     suppression answers for all of them; withdrawn when their key goes
 *     (removed, or their agent's lease expired).
 *
 * What the agent applied is written back per object as status (applied, or
 * failed with the sentence why). Only objects the agent made (their owner
 * says controller:...) are ever removed, and only when their desired key is
 * gone from a state the agent has read: while etcd is away nothing changes,
 * the daemon forwards with what it has (its own state is durable), and the
 * watch resumes from the revision it stopped at when etcd is back.
 */
import type { Etcd3, IOperation, Lease, Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { checkSchema } from './etcd.js';
import type { AgentHost, HostEndpoint } from './host.js';
import { parseBackendName } from '../lb/backend-name.js';
import type { CreateLoadBalancerRequest, CreateNetworkRequest } from '../service/api-types.js';
import { inPrefix, Keys, SCHEMA_KEY, type ControllerEndpoint, type ControllerLoadBalancer, type ControllerNetwork, type ControllerPolicy, type HostRecord, type ObjectStatus, type RealizedEndpoint, type StatusKind } from './layout.js';

/** A group of a controller's policy on one of this host's endpoints. */
interface WantedGroup {
  endpointId: string;
  layer: string;
  group: string;
  policy: ControllerPolicy;
  revision: number;
}

/** A balancer's status also says what the agent made it with, and whether the balancer on the host is the agent's. */
type BalancerStatus = ObjectStatus & { shape?: string; made?: 'yes' | 'no' };

/** Seconds a host's registration outlives its agent. */
export const HOST_LEASE_SECONDS = 5;
const RETRY_MIN_MS = 200;
const RETRY_MAX_MS = 5000;

export interface AgentOptions {
  host: string;
  vtep: string;
}

const networkOwner = (name: string): string => `controller:${name}`;
const endpointOwner = (network: string, name: string): string => `controller:${network}/${name}`;

export class Agent {
  /** The controller's state as last read and watched. */
  private readonly cache: StateCopy;
  private synced = false;
  private lease: Lease | null = null;
  private watchers: Watcher[] = [];
  private stopped = false;
  private running: Promise<void> = Promise.resolve();
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  private retryMs = RETRY_MIN_MS;
  /** The statuses written, so only changes are written again. */
  private readonly written = new Map<string, string>();
  /**
   * Writes of the reconciliation under way, made together at its end
   * (statuses, realized endpoints under the lease; null deletes): one
   * transaction per hundred keys instead of one round trip per key.
   */
  private readonly staged = new Map<string, { value: string; leased: boolean; dedupe?: string } | null>();
  /** Per network, what the remote endpoints last matched (see syncRemotes). */
  private readonly remotesMatched = new Map<string, string>();
  /** Realized keys this agent holds, so a new lease re-registers them. */
  private readonly realized = new Map<string, RealizedEndpoint>();

  constructor(
    private readonly etcd: Etcd3,
    private readonly host: AgentHost,
    private readonly opts: AgentOptions,
    private readonly logger: Logger,
  ) {
    this.cache = new StateCopy(this.watchedPrefixes());
  }

  /** Starts in the background: etcd may not be up yet, and the daemon forwards meanwhile. */
  start(): void {
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer !== null) clearTimeout(this.timer);
    await this.cancelWatchers();
    await this.running.catch(() => undefined);
    // The lease is not revoked: a restarting agent is back before it expires, and its host's endpoints stay known meanwhile.
    this.lease?.release();
  }

  /** Registration, then a read of everything at one revision and a watch from the next; again with backoff when it fails. */
  private async connect(): Promise<void> {
    if (this.stopped) return;
    try {
      await checkSchema(this.etcd);
      await this.register();
      await this.resync();
      this.retryMs = RETRY_MIN_MS;
    } catch (err) {
      this.logger.warn({ err, retryMs: this.retryMs }, 'the agent could not reach etcd: the host keeps forwarding with what it has, and tries again');
      const wait = this.retryMs;
      this.retryMs = Math.min(RETRY_MAX_MS, this.retryMs * 2);
      this.timer = setTimeout(() => void this.connect(), wait);
      this.timer.unref();
    }
  }

  private async register(): Promise<void> {
    const lease = this.etcd.lease(HOST_LEASE_SECONDS, { autoKeepAlive: true });
    lease.on('lost', (err) => {
      if (this.stopped || this.lease !== lease) return;
      this.logger.warn({ err }, "the agent's lease is lost: registering again");
      this.lease = null;
      void this.connect();
    });
    const uplinks = await this.host.uplinks().catch((err: unknown) => {
      this.logger.warn({ err }, "could not list the host's interfaces: the host registers without them");
      return undefined;
    });
    const record: HostRecord = { name: this.opts.host, vtep: this.opts.vtep, since: new Date().toISOString(), ...(uplinks === undefined ? {} : { uplinks }) };
    await lease.put(Keys.host(this.opts.host)).value(JSON.stringify(record));
    for (const [key, r] of this.realized) await lease.put(key).value(JSON.stringify(r));
    this.lease?.release();
    this.lease = lease;
    this.logger.info({ host: this.opts.host, vtep: this.opts.vtep }, 'agent registered');
  }

  /**
   * What the agent reads and watches: the desired state, the hosts and the
   * realized endpoints, and its own statuses. Not the other hosts' statuses:
   * every host writes one per object at every rollout, and none of them
   * concerns this host.
   */
  private watchedPrefixes(): string[] {
    return [Keys.networks, Keys.endpoints, Keys.policies, Keys.loadBalancers, Keys.hosts, Keys.realized, Keys.statusOf(this.opts.host)];
  }

  private async cancelWatchers(): Promise<void> {
    const watchers = this.watchers;
    this.watchers = [];
    await Promise.all(watchers.map((w) => w.cancel().catch(() => undefined)));
  }

  /** Every watched prefix read at one revision, then watched from the next. */
  private async resync(): Promise<void> {
    await this.cancelWatchers();
    const [first, ...others] = this.watchedPrefixes();
    const head = await this.etcd.getAll().prefix(first).exec();
    const revision = head.header.revision;
    const rest = await Promise.all(others.map((p) => this.etcd.getAll().prefix(p).revision(revision).exec()));
    this.cache.clear();
    for (const res of [head, ...rest]) for (const kv of res.kvs) this.cache.set(kv.key.toString(), { value: parse(kv.value.toString()), revision: Number(kv.mod_revision) });
    this.synced = true;
    const from = String(Number(revision) + 1);
    const own = Keys.statusOf(this.opts.host);
    const watchers: Watcher[] = [];
    for (const prefix of this.watchedPrefixes()) {
      const watcher = await this.etcd.watch().prefix(prefix).startRevision(from).create();
      // Its own statuses come back as it writes them: kept, but they change nothing to reconcile.
      const changes = prefix !== own;
      watcher.on('put', (kv) => {
        this.cache.set(kv.key.toString(), { value: parse(kv.value.toString()), revision: Number(kv.mod_revision) });
        if (changes) this.schedule();
      });
      watcher.on('delete', (kv) => {
        this.cache.delete(kv.key.toString());
        if (changes) this.schedule();
      });
      watcher.on('error', (err) => {
        // A compacted revision, or a watch the server dropped: read everything again.
        if (!this.watchers.includes(watcher)) return;
        this.logger.warn({ err }, "the agent's watch failed: reading the state again");
        void this.cancelWatchers().then(() => this.connect());
      });
      watchers.push(watcher);
    }
    this.watchers = watchers;
    this.schedule();
  }

  /** One reconciliation at a time; changes during one bring another right after it. */
  private schedule(): void {
    if (this.stopped) return;
    this.again = true;
    this.running = this.running.then(async () => {
      while (this.again && !this.stopped) {
        this.again = false;
        await this.reconcile().catch((err: unknown) => this.logger.error({ err }, 'the agent could not reconcile its host'));
        await this.flush();
      }
    });
  }

  private values<T>(prefix: string): T[] {
    return this.cache.entries(prefix).map(([, v]) => v.value as T);
  }

  /** Each member host's VTEP, of the hosts registered now. */
  private vteps(): Map<string, string> {
    return new Map(this.values<HostRecord>(Keys.hosts).map((h) => [h.name, h.vtep]));
  }

  private async reconcile(): Promise<void> {
    if (!this.synced) return;
    const me = this.opts.host;
    const host = this.host;
    const vteps = this.vteps();
    const networks = this.values<ControllerNetwork>(Keys.networks).filter((n) => n.hosts.includes(me));
    const wanted = new Set(networks.map((n) => n.name));
    const endpoints = this.values<ControllerEndpoint>(Keys.endpoints).filter((e) => e.host === me && wanted.has(e.network));
    const wantedEndpoints = new Set(endpoints.map((e) => endpointOwner(e.network, e.name)));

    // Gone from the desired state: what this agent made, balancers first (they hold their network), then endpoints.
    await this.removeBalancers(new Set(this.values<ControllerLoadBalancer>(Keys.loadBalancers).filter((l) => wanted.has(l.network)).map((l) => l.name)));
    for (const e of host.endpoints()) {
      if (e.owner === undefined || !e.owner.startsWith('controller:') || wantedEndpoints.has(e.owner)) continue;
      await this.removeEndpoint(e.network, e.name, e.id);
    }
    for (const n of host.networks()) {
      if (n.owner === undefined || !n.owner.startsWith('controller:') || wanted.has(n.owner.slice('controller:'.length))) continue;
      await this.attempt('networks', n.name, 0, () => host.deleteNetwork(n.name));
      await this.clearStatus('networks', n.name);
    }

    const local = new Map(host.networks().map((n) => [n.owner, n]));
    for (const n of networks) {
      const revision = this.revisionOf(Keys.network(n.name));
      const peers = n.hosts.filter((h) => h !== me && vteps.has(h)).map((h) => vteps.get(h)!);
      const have = local.get(networkOwner(n.name));
      const ok = await this.attempt('networks', n.name, revision, async () => {
        if (!have) await host.createNetwork(this.networkRequest(n, peers));
        else if (n.driver === 'overlay' && !sameSet(have.peers ?? [], peers)) await host.setOverlayPeers(n.name, peers);
      });
      if (!ok) continue;
      const made = new Map(host.endpoints().map((e) => [e.owner, e]));
      for (const e of endpoints.filter((x) => x.network === n.name)) await this.ensureEndpoint(e, made.get(endpointOwner(e.network, e.name)));
      if (n.driver === 'overlay') await this.syncRemotes(n.name);
    }
    await this.syncGroups();
    await this.syncBalancers();
  }

  /** The daemon's request for a network of the controller's: an overlay with this host's VTEP and the other members' as peers, or a per-host network as the controller was asked for it. */
  private networkRequest(n: ControllerNetwork, peers: string[]): CreateNetworkRequest {
    const common = { name: n.name, subnet: n.subnet, owner: networkOwner(n.name), ...(n.mtu === undefined ? {} : { mtu: n.mtu }) };
    if (n.driver === 'overlay') return { ...(n.options ?? {}), ...common, driver: 'overlay', vni: n.vni, vtep: this.opts.vtep, peers, ipRange: n.subnet };
    return { ...(n.options ?? {}), ...common, driver: n.driver };
  }

  /**
   * The controller's groups of rules on this host's endpoints: each policy's
   * group into the layer it names, on the endpoint it names or on every
   * endpoint of its network in its prefix. What this agent put there is
   * known by its status keys (they survive a restart of the agent), so a
   * group whose policy went is taken out again, and nothing else is touched.
   */
  private async syncGroups(): Promise<void> {
    const me = this.opts.host;
    const mine = this.host.endpoints().filter((e) => e.owner?.startsWith('controller:'));
    const want = new Map<string, WantedGroup>();
    for (const p of this.values<ControllerPolicy>(Keys.policies)) {
      for (const e of mine) {
        if (e.network !== p.network || (p.endpoint !== undefined ? e.name !== p.endpoint : !inPrefix(e.ip, p.prefix ?? '255.255.255.255/32'))) continue;
        want.set(`${e.name}/${p.layer}/${p.group}`, { endpointId: e.id, layer: p.layer, group: p.group, policy: p, revision: this.revisionOf(Keys.policy(p.name)) });
      }
    }
    const prefix = `${Keys.statusOf(me)}groups/`;
    for (const [key] of this.cache.entries(prefix)) {
      const name = key.slice(prefix.length);
      if (want.has(name)) continue;
      const [endpoint, layer, group] = name.split('/');
      const made = mine.find((e) => e.name === endpoint);
      if (made) await this.host.removeGroup(made.id, layer, group).catch(() => undefined);
      await this.clearStatus('groups', name);
    }
    const puts: [string, WantedGroup][] = [];
    for (const [name, w] of want) {
      const status = this.cache.get(Keys.objectStatus(me, 'groups', name))?.value as (ObjectStatus & { policy?: string }) | undefined;
      if (status?.state === 'applied' && status.revision === w.revision && status.policy === w.policy.name && this.host.hasGroup(w.endpointId, w.layer, w.group)) continue;
      puts.push([name, w]);
    }
    if (puts.length === 0) return;
    // One change for all of them: a prefix policy reaches every endpoint of the host at once.
    const outcomes = await this.host.putGroups(puts.map(([, w]) => ({ endpointId: w.endpointId, layer: w.layer, group: w.group, spec: w.policy.spec }))).catch((err: unknown) => puts.map(() => (err as Error).message));
    for (const [i, [name, w]] of puts.entries()) {
      const reason = outcomes[i];
      if (reason !== null) this.logger.warn({ group: name, reason }, 'the agent could not apply a group');
      await this.writeStatus('groups', name, { state: reason === null ? 'applied' : 'failed', ...(reason === null ? {} : { reason }), revision: w.revision, at: new Date().toISOString(), policy: w.policy.name } as ObjectStatus);
    }
  }

  /** The endpoint made on this host unless it is (`existing`), and published as realized. */
  private async ensureEndpoint(e: ControllerEndpoint, existing: HostEndpoint | undefined): Promise<void> {
    const owner = endpointOwner(e.network, e.name);
    const key = Keys.realizedEndpoint(e.network, e.name);
    await this.attempt('endpoints', `${e.network}/${e.name}`, this.revisionOf(Keys.endpoint(e.network, e.name)), async () => {
      const where = e.vhostUser === undefined ? { netns: e.netns } : { vhostUser: e.vhostUser };
      const made = existing ?? (await this.host.createEndpoint({ network: e.network, ...where, name: e.name, owner, ...(e.ip === undefined ? {} : { ip: e.ip }) }));
      const realized: RealizedEndpoint = { network: e.network, name: e.name, host: this.opts.host, ip: made.ip, mac: made.mac, vtep: this.opts.vtep, ifname: made.ifname };
      if (JSON.stringify(this.cache.get(key)?.value) !== JSON.stringify(realized) || !this.realized.has(key)) {
        this.realized.set(key, realized);
        this.staged.set(key, { value: JSON.stringify(realized), leased: true });
      }
    });
  }

  private async removeEndpoint(network: string, name: string, id: string): Promise<void> {
    const key = Keys.realizedEndpoint(network, name);
    this.realized.delete(key);
    await this.etcd.delete().key(key).catch((err: unknown) => this.logger.warn({ err, key }, 'could not withdraw a realized endpoint'));
    await this.attempt('endpoints', `${network}/${name}`, 0, () => this.host.deleteEndpoint(id));
    await this.clearStatus('endpoints', `${network}/${name}`);
    // Its groups went with it.
    const groups = `${Keys.statusOf(this.opts.host)}groups/${name}/`;
    for (const [key] of this.cache.entries(groups)) await this.clearStatus('groups', key.slice(`${Keys.statusOf(this.opts.host)}groups/`.length));
  }

  /** The other members' realized endpoints of a network, as its static remotes (those that went, withdrawn), in one change when anything differs. */
  private async syncRemotes(network: string): Promise<void> {
    const net = this.host.networks().find((n) => n.name === network);
    const have = net?.remotes;
    if (!have) return;
    // Only behind a member's VTEP: the data plane refuses a remote behind a host that is not a peer.
    const peers = new Set(net.peers ?? []);
    // Thousands of remotes: compared again only when a realized endpoint, the peers or the host's remotes changed since the last time they matched.
    const changes = this.cache.changesOf(Keys.realized);
    const seen = `${changes} ${[...peers].join(',')} ${have.size}`;
    if (this.remotesMatched.get(network) === seen) return;
    const want = this.values<RealizedEndpoint>(Keys.realizedOf(network)).filter((r) => r.host !== this.opts.host && peers.has(r.vtep));
    const same = want.length === have.size && want.every((r) => {
      const known = have.get(r.mac);
      return known !== undefined && known.ip === r.ip && known.vtep === r.vtep;
    });
    if (!same) {
      const ok = await this.host.setOverlayRemotes(network, want.map((r) => ({ mac: r.mac, ip: r.ip, vtep: r.vtep }))).then(
        () => true,
        (err: unknown) => {
          this.logger.warn({ err, network }, 'could not bring the remote endpoints up to date');
          return false;
        },
      );
      if (!ok) return;
    }
    // What was read before the change: a realized endpoint that came meanwhile is compared next time.
    this.remotesMatched.set(network, `${changes} ${[...peers].join(',')} ${want.length}`);
  }

  /**
   * The controller's load balancers on the networks this host has: each made
   * here with the backends this host reaches (its own endpoints by name; on
   * an overlay the other members' by their realized address), and kept to
   * the desired backends and drains. A balancer is this agent's when its
   * status says it made it (`made`), so one of the same name made on the
   * host by hand is never touched: it fails with the sentence why.
   */
  private async syncBalancers(): Promise<void> {
    const me = this.opts.host;
    const networks = new Map(this.host.networks().filter((n) => n.owner === networkOwner(n.name)).map((n) => [n.name, n]));
    const local = new Map(this.host.loadBalancers().map((l) => [l.name, l]));
    for (const lb of this.values<ControllerLoadBalancer>(Keys.loadBalancers)) {
      const net = networks.get(lb.network);
      if (!net) continue;
      const prior = this.cache.get(Keys.objectStatus(me, 'loadbalancers', lb.name))?.value as BalancerStatus | undefined;
      const shape = JSON.stringify([lb.vip, lb.protocol, lb.port, lb.affinity, lb.probe, lb.publish]);
      const extra = { shape, made: prior?.made === 'yes' && local.has(lb.name) ? 'yes' : 'no' };
      const backends = this.reachableBackends(lb, net.driver);
      await this.attempt('loadbalancers', lb.name, this.revisionOf(Keys.loadBalancer(lb.name)), async () => {
        let have = local.get(lb.name);
        if (have && extra.made !== 'yes') throw new Error(`a load balancer named ${lb.name} exists on host ${me} and was not made by the controller: remove it there (vsw lb rm ${lb.name}) or name the controller's another way.`);
        if (have && prior?.shape !== shape) {
          await this.host.deleteLoadBalancer(lb.name);
          extra.made = 'no';
          have = undefined;
        }
        if (!have) {
          await this.host.createLoadBalancer({
            name: lb.name,
            network: lb.network,
            port: lb.port,
            protocol: lb.protocol,
            backends: [...backends.keys()],
            ...(lb.vip === undefined ? {} : { vip: lb.vip }),
            ...(lb.affinity === undefined ? {} : { affinity: lb.affinity }),
            ...(lb.probe === undefined ? {} : { probe: lb.probe as CreateLoadBalancerRequest['probe'] }),
            ...(lb.publish === undefined ? {} : { publish: lb.publish }),
          });
          extra.made = 'yes';
          for (const [b, draining] of backends) if (draining) await this.host.drainBackend(lb.name, b, true);
          return;
        }
        for (const b of have.backends) if (!backends.has(b.name)) await this.host.removeBackend(lb.name, b.name);
        for (const [b, draining] of backends) {
          const current = have.backends.find((x) => x.name === b);
          if (!current) await this.host.addBackend(lb.name, b);
          if ((current?.draining ?? false) !== draining) await this.host.drainBackend(lb.name, b, draining);
        }
      }, extra);
    }
  }

  /** Backends as this host names them (see syncBalancers), with whether each is drained; the ones it cannot reach yet are left out until it can. */
  private reachableBackends(lb: ControllerLoadBalancer, driver: string): Map<string, boolean> {
    const out = new Map<string, boolean>();
    const mine = this.host.endpoints().filter((e) => e.network === lb.network && e.owner === endpointOwner(e.network, e.name));
    const realized = driver === 'overlay' ? this.values<RealizedEndpoint>(Keys.realizedOf(lb.network)) : [];
    for (const b of lb.backends) {
      const parsed = parseBackendName(b.name, lb.port);
      if (!parsed) continue;
      const { who, port, portGiven } = parsed;
      const own = mine.find((e) => e.name === who || e.ip === who);
      if (own) {
        out.set(portGiven ? `${own.name}:${port}` : own.name, b.draining);
        continue;
      }
      const remote = realized.find((r) => r.host !== this.opts.host && (r.name === who || r.ip === who));
      if (remote) out.set(`${remote.ip}:${port}`, b.draining);
    }
    return out;
  }

  /** This agent's balancers that are no longer wanted (gone, or their network left this host). */
  private async removeBalancers(wanted: ReadonlySet<string>): Promise<void> {
    const prefix = `${Keys.statusOf(this.opts.host)}loadbalancers/`;
    for (const [key, entry] of this.cache.entries(prefix)) {
      const name = key.slice(prefix.length);
      if (wanted.has(name)) continue;
      if ((entry.value as BalancerStatus).made === 'yes' && this.host.loadBalancers().some((l) => l.name === name)) {
        await this.host.deleteLoadBalancer(name).catch((err: unknown) => this.logger.warn({ err, loadBalancer: name }, 'could not remove a load balancer'));
      }
      await this.clearStatus('loadbalancers', name);
    }
  }

  /** The revision a desired object was last written at (what its status says was applied). */
  private revisionOf(key: string): number {
    return this.cache.get(key)?.revision ?? 0;
  }

  /** Runs one change and records its status (applied, or the sentence why not); false when it failed. */
  private async attempt(kind: StatusKind, name: string, revision: number, change: () => Promise<unknown>, extra: Record<string, string> = {}): Promise<boolean> {
    let status: ObjectStatus;
    try {
      await change();
      status = { state: 'applied', revision, at: new Date().toISOString(), ...extra };
    } catch (err) {
      status = { state: 'failed', reason: (err as Error).message, revision, at: new Date().toISOString(), ...extra };
      this.logger.warn({ err, kind, name }, 'the agent could not apply an object');
    }
    if (revision > 0) await this.writeStatus(kind, name, status);
    return status.state === 'applied';
  }

  private async writeStatus(kind: StatusKind, name: string, status: ObjectStatus): Promise<void> {
    const key = Keys.objectStatus(this.opts.host, kind, name);
    const { at: _at, ...what } = status;
    const dedupe = JSON.stringify(what);
    if (this.written.get(key) === dedupe) return;
    this.staged.set(key, { value: JSON.stringify(status), leased: false, dedupe });
  }

  private async clearStatus(kind: StatusKind, name: string): Promise<void> {
    const key = Keys.objectStatus(this.opts.host, kind, name);
    this.written.delete(key);
    this.staged.set(key, null);
  }

  /**
   * The staged writes, in transactions of up to 100 operations (etcd takes
   * 128 by default). A write that fails is not remembered as written, so the
   * next reconciliation (after a resync, when etcd is back) makes it again.
   */
  private async flush(): Promise<void> {
    if (this.staged.size === 0) return;
    const writes = [...this.staged];
    this.staged.clear();
    const lease = this.lease;
    const leaseId = lease === null ? null : await lease.grant().catch(() => null);
    for (let i = 0; i < writes.length; i += 100) {
      const chunk = writes.slice(i, i + 100);
      const ops = chunk.flatMap(([key, w]): IOperation[] => {
        if (w === null) return [this.etcd.delete().key(key)];
        if (!w.leased) return [this.etcd.put(key).value(w.value)];
        // Without a lease the realized endpoint waits for register(), which writes every one it holds.
        return leaseId === null ? [] : [this.etcd.put(key).value(w.value).lease(leaseId)];
      });
      if (ops.length === 0) continue;
      try {
        // etcd's transactions need a condition: the schema key's version is never below 0.
        const res = await this.etcd.if(SCHEMA_KEY, 'Version', '>', -1).then(...ops).commit();
        // The copy has its own statuses at once, before their echo comes back through the watch: a reconciliation meanwhile must not apply them again.
        for (const [key, w] of chunk) {
          if (w === null) {
            if (key.startsWith(Keys.status)) this.cache.delete(key);
            continue;
          }
          if (w.dedupe === undefined) continue;
          this.written.set(key, w.dedupe);
          this.cache.set(key, { value: parse(w.value), revision: Number(res.header.revision) });
        }
      } catch (err) {
        this.logger.debug({ err, keys: chunk.length }, 'could not write statuses and realized endpoints: they are written again after the next resync');
      }
    }
  }
}

interface CachedValue {
  value: unknown;
  /** The revision it was last written at. */
  revision: number;
}

/**
 * The agent's copy of what it watches, kept per watched prefix, so a
 * reconciliation that reads one kind (the realized endpoints, its own
 * statuses) does not walk all the others, and with a count of changes per
 * kind, so work that depends on one kind alone can be skipped when nothing
 * of it changed.
 */
export class StateCopy {
  private readonly kinds: { prefix: string; keys: Map<string, CachedValue>; changes: number }[];

  constructor(prefixes: readonly string[]) {
    this.kinds = prefixes.map((prefix) => ({ prefix, keys: new Map(), changes: 0 }));
  }

  private kindOf(key: string): { keys: Map<string, CachedValue>; changes: number } | undefined {
    return this.kinds.find((k) => key.startsWith(k.prefix));
  }

  get(key: string): CachedValue | undefined {
    return this.kindOf(key)?.keys.get(key);
  }

  set(key: string, value: CachedValue): void {
    const kind = this.kindOf(key);
    if (!kind) return;
    kind.keys.set(key, value);
    kind.changes++;
  }

  delete(key: string): void {
    const kind = this.kindOf(key);
    if (kind?.keys.delete(key)) kind.changes++;
  }

  clear(): void {
    for (const k of this.kinds) {
      k.keys.clear();
      k.changes++;
    }
  }

  /** The keys under `prefix` (within one watched prefix) with their values; a copy, so the caller may change the state meanwhile. */
  entries(prefix: string): [string, CachedValue][] {
    const kind = this.kindOf(prefix);
    if (!kind) return [];
    const out: [string, CachedValue][] = [];
    for (const entry of kind.keys) if (entry[0].startsWith(prefix)) out.push(entry);
    return out;
  }

  /** How many changes the kind holding `prefix` has seen. */
  changesOf(prefix: string): number {
    return this.kindOf(prefix)?.changes ?? 0;
  }
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

function sameSet(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x) => b.includes(x));
}


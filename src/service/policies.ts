/**
 * Endpoint policies: ACL rules, layers, groups, QoS caps and the spoof guard.
 * Each change builds the endpoint's whole new PortPolicy, validates it,
 * hands it to the data plane, and only then records it: a refused change
 * (4xx) or a data-plane failure leaves the policy that was running in place.
 * The service calls the changes under its mutex (NetworkService.changePolicy);
 * anyone may call the reads (PolicyReads).
 */
import type { Logger } from 'pino';
import { EtherType } from '../packet/ethernet.js';
import { DROP_REASON_NAMES } from '../packet/drop-reasons.js';
import type { SwitchFlow } from '../switch/dataplane.js';
import { formatKeyAddress, KeyWord } from '../vfp/key.js';
import {
  DEFAULT_GROUP,
  DEFAULT_LAYER,
  PolicyError,
  protocolName,
  validateLayer,
  validateQos,
  validateRule,
  type GroupSpec,
  type LayerSpec,
  type PortPolicy,
  type RuleSpec,
} from '../vfp/policy.js';
import { formatRate } from '../vfp/rate.js';
import { buildTraceFrame, formatTracePacket, parseTracePacket } from '../vfp/trace-packet.js';
import type {
  AclRule,
  AddAclRuleRequest,
  EndpointPolicy,
  FlowEntry,
  FlowsResponse,
  PutGroupRequest,
  PutLayerRequest,
  QosPolicy,
  SpoofGuardPolicy,
  TraceRequest,
  TraceResponse,
} from './api-types.js';
import { ApiError, badRequest, notFound } from './errors.js';
import { macForIp, subnetContains } from './ipam.js';
import type { DataPlane } from '../switch/dataplane.js';
import type { EndpointRecord, NetworkRecord, State } from './state.js';

/** A sentence from the policy model is the whole 400 answer. */
function refuse(err: unknown): never {
  if (err instanceof PolicyError) throw badRequest(err.message);
  throw err;
}

/** The part of the data plane endpoint policies drive. */
export type PolicyDataPlane = Pick<DataPlane, 'setPolicy' | 'trace' | 'switchCounters' | 'flows' | 'ruleHits'>;

/** What needs no lock: the calls that change nothing. */
export type PolicyReads = Pick<PolicyService, 'policyOf' | 'listAcl' | 'flows' | 'trace'>;

export class PolicyService {
  private nextRuleId = 1;

  constructor(
    private readonly state: State,
    private readonly dataPlane: PolicyDataPlane,
    private readonly logger: Logger,
    private readonly commit: () => Promise<void> = async () => undefined,
  ) {}

  /** Applies `change` to a copy of the endpoint's policy; installs and records it only if all is well, and saves it. */
  private async update<T>(idOrName: string, change: (policy: PortPolicy, record: EndpointRecord) => T): Promise<T> {
    const { result, undo } = await this.install(idOrName, change);
    try {
      await this.commit();
    } catch (err) {
      // Not saved, so not kept: the policy that was running (and is on disk) runs again.
      await undo();
      throw err;
    }
    this.logger.info({ endpoint: idOrName }, 'policy updated');
    return result;
  }

  /** update() without the save: the change checked, installed and recorded, and how to put the previous policy back. */
  private async install<T>(idOrName: string, change: (policy: PortPolicy, record: EndpointRecord) => T): Promise<{ result: T; undo: () => Promise<void> }> {
    const record = this.state.requireEndpoint(idOrName);
    const next = structuredClone(record.policy);
    let result: T;
    try {
      result = change(next, record);
      next.layers = next.layers.map(validateLayer);
    } catch (err) {
      refuse(err);
    }
    try {
      // A port that is down gets its policy when it comes back (src/service/health.ts).
      if (record.down === null) await this.dataPlane.setPolicy(record.endpoint.portId, next);
    } catch (err) {
      const message = (err as Error).message;
      // A dead data plane is the daemon's failure (500); anything else it refused (meters exhausted) is the caller's to fix.
      if (/^the data plane (crashed|has stopped)/.test(message)) throw err;
      throw badRequest(`the data plane refused the policy: ${message.replace(/\.$/, '')}.`);
    }
    const previous = record.policy;
    record.policy = next;
    const undo = async (): Promise<void> => {
      record.policy = previous;
      if (record.down === null) await this.dataPlane.setPolicy(record.endpoint.portId, previous).catch((e: unknown) => this.logger.error({ err: e, endpoint: record.endpoint.id }, 'could not put the previous policy back'));
    };
    return { result, undo };
  }

  /** The next automatic id that no rule of the endpoint (or of `pending`) uses. */
  private freeRuleId(policy: PortPolicy, pending: readonly RuleSpec[] = []): string {
    for (;;) {
      const id = `r${this.nextRuleId++}`;
      if (!findRule(policy, id) && !pending.some((r) => r.id === id)) return id;
    }
  }

  policyOf(idOrName: string): EndpointPolicy {
    const record = this.state.requireEndpoint(idOrName);
    return {
      endpoint: record.endpoint.id,
      layers: record.policy.layers,
      spoofGuard: {
        enabled: record.policy.spoofGuard.enabled,
        allowedIps: record.policy.spoofGuard.ips.filter((ip) => ip !== record.endpoint.ip),
      },
      qos: qosView(record.policy),
    };
  }

  addAclRule(idOrName: string, req: AddAclRuleRequest): Promise<AclRule> {
    return this.update(idOrName, (policy, record) => {
      if (typeof req !== 'object' || req === null) throw new PolicyError('the rule must be a JSON object.');
      const { layer: layerName = DEFAULT_LAYER, group: groupName = DEFAULT_GROUP, ...spec } = req;
      const id = spec.id ?? this.freeRuleId(policy);
      if (findRule(policy, id)) throw new PolicyError(`rule id ${id} exists already on this endpoint: pick another id or leave it out.`);
      const rule = validateRule({ ...spec, id } as RuleSpec);
      const layer = layerNamed(policy, layerName, true);
      let group = layer.groups.find((g) => g.name === groupName);
      if (!group) {
        group = { name: groupName, priority: 100, rules: [] };
        layer.groups.push(group);
      }
      group.rules.push(rule);
      return aclView(record, layer, group, rule, 0);
    });
  }

  async listAcl(idOrName: string): Promise<AclRule[]> {
    const record = this.state.requireEndpoint(idOrName);
    const hits = await this.dataPlane.ruleHits(record.endpoint.portId);
    const out: AclRule[] = [];
    for (const layer of record.policy.layers) {
      for (const group of layer.groups) for (const rule of group.rules) out.push(aclView(record, layer, group, rule, hits[rule.id!] ?? 0));
    }
    return out;
  }

  removeAclRule(idOrName: string, ruleId: string): Promise<void> {
    return this.update(idOrName, (policy, record) => {
      const found = findRule(policy, ruleId);
      if (!found) throw notFound(`rule ${ruleId} not found on endpoint ${record.endpoint.name}: list rules with \`vsw policy acl ls ${record.endpoint.name}\`.`);
      found.group.rules.splice(found.group.rules.indexOf(found.rule), 1);
    });
  }

  putLayer(idOrName: string, name: string, req: PutLayerRequest): Promise<LayerSpec> {
    return this.update(idOrName, (policy) => {
      const layer = layerNamed(policy, name, true);
      if (req.priority !== undefined) layer.priority = req.priority;
      if (req.defaultIn !== undefined) layer.defaultIn = req.defaultIn;
      if (req.defaultOut !== undefined) layer.defaultOut = req.defaultOut;
      return validateLayer(layer);
    });
  }

  removeLayer(idOrName: string, name: string): Promise<void> {
    return this.update(idOrName, (policy, record) => {
      const i = policy.layers.findIndex((l) => l.name === name);
      if (i < 0) throw notFound(`layer ${name} not found on endpoint ${record.endpoint.name}: see \`vsw policy show ${record.endpoint.name}\`.`);
      policy.layers.splice(i, 1);
    });
  }

  putGroup(idOrName: string, layerName: string, groupName: string, req: PutGroupRequest): Promise<GroupSpec> {
    return this.update(idOrName, (policy) => this.placeGroup(policy, layerName, groupName, req));
  }

  /**
   * Many endpoints' groups put at once and saved once (a controller's agent
   * rolls one policy out to every endpoint of a prefix; a save per endpoint
   * would write the whole state a hundred times). Each is checked and
   * installed as putGroup does: one refused fails alone, with its sentence.
   * If the save fails, every one is put back and all fail with its reason.
   */
  async putGroups(changes: readonly { endpoint: string; layer: string; group: string; req: PutGroupRequest }[]): Promise<(string | null)[]> {
    const outcomes: (string | null)[] = [];
    const undos: (() => Promise<void>)[] = [];
    for (const c of changes) {
      try {
        undos.push((await this.install(c.endpoint, (policy) => this.placeGroup(policy, c.layer, c.group, c.req))).undo);
        outcomes.push(null);
      } catch (err) {
        if (/^the data plane (crashed|has stopped)/.test((err as Error).message)) {
          for (const undo of undos.reverse()) await undo();
          throw err;
        }
        outcomes.push((err as Error).message);
      }
    }
    if (undos.length === 0) return outcomes;
    try {
      await this.commit();
    } catch (err) {
      for (const undo of undos.reverse()) await undo();
      return outcomes.map((o) => o ?? (err as Error).message);
    }
    this.logger.info({ endpoints: undos.length }, 'policies updated');
    return outcomes;
  }

  /** The group put into the policy's layer (made if need be), replacing one of its name; rule ids given or free. */
  private placeGroup(policy: PortPolicy, layerName: string, groupName: string, req: PutGroupRequest): GroupSpec {
    if (typeof req !== 'object' || req === null || !Array.isArray(req.rules)) throw new PolicyError('the group needs a "rules" array (it may be empty).');
    const layer = layerNamed(policy, layerName, true);
    const rules: RuleSpec[] = [];
    for (const r of req.rules) rules.push({ ...r, id: r.id ?? this.freeRuleId(policy, rules) });
    const group: GroupSpec = { ...req, name: groupName, priority: req.priority ?? 100, rules };
    const others = policy.layers.flatMap((l) => l.groups.filter((g) => !(l === layer && g.name === groupName)));
    for (const r of rules) {
      if (others.some((g) => g.rules.some((o) => o.id === r.id))) throw new PolicyError(`rule id ${r.id} is used in another group of this endpoint: give it another id.`);
    }
    const i = layer.groups.findIndex((g) => g.name === groupName);
    if (i >= 0) layer.groups[i] = group;
    else layer.groups.push(group);
    return group;
  }

  removeGroup(idOrName: string, layerName: string, groupName: string): Promise<void> {
    return this.update(idOrName, (policy, record) => {
      const layer = policy.layers.find((l) => l.name === layerName);
      const i = layer ? layer.groups.findIndex((g) => g.name === groupName) : -1;
      if (!layer || i < 0) throw notFound(`group ${groupName} not found in layer ${layerName} of endpoint ${record.endpoint.name}: see \`vsw policy show ${record.endpoint.name}\`.`);
      layer.groups.splice(i, 1);
    });
  }

  setQos(idOrName: string, req: QosPolicy): Promise<QosPolicy> {
    return this.update(idOrName, (policy, record) => {
      if (record.endpoint.fabric !== undefined) {
        // The cap pauses reading the port's fd, and a fabric endpoint shares its fabric port's with every other address.
        throw badRequest(`endpoint ${record.endpoint.name} is a fabric endpoint, with no device of its own to pause: cap it with a meter rule instead (vsw policy acl add ${record.endpoint.name} --action meter ...).`);
      }
      policy.qos = validateQos(req.maxEgress, req.burst);
      return qosView(policy)!;
    });
  }

  clearQos(idOrName: string): Promise<void> {
    return this.update(idOrName, (policy) => {
      policy.qos = null;
    });
  }

  setSpoofGuard(idOrName: string, req: SpoofGuardPolicy): Promise<SpoofGuardPolicy> {
    return this.update(idOrName, (policy, record) => {
      const extra = req.allowedIps ?? [];
      for (const ip of extra) {
        if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip) || ip.split('.').some((o) => Number(o) > 255)) {
          throw new PolicyError(`allowed address "${ip}" is not an IPv4 address: write four numbers such as 10.88.0.9.`);
        }
      }
      policy.spoofGuard = { enabled: req.enabled, mac: record.endpoint.mac, ips: [record.endpoint.ip, ...extra.filter((ip) => ip !== record.endpoint.ip)] };
      return { enabled: req.enabled, allowedIps: extra };
    });
  }

  async flows(endpoint?: string): Promise<FlowsResponse> {
    const portFilter = endpoint === undefined ? undefined : this.state.requireEndpoint(endpoint).endpoint.portId;
    const [entries, counters] = await Promise.all([this.dataPlane.flows(portFilter), this.dataPlane.switchCounters()]);
    const byPort = new Map<number, string>();
    for (const { endpoint: ep } of this.state.endpoints.values()) byPort.set(ep.portId, ep.id);
    for (const { nat } of this.state.networks.values()) if (nat) byPort.set(nat.portId, `host/${nat.info.hostInterface}`);
    return { flows: entries.map((f) => flowView(f, byPort)), stats: counters.vfp };
  }

  async trace(req: TraceRequest): Promise<TraceResponse> {
    const record = this.state.requireEndpoint(req.endpoint);
    if (req.direction !== 'in' && req.direction !== 'out') throw badRequest(`direction "${String(req.direction)}" is not known: pass --in or --out.`);
    let packet;
    try {
      packet = parseTracePacket(req.packet);
    } catch (err) {
      refuse(err);
    }
    const peers = this.state.endpointsOn(record.endpoint.network);
    const net = this.state.requireNetwork(record.endpoint.network);
    // On a nat network, what lies outside the subnet is reached through the gateway's MAC.
    const outside = (ip: string) => (net.nat && net.network.gateway && ip.includes('.') && !subnetContains(net.ipam.subnet, ip) ? macForIp(net.network.gateway) : undefined);
    const macOf = (ip: string, fallback: string) => peers.find((r) => r.endpoint.ip === ip)?.endpoint.mac ?? outside(ip) ?? fallback;
    const self = record.endpoint.mac;
    const frame =
      req.direction === 'out'
        ? buildTraceFrame(packet, self, macOf(packet.dst, 'ff:ff:ff:ff:ff:ff'))
        : buildTraceFrame(packet, macOf(packet.src, '02:00:00:00:00:01'), self);
    const result = await this.dataPlane.trace(record.endpoint.portId, req.direction, frame);
    const names = new Map<string, string>();
    for (const { endpoint: ep } of this.state.endpoints.values()) names.set(`${ep.netns}/${ep.ifname}`, ep.name);
    const egress =
      result.egressPort === null
        ? null
        : result.egressPort === 'flood'
          ? 'flood'
          : ([...this.state.endpoints.values()].find((r) => r.endpoint.portId === result.egressPort)?.endpoint.id ?? this.portName(net, result.egressPort));
    return {
      packet: formatTracePacket(packet),
      steps: result.steps.map(({ port, ...step }) => ({ ...(port !== undefined ? { endpoint: names.get(port) ?? port } : {}), ...step })),
      verdict: result.verdict,
      ...(result.verdict === 'block' ? { dropReason: DROP_REASON_NAMES[result.reason] ?? String(result.reason) } : {}),
      egress,
      rewrite: result.rewrite,
    };
  }

  /** A port of the network that is no endpoint's, by what it is: the nat host TAP, the overlay's tunnel, the uplink or the fabric port; null for none. */
  private portName(net: NetworkRecord, portId: number): string | null {
    if (net.nat?.portId === portId) return `host/${net.nat.info.hostInterface}`;
    if (net.overlay?.tunnelPortId === portId) return `tunnel/vni${net.overlay.info.vni}`;
    if (net.uplink?.portId === portId) return `uplink/${net.uplink.info.interface}`;
    if (net.fabric?.portId === portId) return `fabric/${net.fabric.info.interface}`;
    return null;
  }
}

function layerNamed(policy: PortPolicy, name: string, create: boolean): LayerSpec {
  let layer = policy.layers.find((l) => l.name === name);
  if (!layer && create) {
    const priority = policy.layers.length === 0 ? 100 : Math.min(65535, Math.max(...policy.layers.map((l) => l.priority)) + 100);
    layer = { name, priority, defaultIn: 'allow', defaultOut: 'allow', groups: [] };
    policy.layers.push(layer);
  }
  if (!layer) throw new ApiError(404, `layer ${name} not found.`);
  return layer;
}

function findRule(policy: PortPolicy, id: string): { layer: LayerSpec; group: GroupSpec; rule: RuleSpec } | undefined {
  for (const layer of policy.layers) {
    for (const group of layer.groups) {
      const rule = group.rules.find((r) => r.id === id);
      if (rule) return { layer, group, rule };
    }
  }
  return undefined;
}

function aclView(record: EndpointRecord, layer: LayerSpec, group: GroupSpec, rule: RuleSpec, hits: number): AclRule {
  return { ...rule, id: rule.id!, endpoint: record.endpoint.id, layer: layer.name, group: group.name, hits };
}

function qosView(policy: PortPolicy): QosPolicy | null {
  if (!policy.qos) return null;
  return { maxEgress: formatRate(policy.qos.maxEgressBps), burst: `${policy.qos.burstBytes}b` };
}

function flowView(f: SwitchFlow, byPort: Map<number, string>): FlowEntry {
  const key = f.key;
  const v6 = key[KeyWord.ETH_VLAN] >>> 16 === EtherType.IPv6;
  const protocol = key[KeyWord.PROTO] >>> 24;
  const src = formatKeyAddress(key, KeyWord.SRC_IP, v6);
  const dst = formatKeyAddress(key, KeyWord.DST_IP, v6);
  const srcPort = key[KeyWord.PORTS] >>> 16;
  const dstPort = key[KeyWord.PORTS] & 0xffff;
  const hasPorts = protocol === 6 || protocol === 17;
  const name = protocolName(protocol) ?? `proto ${protocol}`;
  const flow = hasPorts ? `${name} ${src}:${srcPort} > ${dst}:${dstPort}` : `${name} ${src} > ${dst}`;
  return {
    endpoint: byPort.get(f.ingressPort) ?? String(f.ingressPort),
    egress: f.egressPort === null ? null : (byPort.get(f.egressPort) ?? String(f.egressPort)),
    action: f.egressPort === null ? 'drop' : 'forward',
    ...(f.egressPort === null ? { dropReason: DROP_REASON_NAMES[f.dropReason] ?? String(f.dropReason) } : {}),
    flow,
    protocol,
    src,
    dst,
    srcPort,
    dstPort,
    packets: f.packets,
    bytes: f.bytes,
    ageSeconds: f.ageSeconds,
    idleSeconds: f.idleSeconds,
    rewrite: f.rewrite ? { cached: 'yes' } : null,
  };
}

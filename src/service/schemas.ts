/**
 * The API's inputs, declared once: each TypeBox object here is the JSON
 * schema fastify validates with (and @fastify/swagger publishes), and
 * api-types.ts derives the request types from it with Static. Each field
 * carries what it must look like and how to fix it from the CLI, because most
 * callers are people typing `vsw`; describeViolation turns a schema violation
 * into one sentence from them.
 *
 * Loading this file loads TypeBox (tens of milliseconds): the CLI and the CNI
 * plugin import only api-types.ts and api-constants.ts.
 */
import { Type, type StringOptions, type TSchema } from '@sinclair/typebox';
import type { FastifySchemaValidationError } from 'fastify';
import type { GroupSpec, RuleSpec } from '../vfp/policy.js';
import { NETWORK_DRIVERS, RESOURCE_NAME_PATTERN, RESOURCE_NAME_RULE } from './api-constants.js';

/** What a field must look like, and how to fix it. */
export interface FieldDoc {
  what: string;
  hint: string;
}
export type FieldDocs = Record<string, FieldDoc>;

/** The parts of a request a route validates. */
export interface RouteParts {
  body?: TSchema;
  params?: TSchema;
  querystring?: TSchema;
}

/** A fastify route schema plus the docs its error messages draw on. */
export interface RouteSchema<S extends RouteParts = RouteParts> {
  schema: S;
  fields: FieldDocs;
}

/**
 * Where a field keeps its FieldDoc. A symbol, because ajv refuses unknown
 * keywords and ignores symbol keys, as it does TypeBox's own.
 */
const FIELD_DOC = Symbol('vsw.fieldDoc');

/** A field with its doc: `what` is also its description in the OpenAPI document, unless `about` says more. */
export function field<T extends TSchema>(schema: T, what: string, hint: string, about?: string): T {
  return { ...schema, description: about ?? what, [FIELD_DOC]: { what, hint } };
}

const str = (maxLength: number, options: StringOptions = {}) => Type.String({ minLength: 1, maxLength, ...options });
const resourceName = () => str(64, { pattern: RESOURCE_NAME_PATTERN });

/**
 * A string from a fixed list, as `enum`: a union of literals would be an
 * anyOf, and its violations could not be worded as "must be one of ...".
 */
export const oneOf = <const T extends readonly string[]>(values: T) => Type.Unsafe<T[number]>({ type: 'string', enum: [...values] });

/** Policy bodies are checked field by field in src/vfp/policy.ts, whose sentences know what a prefix or a port range must look like: the schema only insists on a JSON object. */
const checkedByPolicy = <T>() => Type.Unsafe<T>({ type: 'object' });

const closed = { additionalProperties: false } as const;
const optional = Type.Optional;

/** Collects the FieldDocs of the top-level fields of each part, keyed as ajv names them ("body.subnet"). */
export function routeSchema<S extends RouteParts>(schema: S): RouteSchema<S> {
  const fields: FieldDocs = {};
  for (const [part, partSchema] of Object.entries(schema) as [string, TSchema][]) {
    for (const [name, property] of Object.entries((partSchema.properties ?? {}) as Record<string, TSchema>)) {
      const doc = (property as { [FIELD_DOC]?: FieldDoc })[FIELD_DOC];
      if (doc) fields[`${part}.${name}`] = doc;
    }
  }
  return { schema, fields };
}

// ---------------------------------------------------------------- networks

export const CreateNetworkBody = Type.Object(
  {
    name: field(resourceName(), `a string of ${RESOURCE_NAME_RULE}`, 'pass a network NAME such as mynet'),
    driver: field(oneOf(NETWORK_DRIVERS), 'a driver name', 'pass -d internal'),
    subnet: field(str(64), 'a CIDR string such as 10.88.0.0/24', 'pass --subnet CIDR'),
    gateway: optional(field(str(64), 'an IP address string inside the subnet', 'pass --gateway IP or leave it out')),
    transit: optional(
      field(str(64), 'a CIDR string such as 100.127.0.0/30', 'pass --transit CIDR or leave it out', 'nat: the transit subnet (prefix /30 or shorter); default: a free /30 from 100.127.0.0/16.'),
    ),
    externalIp: optional(
      field(str(64), 'an IPv4 address string inside the transit subnet', 'pass --external-ip IP or leave it out', "nat: vsw's address in the transit subnet; default: its second host address."),
    ),
    natPorts: optional(
      field(str(32), 'a port range string such as 1024-65535', 'pass --nat-ports FIRST-LAST or leave it out', 'nat: "FIRST-LAST", the external port pool per protocol; default 1024-65535.'),
    ),
    vni: optional(field(Type.Integer(), 'a whole number from 1 to 16777215', 'pass --vni N', 'overlay: the VXLAN network identifier, 1..16777215.')),
    vtep: optional(
      field(str(64), 'an IPv4 address string of this host', 'pass --vtep ADDRESS or leave it out', "overlay: this host's underlay address; default the source address of the route to the first peer."),
    ),
    peers: optional(
      field(Type.Array(str(64), { maxItems: 1024 }), 'a list of at most 1024 IPv4 address strings', 'pass --peer ADDRESS once per peer host', "overlay: the other hosts' VTEPs."),
    ),
    vxlanPort: optional(field(Type.Integer(), 'a UDP port number', 'pass --vxlan-port PORT or leave it out for 4789', 'overlay: the UDP port of VXLAN; default 4789.')),
    mtu: optional(field(Type.Integer(), 'a whole number of bytes', 'pass --mtu N or leave it out', "overlay: the endpoints' MTU; default the underlay's minus 50.")),
    ipRange: optional(
      field(
        str(64),
        'a subnet or FIRST-LAST range string inside the subnet',
        'pass --ip-range CIDR or leave it out',
        "overlay, transparent, l2bridge and l2tunnel: the part of the subnet this host hands out, as CIDR or FIRST-LAST; default for overlay a share by the VTEP's place among all VTEPs, otherwise the whole subnet.",
      ),
    ),
    uplink: optional(
      field(str(15), 'an interface name of 1 to 15 characters', 'pass --uplink IFNAME', 'transparent, l2bridge and l2tunnel: the host interface the network rides on; containers appear on its LAN with their own MACs (transparent) or all with its MAC (l2bridge, l2tunnel).'),
    ),
    fabric: optional(
      field(
        str(15),
        'an interface name of 1 to 15 characters',
        'pass --fabric IFNAME or leave it out',
        "l2bridge: this host is a fabric host; the interface faces container hosts whose l2tunnel networks send every frame here. Their container addresses are fabric endpoints (POST /v1/networks/NAME/fabric-endpoints), each with its own policy.",
      ),
    ),
    ipam: optional(
      field(
        oneOf(['static', 'dhcp']),
        'static or dhcp',
        'pass --ipam static or --ipam dhcp, or leave it out',
        "transparent: where endpoints' addresses come from: vsw's own IPAM from --subnet/--ip-range (static, the default) or the LAN's DHCP server, asked by vsw with each endpoint's MAC (dhcp).",
      ),
    ),
    vlan: optional(
      field(
        Type.Integer(),
        'a whole number from 1 to 4094',
        'pass --vlan N or leave it out',
        'transparent, l2bridge and l2tunnel: the 802.1Q VLAN of the uplink the network is on; frames leave tagged with it and only its frames come in. Default: untagged.',
      ),
    ),
    owner: optional(
      field(str(255), 'a string of 1 to 255 characters', 'leave it out (runtime drivers set it)', 'Who asks (a runtime\'s driver), e.g. "docker:NETWORKID"; unique among networks.'),
    ),
    resolver: optional(
      field(
        str(64),
        'an IPv4 address string inside the subnet',
        'pass --resolver IP or leave it out',
        "internal and overlay networks without a gateway: the address vsw answers the endpoints' DNS at (taken from the subnet); with a gateway (and on nat networks) the gateway's address is the resolver.",
      ),
    ),
  },
  closed,
);

const networkNameParams = Type.Object({ name: field(str(255), 'a network name', 'name the network in the URL') }, closed);

export const PutPeersBody = Type.Object(
  { peers: field(Type.Array(str(64), { maxItems: 1024 }), 'a list of at most 1024 IPv4 address strings', 'send {"peers": ["192.168.56.12"]}') },
  closed,
);

/** A remote endpoint behind a peer VTEP, pushed by an operator or a controller. */
export const RemoteEndpointBody = Type.Object(
  {
    mac: field(str(32), 'a MAC address string such as 02:76:0a:0a:00:82', 'pass --mac MAC'),
    ip: optional(field(str(64), 'an IPv4 address string inside the network', 'pass --ip ADDRESS or leave it out')),
    vtep: field(str(64), "an IPv4 address string of a peer's VTEP", 'pass --vtep ADDRESS'),
  },
  closed,
);

export const createNetworkSchema = routeSchema({ body: CreateNetworkBody });
export const networkByNameSchema = routeSchema({ params: networkNameParams });
export const putPeersSchema = routeSchema({ params: networkNameParams, body: PutPeersBody });
export const addRemoteSchema = routeSchema({ params: networkNameParams, body: RemoteEndpointBody });
export const remoteByMacSchema = routeSchema({
  params: Type.Object(
    { name: networkNameParams.properties.name, mac: field(str(32), 'a MAC address', 'name the remote endpoint by MAC in the URL') },
    closed,
  ),
});

// ---------------------------------------------------------------- endpoints

export const PublishViaSchema = oneOf(['proxy', 'dnat']);

/** A port published by an endpoint on a nat network (-p [IP:]HOSTPORT:CONTAINERPORT[/PROTO]). */
export const PortMappingSchema = Type.Object(
  {
    protocol: oneOf(['tcp', 'udp']),
    hostIp: optional(str(64, { description: 'Host address the host-side listener binds; default 0.0.0.0 (all).' })),
    hostPort: Type.Integer({ description: '0 in a request: vsw picks a free port from the host\'s ephemeral range (ip_local_port_range); the answer carries the one chosen.' }),
    containerPort: Type.Integer(),
  },
  closed,
);

/** A container address behind an l2bridge network's fabric port, at its container host's MAC. */
export const CreateFabricEndpointBody = Type.Object(
  {
    ip: field(str(64), 'an IPv4 address string such as 10.88.0.5', 'pass --ip ADDRESS (the container\'s, as its l2tunnel network gave it)'),
    mac: field(str(32), 'a MAC address string such as 02:00:0a:58:00:05', "pass --mac MAC (the container host's uplink MAC)"),
    name: optional(field(resourceName(), `a string of ${RESOURCE_NAME_RULE}`, 'pass --name NAME or leave it out')),
  },
  closed,
);
export const createFabricEndpointSchema = routeSchema({ params: networkNameParams, body: CreateFabricEndpointBody });

export const CreateEndpointBody = Type.Object(
  {
    network: field(resourceName(), `a network name of ${RESOURCE_NAME_RULE}`, 'pass --network NAME'),
    netns: optional(
      field(
        str(4095),
        'a network namespace name or path',
        'pass --netns NAME (see `ip netns list`) or an absolute path such as /proc/PID/ns/net',
        'Network namespace: a name under /run/netns, or the path of one (CNI_NETNS, a docker sandbox). Either this or vhostUser.',
      ),
    ),
    vhostUser: optional(
      field(
        Type.Object(
          {
            socket: field(str(107), 'an absolute path of at most 107 bytes', 'pass --vhost-user PATH such as /run/vsw/vm1.sock'),
            mode: optional(field(oneOf(['server', 'client']), '"server" or "client"', 'pass --vhost-mode server|client or leave it out for server')),
          },
          closed,
        ),
        'an object {socket, mode?}',
        'pass --vhost-user PATH',
        "A VM's NIC instead of a TAP: vsw serves a vhost-user socket at `socket` (mode server, the default; the VMM connects, e.g. QEMU's -chardev socket,path=...) or connects to one the VMM serves (mode client). Either this or netns.",
      ),
    ),
    ip: optional(
      field(str(64), 'an IP address string such as 10.88.0.5', 'pass --ip ADDRESS or leave it out', "An address, or an address with the network's prefix length (10.88.0.5/24)."),
    ),
    mac: optional(field(str(32), 'a MAC address string such as 02:00:0a:58:00:05', 'pass --mac MAC or leave it out')),
    ifname: optional(field(str(64), 'an interface name of 1 to 15 bytes', 'pass --ifname NAME or leave it out')),
    name: optional(field(resourceName(), `a string of ${RESOURCE_NAME_RULE}`, 'pass --name NAME or leave it out')),
    spoofGuard: optional(field(Type.Boolean(), 'true or false', 'pass --no-spoof-guard or leave it out', 'Default true: the endpoint may send only from its own MAC and IP.')),
    owner: optional(
      field(
        str(255),
        'a string of 1 to 255 characters',
        'leave it out (runtime plugins set it)',
        'A runtime\'s key for the endpoint ("cni:CONTAINERID/IFNAME", "docker:ENDPOINTID"): a second request with the same owner, network and namespace gets the endpoint made by the first (200 instead of 201).',
      ),
    ),
    configure: optional(
      field(
        Type.Boolean(),
        'true or false',
        'leave it out',
        'Default true. false: vsw makes the TAP with its MAC (and MTU) but no address, route or link up: the runtime moves it into its container and configures it there (docker).',
      ),
    ),
    publishVia: optional(
      field(
        PublishViaSchema,
        '"proxy" or "dnat"',
        'leave it out for proxy',
        'How host ports reach the network. "proxy" (default): vsw listens on each host port and forwards. "dnat": the kernel redirects them (nftables), for runtimes that hold the host port open themselves (podman), as the CNI portmap plugin does.',
      ),
    ),
    publish: optional(
      field(
        Type.Array(PortMappingSchema, { maxItems: 256 }),
        'a list of {protocol, hostPort, containerPort, hostIp?}',
        'pass -p HOSTPORT:CONTAINERPORT[/tcp|udp]',
        "Ports to publish on the network's external address and the host (nat networks only).",
      ),
    ),
  },
  closed,
);

const endpointIdParams = Type.Object({ id: field(str(255), 'an endpoint id or name', 'name the endpoint in the URL') }, closed);

export const createEndpointSchema = routeSchema({ body: CreateEndpointBody });
export const endpointByIdSchema = routeSchema({ params: endpointIdParams });
export const listEndpointsByOwnerSchema = routeSchema({
  querystring: Type.Object(
    {
      network: optional(field(str(64), 'a network name', 'pass --network NAME or leave it out')),
      owner: optional(field(str(255), 'an owner key such as cni:CONTAINERID/eth0', 'leave it out')),
    },
    closed,
  ),
});

// ---------------------------------------------------------------- compartments

export const CreateCompartmentBody = Type.Object({ name: field(str(255), 'a network namespace name', 'pass --name NAME') }, closed);

export const createCompartmentSchema = routeSchema({ body: CreateCompartmentBody });
export const compartmentByNameSchema = routeSchema({
  params: Type.Object({ name: field(str(255), 'a compartment name', 'name the compartment in the URL') }, closed),
});

// ---------------------------------------------------------------- views

const networkFilter = () => optional(field(str(64), 'a network name', 'pass --network NAME or leave it out'));

export const listByNetworkSchema = routeSchema({ querystring: Type.Object({ network: networkFilter() }, closed) });
export const listNatSchema = routeSchema({
  querystring: Type.Object(
    {
      network: networkFilter(),
      counters: optional(field(oneOf(['only']), '"only"', 'pass counters=only to leave the translations out, or leave it out')),
    },
    closed,
  ),
});

// ---------------------------------------------------------------- VFP policy

/** One rule into a layer's group (both created as needed): "layer" defaults to "acl", "group" to "default". */
export const AddAclRuleBody = checkedByPolicy<RuleSpec & { layer?: string; group?: string }>();
/** The whole group at once. */
export const PutGroupBody = checkedByPolicy<Omit<GroupSpec, 'name'>>();

export const PutLayerBody = Type.Object(
  {
    priority: optional(field(Type.Integer({ minimum: 0, maximum: 65535 }), 'a whole number from 0 to 65535', 'pass --priority N')),
    defaultIn: optional(field(oneOf(['allow', 'block']), 'allow or block', 'pass --default-in allow|block')),
    defaultOut: optional(field(oneOf(['allow', 'block']), 'allow or block', 'pass --default-out allow|block')),
  },
  closed,
);

export const QosBody = Type.Object(
  {
    maxEgress: field(str(32), 'a rate such as 100mbit', 'pass --max-egress RATE'),
    burst: optional(field(str(32), 'a size such as 1mb', 'pass --burst SIZE or leave it out', 'Bucket size, e.g. "1mb"; default 10 ms at the rate, at least 64 KiB.')),
  },
  closed,
);

export const SpoofGuardBody = Type.Object(
  {
    enabled: field(Type.Boolean(), 'true or false', 'say on or off'),
    allowedIps: optional(field(Type.Array(str(64), { maxItems: 64 }), 'a list of IPv4 addresses', 'pass --allow-ip ADDRESS', 'Addresses the endpoint may send from besides its own.')),
  },
  closed,
);

export const TraceBody = Type.Object(
  {
    endpoint: field(str(255), 'an endpoint id or name', 'pass --endpoint NAME'),
    direction: field(oneOf(['in', 'out']), 'in or out', 'pass --in or --out'),
    packet: field(
      str(256),
      'a packet such as "tcp 10.0.0.2:1234 > 10.0.0.3:80 syn"',
      'quote the packet as one argument',
      'e.g. "tcp 10.0.0.2:1234 > 10.0.0.3:80 syn", "udp 10.0.0.2:5000 > 10.0.0.3:53", "icmp 10.0.0.2 > 10.0.0.3 echo-request".',
    ),
  },
  closed,
);

const layerParams = Type.Object({ id: endpointIdParams.properties.id, layer: str(64) }, closed);
const groupParams = Type.Object({ id: endpointIdParams.properties.id, layer: str(64), group: str(64) }, closed);

export const endpointPolicySchema = routeSchema({ params: endpointIdParams });
export const addAclRuleSchema = routeSchema({ params: endpointIdParams, body: AddAclRuleBody });
export const aclRuleSchema = routeSchema({
  params: Type.Object({ id: endpointIdParams.properties.id, rule: field(str(64), 'a rule id', 'see `vsw policy acl ls ENDPOINT`') }, closed),
});
export const layerSchema = routeSchema({ params: layerParams, body: PutLayerBody });
export const layerByNameSchema = routeSchema({ params: layerParams });
export const groupSchema = routeSchema({ params: groupParams, body: PutGroupBody });
export const groupByNameSchema = routeSchema({ params: groupParams });
export const qosSchema = routeSchema({ params: endpointIdParams, body: QosBody });
export const spoofGuardSchema = routeSchema({ params: endpointIdParams, body: SpoofGuardBody });
export const flowsSchema = routeSchema({
  querystring: Type.Object({ endpoint: optional(field(str(255), 'an endpoint id or name', 'pass --endpoint NAME or leave it out')) }, closed),
});
export const traceSchema = routeSchema({ body: TraceBody });

// ---------------------------------------------------------------- violations

/** The subset of an Ajv error object this module reads. */
export interface SchemaViolation {
  keyword: string;
  instancePath: string;
  params: Record<string, unknown>;
  message?: string;
}

const PLACE: Record<string, string> = {
  body: 'the request body',
  querystring: 'the query string',
  params: 'the URL',
  headers: 'the request headers',
};

/** One sentence for the first schema violation of a request. */
export function describeViolation(violation: SchemaViolation, dataVar: string, fields: FieldDocs): string {
  const place = PLACE[dataVar] ?? dataVar;
  const path = violation.instancePath.split('/').filter(Boolean).join('.');
  const field = path ? `${dataVar}.${path}` : dataVar;
  switch (violation.keyword) {
    case 'additionalProperties':
      return `unknown field "${String(violation.params.additionalProperty)}" in ${place}.`;
    case 'required': {
      const missing = `${dataVar}.${String(violation.params.missingProperty)}`;
      return withHint(`${missing} is required`, fields[missing]);
    }
    case 'enum': {
      const allowed = (violation.params.allowedValues as unknown[] | undefined)?.join(', ') ?? '';
      return withHint(`${field} must be one of ${allowed}`, fields[field]);
    }
    default:
      if (!path && violation.keyword === 'type') return `${place} must be a JSON object.`;
      if (fields[field]) return withHint(`${field} must be ${fields[field].what}`, fields[field]);
      return `${field} ${violation.message ?? 'is invalid'}.`;
  }
}

/** Fastify route options: the schema, and a formatter that words its first violation with the route's field docs (the daemon's routes and the controller's). */
export function route<S extends RouteParts>(rs: RouteSchema<S>) {
  return {
    schema: rs.schema,
    schemaErrorFormatter: (errors: FastifySchemaValidationError[], dataVar: string) =>
      new Error(errors.length > 0 ? describeViolation(errors[0], dataVar, rs.fields) : `${dataVar} is invalid.`),
  };
}

function withHint(text: string, doc: FieldDoc | undefined): string {
  return doc ? `${text}: ${doc.hint}.` : `${text}.`;
}

// ---------------------------------------------------------------- load balancers

const BACKEND_RULE = 'an endpoint name or id, or an IPv4 address of a remote endpoint (overlay), optionally with :PORT';

export const LbProbeSchema = Type.Object(
  {
    kind: oneOf(['tcp', 'http']),
    path: optional(str(255, { pattern: '^/', description: 'http: the path of the GET; default /.' })),
    intervalMs: optional(Type.Integer({ minimum: 200, maximum: 600000, description: 'Between probes of one backend; default 2000.' })),
    timeoutMs: optional(Type.Integer({ minimum: 50, maximum: 60000, description: 'A probe not answered by then failed; default 1000.' })),
    unhealthyThreshold: optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Consecutive failures that take a backend out; default 2.' })),
    healthyThreshold: optional(Type.Integer({ minimum: 1, maximum: 100, description: 'Consecutive successes that bring it back; default 2.' })),
  },
  closed,
);

export const CreateLoadBalancerBody = Type.Object(
  {
    name: field(resourceName(), `a string of ${RESOURCE_NAME_RULE}`, 'pass a load balancer NAME such as web'),
    network: field(resourceName(), 'a network name', 'pass --network NAME'),
    vip: optional(field(str(64), "an IPv4 address string inside the network's subnet", 'pass --vip IP or leave it out', "The VIP: an address of the network's subnet that no endpoint has; default: the next free one.")),
    protocol: optional(field(oneOf(['tcp', 'udp']), 'tcp or udp', 'pass --port 80/tcp or --port 53/udp')),
    port: field(Type.Integer({ minimum: 1, maximum: 65535 }), 'a port number from 1 to 65535', 'pass --port 80'),
    backends: field(Type.Array(str(128), { maxItems: 1024 }), `a list of at most 1024 backends, each ${BACKEND_RULE}`, 'pass --backend ENDPOINT[:PORT] once per backend'),
    affinity: optional(field(oneOf(['none', 'client-ip']), 'none or client-ip', 'pass --affinity none or --affinity client-ip')),
    probe: optional(field(LbProbeSchema, 'a probe such as {"kind": "http", "path": "/"}', 'pass --probe tcp or --probe http:/PATH, or leave it out')),
    publish: optional(
      field(Type.Integer({ minimum: 1, maximum: 65535 }), 'a port number from 1 to 65535', 'pass --publish HOSTPORT or leave it out', 'nat networks: a host port whose traffic is balanced over the backends like the VIP\'s.'),
    ),
  },
  closed,
);

const lbNameParams = Type.Object({ name: field(str(255), 'a load balancer name or id', 'name the load balancer in the URL') }, closed);

export const AddBackendBody = Type.Object({ backend: field(str(128), BACKEND_RULE, 'pass BACKEND such as web1 or web1:8080') }, closed);

export const createLoadBalancerSchema = routeSchema({ body: CreateLoadBalancerBody });
export const lbByNameSchema = routeSchema({ params: lbNameParams });
export const addBackendSchema = routeSchema({ params: lbNameParams, body: AddBackendBody });
export const backendSchema = routeSchema({
  params: Type.Object({ name: lbNameParams.properties.name, backend: field(str(128), BACKEND_RULE, 'name the backend in the URL as it was added') }, closed),
});

/**
 * JSON schemas of the API's inputs, and the text that turns a schema
 * violation into one sentence. Each field carries what it must look like and
 * how to fix it from the CLI, because most callers are people typing `vsw`.
 */
import { NETWORK_DRIVERS } from './api-types.js';

export const RESOURCE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
const RESOURCE_NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit";

/** What a field must look like, and how to fix it. */
export interface FieldDoc {
  what: string;
  hint: string;
}
export type FieldDocs = Record<string, FieldDoc>;

/** A fastify route schema plus the docs its error messages draw on. */
export interface RouteSchema {
  schema: { body?: object; params?: object; querystring?: object };
  fields: FieldDocs;
}

const str = (maxLength: number, pattern?: string): object =>
  pattern ? { type: 'string', minLength: 1, maxLength, pattern } : { type: 'string', minLength: 1, maxLength };

const object = (properties: Record<string, object>, required: string[] = []): object => ({
  type: 'object',
  additionalProperties: false,
  required,
  properties,
});

const nameParams = object({ name: str(255) }, ['name']);
const idParams = object({ id: str(255) }, ['id']);

export const createNetworkSchema: RouteSchema = {
  schema: {
    body: object(
      {
        name: str(64, RESOURCE_NAME_PATTERN),
        driver: { type: 'string', enum: [...NETWORK_DRIVERS] },
        subnet: str(64),
        gateway: str(64),
        transit: str(64),
        externalIp: str(64),
        natPorts: str(32),
        vni: { type: 'integer' },
        vtep: str(64),
        peers: { type: 'array', maxItems: 1024, items: str(64) },
        vxlanPort: { type: 'integer' },
        mtu: { type: 'integer' },
        ipRange: str(64),
        owner: str(255),
      },
      ['name', 'driver', 'subnet'],
    ),
  },
  fields: {
    'body.name': { what: `a string of ${RESOURCE_NAME_RULE}`, hint: 'pass a network NAME such as mynet' },
    'body.driver': { what: 'a driver name', hint: 'pass -d internal' },
    'body.subnet': { what: 'a CIDR string such as 10.88.0.0/24', hint: 'pass --subnet CIDR' },
    'body.gateway': { what: 'an IP address string inside the subnet', hint: 'pass --gateway IP or leave it out' },
    'body.transit': { what: 'a CIDR string such as 100.127.0.0/30', hint: 'pass --transit CIDR or leave it out' },
    'body.externalIp': { what: 'an IPv4 address string inside the transit subnet', hint: 'pass --external-ip IP or leave it out' },
    'body.natPorts': { what: 'a port range string such as 1024-65535', hint: 'pass --nat-ports FIRST-LAST or leave it out' },
    'body.vni': { what: 'a whole number from 1 to 16777215', hint: 'pass --vni N' },
    'body.vtep': { what: 'an IPv4 address string of this host', hint: 'pass --vtep ADDRESS or leave it out' },
    'body.peers': { what: 'a list of at most 1024 IPv4 address strings', hint: 'pass --peer ADDRESS once per peer host' },
    'body.vxlanPort': { what: 'a UDP port number', hint: 'pass --vxlan-port PORT or leave it out for 4789' },
    'body.mtu': { what: 'a whole number of bytes', hint: 'pass --mtu N or leave it out' },
    'body.ipRange': { what: 'a subnet or FIRST-LAST range string inside the subnet', hint: 'pass --ip-range CIDR or leave it out' },
    'body.owner': { what: 'a string of 1 to 255 characters', hint: 'leave it out (runtime drivers set it)' },
  },
};

export const putPeersSchema: RouteSchema = {
  schema: { params: nameParams, body: object({ peers: { type: 'array', maxItems: 1024, items: str(64) } }, ['peers']) },
  fields: {
    'params.name': { what: 'a network name', hint: 'name the network in the URL' },
    'body.peers': { what: 'a list of at most 1024 IPv4 address strings', hint: 'send {"peers": ["192.168.56.12"]}' },
  },
};

export const addRemoteSchema: RouteSchema = {
  schema: { params: nameParams, body: object({ mac: str(32), ip: str(64), vtep: str(64) }, ['mac', 'vtep']) },
  fields: {
    'params.name': { what: 'a network name', hint: 'name the network in the URL' },
    'body.mac': { what: 'a MAC address string such as 02:76:0a:0a:00:82', hint: 'pass --mac MAC' },
    'body.ip': { what: 'an IPv4 address string inside the network', hint: 'pass --ip ADDRESS or leave it out' },
    'body.vtep': { what: "an IPv4 address string of a peer's VTEP", hint: 'pass --vtep ADDRESS' },
  },
};

export const remoteByMacSchema: RouteSchema = {
  schema: { params: object({ name: str(255), mac: str(32) }, ['name', 'mac']) },
  fields: {
    'params.name': { what: 'a network name', hint: 'name the network in the URL' },
    'params.mac': { what: 'a MAC address', hint: 'name the remote endpoint by MAC in the URL' },
  },
};

export const createEndpointSchema: RouteSchema = {
  schema: {
    body: object(
      {
        network: str(64, RESOURCE_NAME_PATTERN),
        netns: str(4095),
        ip: str(64),
        mac: str(32),
        ifname: str(64),
        name: str(64, RESOURCE_NAME_PATTERN),
        spoofGuard: { type: 'boolean' },
        owner: str(255),
        configure: { type: 'boolean' },
        publishVia: { type: 'string', enum: ['proxy', 'dnat'] },
        publish: {
          type: 'array',
          maxItems: 256,
          items: object(
            {
              protocol: { type: 'string', enum: ['tcp', 'udp'] },
              hostIp: str(64),
              hostPort: { type: 'integer' },
              containerPort: { type: 'integer' },
            },
            ['protocol', 'hostPort', 'containerPort'],
          ),
        },
      },
      ['network', 'netns'],
    ),
  },
  fields: {
    'body.network': { what: `a network name of ${RESOURCE_NAME_RULE}`, hint: 'pass --network NAME' },
    'body.netns': { what: 'a network namespace name or path', hint: 'pass --netns NAME (see `ip netns list`) or an absolute path such as /proc/PID/ns/net' },
    'body.ip': { what: 'an IP address string such as 10.88.0.5', hint: 'pass --ip ADDRESS or leave it out' },
    'body.mac': { what: 'a MAC address string such as 02:00:0a:58:00:05', hint: 'pass --mac MAC or leave it out' },
    'body.ifname': { what: 'an interface name of 1 to 15 bytes', hint: 'pass --ifname NAME or leave it out' },
    'body.name': { what: `a string of ${RESOURCE_NAME_RULE}`, hint: 'pass --name NAME or leave it out' },
    'body.spoofGuard': { what: 'true or false', hint: 'pass --no-spoof-guard or leave it out' },
    'body.publish': { what: 'a list of {protocol, hostPort, containerPort, hostIp?}', hint: 'pass -p HOSTPORT:CONTAINERPORT[/tcp|udp]' },
    'body.owner': { what: 'a string of 1 to 255 characters', hint: 'leave it out (runtime plugins set it)' },
    'body.configure': { what: 'true or false', hint: 'leave it out' },
    'body.publishVia': { what: '"proxy" or "dnat"', hint: 'leave it out for proxy' },
  },
};

export const createCompartmentSchema: RouteSchema = {
  schema: { body: object({ name: str(255) }, ['name']) },
  fields: {
    'body.name': { what: 'a network namespace name', hint: 'pass --name NAME' },
  },
};

export const networkByNameSchema: RouteSchema = {
  schema: { params: nameParams },
  fields: { 'params.name': { what: 'a network name', hint: 'name the network in the URL' } },
};

export const compartmentByNameSchema: RouteSchema = {
  schema: { params: nameParams },
  fields: { 'params.name': { what: 'a compartment name', hint: 'name the compartment in the URL' } },
};

export const endpointByIdSchema: RouteSchema = {
  schema: { params: idParams },
  fields: { 'params.id': { what: 'an endpoint id or name', hint: 'name the endpoint in the URL' } },
};

export const listByNetworkSchema: RouteSchema = {
  schema: { querystring: object({ network: str(64) }) },
  fields: { 'querystring.network': { what: 'a network name', hint: 'pass --network NAME or leave it out' } },
};

export const listEndpointsByOwnerSchema: RouteSchema = {
  schema: { querystring: object({ network: str(64), owner: str(255) }) },
  fields: {
    'querystring.network': { what: 'a network name', hint: 'pass --network NAME or leave it out' },
    'querystring.owner': { what: 'an owner key such as cni:CONTAINERID/eth0', hint: 'leave it out' },
  },
};

export const listNatSchema: RouteSchema = {
  schema: { querystring: object({ network: str(64), counters: { type: 'string', enum: ['only'] } }) },
  fields: {
    'querystring.network': { what: 'a network name', hint: 'pass --network NAME or leave it out' },
    'querystring.counters': { what: '"only"', hint: 'pass counters=only to leave the translations out, or leave it out' },
  },
};

/**
 * Policy bodies are checked field by field in src/vfp/policy.ts, whose
 * sentences know what a prefix or a port range must look like; the schema
 * only insists on a JSON object.
 */
const anyObject = { type: 'object' };
const policyFields: FieldDocs = {
  'params.id': { what: 'an endpoint id or name', hint: 'name the endpoint in the URL' },
};

export const endpointPolicySchema: RouteSchema = { schema: { params: idParams }, fields: policyFields };

export const addAclRuleSchema: RouteSchema = { schema: { params: idParams, body: anyObject }, fields: policyFields };

export const aclRuleSchema: RouteSchema = {
  schema: { params: object({ id: str(255), rule: str(64) }, ['id', 'rule']) },
  fields: { ...policyFields, 'params.rule': { what: 'a rule id', hint: 'see `vsw policy acl ls ENDPOINT`' } },
};

export const layerSchema: RouteSchema = {
  schema: {
    params: object({ id: str(255), layer: str(64) }, ['id', 'layer']),
    body: object({
      priority: { type: 'integer', minimum: 0, maximum: 65535 },
      defaultIn: { type: 'string', enum: ['allow', 'block'] },
      defaultOut: { type: 'string', enum: ['allow', 'block'] },
    }),
  },
  fields: {
    ...policyFields,
    'body.priority': { what: 'a whole number from 0 to 65535', hint: 'pass --priority N' },
    'body.defaultIn': { what: 'allow or block', hint: 'pass --default-in allow|block' },
    'body.defaultOut': { what: 'allow or block', hint: 'pass --default-out allow|block' },
  },
};

export const layerByNameSchema: RouteSchema = { schema: { params: object({ id: str(255), layer: str(64) }, ['id', 'layer']) }, fields: policyFields };

export const groupSchema: RouteSchema = {
  schema: { params: object({ id: str(255), layer: str(64), group: str(64) }, ['id', 'layer', 'group']), body: anyObject },
  fields: policyFields,
};

export const groupByNameSchema: RouteSchema = {
  schema: { params: object({ id: str(255), layer: str(64), group: str(64) }, ['id', 'layer', 'group']) },
  fields: policyFields,
};

export const qosSchema: RouteSchema = {
  schema: { params: idParams, body: object({ maxEgress: str(32), burst: str(32) }, ['maxEgress']) },
  fields: {
    ...policyFields,
    'body.maxEgress': { what: 'a rate such as 100mbit', hint: 'pass --max-egress RATE' },
    'body.burst': { what: 'a size such as 1mb', hint: 'pass --burst SIZE or leave it out' },
  },
};

export const spoofGuardSchema: RouteSchema = {
  schema: {
    params: idParams,
    body: object({ enabled: { type: 'boolean' }, allowedIps: { type: 'array', maxItems: 64, items: str(64) } }, ['enabled']),
  },
  fields: {
    ...policyFields,
    'body.enabled': { what: 'true or false', hint: 'say on or off' },
    'body.allowedIps': { what: 'a list of IPv4 addresses', hint: 'pass --allow-ip ADDRESS' },
  },
};

export const flowsSchema: RouteSchema = {
  schema: { querystring: object({ endpoint: str(255) }) },
  fields: { 'querystring.endpoint': { what: 'an endpoint id or name', hint: 'pass --endpoint NAME or leave it out' } },
};

export const traceSchema: RouteSchema = {
  schema: {
    body: object({ endpoint: str(255), direction: { type: 'string', enum: ['in', 'out'] }, packet: str(256) }, ['endpoint', 'direction', 'packet']),
  },
  fields: {
    'body.endpoint': { what: 'an endpoint id or name', hint: 'pass --endpoint NAME' },
    'body.direction': { what: 'in or out', hint: 'pass --in or --out' },
    'body.packet': { what: 'a packet such as "tcp 10.0.0.2:1234 > 10.0.0.3:80 syn"', hint: 'quote the packet as one argument' },
  },
};

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

function withHint(text: string, doc: FieldDoc | undefined): string {
  return doc ? `${text}: ${doc.hint}.` : `${text}.`;
}

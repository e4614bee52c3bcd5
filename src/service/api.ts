/**
 * The REST API (see the table in docs/ARCHITECTURE.md). Every input is
 * checked by a JSON schema with additionalProperties false, and every refusal
 * is {"error": "<one sentence>"}: the CLI prints it as is.
 */
import Fastify, {
  LogController,
  type FastifyBaseLogger,
  type FastifyError,
  type FastifyInstance,
  type FastifyReply,
  type FastifyRequest,
  type FastifySchemaValidationError,
} from 'fastify';
import type { Logger } from 'pino';
import { HostError } from '../host/index.js';
import {
  API_PREFIX,
  type AddAclRuleRequest,
  type CreateCompartmentRequest,
  type CreateEndpointRequest,
  type CreateNetworkRequest,
  type ErrorBody,
  type PutGroupRequest,
  type PutLayerRequest,
  type PutPeersRequest,
  type QosPolicy,
  type RemoteEndpointRequest,
  type SpoofGuardPolicy,
  type TraceRequest,
} from './api-types.js';
import { ApiError, sentence } from './errors.js';
import { IpamError } from './ipam.js';
import {
  aclRuleSchema,
  addAclRuleSchema,
  endpointPolicySchema,
  flowsSchema,
  groupByNameSchema,
  groupSchema,
  layerByNameSchema,
  layerSchema,
  qosSchema,
  spoofGuardSchema,
  traceSchema,
  compartmentByNameSchema,
  createCompartmentSchema,
  createEndpointSchema,
  createNetworkSchema,
  describeViolation,
  endpointByIdSchema,
  listByNetworkSchema,
  listEndpointsByOwnerSchema,
  networkByNameSchema,
  listNatSchema,
  addRemoteSchema,
  putPeersSchema,
  remoteByMacSchema,
  type RouteSchema,
} from './schemas.js';
import type { Metrics } from './metrics.js';
import type { NetworkService } from './service.js';

/** Requests are small JSON documents; anything bigger is a mistake. */
const BODY_LIMIT = 64 * 1024;
/** About 40,000 rules. */
const GROUP_BODY_LIMIT = 8 * 1024 * 1024;

export function buildApi(service: NetworkService, logger: Logger, version: string, metrics?: Metrics): FastifyInstance {
  const app = Fastify({
    // pino's Logger is wider than FastifyBaseLogger; the cast keeps the instance's type the default one.
    loggerInstance: logger.child({ component: 'api' }) as FastifyBaseLogger,
    // The service logs each mutation with its ids; a line per request would drown them.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: BODY_LIMIT,
    // Fastify's defaults would silently drop unknown fields and turn 5 into "5": refuse both instead.
    ajv: { customOptions: { removeAdditional: false, coerceTypes: false, allErrors: false } },
  });
  app.setErrorHandler(handleError);
  if (metrics) {
    app.addHook('onResponse', async (request, reply) => {
      // The route's pattern, not the URL: /v1/endpoints/:id is one series, not one per endpoint.
      const route = request.routeOptions.url ?? 'unknown';
      metrics.apiLatency.observe({ method: request.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    });
  }
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).send(errorBody(`no API route ${request.method} ${request.url}: check that the vsw CLI and daemon are the same version.`));
  });
  registerRoutes(app, service, version);
  return app;
}

function registerRoutes(app: FastifyInstance, service: NetworkService, version: string): void {
  const p = API_PREFIX;
  app.get(`${p}/version`, async () => ({ version }));

  app.get(`${p}/networks`, async () => service.state.listNetworks());
  app.post<{ Body: CreateNetworkRequest }>(`${p}/networks`, route(createNetworkSchema), async (request, reply) =>
    reply.code(201).send(await service.createNetwork(request.body)),
  );
  app.get<{ Params: { name: string } }>(`${p}/networks/:name`, route(networkByNameSchema), async (request) =>
    service.state.networkView(service.state.requireNetwork(request.params.name)),
  );
  app.delete<{ Params: { name: string } }>(`${p}/networks/:name`, route(networkByNameSchema), async (request, reply) => {
    await service.deleteNetwork(request.params.name);
    return reply.code(204).send();
  });

  app.get<{ Querystring: { network?: string; owner?: string } }>(`${p}/endpoints`, route(listEndpointsByOwnerSchema), async (request) => {
    const { network, owner } = request.query;
    if (network !== undefined) service.state.requireNetwork(network);
    if (owner === undefined) return service.state.listEndpoints(network);
    const record = service.state.endpointByOwner(owner);
    return record && (network === undefined || record.endpoint.network === network) ? [service.state.endpointView(record)] : [];
  });
  app.post<{ Body: CreateEndpointRequest }>(`${p}/endpoints`, route(createEndpointSchema), async (request, reply) => {
    const { endpoint, created } = await service.createEndpoint(request.body);
    return reply.code(created ? 201 : 200).send(endpoint);
  });
  app.get<{ Params: { id: string } }>(`${p}/endpoints/:id`, route(endpointByIdSchema), async (request) =>
    service.state.endpointView(service.state.requireEndpoint(request.params.id)),
  );
  app.delete<{ Params: { id: string } }>(`${p}/endpoints/:id`, route(endpointByIdSchema), async (request, reply) => {
    await service.deleteEndpoint(request.params.id);
    return reply.code(204).send();
  });

  app.post<{ Body: CreateCompartmentRequest }>(`${p}/compartments`, route(createCompartmentSchema), async (request, reply) =>
    reply.code(201).send(await service.createCompartment(request.body)),
  );
  app.delete<{ Params: { name: string } }>(`${p}/compartments/:name`, route(compartmentByNameSchema), async (request, reply) => {
    await service.deleteCompartment(request.params.name);
    return reply.code(204).send();
  });

  app.get(`${p}/stats`, async () => service.stats());
  app.get<{ Querystring: { network?: string; counters?: 'only' } }>(`${p}/nat`, route(listNatSchema), async (request) =>
    service.nat.list(request.query.network, request.query.counters === 'only'),
  );
  app.get<{ Querystring: { network?: string } }>(`${p}/overlay`, route(listByNetworkSchema), async (request) => service.overlay.list(request.query.network));
  app.put<{ Params: { name: string }; Body: PutPeersRequest }>(`${p}/networks/:name/peers`, route(putPeersSchema), async (request) =>
    service.setOverlayPeers(request.params.name, request.body.peers),
  );
  app.post<{ Params: { name: string }; Body: RemoteEndpointRequest }>(`${p}/networks/:name/remotes`, route(addRemoteSchema), async (request, reply) =>
    reply.code(201).send(await service.addOverlayRemote(request.params.name, request.body)),
  );
  app.delete<{ Params: { name: string; mac: string } }>(`${p}/networks/:name/remotes/:mac`, route(remoteByMacSchema), async (request, reply) => {
    await service.removeOverlayRemote(request.params.name, request.params.mac);
    return reply.code(204).send();
  });

  registerPolicyRoutes(app, service);
}

function registerPolicyRoutes(app: FastifyInstance, service: NetworkService): void {
  const p = `${API_PREFIX}/endpoints/:id`;
  const policies = service.policies;
  type Id = { id: string };
  app.get<{ Params: Id }>(`${p}/policy`, route(endpointPolicySchema), async (request) => policies.policyOf(request.params.id));
  app.get<{ Params: Id }>(`${p}/acl`, route(endpointPolicySchema), async (request) => policies.listAcl(request.params.id));
  app.post<{ Params: Id; Body: AddAclRuleRequest }>(`${p}/acl`, route(addAclRuleSchema), async (request, reply) =>
    reply.code(201).send(await policies.addAclRule(request.params.id, request.body)),
  );
  app.delete<{ Params: Id & { rule: string } }>(`${p}/acl/:rule`, route(aclRuleSchema), async (request, reply) => {
    await policies.removeAclRule(request.params.id, request.params.rule);
    return reply.code(204).send();
  });
  app.put<{ Params: Id & { layer: string }; Body: PutLayerRequest }>(`${p}/layers/:layer`, route(layerSchema), async (request) =>
    policies.putLayer(request.params.id, request.params.layer, request.body ?? {}),
  );
  app.delete<{ Params: Id & { layer: string } }>(`${p}/layers/:layer`, route(layerByNameSchema), async (request, reply) => {
    await policies.removeLayer(request.params.id, request.params.layer);
    return reply.code(204).send();
  });
  // A group is how a controller pushes thousands of rules at once: it gets a larger body limit.
  app.put<{ Params: Id & { layer: string; group: string }; Body: PutGroupRequest }>(`${p}/layers/:layer/groups/:group`, { ...route(groupSchema), bodyLimit: GROUP_BODY_LIMIT }, async (request) =>
    policies.putGroup(request.params.id, request.params.layer, request.params.group, request.body),
  );
  app.delete<{ Params: Id & { layer: string; group: string } }>(`${p}/layers/:layer/groups/:group`, route(groupByNameSchema), async (request, reply) => {
    await policies.removeGroup(request.params.id, request.params.layer, request.params.group);
    return reply.code(204).send();
  });
  app.put<{ Params: Id; Body: QosPolicy }>(`${p}/qos`, route(qosSchema), async (request) => policies.setQos(request.params.id, request.body));
  app.delete<{ Params: Id }>(`${p}/qos`, route(endpointPolicySchema), async (request, reply) => {
    await policies.clearQos(request.params.id);
    return reply.code(204).send();
  });
  app.put<{ Params: Id; Body: SpoofGuardPolicy }>(`${p}/spoof-guard`, route(spoofGuardSchema), async (request) =>
    policies.setSpoofGuard(request.params.id, request.body),
  );
  app.get<{ Querystring: { endpoint?: string } }>(`${API_PREFIX}/flows`, route(flowsSchema), async (request) => policies.flows(request.query.endpoint));
  app.post<{ Body: TraceRequest }>(`${API_PREFIX}/trace`, route(traceSchema), async (request) => policies.trace(request.body));
}

/** Route options: the schema, and a formatter that words its first violation with the route's field docs. */
function route(rs: RouteSchema) {
  return {
    schema: rs.schema,
    schemaErrorFormatter: (errors: FastifySchemaValidationError[], dataVar: string) =>
      new Error(errors.length > 0 ? describeViolation(errors[0], dataVar, rs.fields) : `${dataVar} is invalid.`),
  };
}

function errorBody(message: string): ErrorBody {
  return { error: message };
}

/** Fastify's own refusals, reworded as sentences that say what to do. */
const FASTIFY_ERRORS: Record<string, string> = {
  FST_ERR_CTP_EMPTY_JSON_BODY: 'the request body is empty: send a JSON object.',
  FST_ERR_CTP_INVALID_JSON_BODY: 'the request body is not valid JSON: send a JSON object.',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'the request body has an unsupported content type: send JSON with Content-Type: application/json.',
  FST_ERR_CTP_BODY_TOO_LARGE: `the request body is too large (${BODY_LIMIT} bytes at most, ${GROUP_BODY_LIMIT} for a policy group): send a smaller JSON object.`,
};

export interface ClassifiedError {
  status: number;
  message: string;
}

/** The HTTP status and the one sentence for an error thrown while serving a request. */
export function classifyError(err: unknown): ClassifiedError {
  if (err instanceof ApiError) return { status: err.statusCode, message: err.message };
  if (err instanceof HostError) return { status: err.system ? 500 : 400, message: sentence(err.message) };
  if (err instanceof IpamError) return { status: 400, message: sentence(err.message) };
  const fe = err as Partial<FastifyError>;
  if (fe.validation) return { status: 400, message: sentence(fe.message ?? 'the request is invalid') };
  if (fe.code && FASTIFY_ERRORS[fe.code]) return { status: fe.statusCode ?? 400, message: FASTIFY_ERRORS[fe.code] };
  if (fe.statusCode !== undefined && fe.statusCode >= 400 && fe.statusCode < 500) {
    return { status: fe.statusCode, message: sentence(fe.message ?? 'the request was refused') };
  }
  const reason = (err instanceof Error ? err.message : String(err)).replace(/\.$/, '');
  return { status: 500, message: `the daemon failed: ${reason}; see its log for details.` };
}

function handleError(err: unknown, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const { status, message } = classifyError(err);
  if (status >= 500) request.log.error({ err }, 'request failed');
  else request.log.debug({ status, error: message }, 'request refused');
  return reply.code(status).send(errorBody(message));
}

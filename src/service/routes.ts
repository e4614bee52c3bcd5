/**
 * The REST API's routes (see the table in docs/ARCHITECTURE.md), each with
 * its schema from schemas.ts: fastify validates the request with it before
 * the handler runs, and the TypeBox type provider gives the handler the
 * request's types from the same schema. api.ts loads this file (and so
 * TypeBox) while the daemon restores its state, not before.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type {
  FastifyBaseLogger,
  FastifyInstance,
  RawReplyDefaultExpression,
  RawRequestDefaultExpression,
  RawServerDefault,
} from 'fastify';
import { API_PREFIX, GROUP_BODY_LIMIT } from './api-constants.js';
import {
  addBackendSchema,
  backendSchema,
  createLoadBalancerSchema,
  lbByNameSchema,
  createFabricEndpointSchema,
  aclRuleSchema,
  addAclRuleSchema,
  addRemoteSchema,
  compartmentByNameSchema,
  createCompartmentSchema,
  createEndpointSchema,
  createNetworkSchema,
  endpointByIdSchema,
  endpointPolicySchema,
  flowsSchema,
  groupByNameSchema,
  groupSchema,
  layerByNameSchema,
  layerSchema,
  listByNetworkSchema,
  listEndpointsByOwnerSchema,
  listNatSchema,
  networkByNameSchema,
  putPeersSchema,
  qosSchema,
  remoteByMacSchema,
  spoofGuardSchema,
  route,
  traceSchema,
} from './schemas.js';
import type { NetworkService } from './service.js';
import { registerCaptureRoutes } from './capture-routes.js';

type Api = FastifyInstance<RawServerDefault, RawRequestDefaultExpression, RawReplyDefaultExpression, FastifyBaseLogger, TypeBoxTypeProvider>;

/** Declares every route on `app`, whose onRoute hooks (the OpenAPI document's) see each one with its schema. */
export function registerRoutes(app: Api, service: NetworkService, version: string): void {
  const p = API_PREFIX;
  app.get(`${p}/version`, async () => ({ version }));

  app.get(`${p}/networks`, async () => service.state.listNetworks());
  app.post(`${p}/networks`, route(createNetworkSchema), async (request, reply) =>
    reply.code(201).send(await service.createNetwork(request.body)),
  );
  app.get(`${p}/networks/:name`, route(networkByNameSchema), async (request) => service.inspectNetwork(request.params.name));
  app.delete(`${p}/networks/:name`, route(networkByNameSchema), async (request, reply) => {
    await service.deleteNetwork(request.params.name);
    return reply.code(204).send();
  });

  app.get(`${p}/endpoints`, route(listEndpointsByOwnerSchema), async (request) => {
    const { network, owner } = request.query;
    if (network !== undefined) service.state.requireNetwork(network);
    if (owner === undefined) return service.state.listEndpoints(network);
    const record = service.state.endpointByOwner(owner);
    return record && (network === undefined || record.endpoint.network === network) ? [service.state.endpointView(record)] : [];
  });
  app.post(`${p}/endpoints`, route(createEndpointSchema), async (request, reply) => {
    const { endpoint, created } = await service.createEndpoint(request.body);
    return reply.code(created ? 201 : 200).send(endpoint);
  });
  app.get(`${p}/endpoints/:id`, route(endpointByIdSchema), async (request) => service.inspectEndpoint(request.params.id));
  app.delete(`${p}/endpoints/:id`, route(endpointByIdSchema), async (request, reply) => {
    await service.deleteEndpoint(request.params.id);
    return reply.code(204).send();
  });

  app.post(`${p}/compartments`, route(createCompartmentSchema), async (request, reply) =>
    reply.code(201).send(await service.createCompartment(request.body)),
  );
  app.delete(`${p}/compartments/:name`, route(compartmentByNameSchema), async (request, reply) => {
    await service.deleteCompartment(request.params.name);
    return reply.code(204).send();
  });

  app.get(`${p}/stats`, async () => service.stats());
  app.get(`${p}/nat`, route(listNatSchema), async (request) =>
    service.nat.list(request.query.network, request.query.counters === 'only'),
  );
  app.get(`${p}/overlay`, route(listByNetworkSchema), async (request) => service.overlay.list(request.query.network));
  app.post(`${p}/networks/:name/fabric-endpoints`, route(createFabricEndpointSchema), async (request, reply) =>
    reply.code(201).send(await service.addFabricEndpoint(request.params.name, request.body)),
  );
  app.put(`${p}/networks/:name/peers`, route(putPeersSchema), async (request) =>
    service.setOverlayPeers(request.params.name, request.body.peers),
  );
  app.post(`${p}/networks/:name/remotes`, route(addRemoteSchema), async (request, reply) =>
    reply.code(201).send(await service.addOverlayRemote(request.params.name, request.body)),
  );
  app.delete(`${p}/networks/:name/remotes/:mac`, route(remoteByMacSchema), async (request, reply) => {
    await service.removeOverlayRemote(request.params.name, request.params.mac);
    return reply.code(204).send();
  });

  registerPolicyRoutes(app, service);
  registerLoadBalancerRoutes(app, service);
  registerCaptureRoutes(app, service.capture, route);
}

function registerLoadBalancerRoutes(app: Api, service: NetworkService): void {
  const p = `${API_PREFIX}/loadbalancers`;
  app.get(p, async () => service.lb.list());
  app.post(p, route(createLoadBalancerSchema), async (request, reply) => reply.code(201).send(await service.changeLoadBalancers((lb) => lb.create(request.body))));
  app.get(`${p}/:name`, route(lbByNameSchema), async (request) => service.lb.inspect(request.params.name));
  app.delete(`${p}/:name`, route(lbByNameSchema), async (request, reply) => {
    await service.changeLoadBalancers((lb) => lb.remove(request.params.name));
    return reply.code(204).send();
  });
  app.post(`${p}/:name/backends`, route(addBackendSchema), async (request, reply) =>
    reply.code(201).send(await service.changeLoadBalancers((lb) => lb.addBackend(request.params.name, request.body.backend))),
  );
  app.delete(`${p}/:name/backends/:backend`, route(backendSchema), async (request, reply) => {
    await service.changeLoadBalancers((lb) => lb.removeBackend(request.params.name, request.params.backend));
    return reply.code(204).send();
  });
  app.post(`${p}/:name/backends/:backend/drain`, route(backendSchema), async (request) =>
    service.changeLoadBalancers((lb) => lb.drain(request.params.name, request.params.backend, true)),
  );
  app.delete(`${p}/:name/backends/:backend/drain`, route(backendSchema), async (request) =>
    service.changeLoadBalancers((lb) => lb.drain(request.params.name, request.params.backend, false)),
  );
}

function registerPolicyRoutes(app: Api, service: NetworkService): void {
  const p = `${API_PREFIX}/endpoints/:id`;
  const policies = service.policies;
  app.get(`${p}/policy`, route(endpointPolicySchema), async (request) => policies.policyOf(request.params.id));
  app.get(`${p}/acl`, route(endpointPolicySchema), async (request) => policies.listAcl(request.params.id));
  app.post(`${p}/acl`, route(addAclRuleSchema), async (request, reply) =>
    reply.code(201).send(await service.changePolicy((c) => c.addAclRule(request.params.id, request.body))),
  );
  app.delete(`${p}/acl/:rule`, route(aclRuleSchema), async (request, reply) => {
    await service.changePolicy((c) => c.removeAclRule(request.params.id, request.params.rule));
    return reply.code(204).send();
  });
  app.put(`${p}/layers/:layer`, route(layerSchema), async (request) =>
    service.changePolicy((c) => c.putLayer(request.params.id, request.params.layer, request.body ?? {})),
  );
  app.delete(`${p}/layers/:layer`, route(layerByNameSchema), async (request, reply) => {
    await service.changePolicy((c) => c.removeLayer(request.params.id, request.params.layer));
    return reply.code(204).send();
  });
  // A group is how a controller pushes thousands of rules at once: it gets a larger body limit.
  app.put(`${p}/layers/:layer/groups/:group`, { ...route(groupSchema), bodyLimit: GROUP_BODY_LIMIT }, async (request) =>
    service.changePolicy((c) => c.putGroup(request.params.id, request.params.layer, request.params.group, request.body)),
  );
  app.delete(`${p}/layers/:layer/groups/:group`, route(groupByNameSchema), async (request, reply) => {
    await service.changePolicy((c) => c.removeGroup(request.params.id, request.params.layer, request.params.group));
    return reply.code(204).send();
  });
  app.put(`${p}/qos`, route(qosSchema), async (request) => service.changePolicy((c) => c.setQos(request.params.id, request.body)));
  app.delete(`${p}/qos`, route(endpointPolicySchema), async (request, reply) => {
    await service.changePolicy((c) => c.clearQos(request.params.id));
    return reply.code(204).send();
  });
  app.put(`${p}/spoof-guard`, route(spoofGuardSchema), async (request) => service.changePolicy((c) => c.setSpoofGuard(request.params.id, request.body)));
  app.get(`${API_PREFIX}/flows`, route(flowsSchema), async (request) => policies.flows(request.query.endpoint));
  app.post(`${API_PREFIX}/trace`, route(traceSchema), async (request) => policies.trace(request.body));
}


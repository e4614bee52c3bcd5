/**
 * The REST API (see the table in docs/ARCHITECTURE.md). Every input is
 * checked by a JSON schema with additionalProperties false, and every refusal
 * is {"error": "<one sentence>"}: the CLI prints it as is.
 */
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import { HostError } from '../host/index.js';
import { API_PREFIX, BODY_LIMIT, DEFAULT_SOCKET_PATH, GROUP_BODY_LIMIT, type ErrorBody } from './api-types.js';
import { ApiError, sentence } from './errors.js';
import { IpamError } from './ipam.js';
import type { Metrics } from './metrics.js';
import type { NetworkService } from './service.js';

/** Where the daemon serves the OpenAPI document of this API. */
export const OPENAPI_PATH = `${API_PREFIX}/openapi.json`;

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
  // The routes, their TypeBox schemas and the OpenAPI plugin take tens of milliseconds to load: they load while the
  // daemon restores its state, not before its first frame, and the routes are added once the plugin is there to see them.
  const loading = Promise.all([import('@fastify/swagger'), import('./routes.js')]);
  loading.catch(() => undefined); // awaited (and so reported) when the server starts
  void app.register(async (api) => {
    const [{ default: swagger }, { registerRoutes }] = await loading;
    await api.register(swagger, {
      openapi: {
        info: {
          title: 'vsw',
          description: `The vsw daemon's REST API, served on its unix socket (default ${DEFAULT_SOCKET_PATH}). Every refusal is {"error": "<one sentence>"}.`,
          version,
        },
      },
    });
    registerRoutes(api.withTypeProvider<TypeBoxTypeProvider>(), service, version);
    api.get(OPENAPI_PATH, async () => api.swagger());
  });
  return app;
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

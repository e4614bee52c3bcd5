/**
 * POST /v1/captures (src/service/capture.ts does the work): the body names
 * the target, the points, a count, the format and the snaplen, and the answer
 * is the capture file, streamed until the capture ends. Loaded with the other
 * routes (routes.ts), so TypeBox is not loaded before the daemon's first frame.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { FastifyInstance, RouteShorthandOptions } from 'fastify';
import { API_PREFIX } from './api-constants.js';
import { CAPTURE_FORMATS, CAPTURE_POINT_NAMES, DEFAULT_SNAPLEN, MAX_CAPTURE_COUNT } from './capture-api.js';
import type { CaptureService } from './capture.js';
import { field, oneOf, routeSchema, type RouteSchema } from './schemas.js';

const StartCaptureBody = Type.Object(
  {
    target: field(Type.String({ minLength: 1, maxLength: 255 }), 'an endpoint id or name, or a network name', 'name what to capture: vsw capture ENDPOINT|NETWORK'),
    points: Type.Optional(
      field(
        Type.Array(oneOf(CAPTURE_POINT_NAMES), { minItems: 1, maxItems: 3, uniqueItems: true }),
        `a list of ${CAPTURE_POINT_NAMES.join(', ')}, each at most once`,
        'pass --point ingress,egress,drop or leave it out',
        'where to capture: entering vsw from the port, queued to it (after policy, before encapsulation), dropped there; default ingress and egress',
      ),
    ),
    count: Type.Optional(field(Type.Integer({ minimum: 1, maximum: MAX_CAPTURE_COUNT }), `a whole number of frames from 1 to ${MAX_CAPTURE_COUNT}`, 'pass -c N or leave it out')),
    format: Type.Optional(field(oneOf(CAPTURE_FORMATS), CAPTURE_FORMATS.join(' or '), 'pass --format pcap or --format pcapng')),
    snaplen: Type.Optional(field(Type.Integer({ minimum: 1, maximum: DEFAULT_SNAPLEN }), `a whole number of bytes from 1 to ${DEFAULT_SNAPLEN}`, 'pass -s BYTES or leave it out')),
  },
  { additionalProperties: false },
);

export type StartCaptureRequest = Static<typeof StartCaptureBody>;

export const startCaptureSchema = routeSchema({ body: StartCaptureBody });

/** `route` is the API's route options for a schema (the schema, and its violations worded as one sentence). */
export function registerCaptureRoutes(app: FastifyInstance, capture: CaptureService, route: (rs: RouteSchema) => RouteShorthandOptions): void {
  app.post<{ Body: StartCaptureRequest }>(`${API_PREFIX}/captures`, route(startCaptureSchema), async (request, reply) => {
    const session = await capture.start(request.body);
    reply.hijack();
    capture.attach(session, reply.raw);
  });
  // Before the server waits for its requests to finish: a capture would never finish on its own.
  app.addHook('preClose', async () => capture.stopAll());
}

/**
 * Names and defaults that the API's schemas (schemas.ts), its types
 * (api-types.ts, which re-exports them) and the CLI share. Plain values with
 * no imports, so that the CLI and the CNI plugin can load them without
 * loading TypeBox, fastify or the data plane.
 */

export const API_PREFIX = '/v1';
export const DEFAULT_SOCKET_PATH = '/run/vsw/vsw.sock';
/** Where the daemon keeps its desired state (state.json), the connections it hands to its successor, and its lock. */
export const DEFAULT_STATE_DIR = '/var/lib/vsw';
/** `vsw daemon --docker` with no socket: where dockerd looks for the network driver named vsw. */
export const DEFAULT_DOCKER_SOCKET = '/run/docker/plugins/vsw.sock';
/** `vsw daemon --metrics` with no address: Prometheus metrics on loopback only. */
export const DEFAULT_METRICS_ADDRESS = '127.0.0.1:9483';

/** Every network driver: the Windows stack's modes, all implemented. */
export const NETWORK_DRIVERS = ['internal', 'nat', 'transparent', 'l2bridge', 'l2tunnel', 'overlay'] as const;
export type NetworkDriver = (typeof NETWORK_DRIVERS)[number];
/** RFC 7348's port for VXLAN. */
export const DEFAULT_VXLAN_PORT = 4789;

/** Where nat networks take their transit /30 from when --transit is not given (the top of RFC 6598 space). */
export const DEFAULT_TRANSIT_POOL = '100.127.0.0/16';
export const DEFAULT_NAT_PORTS = '1024-65535';

/** Names of networks and endpoints. */
export const RESOURCE_NAME_PATTERN = '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$';
export const RESOURCE_NAME_RULE = "1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit";

/** Requests are small JSON documents; anything bigger is a mistake. */
export const BODY_LIMIT = 64 * 1024;
/** A policy group's body (PUT .../groups/:group), about 40,000 rules: how a controller pushes thousands of rules at once. */
export const GROUP_BODY_LIMIT = 8 * 1024 * 1024;

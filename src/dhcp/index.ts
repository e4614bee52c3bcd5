/**
 * DHCPv4 client for container endpoints on a transparent network: the
 * message codec, the client's frames and the per-endpoint state machine.
 */
export * from './message.js';
export * from './frames.js';
export * from './lease.js';
export * from './client.js';

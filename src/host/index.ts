export { HostError } from './errors.js';
export { run, ip, ipJson, explainIpFailure, formatCommand } from './exec.js';
export type { RunOptions, RunResult } from './exec.js';
export { netnsPath, validateNetnsName, netnsExists, createNetns, deleteNetns, listNetns, netnsPids } from './netns.js';
export type { DeleteNetnsOptions } from './netns.js';
export { validateIfName, IFNAME_MAX_BYTES, listLinks, linkExists, pickFreeIfName, deleteLink } from './link.js';
export { configureInterface, addressInUse } from './endpoint.js';
export type { InterfaceConfig } from './endpoint.js';
export { hasNetAdmin, requireNetAdmin } from './privileges.js';

/** The packet layer in one import. Hot-path code may import the protocol files directly; both are the same modules. */
export * from './drop-reasons.js';
export * from './checksum.js';
export * from './view.js';
export * from './ethernet.js';
export * from './vlan.js';
export * from './arp.js';
export * from './ipv4.js';
export * from './ipv6.js';
export * from './icmp.js';
export * from './udp.js';
export * from './tcp.js';
export * from './vnet.js';
export * from './validate.js';
export * from './builders.js';

/**
 * Why a frame was dropped. The numeric codes index per-port counter rows
 * (src/switch/counters.ts), so they must stay dense and start at 1; 0 means
 * "keep the frame". Add new reasons at the end.
 */
export const FRAME_OK = 0;

export const DropReason = {
  /** Shorter than an Ethernet header (0-13 bytes), or a read shorter than the vnet header. */
  runt: 1,
  /** Longer than the port accepts for a frame that is not a GSO super-frame, or longer than an rx slot. */
  oversize: 2,
  /** virtio_net_hdr with an unknown GSO type, or checksum/header offsets outside the frame. */
  badVnetHdr: 3,
  /** IPv4 header with the wrong version, IHL < 5, or a total length outside the frame. */
  badIpv4: 4,
  /** IPv6 header with the wrong version, or a payload length beyond the frame. */
  badIpv6: 5,
  /** ARP for Ethernet/IPv4 shorter than 28 bytes or with wrong hardware/protocol sizes. */
  badArp: 6,
  /** Source MAC is multicast, broadcast or all zeros: no port may claim it. */
  badSrcMac: 7,
  /** The destination was learned on the ingress port itself; sending it back would loop. */
  sameSegment: 8,
  /** Nowhere to go: flooding on a network with no other port. */
  noEgress: 9,
  /** The egress device refused the write (queue full or device gone). Counted on the egress port. */
  txFailed: 10,
  /** An 802.1Q/802.1ad tag that is cut short. */
  badVlan: 11,
  /** A VFP layer blocked it (a block rule or a layer's default). Counted on the port whose policy decided. */
  policyBlock: 12,
  /** Spoof guard: the source MAC is not the endpoint's. */
  spoofMac: 13,
  /** Spoof guard: the source IP is not one of the endpoint's addresses. */
  spoofIp: 14,
  /** Spoof guard: an ARP sender MAC or IP that is not the endpoint's. */
  spoofArp: 15,
  /** A new connection found the port's connection table at its bound. */
  connLimit: 16,
  /** A meter rule's rate was exceeded (policer). */
  meter: 17,
  /** NAT: a new flow found every port of the protocol's pool in use. Counted on the container's port. */
  natPoolExhausted: 18,
  /** NAT: no translation for it (nothing published there, no live mapping, or a protocol NAT cannot translate). */
  natNoMapping: 19,
  /** VXLAN: a datagram shorter than the 8-byte header. Counted on the underlay socket's port, as the next four. */
  vxlanShortHeader: 20,
  /** VXLAN: the I flag is clear (RFC 7348: discard). */
  vxlanBadFlags: 21,
  /** VXLAN: the inner frame is shorter than an Ethernet header. */
  vxlanTruncated: 22,
  /** VXLAN: VNI 0, or one no overlay network on this socket serves. */
  vxlanUnknownVni: 23,
  /** VXLAN: the sender is not a peer VTEP of the VNI's network. */
  vxlanNotPeer: 24,
  /** Overlay: a frame larger than the network's MTU headed into the tunnel (an ICMP fragmentation-needed went back when it had DF). */
  tunnelTooBig: 25,
  /** Overlay: a TSO super-frame the addon could not segment, or no room to encapsulate. Counted on the network's tunnel port. */
  tunnelEncapFailed: 26,
  /** A unicast frame from a physical uplink to a MAC no port of the network has: LAN traffic that is not the containers'. Counted on the uplink. */
  uplinkNotLocal: 27,
  /** l2bridge: neither IPv4 nor ARP, to or from the uplink (one MAC on the wire cannot carry IPv6: its neighbour discovery names the container's MAC). */
  l2bridgeNotIpv4: 28,
  /** A DHCP server's reply on a network with DHCP addresses: taken by vsw's DHCP client for the endpoints, not delivered to a container. Counted on the uplink. */
  dhcpReplyTaken: 29,
  /** A DHCP server's reply beyond the rate the control plane takes (a LAN flooding them). Counted on the uplink. */
  dhcpReplyRate: 30,
  /** A frame on a fabric port from an address that is none of its fabric addresses (vsw fabric add). Counted on the fabric port. */
  fabricUnknownSource: 31,
  /** Load balancer: a new connection to a VIP whose backends are all down, draining or removed. Counted on the client's port. */
  lbNoBackend: 32,
  /** Load balancer: a new connection found the balancer's connection table full of live connections. Counted on the client's port. */
  lbTableFull: 33,
  /** DNS to the network's resolver that cannot be answered: truncated, a compression loop or a pointer out of bounds, counts a query cannot have, a response, a fragment. Never answered. Counted on the asking port. */
  dnsMalformed: 34,
  /** DNS for a name that is not the network's: a copy went to the control plane, which resolves it with the host's resolvers and sends the answer (not a failure). Counted on the asking port. */
  dnsHandedOver: 35,
  /** DNS for a name that is not the network's, beyond the rate the control plane takes (a container flooding queries). Counted on the asking port. */
  dnsOverRate: 36,
  /** TCP to the resolver that needs no answer: an acknowledgement of the stateless exchange, or a reset. Counted on the asking port. */
  dnsTcpNoAnswer: 37,
} as const;

export type DropReasonName = keyof typeof DropReason;

/** Names indexed by code; index 0 is unused. */
export const DROP_REASON_NAMES: readonly DropReasonName[] = (() => {
  const names: DropReasonName[] = [];
  for (const [name, code] of Object.entries(DropReason)) names[code] = name as DropReasonName;
  return names;
})();

export const DROP_REASON_COUNT = DROP_REASON_NAMES.length; // including the unused slot 0

/**
 * udp: 64-byte UDP datagrams at full rate (iperf3 -u -b 0 -l 64) between the
 * two namespaces of vsw's internal network and between the two on the Linux
 * bridge, vsw and bridge alternating: the per-packet cost, every datagram
 * crossing the TAP, the JS/native boundary and a write().
 */
import { vswAgainstBridge } from './measure.js';
import { vswBridgeRow, type Scenario } from './scenario.js';

export const udpScenario: Scenario = {
  name: 'udp',
  usesBridge: true,
  run: (ctx) => vswAgainstBridge(ctx, 'udp'),
  rows: (records) => [
    vswBridgeRow(records, 'udp', 'UDP 64 B received', 'kpps', (r) => (r.udp ? r.udp.packetsPerSecond / 1e3 : null), true, 0),
    vswBridgeRow(records, 'udp', 'UDP 64 B sent', 'kpps', (r) => (r.udp ? r.udp.sentPacketsPerSecond / 1e3 : null), true, 0),
    vswBridgeRow(records, 'udp', 'UDP 64 B lost', '%', (r) => r.udp?.lostPercent, false, 1),
  ],
  daemonCpuDuring: 'UDP',
  rssAfter: 'UDP runs',
};

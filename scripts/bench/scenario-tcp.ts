/**
 * tcp: one TCP stream (iperf3 -c IP -t S -J) between the two namespaces of
 * vsw's internal network and between the two on the Linux bridge, vsw and
 * bridge alternating. With IFF_VNET_HDR and TSO the kernel hands vsw 64 KB
 * super-frames, so this is mostly copies and syscalls per super-frame.
 */
import { vswAgainstBridge } from './measure.js';
import { gbps, vswBridgeRow, type Scenario } from './scenario.js';

export const tcpScenario: Scenario = {
  name: 'tcp',
  usesBridge: true,
  run: (ctx) => vswAgainstBridge(ctx, 'tcp'),
  rows: (records) => [
    vswBridgeRow(records, 'tcp', 'TCP 1 stream', 'Gbit/s', gbps, true, 2),
    vswBridgeRow(records, 'tcp', 'TCP retransmits', 'per run', (r) => r.tcp?.retransmits, false, 0),
  ],
  daemonCpuDuring: 'TCP',
  rssAfter: 'TCP runs',
};

/**
 * The options of `npm run bench`: --help's text and their parsing, apart from
 * scripts/bench.ts so that they can be checked without running a bench.
 */
import path from 'node:path';

import { BenchError, choicesOption, intOption } from '../bench-lib.js';
import { TEST_NAMES, type BenchOptions } from './context.js';
import { parseBenchArgs, resultPath } from './runner.js';

export const BENCH_HELP = `usage: npm run bench -- [options]

Measures vsw against a Linux bridge (veth) on this machine with iperf3:
one TCP stream and 64-byte UDP at full rate, between two namespaces on each;
one TCP stream with 10 and 10,000 ACL rules per vsw port (policy); one TCP
stream from an endpoint with an egress cap of 100 Mbit/s and 1 Gbit/s (qos);
through a nat network to an outside namespace against vsw without NAT: one
TCP stream each way, new TCP connections/s and new UDP flows/s (nat);
across two lab hosts (namespaces on an underlay bridge, one vsw daemon
each) through a vsw VXLAN overlay against the kernel's VXLAN: TCP 1 and 4
streams, UDP 64-byte (overlay); a container to a LAN host through a physical
uplink against macvlan (transparent) and ipvlan or a routing host
(l2bridge); a QEMU guest to a container through vsw's vhost-user port
against QEMU's own -netdev tap on a Linux bridge: TCP 1 stream both ways,
UDP 64-byte (vm; under TCG both sides are bound by the emulation, the ratio
compares the switch paths under that bound; VSW_VM_ACCEL=kvm|tcg decides
the accelerator).
Needs root, iperf3, iproute2 and ping (nat also nft, overlay ethtool, vm
qemu-system-x86, cpio, busybox-static and a Debian kernel in /boot), and a
built tree (npm run build).

options:
  --runs N        runs of each test on each side (default 3); medians are reported
  --time S        seconds per iperf3 run (default 10)
  --soak S        also one TCP run of S seconds on vsw, sampling the daemon's RSS
                  every 5 s (default 0: off)
  --only LIST     run only these tests, comma-separated: tcp, udp, policy, qos,
                  nat, overlay, transparent, l2bridge, vm (default: all)
  --conns N       nat: new TCP connections, and new UDP flows, per connection-rate
                  run (default 20000; each holds a NAT port for a while)
  --concurrency C nat: exchanges the generator keeps in flight (default 128)
  --out FILE      where to write the JSON results
                  (default bench-results/bench-<ISO timestamp>.json)
  --profile DIR   run the daemon under node --cpu-prof, profiles (one per
                  thread) written to DIR when it exits
  --help          show this text
`;

export function parseBenchOptions(argv: string[]): BenchOptions | null {
  const values = parseBenchArgs(argv, {
    runs: { type: 'string' },
    time: { type: 'string' },
    soak: { type: 'string' },
    only: { type: 'string' },
    conns: { type: 'string' },
    concurrency: { type: 'string' },
    out: { type: 'string' },
    profile: { type: 'string' },
  });
  if (!values) return null;
  const soakSeconds = intOption('soak', values.soak, 0, 0, 3600);
  if (soakSeconds > 0 && soakSeconds < 10) throw new BenchError('--soak must be at least 10 seconds (RSS is sampled every 5 s), or 0 for off.');
  return {
    // --runs 0 makes sense only to run the soak alone.
    runs: intOption('runs', values.runs, 3, soakSeconds > 0 ? 0 : 1, 100),
    time: intOption('time', values.time, 10, 1, 3600),
    soak: soakSeconds,
    tests: choicesOption('only', values.only, TEST_NAMES),
    // A NAT pool has 64,512 ports per protocol (1024-65535); a run must fit in it with room to spare.
    conns: intOption('conns', values.conns, 20_000, 100, 50_000),
    concurrency: intOption('concurrency', values.concurrency, 128, 1, 4096),
    out: resultPath(values.out, 'bench'),
    profile: values.profile ? path.resolve(values.profile) : null,
  };
}

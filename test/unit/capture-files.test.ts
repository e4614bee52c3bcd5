/**
 * The capture file writers, read back by the real tshark and tcpdump: frame
 * counts, lengths (captured and original), times, addresses, and in pcapng the
 * interface names, comments and directions. And the framer that cuts a
 * capture stream at whole frames.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { createCaptureWriter, formatForFileName, type CapturedFrame, type CaptureFormat } from '../../src/capture/index.js';
import { CaptureFramer } from '../../src/capture/framing.js';
import { buildArpRequest, buildIcmp4Echo, buildUdp4 } from '../../src/packet/builders.js';

const run = promisify(execFile);
const dir = mkdtempSync(join(tmpdir(), 'vswt-capture-'));
test.after.always(() => rmSync(dir, { recursive: true, force: true }));

const T0 = 1_700_000_000_123.456; // ms since the epoch: 2023-11-14T22:13:20.123456Z
const echo = buildIcmp4Echo({ srcIp: '10.1.0.2', dstIp: '10.1.0.3', srcMac: '02:00:00:00:00:02', dstMac: '02:00:00:00:00:03', seq: 7 });
const arp = buildArpRequest({ srcMac: '02:00:00:00:00:02', srcIp: '10.1.0.2', targetIp: '10.1.0.3' });
const big = buildUdp4({ srcIp: '10.1.0.3', dstIp: '10.1.0.2', srcPort: 5000, dstPort: 6000, payload: new Uint8Array(3000).fill(0x5a) });

const frames: CapturedFrame[] = [
  { timeMs: T0, interfaceKey: 5, data: echo, originalLength: echo.length, comment: 'ingress', direction: 'inbound' },
  { timeMs: T0 + 1.5, interfaceKey: 9, data: arp, originalLength: arp.length, comment: 'egress', direction: 'outbound' },
  { timeMs: T0 + 2000, interfaceKey: 5, data: big, originalLength: big.length, comment: 'drop: policyBlock' },
];

const names = new Map([
  [5, { name: 'web1', description: 'endpoint 1 on network blue' }],
  [9, { name: 'web2' }],
]);

function writeFile(format: CaptureFormat, snaplen: number, name: string): string {
  const writer = createCaptureWriter(format, { snaplen, describeInterface: (k) => names.get(k)!, application: 'vsw test' });
  const path = join(dir, name);
  writeFileSync(path, Buffer.concat([writer.start(), ...frames.map((f) => writer.frame(f))]));
  return path;
}

async function tsharkFields(path: string, fields: string[]): Promise<string[][]> {
  const { stdout } = await run('tshark', ['-r', path, '-T', 'fields', '-E', 'separator=|', ...fields.flatMap((f) => ['-e', f])]);
  return stdout.split('\n').filter(Boolean).map((l) => l.split('|'));
}

test('pcap: tshark reads every frame with its lengths, time and addresses; the snaplen cuts the long one', async (t) => {
  const path = writeFile('pcap', 1500, 'three.pcap');
  const rows = await tsharkFields(path, ['frame.len', 'frame.cap_len', 'frame.time_epoch', 'eth.src', 'ip.src', 'ip.dst', 'arp.dst.proto_ipv4']);
  t.is(rows.length, 3);
  t.deepEqual(rows[0].slice(0, 2), [String(echo.length), String(echo.length)]);
  t.is(rows[0][2], '1700000000.123456000');
  t.deepEqual(rows[0].slice(3, 6), ['02:00:00:00:00:02', '10.1.0.2', '10.1.0.3']);
  t.is(rows[1][6], '10.1.0.3', 'the ARP request asks for 10.1.0.3');
  t.is(rows[1][2], '1700000000.124956000');
  t.deepEqual(rows[2].slice(0, 2), [String(big.length), '1500'], 'original length kept, captured length at the snaplen');
  t.is(rows[2][4], '10.1.0.3');
  const { stdout: info } = await run('capinfos', ['-t', '-E', '-l', path]);
  t.regex(info, /File type:\s+Wireshark\/tcpdump\/\.\.\. - pcap/);
  t.regex(info, /File encapsulation:\s+Ethernet/);
  t.regex(info, /Packet size limit:\s+file hdr: 1500 bytes/);
});

test('pcapng: one interface per port with its name, each frame with its point (and reason) as a comment and its direction', async (t) => {
  const path = writeFile('pcapng', 65535, 'three.pcapng');
  const rows = await tsharkFields(path, ['frame.interface_name', 'frame.comment', 'frame.packet_flags_direction', 'frame.len', 'frame.cap_len', 'frame.time_epoch', 'ip.dst']);
  t.deepEqual(
    rows.map((r) => r.slice(0, 5)),
    [
      ['web1', 'ingress', '0x00000001', String(echo.length), String(echo.length)],
      ['web2', 'egress', '0x00000002', String(arp.length), String(arp.length)],
      ['web1', 'drop: policyBlock', '', String(big.length), String(big.length)],
    ],
  );
  t.is(rows[0][5], '1700000000.123456000');
  t.is(rows[2][6], '10.1.0.2');
  const { stdout: info } = await run('capinfos', ['-t', '-I', path]);
  t.regex(info, /pcapng/);
  t.regex(info, /Number of interfaces in file: 2/);
  t.regex(info, /Description = endpoint 1 on network blue/);
});

test('tcpdump reads both formats', async (t) => {
  for (const [format, name] of [['pcap', 'td.pcap'], ['pcapng', 'td.pcapng']] as const) {
    const { stdout } = await run('tcpdump', ['-r', writeFile(format, 65535, name), '-n', '-e']);
    const lines = stdout.split('\n').filter(Boolean);
    t.is(lines.length, 3, `${format}: ${stdout}`);
    t.regex(lines[0], /10\.1\.0\.2 > 10\.1\.0\.3: ICMP echo request.*seq 7/);
    t.regex(lines[1], /Request who-has 10\.1\.0\.3 tell 10\.1\.0\.2/);
    t.regex(lines[2], /10\.1\.0\.3\.5000 > 10\.1\.0\.2\.6000: UDP, length 3000/);
  }
});

test('a file name ending in .pcapng asks for pcapng, anything else for pcap', (t) => {
  t.is(formatForFileName('/tmp/x.pcapng'), 'pcapng');
  t.is(formatForFileName('/tmp/X.PCAPNG'), 'pcapng');
  t.is(formatForFileName('/tmp/x.pcap'), 'pcap');
  t.is(formatForFileName('/tmp/x'), 'pcap');
});

for (const format of ['pcap', 'pcapng'] as const) {
  test(`framer (${format}): any cut of the stream gives back the same bytes, whole frames only, counted`, (t) => {
    const writer = createCaptureWriter(format, { snaplen: 65535, describeInterface: (k) => names.get(k)! });
    const units = [writer.start(), ...frames.map((f) => writer.frame(f))];
    const stream = Buffer.concat(units);
    for (const step of [1, 3, 7, 64, 1000, stream.length]) {
      const framer = new CaptureFramer();
      const out: Buffer[] = [];
      const seenFrames: number[] = [];
      for (let at = 0; at < stream.length; at += step) {
        out.push(Buffer.from(framer.push(stream.subarray(at, at + step))));
        seenFrames.push(framer.frames);
      }
      t.deepEqual(Buffer.concat(out), stream, `step ${step}`);
      t.is(framer.frames, 3);
      t.is(framer.held, 0);
      t.is(framer.format, format);
    }
    // Stopped in the middle of the last frame: what was handed out ends at the frame before it.
    const framer = new CaptureFramer();
    const whole = framer.push(stream.subarray(0, stream.length - 10));
    t.is(whole.length, stream.length - units[units.length - 1].length);
    t.is(framer.frames, 2);
  });
}

test('framer: a stream that is not a capture file is refused', (t) => {
  t.throws(() => new CaptureFramer().push(Buffer.from('{"error":"x"}')), { message: /neither pcap nor pcapng/ });
});

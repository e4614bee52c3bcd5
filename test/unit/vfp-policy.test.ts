import test, { type ExecutionContext } from 'ava';
import { ArpField } from '../../src/packet/arp.js';
import { buildArpReply, buildArpRequest, buildIcmp4Echo, buildTcp4, buildTcp6, buildUdp4, buildUdp6 } from '../../src/packet/builders.js';
import { DropReason } from '../../src/packet/drop-reasons.js';
import { compilePolicy, DIR_IN, DIR_OUT, type CompiledPolicy, type MeterAllocator } from '../../src/vfp/compile.js';
import { extractKey, KEY_WORDS, KeyWord, Meta, META_WORDS } from '../../src/vfp/key.js';
import { Decision, evaluateLayers, Rewrite, spoofCheck, Verdict, type TraceStep } from '../../src/vfp/pipeline.js';
import {
  parseMatch,
  parsePortRange,
  parsePrefix,
  PolicyError,
  validateLayer,
  validateQos,
  validateRule,
  type LayerSpec,
  type PortPolicy,
  type RuleMatch,
  type RuleSpec,
} from '../../src/vfp/policy.js';

// ---------------------------------------------------------------------------
// Refusals: one sentence, ending with a period, saying what to write.
// ---------------------------------------------------------------------------

function refused(t: ExecutionContext, fn: () => unknown, what: RegExp): string {
  const err = t.throws(fn, { instanceOf: PolicyError });
  const msg = err?.message ?? '';
  t.regex(msg, what);
  t.false(msg.includes('\n'), `one line: ${msg}`);
  t.true(msg.endsWith('.'), `ends with a period: ${msg}`);
  t.false(msg.endsWith('..'), `one period: ${msg}`);
  t.false(/\.\s+\S/.test(msg), `one sentence: ${msg}`);
  return msg;
}

test('parsePrefix: accepted forms', (t) => {
  t.deepEqual(parsePrefix('10.0.0.0/24', 'srcPrefix'), { version: 4, words: [0x0a000000], length: 24 });
  t.deepEqual(parsePrefix('10.0.0.5', 'srcPrefix'), { version: 4, words: [0x0a000005], length: 32 }, 'an address is a /32');
  t.deepEqual(parsePrefix('0.0.0.0/0', 'dstPrefix'), { version: 4, words: [0], length: 0 });
  t.deepEqual(parsePrefix('192.168.255.128/25', 'dstPrefix'), { version: 4, words: [0xc0a8ff80], length: 25 });
  t.deepEqual(parsePrefix('fd00::/64', 'srcPrefix'), { version: 6, words: [0xfd000000, 0, 0, 0], length: 64 });
  t.deepEqual(parsePrefix('2001:db8::1', 'srcPrefix'), { version: 6, words: [0x20010db8, 0, 0, 1], length: 128 });
  t.deepEqual(parsePrefix('::ffff:10.1.2.0/120', 'srcPrefix'), { version: 4, words: [0x0a010200], length: 24 }, 'IPv4-mapped becomes IPv4');
});

test('parsePrefix: refusals say what to write', (t) => {
  refused(t, () => parsePrefix('10.0.0.300/24', 'srcPrefix'), /^srcPrefix "10\.0\.0\.300\/24" is not an IP prefix: write .*10\.0\.0\.0\/24/);
  t.is(refused(t, () => parsePrefix('10.0.0.1/24', 'dstPrefix'), /host bits/), 'dstPrefix "10.0.0.1/24" has host bits set: write 10.0.0.0/24.');
  t.is(refused(t, () => parsePrefix('fd00::1/64', 'srcPrefix'), /host bits/), 'srcPrefix "fd00::1/64" has host bits set: write fd00::/64.');
  refused(t, () => parsePrefix('10.0.0.0/33', 'srcPrefix'), /has a prefix length above 32: write \/0 to \/32/);
  refused(t, () => parsePrefix('fd00::/129', 'srcPrefix'), /above 128/);
  refused(t, () => parsePrefix('10.5', 'srcPrefix'), /is not an IP prefix: write/);
  refused(t, () => parsePrefix('0x0a000005', 'srcPrefix'), /is not an IP prefix: write/);
  refused(t, () => parsePrefix('', 'srcPrefix'), /^srcPrefix must be an IP prefix such as/);
  refused(t, () => parsePrefix(42, 'srcPrefix'), /must be an IP prefix/);
  refused(t, () => parsePrefix('web-servers', 'srcPrefix'), /is not an IP prefix/);
});

test('parsePortRange: accepted forms', (t) => {
  t.deepEqual(parsePortRange(80, 'dstPorts'), [80, 80]);
  t.deepEqual(parsePortRange('80', 'dstPorts'), [80, 80]);
  t.deepEqual(parsePortRange('1024-65535', 'dstPorts'), [1024, 65535]);
  t.deepEqual(parsePortRange(' 1 - 2 ', 'dstPorts'), [1, 2]);
  t.deepEqual(parsePortRange('0-65535', 'srcPorts'), [0, 65535]);
  t.deepEqual(parsePortRange('443-443', 'srcPorts'), [443, 443]);
});

test('parsePortRange: refusals say what to write', (t) => {
  t.is(refused(t, () => parsePortRange('80-20', 'dstPorts'), /backwards/), 'dstPorts "80-20" runs backwards: write the lower port first, as 20-80.');
  refused(t, () => parsePortRange('70000', 'dstPorts'), /^dstPorts "70000" is out of range: ports go from 0 to 65535\.$/);
  refused(t, () => parsePortRange(65536, 'srcPorts'), /out of range/);
  refused(t, () => parsePortRange('1-99999', 'srcPorts'), /out of range/);
  for (const bad of ['http', '', '80,443', '-1', '1.5', '80-', 'x-9'] as const) {
    refused(t, () => parsePortRange(bad, 'dstPorts'), /is not a port or range: write a port such as 80 or a range such as 1024-65535\.$/);
  }
  refused(t, () => parsePortRange(-1, 'dstPorts'), /is not a port or range/);
  refused(t, () => parsePortRange(1.5, 'dstPorts'), /is not a port or range/);
  refused(t, () => parsePortRange(null, 'dstPorts'), /is not a port or range/);
});

test('parseMatch: accepted forms', (t) => {
  t.deepEqual(parseMatch(undefined), {});
  const m = parseMatch({
    srcMac: '02:76:0A:00:00:02',
    dstMac: '02-76-0a-00-00-03',
    protocol: 'TCP',
    srcPrefix: '10.0.0.0/8',
    dstPorts: '80-89',
    srcPorts: 1234,
    vlan: 0,
  });
  t.deepEqual(m.srcMac, { hi: 0x0276, lo: 0x0a000002 });
  t.deepEqual(m.dstMac, { hi: 0x0276, lo: 0x0a000003 });
  t.is(m.protocol, 6);
  t.deepEqual(m.dstPorts, [80, 89]);
  t.deepEqual(m.srcPorts, [1234, 1234]);
  t.is(m.vlan, 0);
  t.is(parseMatch({ protocol: 17, dstPorts: 53 }).protocol, 17);
  t.is(parseMatch({ protocol: '47' }).protocol, 47);
  t.is(parseMatch({ etherType: 'arp' }).etherType, 0x0806);
  t.is(parseMatch({ etherType: 'IPv6' }).etherType, 0x86dd);
  t.is(parseMatch({ etherType: '0x88cc' }).etherType, 0x88cc);
  t.is(parseMatch({ etherType: 0x0800, srcPrefix: '10.0.0.0/8' }).etherType, 0x0800, 'an agreeing etherType is fine');
  t.is(parseMatch({ protocol: 'icmp', icmpType: 8 }).icmpType, 8);
  t.is(parseMatch({ protocol: 'icmpv6', icmpType: 135, dstPrefix: 'fd00::/8' }).icmpType, 135);
  t.deepEqual(parseMatch({ srcPrefix: 'fd00::/8', dstPrefix: 'fd00:1::/32' }).dstPrefix?.version, 6);
});

test('parseMatch: refusals say what to write', (t) => {
  refused(t, () => parseMatch({ dstPorts: '80' }), /^a port condition needs protocol tcp or udp: add "protocol": "tcp"/);
  refused(t, () => parseMatch({ protocol: 'icmp', srcPorts: '80' }), /port condition needs protocol tcp or udp/);
  refused(t, () => parseMatch({ icmpType: 8 }), /^an icmpType condition needs protocol icmp or icmpv6: add "protocol": "icmp"/);
  refused(t, () => parseMatch({ protocol: 'tcp', icmpType: 8 }), /icmpType condition needs protocol icmp/);
  refused(t, () => parseMatch({ srcPrefix: '10.0.0.0/8', dstPrefix: 'fd00::/8' }), /mix IPv4 and IPv6: .*write two rules/);
  refused(t, () => parseMatch({ etherType: 'ipv6', srcPrefix: '10.0.0.0/8' }), /contradicts the IPv4 prefix/);
  refused(t, () => parseMatch({ protocol: 'icmp', dstPrefix: 'fd00::/8' }), /use icmpv6/);
  refused(t, () => parseMatch({ protocol: 'icmpv6', dstPrefix: '10.0.0.0/8' }), /use icmp/);
  refused(t, () => parseMatch({ protocol: 'sctpx' }), /^protocol "sctpx" is not known: write tcp, udp, icmp, icmpv6 or a protocol number/);
  refused(t, () => parseMatch({ protocol: 256 }), /is not known/);
  refused(t, () => parseMatch({ protocol: '300' }), /is not known/);
  refused(t, () => parseMatch({ etherType: 0x100 }), /etherType .* is not known: write ipv4, ipv6, arp or a number/);
  refused(t, () => parseMatch({ vlan: 4096 }), /^vlan 4096 is out of range: write a whole number from 0 to 4095\.$/);
  refused(t, () => parseMatch({ protocol: 'icmp', icmpType: 256 }), /icmpType 256 is out of range/);
  refused(t, () => parseMatch({ srcMac: '02:76:0a:00:00' }), /^srcMac "02:76:0a:00:00" is not a MAC address: write six hex pairs/);
  refused(t, () => parseMatch({ dport: 80 } as unknown as RuleMatch), /^match condition "dport" is not known: use srcMac, dstMac/);
  refused(t, () => parseMatch({ srcPrefix: '10.0.0.1/24' }), /write 10\.0\.0\.0\/24/);
});

test('validateRule: defaults are filled in', (t) => {
  const allow = validateRule({ priority: 10, action: 'allow' });
  t.is(allow.direction, 'both');
  t.true(allow.terminating);
  t.true(validateRule({ priority: 0, action: 'block' }).terminating);
  for (const action of ['count'] as const) t.false(validateRule({ priority: 65535, action }).terminating);
  t.false(validateRule({ priority: 1, action: 'rewrite', rewrite: { dstPort: 8080 } }).terminating);
  t.false(validateRule({ priority: 1, action: 'meter', meter: { rate: '10mbit' } }).terminating);
  t.false(validateRule({ priority: 1, action: 'allow', terminating: false }).terminating, 'explicit false is kept');
  t.true(validateRule({ priority: 1, action: 'count', terminating: true }).terminating);
  t.is(validateRule({ priority: 1, action: 'allow', direction: 'in' }).direction, 'in');
});

test('validateRule: refusals say what to write', (t) => {
  t.is(
    refused(t, () => validateRule({ priority: 70000, action: 'allow' }), /priority/),
    'priority 70000 is out of range: write a whole number from 0 to 65535.',
  );
  refused(t, () => validateRule({ priority: -1, action: 'allow' }), /priority -1 is out of range/);
  refused(t, () => validateRule({ priority: 1.5, action: 'allow' }), /priority 1\.5 is out of range/);
  refused(t, () => validateRule({ priority: '5' } as unknown as RuleSpec & { action: 'allow' }), /action/);
  refused(t, () => validateRule({ priority: '5', action: 'allow' } as unknown as RuleSpec), /priority "5" is out of range/);
  t.is(
    refused(t, () => validateRule({ priority: 1, action: 'explode' } as unknown as RuleSpec), /action/),
    'action "explode" is not known: write allow, block, count, rewrite or meter.',
  );
  refused(t, () => validateRule({ priority: 1, action: 'allow', direction: 'sideways' } as unknown as RuleSpec), /direction "sideways" is not known: write in, out or both\.$/);
  refused(t, () => validateRule({ priority: 1, action: 'allow', terminating: 'yes' } as unknown as RuleSpec), /^terminating must be true or false\.$/);
  refused(t, () => validateRule({ priority: 1, action: 'allow', rewrite: { dstPort: 1 } }), /"rewrite" belongs only to rules whose action is rewrite/);
  refused(t, () => validateRule({ priority: 1, action: 'rewrite' }), /needs a "rewrite" object naming at least one of/);
  refused(t, () => validateRule({ priority: 1, action: 'rewrite', rewrite: {} }), /needs a "rewrite" object/);
  refused(t, () => validateRule({ priority: 1, action: 'rewrite', rewrite: { dstIp: 'fd00::1' } }), /is not an IPv4 address: write four numbers/);
  refused(t, () => validateRule({ priority: 1, action: 'rewrite', rewrite: { dstPort: 0 } }), /rewrite dstPort 0 is out of range: write a whole number from 1 to 65535/);
  refused(t, () => validateRule({ priority: 1, action: 'rewrite', rewrite: { ttl: 1 } as never }), /rewrite field "ttl" is not known/);
  refused(t, () => validateRule({ priority: 1, action: 'meter' }), /needs "meter": \{"rate": "10mbit"\}/);
  refused(t, () => validateRule({ priority: 1, action: 'meter', meter: { rate: 'fast' } }), /"fast" is not a rate: write a number with a unit/);
  refused(t, () => validateRule({ priority: 1, action: 'meter', meter: { rate: '1mbit', burst: '1kb' } }), /smaller than one frame: make it at least 1500 bytes/);
  refused(t, () => validateRule({ priority: 1, action: 'count', meter: { rate: '1mbit' } }), /"meter" belongs only to rules whose action is meter/);
  refused(t, () => validateRule({ priority: 1, action: 'block', match: { dstPorts: 22 } }), /needs protocol tcp or udp/);
  refused(t, () => validateRule(null as unknown as RuleSpec), /^a rule must be a JSON object\.$/);
});

test('validateLayer: defaults, and refusals', (t) => {
  const l = validateLayer({ name: 'acl', groups: [{ name: 'g', rules: [{ priority: 1, action: 'allow' }] }] } as unknown as LayerSpec);
  t.is(l.priority, 100);
  t.is(l.defaultIn, 'allow');
  t.is(l.defaultOut, 'allow');
  t.is(l.groups[0].priority, 100);
  t.is(l.groups[0].direction, 'both');
  t.true(l.groups[0].rules[0].terminating);

  const base = { name: 'acl', priority: 1, defaultIn: 'allow', defaultOut: 'allow' } as const;
  refused(t, () => validateLayer({ ...base, name: 'has space', groups: [] }), /layer name "has space" is not valid: use 1-32 letters/);
  refused(t, () => validateLayer({ ...base, defaultIn: 'deny' as 'allow', groups: [] }), /^defaultIn "deny" is not a default action: write allow or block\.$/);
  refused(t, () => validateLayer({ ...base, priority: 65536, groups: [] }), /layer priority 65536 is out of range/);
  refused(
    t,
    () => validateLayer({ ...base, groups: [{ name: 'g', priority: 1, rules: [] }, { name: 'g', priority: 2, rules: [] }] }),
    /group g appears twice in layer acl: give each group its own name/,
  );
  refused(
    t,
    () =>
      validateLayer({
        ...base,
        groups: [{ name: 'g', priority: 1, rules: [{ id: 'r', priority: 1, action: 'allow' }, { id: 'r', priority: 2, action: 'block' }] }],
      }),
    /rule id r appears twice in group g/,
  );
  refused(t, () => validateLayer({ ...base, groups: [{ name: 'g', priority: 1 } as never] }), /group g needs a "rules" array/);
  refused(t, () => validateLayer({ ...base, groups: [{ name: 'g', priority: 1, match: { dstPorts: 1 }, rules: [] }] }), /needs protocol tcp or udp/);
});

test('validateQos: rates, default burst, refusals', (t) => {
  t.deepEqual(validateQos('10mbit'), { maxEgressBps: 10_000_000, burstBytes: 65536 }, 'at least one 64 KiB super-frame');
  t.deepEqual(validateQos('1gbit'), { maxEgressBps: 1_000_000_000, burstBytes: 1_250_000 }, '10 ms at 1 Gbit/s');
  t.deepEqual(validateQos('10mbps', '128kb'), { maxEgressBps: 80_000_000, burstBytes: 131072 });
  t.deepEqual(validateQos('80kbit', '1500'), { maxEgressBps: 80_000, burstBytes: 1500 });
  refused(t, () => validateQos('10mbit', '1kb'), /^burst 1kb is smaller than one frame: make it at least 1500 bytes\.$/);
  refused(t, () => validateQos('fast'), /is not a rate: write/);
  refused(t, () => validateQos('10mb'), /is a size, not a rate: write 10mbit/);
  refused(t, () => validateQos('10mbit', 'lots'), /is not a size: write/);
});

// ---------------------------------------------------------------------------
// compilePolicy + evaluateLayers on keys extracted from real frames.
// ---------------------------------------------------------------------------

const A = '02:76:0a:00:00:02';
const B = '02:76:0a:00:00:03';
const C = '02:76:0a:00:00:09';

function meterIds(): MeterAllocator & { allocated: number[] } {
  let next = 7;
  const allocated: number[] = [];
  return {
    allocated,
    allocate: () => {
      allocated.push(next);
      return next++;
    },
    release: () => {},
  };
}

function compile(layers: LayerSpec[], spoof?: { mac: string; ips: string[]; enabled?: boolean }, meters: MeterAllocator = meterIds()): CompiledPolicy {
  const policy: PortPolicy = {
    layers: layers.map(validateLayer),
    spoofGuard: { enabled: spoof?.enabled ?? spoof !== undefined, mac: spoof?.mac ?? '00:00:00:00:00:00', ips: spoof?.ips ?? [] },
    qos: null,
  };
  return compilePolicy(policy, meters);
}

function layer(name: string, priority: number, rules: RuleSpec[], defaults: { in?: 'allow' | 'block'; out?: 'allow' | 'block' } = {}): LayerSpec {
  return { name, priority, defaultIn: defaults.in ?? 'allow', defaultOut: defaults.out ?? 'allow', groups: [{ name: 'g', priority: 1, rules }] };
}

interface Outcome {
  verdict: number;
  reason: number;
  d: Decision;
  key: Uint32Array;
  trace: TraceStep[];
}

function evaluate(policy: CompiledPolicy, dir: number, frame: Uint8Array): Outcome {
  const key = new Uint32Array(KEY_WORDS);
  const meta = new Int32Array(META_WORDS);
  extractKey(frame, 0, frame.length, key, meta);
  const d = new Decision();
  d.reset();
  const trace: TraceStep[] = [];
  evaluateLayers(policy, dir, key, meta[Meta.IP_VERSION] !== 0, d, trace);
  return { verdict: d.verdict, reason: d.dropReason, d, key, trace };
}

const tcpTo = (dstPort: number, extra: Parameters<typeof buildTcp4>[0] = {}) =>
  buildTcp4({ srcMac: A, dstMac: B, srcIp: '10.0.0.2', dstIp: '10.0.0.3', srcPort: 40000, dstPort, ...extra });

test('outbound walks layers top-down, inbound bottom-up; an upper rewrite changes what a lower layer sees', (t) => {
  // Given in the wrong order on purpose: priority decides.
  const policy = compile([
    layer('lower', 20, [{ priority: 1, action: 'block', match: { protocol: 'tcp', dstPorts: 8080 } }]),
    layer('upper', 10, [{ priority: 1, action: 'rewrite', match: { protocol: 'tcp', dstPorts: 80 }, rewrite: { dstPort: 8080 } }]),
  ]);
  const out = evaluate(policy, DIR_OUT, tcpTo(80));
  t.is(out.verdict, Verdict.BLOCK, 'upper rewrote 80 to 8080, lower blocks 8080');
  t.is(out.reason, DropReason.policyBlock);
  t.deepEqual([...new Set(out.trace.map((s) => s.layer))], ['upper', 'lower']);

  const inbound = evaluate(policy, DIR_IN, tcpTo(80));
  t.is(inbound.verdict, Verdict.ALLOW, 'lower runs first and sees 80');
  t.deepEqual([...new Set(inbound.trace.map((s) => s.layer))], ['lower', 'upper']);
  t.is(inbound.d.rwFlags, Rewrite.DST_PORT);
  t.is(inbound.d.dstPort, 8080);
  t.is(inbound.key[KeyWord.PORTS] & 0xffff, 8080, 'the key is rewritten in place');
  t.is(inbound.key[KeyWord.PORTS] >>> 16, 40000);

  t.is(evaluate(policy, DIR_OUT, tcpTo(22)).verdict, Verdict.ALLOW, 'no rewrite, nothing blocks 22');
  t.is(evaluate(policy, DIR_IN, tcpTo(8080)).verdict, Verdict.BLOCK, 'inbound 8080 is blocked directly');
});

test('every layer must allow: an allow in one layer does not override a block in another', (t) => {
  const policy = compile([
    layer('first', 1, [{ priority: 1, action: 'allow', match: { protocol: 'tcp' } }]),
    layer('second', 2, [], { out: 'block', in: 'allow' }),
  ]);
  t.is(evaluate(policy, DIR_OUT, tcpTo(80)).verdict, Verdict.BLOCK);
  t.is(evaluate(policy, DIR_IN, tcpTo(80)).verdict, Verdict.ALLOW);
});

test('groups run in priority order; one rule per group wins (lowest priority number); a terminating rule ends the layer', (t) => {
  const spec = (terminating: boolean): LayerSpec => ({
    name: 'acl',
    priority: 1,
    defaultIn: 'allow',
    defaultOut: 'allow',
    groups: [
      { name: 'last', priority: 30, rules: [{ id: 'deny-all', priority: 1, action: 'block' }] },
      {
        name: 'first',
        priority: 10,
        rules: [
          { id: 'count-tcp', priority: 5, action: 'count', match: { protocol: 'tcp' } },
          { id: 'count-http', priority: 2, action: 'count', match: { protocol: 'tcp', dstPorts: 80 } },
          { id: 'count-http-late', priority: 9, action: 'count', match: { protocol: 'tcp', dstPorts: 80 } },
        ],
      },
      { name: 'middle', priority: 20, rules: [{ id: 'allow-tcp', priority: 1, action: 'allow', terminating, match: { protocol: 'tcp' } }] },
    ],
  });
  const hits = (p: CompiledPolicy) => Object.fromEntries(p.layers[0].groups.flatMap((g) => g.rules.map((r) => [r.id, r.hits])));

  const term = compile([spec(true)]);
  const o = evaluate(term, DIR_OUT, tcpTo(80));
  t.is(o.verdict, Verdict.ALLOW);
  t.deepEqual(hits(term), { 'count-tcp': 0, 'count-http': 1, 'count-http-late': 0, 'allow-tcp': 1, 'deny-all': 0 });
  t.deepEqual(
    o.trace.filter((s) => s.rule).map((s) => `${s.group}/${s.rule}`),
    ['first/count-http', 'middle/allow-tcp'],
  );
  const o22 = evaluate(term, DIR_OUT, tcpTo(22));
  t.is(o22.verdict, Verdict.ALLOW);
  t.is(hits(term)['count-tcp'], 1, 'for port 22 the broader count rule is the only match of its group');
  t.is(evaluate(term, DIR_OUT, buildUdp4({ srcMac: A, dstMac: B })).verdict, Verdict.BLOCK, 'UDP falls through to deny-all');

  const nonTerm = compile([spec(false)]);
  t.is(evaluate(nonTerm, DIR_OUT, tcpTo(80)).verdict, Verdict.BLOCK, 'a non-terminating allow lets the later group block');
  t.is(hits(nonTerm)['deny-all'], 1);
});

test('within a group, equal priorities go to the rule listed first', (t) => {
  const p = compile([
    layer('acl', 1, [
      { id: 'a', priority: 5, action: 'block', match: { protocol: 'tcp' } },
      { id: 'b', priority: 5, action: 'allow', match: { protocol: 'tcp' } },
    ]),
  ]);
  t.is(evaluate(p, DIR_OUT, tcpTo(80)).verdict, Verdict.BLOCK);
  const q = compile([
    layer('acl', 1, [
      { id: 'b', priority: 5, action: 'allow', match: { protocol: 'tcp' } },
      { id: 'a', priority: 5, action: 'block', match: { protocol: 'tcp' } },
    ]),
  ]);
  t.is(evaluate(q, DIR_OUT, tcpTo(80)).verdict, Verdict.ALLOW);
});

test('a group condition gates its rules', (t) => {
  const p = compile([
    {
      name: 'acl',
      priority: 1,
      defaultIn: 'allow',
      defaultOut: 'allow',
      groups: [{ name: 'to-db', priority: 1, match: { dstPrefix: '10.0.1.0/24' }, rules: [{ priority: 1, action: 'block', match: { protocol: 'tcp' } }] }],
    },
  ]);
  t.is(evaluate(p, DIR_OUT, tcpTo(80)).verdict, Verdict.ALLOW, '10.0.0.3 is outside the condition');
  const o = evaluate(p, DIR_OUT, tcpTo(80, { dstIp: '10.0.1.77' }));
  t.is(o.verdict, Verdict.BLOCK);
  const skipped = evaluate(p, DIR_OUT, tcpTo(80));
  t.true(skipped.trace.some((s) => s.group === 'to-db' && s.action === 'skip'));
});

test('count, rewrite and meter do not decide; the layer default does', (t) => {
  const meters = meterIds();
  const rules: RuleSpec[] = [];
  const mk = (defaultOut: 'allow' | 'block') =>
    compile(
      [
        {
          name: 'acl',
          priority: 1,
          defaultIn: 'allow',
          defaultOut,
          groups: [
            { name: 'a', priority: 1, rules: [{ priority: 1, action: 'count', match: { protocol: 'tcp' } }] },
            { name: 'b', priority: 2, rules: [{ priority: 1, action: 'rewrite', match: { protocol: 'tcp' }, rewrite: { srcIp: '10.9.9.9' } }] },
            { name: 'c', priority: 3, rules: [{ priority: 1, action: 'meter', match: { protocol: 'tcp' }, meter: { rate: '1mbit' } }, ...rules] },
          ],
        },
      ],
      undefined,
      meters,
    );
  const blocked = evaluate(mk('block'), DIR_OUT, tcpTo(80));
  t.is(blocked.verdict, Verdict.BLOCK);
  const allowed = evaluate(mk('allow'), DIR_OUT, tcpTo(80));
  t.is(allowed.verdict, Verdict.ALLOW);
  t.is(allowed.d.rwFlags, Rewrite.SRC_IP);
  t.is(allowed.d.srcIp, 0x0a090909);
  t.is(allowed.d.meterBucket, meters.allocated[1], 'the meter of the second compiled policy');
  t.is(evaluate(mk('allow'), DIR_OUT, buildUdp4({ srcMac: A, dstMac: B })).d.meterBucket, -1, 'no meter for UDP');
});

test('layer defaults govern IP only: ARP passes a block-everything layer unless a rule names it', (t) => {
  const p = compile([layer('acl', 1, [], { in: 'block', out: 'block' })]);
  const arp = buildArpRequest({ srcMac: A });
  t.is(evaluate(p, DIR_OUT, arp).verdict, Verdict.ALLOW);
  t.is(evaluate(p, DIR_IN, arp).verdict, Verdict.ALLOW);
  t.is(evaluate(p, DIR_OUT, buildUdp4()).verdict, Verdict.BLOCK);
  t.is(evaluate(p, DIR_IN, buildUdp6()).verdict, Verdict.BLOCK);
  t.is(evaluate(p, DIR_OUT, buildIcmp4Echo()).verdict, Verdict.BLOCK);

  const q = compile([layer('acl', 1, [{ priority: 1, action: 'block', match: { etherType: 'arp' } }])]);
  t.is(evaluate(q, DIR_OUT, arp).verdict, Verdict.BLOCK);
  t.is(evaluate(q, DIR_OUT, buildUdp4()).verdict, Verdict.ALLOW);

  const r = compile([layer('acl', 1, [{ priority: 1, action: 'block', match: { protocol: 'udp' } }])]);
  t.is(evaluate(r, DIR_OUT, arp).verdict, Verdict.ALLOW, 'a protocol rule never matches ARP');
});

test('rule and group directions', (t) => {
  const p = compile([
    {
      name: 'acl',
      priority: 1,
      defaultIn: 'allow',
      defaultOut: 'allow',
      groups: [
        { name: 'in-only-rule', priority: 1, rules: [{ priority: 1, action: 'block', direction: 'in', match: { protocol: 'tcp', dstPorts: 22 } }] },
        { name: 'out-only-group', priority: 2, direction: 'out', rules: [{ priority: 1, action: 'block', match: { protocol: 'tcp', dstPorts: 25 } }] },
      ],
    },
  ]);
  t.is(evaluate(p, DIR_IN, tcpTo(22)).verdict, Verdict.BLOCK);
  t.is(evaluate(p, DIR_OUT, tcpTo(22)).verdict, Verdict.ALLOW);
  t.is(evaluate(p, DIR_OUT, tcpTo(25)).verdict, Verdict.BLOCK);
  t.is(evaluate(p, DIR_IN, tcpTo(25)).verdict, Verdict.ALLOW);
});

test('matches: prefixes by family, port ranges, VLAN, MACs, ICMP type', (t) => {
  const block = (match: RuleMatch) => compile([layer('acl', 1, [{ priority: 1, action: 'block', match }])]);
  const v4 = block({ srcPrefix: '10.0.0.0/30' });
  t.is(evaluate(v4, DIR_OUT, tcpTo(80)).verdict, Verdict.BLOCK, '10.0.0.2 is in 10.0.0.0/30');
  t.is(evaluate(v4, DIR_OUT, tcpTo(80, { srcIp: '10.0.0.4' })).verdict, Verdict.ALLOW);
  t.is(evaluate(v4, DIR_OUT, buildTcp6({ srcIp: '::a00:2' })).verdict, Verdict.ALLOW, 'an IPv4 prefix never matches IPv6');
  const any4 = block({ dstPrefix: '0.0.0.0/0' });
  t.is(evaluate(any4, DIR_OUT, buildTcp6()).verdict, Verdict.ALLOW, '0.0.0.0/0 is IPv4 only');
  t.is(evaluate(any4, DIR_OUT, buildArpRequest()).verdict, Verdict.ALLOW);
  t.is(evaluate(any4, DIR_OUT, tcpTo(1)).verdict, Verdict.BLOCK);
  const v6 = block({ dstPrefix: 'fd00::/120' });
  t.is(evaluate(v6, DIR_OUT, buildTcp6({ dstIp: 'fd00::ff' })).verdict, Verdict.BLOCK);
  t.is(evaluate(v6, DIR_OUT, buildTcp6({ dstIp: 'fd00::100' })).verdict, Verdict.ALLOW);

  const range = block({ protocol: 'tcp', dstPorts: '1000-1999' });
  for (const [port, v] of [[999, Verdict.ALLOW], [1000, Verdict.BLOCK], [1500, Verdict.BLOCK], [1999, Verdict.BLOCK], [2000, Verdict.ALLOW]] as const) {
    t.is(evaluate(range, DIR_OUT, tcpTo(port)).verdict, v, `port ${port}`);
  }
  t.is(evaluate(range, DIR_OUT, buildUdp4({ dstPort: 1500 })).verdict, Verdict.ALLOW, 'tcp only');

  const untagged = block({ vlan: 0 });
  t.is(evaluate(untagged, DIR_OUT, buildUdp4()).verdict, Verdict.BLOCK);
  t.is(evaluate(untagged, DIR_OUT, buildUdp4({ vlans: [7] })).verdict, Verdict.ALLOW);
  const v7 = block({ vlan: 7 });
  t.is(evaluate(v7, DIR_OUT, buildUdp4({ vlans: [7] })).verdict, Verdict.BLOCK);
  t.is(evaluate(v7, DIR_OUT, buildUdp4({ vlans: [8] })).verdict, Verdict.ALLOW);
  t.is(evaluate(v7, DIR_OUT, buildUdp4()).verdict, Verdict.ALLOW);

  const mac = block({ srcMac: C });
  t.is(evaluate(mac, DIR_OUT, buildUdp4({ srcMac: C })).verdict, Verdict.BLOCK);
  t.is(evaluate(mac, DIR_OUT, buildUdp4({ srcMac: A })).verdict, Verdict.ALLOW);

  const ping = block({ protocol: 'icmp', icmpType: 8 });
  t.is(evaluate(ping, DIR_OUT, buildIcmp4Echo()).verdict, Verdict.BLOCK);
  t.is(evaluate(ping, DIR_OUT, buildIcmp4Echo({ reply: true })).verdict, Verdict.ALLOW);
});

test('rewrites: IPv4 addresses only on IPv4, ports only on TCP/UDP, MACs on anything', (t) => {
  const p = compile([
    layer('acl', 1, [{ priority: 1, action: 'rewrite', rewrite: { srcMac: C, dstIp: '10.7.7.7', srcPort: 999 } }]),
  ]);
  const tcp = evaluate(p, DIR_OUT, tcpTo(80));
  t.is(tcp.d.rwFlags, Rewrite.SRC_MAC | Rewrite.DST_IP | Rewrite.SRC_PORT);
  t.is(tcp.key[KeyWord.DST_IP], 0x0a070707);
  t.is(tcp.key[KeyWord.SRC_MAC_LO], 0x0a000009);
  t.is(tcp.key[KeyWord.PORTS] >>> 16, 999);
  const icmp = evaluate(p, DIR_OUT, buildIcmp4Echo());
  t.is(icmp.d.rwFlags, Rewrite.SRC_MAC | Rewrite.DST_IP, 'no port on ICMP');
  const arp = evaluate(p, DIR_OUT, buildArpRequest());
  t.is(arp.d.rwFlags, Rewrite.SRC_MAC, 'no IP rewrite on ARP');
  t.is(arp.key[KeyWord.DST_IP], 0);
  const v6 = evaluate(p, DIR_OUT, buildUdp6());
  t.is(v6.d.rwFlags & (Rewrite.DST_IP | Rewrite.SRC_IP), 0, 'no IPv4 rewrite on IPv6');
});

// ---------------------------------------------------------------------------
// Spoof guard
// ---------------------------------------------------------------------------

function spoof(policy: CompiledPolicy, frame: Uint8Array, at = 0): number {
  const buf = new Uint8Array(at + frame.length);
  buf.set(frame, at);
  const key = new Uint32Array(KEY_WORDS);
  const meta = new Int32Array(META_WORDS);
  extractKey(buf, at, frame.length, key, meta);
  return spoofCheck(policy, buf, at, key, meta);
}

const guarded = () => compile([], { mac: A, ips: ['10.0.0.2', '10.0.0.20/24'] });

test('spoof guard: own MAC and IPs pass, a foreign MAC or IP is refused', (t) => {
  const p = guarded();
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '10.0.0.2' })), 0);
  t.is(spoof(p, buildTcp4({ srcMac: A, srcIp: '10.0.0.20' }), 33), 0, 'an address given with a prefix length');
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '10.0.0.2', vlans: [5] })), 0);
  t.is(spoof(p, buildUdp4({ srcMac: C, srcIp: '10.0.0.2' })), DropReason.spoofMac);
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '10.0.0.3' })), DropReason.spoofIp);
  t.is(spoof(p, buildIcmp4Echo({ srcMac: A, srcIp: '10.0.0.21' })), DropReason.spoofIp);
  t.is(spoof(p, buildUdp4({ srcMac: C, srcIp: '10.0.0.3' })), DropReason.spoofMac, 'the MAC is checked first');
});

test('spoof guard: DHCP discovery from 0.0.0.0 is allowed, nothing else from 0.0.0.0', (t) => {
  const p = guarded();
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '0.0.0.0', dstIp: '255.255.255.255', dstMac: 'ff:ff:ff:ff:ff:ff', srcPort: 68, dstPort: 67 })), 0);
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '0.0.0.0', srcPort: 68, dstPort: 68 })), DropReason.spoofIp);
  t.is(spoof(p, buildUdp4({ srcMac: A, srcIp: '0.0.0.0', srcPort: 5000, dstPort: 67 })), DropReason.spoofIp);
  t.is(spoof(p, buildTcp4({ srcMac: A, srcIp: '0.0.0.0', srcPort: 68, dstPort: 67 })), DropReason.spoofIp, 'TCP is not DHCP');
  t.is(spoof(p, buildUdp4({ srcMac: C, srcIp: '0.0.0.0', srcPort: 68, dstPort: 67 })), DropReason.spoofMac);
});

test('spoof guard: ARP sender MAC and IP are checked; a probe from 0.0.0.0 is allowed', (t) => {
  const p = guarded();
  t.is(spoof(p, buildArpRequest({ srcMac: A, srcIp: '10.0.0.2' })), 0);
  t.is(spoof(p, buildArpReply({ srcMac: A, srcIp: '10.0.0.20', dstMac: B }), 21), 0);
  t.is(spoof(p, buildArpRequest({ srcMac: A, srcIp: '0.0.0.0', targetIp: '10.0.0.2' })), 0, 'RFC 5227 probe');
  t.is(spoof(p, buildArpRequest({ srcMac: A, srcIp: '10.0.0.3' })), DropReason.spoofArp, 'claims an address that is not its own');
  t.is(spoof(p, buildArpReply({ srcMac: A, srcIp: '10.0.0.1', dstMac: B })), DropReason.spoofArp, 'gratuitous claim on the gateway');
  // Own Ethernet source, someone else's MAC in the ARP sender field.
  const lying = Buffer.from(buildArpReply({ srcMac: A, srcIp: '10.0.0.2', dstMac: B }));
  lying.set([0x02, 0x76, 0x0a, 0x00, 0x00, 0x09], 14 + ArpField.SHA);
  t.is(spoof(p, lying), DropReason.spoofArp);
  t.is(spoof(p, lying, 50), DropReason.spoofArp, 'at an offset in the buffer');
  const taggedLie = Buffer.from(buildArpRequest({ srcMac: A, srcIp: '10.0.0.2', vlans: [9] }));
  taggedLie[18 + ArpField.SHA + 5] ^= 1;
  t.is(spoof(p, taggedLie), DropReason.spoofArp, 'behind a VLAN tag');
  t.is(spoof(p, buildArpRequest({ srcMac: A, srcIp: '10.0.0.2', vlans: [9] }), 7), 0);
  t.is(spoof(p, buildArpRequest({ srcMac: C, srcIp: '10.0.0.2' })), DropReason.spoofMac);
});

test('spoof guard: IPv6 only from link-local or unspecified sources', (t) => {
  const p = guarded();
  t.is(spoof(p, buildUdp6({ srcMac: A, srcIp: 'fe80::76:aff:fe00:2' })), 0);
  t.is(spoof(p, buildUdp6({ srcMac: A, srcIp: 'febf::1' })), 0, 'still fe80::/10');
  t.is(spoof(p, buildUdp6({ srcMac: A, srcIp: '::' })), 0);
  t.is(spoof(p, buildUdp6({ srcMac: A, srcIp: 'fd00::2' })), DropReason.spoofIp);
  t.is(spoof(p, buildUdp6({ srcMac: A, srcIp: 'fec0::1' })), DropReason.spoofIp, 'just outside fe80::/10');
  t.is(spoof(p, buildUdp6({ srcMac: C, srcIp: 'fe80::1' })), DropReason.spoofMac);
});

test('spoof guard disabled: anything goes', (t) => {
  const p = compile([], { mac: A, ips: ['10.0.0.2'], enabled: false });
  t.is(spoof(p, buildUdp4({ srcMac: C, srcIp: '10.9.9.9' })), 0);
  t.is(spoof(p, buildArpRequest({ srcMac: C, srcIp: '10.9.9.9' })), 0);
  t.is(spoof(p, buildUdp6({ srcMac: C, srcIp: 'fd00::9' })), 0);
});

// Regression: parsePrefix hands the text to ipaddr.parse/parseCIDR, which accept the
// legacy inet_aton forms; "010.0.0.5" is then read as OCTAL 8.0.0.5, so a rule meant for 10.0.0.5 silently
// applies to another host. src/packet/ipv4.ts refuses leading zeros for exactly this reason, and
// parseRewrite in the same file insists on four-part decimal. Expected: a refusal (or 10.0.0.5).
test('parsePrefix does not read a leading-zero quad as octal', (t) => {
  let parsed: ReturnType<typeof parsePrefix> | undefined;
  try {
    parsed = parsePrefix('010.0.0.5', 'srcPrefix');
  } catch (err) {
    t.true(err instanceof PolicyError);
    return;
  }
  t.deepEqual(parsed.words, [0x0a000005], `read as ${parsed.words[0].toString(16)}`);
});

import test from 'ava';
import {
  DNS_EDNS_LIMIT,
  DNS_HEADER_LEN,
  DNS_UDP_LIMIT,
  DnsAnswerWriter,
  DnsClass,
  DnsFlag,
  DnsNameReader,
  DnsQueryParser,
  DnsRcode,
  DnsType,
  DnsVerdict,
  DnsView,
  dnsQueryLength,
  dnsTcpMessageLength,
  dnsVerdictName,
  emitDnsError,
  emitDnsQuery,
  encodeDnsName,
  formatDnsQuery,
  formatDnsResponse,
  frameDnsTcp,
  parseDnsQuery,
  parseDnsResponse,
  truncateDnsAnswer,
  type DnsQueryRepr,
} from '../../src/packet/dns.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';
import { mustParseIpv6Addr } from '../../src/packet/ipv6.js';
import { mulberry32 } from './helpers/random.js';

const hex = (s: string) => Uint8Array.from(Buffer.from(s.replace(/\s+/g, ''), 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

// Captured from dig 9.18 (`dig @127.0.0.1 -p 5353 web.mynet A`): RD and AD set, EDNS 1232 with a client COOKIE option.
const DIG_A = hex(`
  be99 0120 0001 0000 0000 0001
  03 776562 05 6d796e6574 00  0001 0001
  00 0029 04d0 00 00 0000 000c  000a 0008 5e5709d177210ec5`);
// `dig -x 10.88.0.10`: PTR? 10.0.88.10.in-addr.arpa.
const DIG_PTR = hex(`
  bafd 0120 0001 0000 0000 0001
  02 3130 01 30 02 3838 02 3130 07 696e2d61646472 04 61727061 00  000c 0001
  00 0029 04d0 00 00 0000 000c  000a 0008 6df4c00e20c4d92f`);
// `dig WEB.Mynet. AAAA +noedns`: the name keeps the case it was asked in.
const DIG_AAAA_NOEDNS = hex(`
  d41b 0120 0001 0000 0000 0000
  03 574542 05 4d796e6574 00  001c 0001`);

const A_REPR: DnsQueryRepr = { id: 0xbe99, recursionDesired: true, name: 'web.mynet', type: DnsType.A, class: DnsClass.IN, edns: { payloadSize: 1232, version: 0, dnssecOk: false } };

function parsed(msg: Uint8Array): DnsQueryParser {
  const p = new DnsQueryParser();
  p.parse(msg, 0, msg.length);
  return p;
}

test('deconstruct', (t) => {
  const v = new DnsView();
  t.true(v.reset(DIG_A, 0, DIG_A.length));
  t.is(v.id(), 0xbe99);
  t.is(v.flags(), 0x0120);
  t.false(v.qr());
  t.is(v.opcode(), 0);
  t.true(v.rd());
  t.false(v.tc());
  t.is(v.rcode(), 0);
  t.is(v.qdcount(), 1);
  t.is(v.ancount(), 0);
  t.is(v.nscount(), 0);
  t.is(v.arcount(), 1);
  t.false(v.reset(DIG_A, 0, 11), 'shorter than the header');

  const p = parsed(DIG_A);
  t.is(p.verdict, DnsVerdict.OK);
  t.is(p.qname, 'web.mynet');
  t.is(p.qtype, DnsType.A);
  t.is(p.qclass, DnsClass.IN);
  t.is(p.questionEnd, DNS_HEADER_LEN + 11 + 4);
  t.true(p.edns);
  t.is(p.ednsPayload, 1232);
  t.is(p.ednsVersion, 0);
  t.false(p.ednsDo);
  t.is(p.end, DIG_A.length, 'the OPT record and its cookie option were walked to the end');
  t.is(p.udpLimit(), 1232);

  const ptr = parsed(DIG_PTR);
  t.is(ptr.verdict, DnsVerdict.OK);
  t.is(ptr.qname, '10.0.88.10.in-addr.arpa');
  t.is(ptr.qtype, DnsType.PTR);

  const aaaa = parsed(DIG_AAAA_NOEDNS);
  t.is(aaaa.qname, 'web.mynet', 'lowercased, whatever the case asked');
  t.false(aaaa.edns);
  t.is(aaaa.udpLimit(), DNS_UDP_LIMIT);
});

test('construct', (t) => {
  const buf = new Uint8Array(DIG_AAAA_NOEDNS.length);
  const v = new DnsView();
  t.true(v.reset(buf, 0, buf.length));
  v.setId(0xd41b);
  v.setFlags(DnsFlag.RD | DnsFlag.AD);
  v.setCounts(1, 0, 0, 0);
  const name = encodeDnsName('WEB.Mynet.');
  buf.set(name, DNS_HEADER_LEN);
  buf.set(hex('001c 0001'), DNS_HEADER_LEN + name.length);
  t.is(toHex(buf), toHex(DIG_AAAA_NOEDNS));
  v.setTc(true);
  t.true(v.tc());
  v.setRcode(DnsRcode.NXDOMAIN);
  t.is(v.rcode(), 3);
  t.true(v.rd(), 'the other flags stay');
});

test('parse', (t) => {
  t.deepEqual(parseDnsQuery(parsed(DIG_A)), A_REPR);
  t.deepEqual(parseDnsQuery(parsed(DIG_AAAA_NOEDNS)), { id: 0xd41b, recursionDesired: true, name: 'web.mynet', type: DnsType.AAAA, class: DnsClass.IN, edns: null });
  t.is(parseDnsQuery(parsed(DIG_A.subarray(0, 20))), null, 'only an OK query has a repr');
  t.is(formatDnsQuery(A_REPR), 'DNS query id=48793 A? web.mynet rd edns=1232');
});

test('emit', (t) => {
  // dig's query without its AD flag (emit writes RD only) and without the cookie option.
  const expected = hex(`
    be99 0100 0001 0000 0000 0001
    03 776562 05 6d796e6574 00  0001 0001
    00 0029 04d0 00 00 0000 0000`);
  const buf = new Uint8Array(expected.length);
  t.is(emitDnsQuery(A_REPR, buf, 0), expected.length);
  t.is(dnsQueryLength(A_REPR), expected.length);
  t.is(toHex(buf), toHex(expected));
  const noEdns = { ...A_REPR, id: 0xd41b, name: 'WEB.Mynet.', type: DnsType.AAAA, edns: null };
  const out = new Uint8Array(64);
  const n = emitDnsQuery(noEdns, out, 0);
  const dig = Uint8Array.from(DIG_AAAA_NOEDNS);
  dig[3] = 0x00; // AD off
  t.is(toHex(out.subarray(0, n)), toHex(dig));
  t.throws(() => emitDnsQuery(A_REPR, new Uint8Array(20), 0), { instanceOf: RangeError });
  t.throws(() => encodeDnsName('a..b'), { instanceOf: RangeError });
  t.throws(() => encodeDnsName('x'.repeat(64)), { instanceOf: RangeError });
  t.throws(() => encodeDnsName(Array(5).fill('x'.repeat(63)).join('.')), { instanceOf: RangeError });
  t.is(toHex(encodeDnsName('.')), '00');
});

test('an answer written over the query it answers: question kept, records named by a pointer to it, OPT echoed', (t) => {
  const buf = new Uint8Array(600);
  buf.set(DIG_A, 100);
  const p = new DnsQueryParser();
  t.is(p.parse(buf, 100, DIG_A.length), DnsVerdict.OK);
  const w = new DnsAnswerWriter();
  t.true(w.begin(buf, 100, p.udpLimit(), p, DnsRcode.NOERROR, true));
  t.true(w.addA(10, mustParseIpv4Addr('10.88.0.10')));
  t.true(w.addA(10, mustParseIpv4Addr('10.88.0.11')));
  const n = w.finish();
  t.is(n, DNS_HEADER_LEN + 15 + 2 * 16 + 11);
  t.is(
    toHex(buf.subarray(100, 100 + n)),
    toHex(
      hex(`
      be99 8580 0001 0002 0000 0001
      03 776562 05 6d796e6574 00  0001 0001
      c00c 0001 0001 0000000a 0004 0a58000a
      c00c 0001 0001 0000000a 0004 0a58000b
      00 0029 04d0 00 00 0000 0000`),
    ),
    'QR AA RD RA, the question as asked, two A records, an OPT without options',
  );
  const r = parseDnsResponse(buf, 100, n)!;
  t.is(r.id, 0xbe99);
  t.true(r.authoritative);
  t.true(r.recursionDesired);
  t.true(r.recursionAvailable);
  t.false(r.truncated);
  t.deepEqual(r.question, { name: 'web.mynet', type: DnsType.A, class: DnsClass.IN });
  t.deepEqual(
    r.answers.map((a) => [a.name, a.type, a.ttl, a.data]),
    [
      ['web.mynet', DnsType.A, 10, '10.88.0.10'],
      ['web.mynet', DnsType.A, 10, '10.88.0.11'],
    ],
  );
  t.deepEqual(r.edns, { payloadSize: DNS_EDNS_LIMIT, version: 0, dnssecOk: false });
  t.is(formatDnsResponse(r), 'DNS response id=48793 NOERROR A? web.mynet aa,rd,ra A 10.88.0.10 ttl=10 A 10.88.0.11 ttl=10');
});

test('AAAA and PTR records; the question keeps its case; an answer goes to another buffer as well', (t) => {
  const q = parsed(DIG_AAAA_NOEDNS);
  const out = new Uint8Array(512);
  const w = new DnsAnswerWriter();
  t.true(w.begin(out, 0, 512, q, DnsRcode.NOERROR, true));
  t.true(w.addAaaa(5, mustParseIpv6Addr('fd00::a'), 0));
  const r = parseDnsResponse(out, 0, w.finish())!;
  t.deepEqual(r.answers.map((a) => [a.type, a.data]), [[DnsType.AAAA, 'fd00::a']]);
  t.is(toHex(out.subarray(12, 23)), '03574542054d796e657400', 'WEB.Mynet as asked (0x20 randomisation survives)');
  t.is(r.edns, null, 'no OPT in the answer to a query without one');

  const ptrQ = parsed(DIG_PTR);
  const target = encodeDnsName('web.mynet');
  t.true(w.begin(out, 0, 512, ptrQ, DnsRcode.NOERROR, true));
  t.true(w.addPtr(10, target, 0, target.length));
  const pr = parseDnsResponse(out, 0, w.finish())!;
  t.deepEqual(pr.answers.map((a) => [a.name, a.type, a.data]), [['10.0.88.10.in-addr.arpa', DnsType.PTR, 'web.mynet']]);
});

test('an answer never outgrows its limit: records left out set TC, the OPT keeps its room', (t) => {
  const buf = new Uint8Array(4096);
  const noEdns = parsed(DIG_AAAA_NOEDNS);
  const w = new DnsAnswerWriter();
  t.true(w.begin(buf, 0, noEdns.udpLimit(), noEdns, DnsRcode.NOERROR, true));
  let added = 0;
  for (let i = 0; i < 40; i++) if (w.addA(10, i)) added++;
  const n = w.finish();
  t.true(n <= DNS_UDP_LIMIT);
  t.is(added, Math.floor((DNS_UDP_LIMIT - 27) / 16));
  const r = parseDnsResponse(buf, 0, n)!;
  t.true(r.truncated);
  t.is(r.answers.length, added);
  t.false(w.addA(10, 1), 'once truncated, nothing more is added');

  const edns = parsed(DIG_A);
  t.true(w.begin(buf, 0, edns.udpLimit(), edns, DnsRcode.NOERROR, true));
  for (let i = 0; i < 100; i++) w.addA(10, i);
  const m = w.finish();
  t.true(m <= DNS_EDNS_LIMIT);
  t.is(m, DNS_EDNS_LIMIT - ((DNS_EDNS_LIMIT - 27 - 11) % 16), 'as many records as fit before the OPT');
  t.true(parseDnsResponse(buf, 0, m)!.truncated);
  t.truthy(parseDnsResponse(buf, 0, m)!.edns);

  // The EDNS size is honoured between 512 and 1232.
  const big = Uint8Array.from(DIG_A);
  big[DIG_A.length - 20] = 0x10; // payload 0x10d0 = 4304
  t.is(parsed(big).udpLimit(), DNS_EDNS_LIMIT);
  big[DIG_A.length - 20] = 0x00; // 0x00d0 = 208
  t.is(parsed(big).udpLimit(), DNS_UDP_LIMIT);
  t.false(w.begin(buf, 0, 30, edns, DnsRcode.NOERROR, true), 'not even header, question and OPT fit: nothing is begun');
});

test('BADVERS goes in the OPT record; without one it cannot be said and becomes SERVFAIL', (t) => {
  const buf = new Uint8Array(512);
  const w = new DnsAnswerWriter();
  t.true(w.begin(buf, 0, 512, parsed(DIG_A), DnsRcode.BADVERS, false));
  const r = parseDnsResponse(buf, 0, w.finish())!;
  t.is(r.rcode, DnsRcode.BADVERS);
  t.false(r.authoritative);
  t.true(w.begin(buf, 0, 512, parsed(DIG_AAAA_NOEDNS), DnsRcode.BADVERS, false));
  t.is(parseDnsResponse(buf, 0, w.finish())!.rcode, DnsRcode.SERVFAIL);
});

test('error answers are the header and at most the question: never longer than the query', (t) => {
  const buf = new Uint8Array(512);
  // An additional record that is not an OPT: the question was read, so FORMERR carries it.
  const badOpt = Uint8Array.from(DIG_A);
  badOpt[DIG_A.length - 22] = 0x01; // TYPE 41 -> 297
  const p = parsed(badOpt);
  t.is(p.verdict, DnsVerdict.BAD_OPT);
  const n = emitDnsError(p, DnsRcode.FORMERR, buf, 0, 512);
  t.is(n, 27);
  t.true(n <= badOpt.length);
  const r = parseDnsResponse(buf, 0, n)!;
  t.is(r.rcode, DnsRcode.FORMERR);
  t.is(r.id, 0xbe99);
  t.is(r.question?.name, 'web.mynet');

  const update = Uint8Array.from(DIG_A);
  update[2] = 0x28; // opcode 5 (UPDATE)
  const u = parsed(update);
  t.is(u.verdict, DnsVerdict.NOT_IMPLEMENTED);
  t.is(emitDnsError(u, DnsRcode.NOTIMP, buf, 0, 512), DNS_HEADER_LEN, 'NOTIMP: the header alone');
  t.is(parseDnsResponse(buf, 0, 12)!.rcode, DnsRcode.NOTIMP);
  t.is(parseDnsResponse(buf, 0, 12)!.opcode, 5);

  t.is(emitDnsError(parsed(DIG_A.subarray(0, 11)), DnsRcode.FORMERR, buf, 0, 512), 0, 'no header: nothing');
  const response = Uint8Array.from(DIG_A);
  response[2] |= 0x80;
  t.is(emitDnsError(parsed(response), DnsRcode.FORMERR, buf, 0, 512), 0, 'a response is never answered');
});

/** A query whose question name is `name` (raw bytes), followed by QTYPE A, QCLASS IN, with the given counts. */
function query(name: string, counts = '0001 0000 0000 0000', tail = '0001 0001'): Uint8Array {
  return hex(`1234 0100 ${counts} ${name} ${tail}`);
}

test('malformed names: loops, forward and outside pointers, long labels and names, truncation', (t) => {
  const cases: [string, Uint8Array, number][] = [
    ['a pointer back into its own name', query('01 61 c00c'), DnsVerdict.POINTER_LOOP],
    ['a pointer to itself', query('c00c'), DnsVerdict.POINTER_FORWARD],
    ['a forward pointer', query('c010 00 00'), DnsVerdict.POINTER_FORWARD],
    ['a pointer out of bounds', query('c0ff'), DnsVerdict.POINTER_OUT_OF_BOUNDS],
    ['a pointer cut in half', hex('1234 0100 0001 0000 0000 0000 c0'), DnsVerdict.NAME_TRUNCATED],
    ['a label length over 63 (type 01)', query('40 61 00'), DnsVerdict.LABEL_TOO_LONG],
    ['a label length over 63 (type 10)', query('80 61 00'), DnsVerdict.LABEL_TOO_LONG],
    ['a name over 255 bytes', query(`${('3f' + '61'.repeat(63)).repeat(4)} 00`), DnsVerdict.NAME_TOO_LONG],
    ['a label past the end', hex('1234 0100 0001 0000 0000 0000 05 6162'), DnsVerdict.NAME_TRUNCATED],
    ['no end of name', hex('1234 0100 0001 0000 0000 0000 01 61'), DnsVerdict.NAME_TRUNCATED],
    ['a header and no question', hex('1234 0100 0001 0000 0000 0000'), DnsVerdict.NAME_TRUNCATED],
    ['no QTYPE', query('01 61 00', undefined, '00'), DnsVerdict.QUESTION_TRUNCATED],
    ['11 bytes', hex('1234 0100 0001 0000 0000 00'), DnsVerdict.SHORT],
    ['a response', hex('1234 8100 0001 0000 0000 0000 01 61 00 0001 0001'), DnsVerdict.RESPONSE],
    ['no question', query('', '0000 0000 0000 0000', ''), DnsVerdict.BAD_COUNTS],
    ['two questions', query('01 61 00', '0002 0000 0000 0000'), DnsVerdict.BAD_COUNTS],
    ['65535 questions', query('01 61 00', 'ffff 0000 0000 0000'), DnsVerdict.BAD_COUNTS],
    ['an answer record in a query', query('01 61 00', '0001 0001 0000 0000'), DnsVerdict.BAD_COUNTS],
    ['an authority record in a query', query('01 61 00', '0001 0000 ffff 0000'), DnsVerdict.BAD_COUNTS],
    ['two additional records', query('01 61 00', '0001 0000 0000 0002'), DnsVerdict.BAD_COUNTS],
    ['an additional record missing', query('01 61 00', '0001 0000 0000 0001'), DnsVerdict.BAD_OPT],
    ['an OPT with a name', query('01 61 00', '0001 0000 0000 0001', '0001 0001 01 61 00 0029 0200 00000000 0000'), DnsVerdict.BAD_OPT],
    ['an OPT whose data runs past the end', query('01 61 00', '0001 0000 0000 0001', '0001 0001 00 0029 0200 00000000 0010 000a'), DnsVerdict.BAD_OPT],
    ['an OPT option that runs past its data', query('01 61 00', '0001 0000 0000 0001', '0001 0001 00 0029 0200 00000000 0006 000a 0008 aabb'), DnsVerdict.BAD_OPT],
  ];
  const p = new DnsQueryParser();
  for (const [what, msg, verdict] of cases) {
    t.is(p.parse(msg, 0, msg.length), verdict, `${what}: ${dnsVerdictName(verdict)}`);
  }
  // A legal pointer chain in a response: each name points further back.
  const resp = hex(`
    1234 8180 0001 0002 0000 0000
    03 777777 05 6d796e6574 00 0005 0001
    c00c 0005 0001 00000005 0006 03 617069 c010
    c01b 0001 0001 00000005 0004 0a000001`);
  const r = parseDnsResponse(resp, 0, resp.length)!;
  t.deepEqual(r.answers.map((a) => [a.name, a.data]), [
    ['www.mynet', 'api.mynet'],
    ['www.mynet', '10.0.0.1'],
  ]);
  t.is(parseDnsResponse(query('01 61 c00c'), 0, 19), null, 'a query is no response');
});

test('names keep every byte: dots, spaces and other bytes inside a label are escaped, so they match no host name', (t) => {
  const names = new DnsNameReader();
  const msg = hex('0000 0000 0000 0000 0000 0000 03 612e62 02 4120 01 ff 00');
  t.is(names.read(msg, 0, msg.length, 12, true), msg.length);
  t.is(names.text, 'a\\046b.a\\032.\\255');
  t.is(names.wireLength, 10);
  t.is(names.read(hex('0000 0000 0000 0000 0000 0000 00'), 0, 13, 12, true), 13);
  t.is(names.text, '', 'the root');
});

test('TCP framing: a whole message after its 2-byte length, or nothing', (t) => {
  const framed = frameDnsTcp(DIG_A);
  t.is(framed.length, DIG_A.length + 2);
  t.is(dnsTcpMessageLength(framed, 0, framed.length), DIG_A.length);
  t.is(dnsTcpMessageLength(framed, 0, framed.length - 1), -1, 'split over segments');
  t.is(dnsTcpMessageLength(framed, 0, 1), -1, 'half a length');
  const two = new Uint8Array(2 * framed.length);
  two.set(framed);
  two.set(framed, framed.length);
  t.is(dnsTcpMessageLength(two, 0, two.length), DIG_A.length, 'the first of two pipelined messages (the stage refuses those)');
  t.throws(() => frameDnsTcp(new Uint8Array(70000)), { instanceOf: RangeError });
});

test('truncateDnsAnswer cuts an upstream answer to header and question with TC when it is over the limit', (t) => {
  const buf = new Uint8Array(2048);
  const w = new DnsAnswerWriter();
  const q = parsed(DIG_AAAA_NOEDNS);
  w.begin(buf, 0, 2048, q, DnsRcode.NOERROR, false);
  for (let i = 0; i < 60; i++) w.addA(60, i);
  const n = w.finish();
  t.true(n > 512);
  t.is(truncateDnsAnswer(buf, 0, n, 2048), n, 'fits: as it is');
  const m = truncateDnsAnswer(buf, 0, n, 512);
  t.is(m, 27);
  const r = parseDnsResponse(buf, 0, m)!;
  t.true(r.truncated);
  t.is(r.answers.length, 0);
  t.is(r.question?.name, 'web.mynet');
  t.is(truncateDnsAnswer(DIG_A, 0, DIG_A.length, 10), 0, 'a query is no answer');
});

/** Never a throw, and anything written stays inside its limit and, for a query that is not OK, inside the query's size. */
function exercise(t: { true(v: boolean, m?: string): void }, p: DnsQueryParser, w: DnsAnswerWriter, msg: Uint8Array, out: Uint8Array): void {
  const v = p.parse(msg, 0, msg.length);
  t.true(v >= DnsVerdict.OK && v <= DnsVerdict.BAD_OPT);
  if (v === DnsVerdict.OK) {
    const limit = p.udpLimit();
    t.true(p.qname.length <= 4 * 255, 'a name is bounded');
    if (w.begin(out, 0, limit, p, DnsRcode.NOERROR, true)) {
      for (let i = 0; i < 50; i++) w.addA(1, i);
      t.true(w.finish() <= limit);
    }
  } else {
    t.true(emitDnsError(p, DnsRcode.FORMERR, out, 0, 512) <= msg.length, 'an error answer is no larger than the query');
  }
  parseDnsResponse(msg, 0, msg.length);
  truncateDnsAnswer(Uint8Array.from(msg), 0, msg.length, 64);
}

test('fuzz: random bytes and mutations of real queries never throw, and answers stay bounded', (t) => {
  const rnd = mulberry32(0xd115);
  const p = new DnsQueryParser();
  const w = new DnsAnswerWriter();
  const out = new Uint8Array(2048);
  let checks = 0;
  const tt = { true: (v: boolean, m?: string) => {
    checks++;
    if (!v) t.fail(m);
  } };
  for (let i = 0; i < 5000; i++) {
    const msg = new Uint8Array(Math.floor(rnd() * 300));
    for (let k = 0; k < msg.length; k++) msg[k] = rnd() * 256;
    // Half of them look like queries, so the name decoder gets past the header.
    if (rnd() < 0.5 && msg.length >= 12) msg.set(hex('1234 0100 0001 0000 0000 000' + (rnd() < 0.5 ? '0' : '1')), 0);
    exercise(tt, p, w, msg, out);
  }
  const seeds = [DIG_A, DIG_PTR, DIG_AAAA_NOEDNS];
  let ok = 0;
  for (let i = 0; i < 20000; i++) {
    const base = seeds[i % seeds.length];
    let msg = Uint8Array.from(base);
    const edits = 1 + Math.floor(rnd() * 4);
    for (let e = 0; e < edits; e++) {
      const r = rnd();
      const at = Math.floor(rnd() * msg.length);
      if (r < 0.4) msg[at] = rnd() * 256;
      else if (r < 0.6) msg[at] = 0xc0 | (rnd() * 4);
      else if (r < 0.7 && at + 1 < msg.length) {
        msg[at] = 0xc0;
        msg[at + 1] = rnd() * 64;
      } else if (r < 0.85) msg = msg.slice(0, at);
      else {
        const grown = new Uint8Array(msg.length + 8);
        grown.set(msg);
        for (let k = msg.length; k < grown.length; k++) grown[k] = rnd() * 256;
        msg = grown;
      }
    }
    exercise(tt, p, w, msg, out);
    if (p.verdict === DnsVerdict.OK) ok++;
  }
  t.true(checks > 25000);
  t.true(ok > 100, `some mutations are still queries (${ok})`);
});

import test from 'ava';
import {
  Ipam,
  IpamError,
  formatSubnet,
  macForIp,
  normalizeMac,
  parseIpOrCidr,
  parseSubnet,
  subnetContains,
  subnetsOverlap,
} from '../../src/service/ipam.js';

function refuses(t: import('ava').ExecutionContext, fn: () => unknown, message: RegExp): void {
  const err = t.throws(fn, { instanceOf: IpamError, message });
  // One sentence: no line breaks, ends with a full stop or a question mark.
  t.regex(err?.message ?? '', /^[^\n]+[.?]$/);
}

test('parseSubnet and formatSubnet round-trip', (t) => {
  const s = parseSubnet('10.50.0.0/24');
  t.is(s.prefix, 24);
  t.is(formatSubnet(s), '10.50.0.0/24');
  t.is(formatSubnet(parseSubnet('10.0.0.0/8')), '10.0.0.0/8');
  t.is(formatSubnet(parseSubnet('192.168.7.252/30')), '192.168.7.252/30');
});

test('parseSubnet refuses malformed text', (t) => {
  for (const bad of ['', 'abc', '10.50.0.0', '10.50.0/24', '10.50.0.0/', '10.50.0.0/abc', '10.50.0.256/24', '10.50.0.0/33', ' 10.50.0.0/24', '010.50.0.0/24', '10.50.0.0/024']) {
    refuses(t, () => parseSubnet(bad), /is not an IPv4 subnet: write it as address\/prefix/);
  }
  refuses(t, () => parseSubnet(undefined as unknown as string), /is not an IPv4 subnet/);
});

test('parseSubnet refuses host bits with a suggestion', (t) => {
  refuses(t, () => parseSubnet('10.50.0.5/24'), /^10\.50\.0\.5\/24 is not a network address: did you mean 10\.50\.0\.0\/24\?$/);
  refuses(t, () => parseSubnet('172.16.9.1/12'), /did you mean 172\.16\.0\.0\/12\?/);
});

test('parseSubnet refuses prefixes outside /8../30 and IPv6', (t) => {
  refuses(t, () => parseSubnet('10.50.0.0/31'), /too small.*prefix of 30 or less/);
  refuses(t, () => parseSubnet('10.50.0.1/32'), /too small/);
  refuses(t, () => parseSubnet('10.0.0.0/7'), /too large/);
  refuses(t, () => parseSubnet('0.0.0.0/0'), /too large/);
  refuses(t, () => parseSubnet('fd00::/64'), /IPv6 subnet, which vsw does not support yet/);
});

test('subnetsOverlap: disjoint, equal, containment both ways', (t) => {
  t.false(subnetsOverlap('10.50.0.0/24', '10.51.0.0/24'));
  t.false(subnetsOverlap('10.50.0.0/25', '10.50.0.128/25'));
  t.true(subnetsOverlap('10.50.0.0/24', '10.50.0.0/24'));
  t.true(subnetsOverlap('10.0.0.0/8', '10.50.0.0/24'));
  t.true(subnetsOverlap('10.50.0.0/24', '10.0.0.0/8'));
  t.true(subnetsOverlap(parseSubnet('10.50.0.4/30'), parseSubnet('10.50.0.0/16')));
  t.false(subnetsOverlap('192.168.0.0/16', '10.0.0.0/8'));
  t.true(subnetContains('10.50.0.0/24', '10.50.0.77'));
  t.false(subnetContains('10.50.0.0/24', '10.50.1.77'));
});

test('allocate hands out the lowest free address, skipping network and gateway', (t) => {
  const ipam = new Ipam('10.50.0.0/24');
  t.is(ipam.cidr, '10.50.0.0/24');
  t.is(ipam.gateway, undefined);
  t.is(ipam.reservedGateway, '10.50.0.1');
  t.is(ipam.size, 253);
  t.is(ipam.allocate(), '10.50.0.2');
  t.is(ipam.allocate(), '10.50.0.3');
  t.is(ipam.allocate(), '10.50.0.4');
  t.is(ipam.used, 3);
  t.is(ipam.free, 250);
  t.true(ipam.has('10.50.0.3'));
  t.false(ipam.has('10.50.0.1'));
  t.false(ipam.has('10.50.0.9'));
  t.deepEqual(ipam.allocated(), ['10.50.0.2', '10.50.0.3', '10.50.0.4']);
});

test('a configured gateway is reserved instead of the first host address', (t) => {
  const ipam = new Ipam('10.50.0.0/24', { gateway: '10.50.0.254' });
  t.is(ipam.gateway, '10.50.0.254');
  t.is(ipam.reservedGateway, '10.50.0.254');
  t.is(ipam.allocate(), '10.50.0.1');
  refuses(t, () => ipam.reserve('10.50.0.254'), /^10\.50\.0\.254 is reserved for the gateway of 10\.50\.0\.0\/24/);
  for (let i = 0; i < 252; i++) ipam.allocate();
  t.is(ipam.used, 253);
  t.is(ipam.free, 0);
  t.false(ipam.has('10.50.0.254'));
  t.throws(() => ipam.allocate(), { instanceOf: IpamError, message: /no free addresses left/ });
});

test('gateway option is validated', (t) => {
  refuses(t, () => new Ipam('10.50.0.0/24', { gateway: '10.60.0.1' }), /^gateway 10\.60\.0\.1 is outside network 10\.50\.0\.0\/24/);
  refuses(t, () => new Ipam('10.50.0.0/24', { gateway: '10.50.0.0' }), /is the network address/);
  refuses(t, () => new Ipam('10.50.0.0/24', { gateway: '10.50.0.255' }), /is the broadcast address/);
  refuses(t, () => new Ipam('10.50.0.0/24', { gateway: 'router' }), /^gateway "router" is not an IPv4 address/);
});

test('a /30 has exactly one address to give, then a clear error', (t) => {
  const ipam = new Ipam('10.50.0.8/30');
  t.is(ipam.size, 1);
  t.is(ipam.allocate(), '10.50.0.10');
  refuses(t, () => ipam.allocate(), /^network 10\.50\.0\.8\/30 has no free addresses left \(all 1 are in use\)/);
  ipam.release('10.50.0.10');
  t.is(ipam.used, 0);
  t.is(ipam.allocate(), '10.50.0.10');
});

test('release makes the lowest address available again', (t) => {
  const ipam = new Ipam('10.50.0.0/24');
  const a = Array.from({ length: 40 }, () => ipam.allocate());
  t.is(a[39], '10.50.0.41');
  ipam.release('10.50.0.35');
  ipam.release('10.50.0.5');
  t.false(ipam.has('10.50.0.5'));
  t.is(ipam.used, 38);
  t.is(ipam.allocate(), '10.50.0.5');
  t.is(ipam.allocate(), '10.50.0.35');
  t.is(ipam.allocate(), '10.50.0.42');
  // Releasing something not held is harmless.
  ipam.release('10.50.0.200');
  ipam.release('10.50.0.1');
  ipam.release('192.168.1.1');
  t.is(ipam.used, 41);
  refuses(t, () => ipam.release('nope'), /is not an IPv4 address/);
});

test('reserve takes a specific address and allocate steps around it', (t) => {
  const ipam = new Ipam('10.50.0.0/24');
  ipam.reserve('10.50.0.2');
  ipam.reserve('10.50.0.4');
  t.is(ipam.allocate(), '10.50.0.3');
  t.is(ipam.allocate(), '10.50.0.5');
  t.is(ipam.used, 4);
});

test('reserve refuses each bad address with its own sentence', (t) => {
  const ipam = new Ipam('10.50.0.0/24');
  ipam.reserve('10.50.0.7');
  refuses(t, () => ipam.reserve('10.51.0.7'), /^10\.51\.0\.7 is outside network 10\.50\.0\.0\/24: pick an address inside it/);
  refuses(t, () => ipam.reserve('10.50.0.0'), /^10\.50\.0\.0 is the network address of 10\.50\.0\.0\/24 and cannot be assigned/);
  refuses(t, () => ipam.reserve('10.50.0.255'), /^10\.50\.0\.255 is the broadcast address of 10\.50\.0\.0\/24/);
  refuses(t, () => ipam.reserve('10.50.0.1'), /^10\.50\.0\.1 is reserved for the gateway of 10\.50\.0\.0\/24/);
  refuses(t, () => ipam.reserve('10.50.0.7'), /^10\.50\.0\.7 is already in use in 10\.50\.0\.0\/24/);
  refuses(t, () => ipam.reserve('10.50.0'), /is not an IPv4 address: write four decimal numbers/);
  refuses(t, () => ipam.reserve('fd00::5'), /is an IPv6 address, which vsw does not support yet/);
  t.is(ipam.used, 1);
});

test('a large subnet allocates quickly and in order', (t) => {
  const ipam = new Ipam('10.0.0.0/8');
  t.is(ipam.size, 2 ** 24 - 3);
  const start = process.hrtime.bigint();
  let last = '';
  for (let i = 0; i < 100_000; i++) last = ipam.allocate();
  const ms = Number(process.hrtime.bigint() - start) / 1e6;
  t.is(last, '10.1.134.161'); // index 100001: 0x0186a1
  t.true(ms < 2000, `100k allocations took ${ms} ms`);
  ipam.release('10.0.0.77');
  t.is(ipam.allocate(), '10.0.0.77');
  t.is(ipam.allocate(), '10.1.134.162');
});

test('parseIpOrCidr accepts a bare address or one with the subnet prefix', (t) => {
  const s = parseSubnet('10.50.0.0/24');
  t.is(parseIpOrCidr('10.50.0.5', s), '10.50.0.5');
  t.is(parseIpOrCidr('10.50.0.5/24', '10.50.0.0/24'), '10.50.0.5');
  refuses(t, () => parseIpOrCidr('10.50.0.5/16', s), /^10\.50\.0\.5\/16 does not match the prefix of network 10\.50\.0\.0\/24: write 10\.50\.0\.5\/24 or just 10\.50\.0\.5\.$/);
  refuses(t, () => parseIpOrCidr('10.50.0.5/x', s), /is not an IPv4 address with a prefix/);
  refuses(t, () => parseIpOrCidr('10.50.0.500', s), /is not an IPv4 address/);
  refuses(t, () => parseIpOrCidr('', s), /is not an IPv4 address/);
});

test('macForIp derives a locally administered unicast MAC', (t) => {
  t.is(macForIp('10.50.0.5'), '02:76:0a:32:00:05');
  t.is(macForIp('192.168.255.1'), '02:76:c0:a8:ff:01');
  const first = parseInt(macForIp('10.0.0.1').slice(0, 2), 16);
  t.is(first & 1, 0, 'unicast');
  t.is(first & 2, 2, 'locally administered');
  t.is(normalizeMac(macForIp('10.50.0.5')), '02:76:0a:32:00:05');
  refuses(t, () => macForIp('10.50.0'), /is not an IPv4 address/);
});

test('normalizeMac lower-cases and refuses unusable MACs', (t) => {
  t.is(normalizeMac('02:76:0A:32:00:05'), '02:76:0a:32:00:05');
  t.is(normalizeMac('02-76-0a-32-00-05'), '02:76:0a:32:00:05');
  t.is(normalizeMac('00:16:3e:12:34:56'), '00:16:3e:12:34:56');
  for (const bad of ['', '02:76:0a:32:00', '02:76:0a:32:00:05:06', '02:76:0a:32:00:0g', '2:76:a:32:0:5', '02:76-0a:32:00:05', '0276.0a32.0005']) {
    refuses(t, () => normalizeMac(bad), /is not a MAC address: write six hex bytes/);
  }
  refuses(t, () => normalizeMac('00:00:00:00:00:00'), /^00:00:00:00:00:00 \(all zeros\) cannot be given to an interface/);
  refuses(t, () => normalizeMac('FF:FF:FF:FF:FF:FF'), /^ff:ff:ff:ff:ff:ff is the broadcast MAC address/);
  refuses(t, () => normalizeMac('01:00:5e:00:00:01'), /^01:00:5e:00:00:01 is a multicast MAC address/);
  refuses(t, () => normalizeMac('33:33:00:00:00:01'), /is a multicast MAC address/);
});

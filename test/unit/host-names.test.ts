import test from 'ava';
import {
  HostError,
  IFNAME_MAX_BYTES,
  explainIpFailure,
  netnsPath,
  validateIfName,
  validateNetnsName,
} from '../../src/host/index.js';

test('valid network namespace names', (t) => {
  for (const name of ['a', 'ns1', 'vswt3fa1-h1', 'A.b_c-d', '0', 'x'.repeat(64)]) {
    t.notThrows(() => validateNetnsName(name), name);
  }
  t.is(netnsPath('vswt3fa1-h1'), '/run/netns/vswt3fa1-h1');
});

test('invalid network namespace names get one sentence', (t) => {
  const err = t.throws(() => validateNetnsName('x y'), { instanceOf: HostError });
  t.is(
    err?.message,
    `network namespace name "x y" is invalid: use letters, digits, '.', '_' or '-' (at most 64 characters).`,
  );
  for (const name of ['', '-n', '.hidden', '_x', 'a/b', '../etc', 'x'.repeat(65), 'tab\there', 'ünï', 'a:b']) {
    t.throws(() => validateNetnsName(name), { instanceOf: HostError, message: /is invalid: use letters, digits/ }, JSON.stringify(name));
    t.throws(() => netnsPath(name), { instanceOf: HostError });
  }
});

test('valid interface names', (t) => {
  t.is(IFNAME_MAX_BYTES, 15);
  for (const name of ['eth0', 'e', 'vswt3fa1-a', 'x'.repeat(15), 'br.100', 'a_b-c']) {
    t.notThrows(() => validateIfName(name), name);
  }
});

test('interface names longer than 15 bytes name the limit', (t) => {
  const err = t.throws(() => validateIfName('x'.repeat(16)), { instanceOf: HostError });
  t.regex(err?.message ?? '', /is 16 bytes long but Linux allows at most 15 \(IFNAMSIZ - 1\): pick a shorter name\.$/);
  // Bytes, not characters: 8 two-byte characters are 16 bytes.
  t.throws(() => validateIfName('é'.repeat(8)), { instanceOf: HostError, message: /16 bytes long/ });
  t.notThrows(() => validateIfName('é'.repeat(7)));
});

test('other invalid interface names', (t) => {
  t.throws(() => validateIfName(''), { instanceOf: HostError, message: /interface name is empty/ });
  for (const name of ['a/b', 'a:1', 'a b', 'a\tb', '.', '..', '-x']) {
    t.throws(() => validateIfName(name), { instanceOf: HostError, message: /is invalid: it must not contain/ }, JSON.stringify(name));
  }
});

test('ip(8) failures are explained in one sentence', (t) => {
  const cases: [string[], string | undefined, string, RegExp][] = [
    [['link', 'show'], 'nope', 'Cannot open network namespace "nope": No such file or directory', /^network namespace "nope" does not exist: create it first/],
    [['netns', 'add', 'x'], undefined, 'Cannot create namespace file "/run/netns/x": File exists', /^network namespace "x" already exists: delete it first/],
    [['link', 'set', 'dev', 'eth9', 'up'], 'ns1', 'Cannot find device "eth9"', /^interface "eth9" does not exist in network namespace "ns1": check the name with "ip -n ns1 link"\.$/],
    [['link', 'add', 'name', 'v0', 'type', 'veth', 'peer', 'name', 'v1'], undefined, 'RTNETLINK answers: File exists', /^an interface named "v0" \(or its peer\) already exists in the host network namespace/],
    [['address', 'add', '10.0.0.1/24', 'dev', 'eth0'], 'ns1', 'Error: ipv4: Address already assigned.', /^address 10\.0\.0\.1\/24 is already assigned in network namespace "ns1"/],
    [['route', 'replace', 'default', 'via', '10.9.0.1', 'dev', 'eth0'], 'ns1', 'Error: Nexthop has invalid gateway.', /^gateway 10\.9\.0\.1 is not reachable through interface "eth0"/],
    [['link', 'set', 'dev', 'eth0', 'mtu', '20'], 'ns1', 'Error: mtu less than device minimum.', /^MTU 20 is outside the range "eth0" accepts/],
    [['link', 'set', 'dev', 'eth0', 'address', '01:00:5e:00:00:01'], 'ns1', 'RTNETLINK answers: Cannot assign requested address', /^MAC address 01:00:5e:00:00:01 was refused/],
    [['netns', 'add', 'x'], undefined, 'mount --make-shared /run/netns failed: Operation not permitted', /needs root privileges \(CAP_NET_ADMIN\), so run it as root or with sudo -E\.$/],
  ];
  for (const [args, netns, stderr, expected] of cases) {
    const msg = explainIpFailure(args, netns, stderr);
    t.regex(msg ?? '', expected, stderr);
    t.regex(msg ?? '', /^[^\n]+\.$/);
  }
  t.is(explainIpFailure(['link'], undefined, 'something new and strange'), undefined);
});

import test from 'ava';
import { DriverError, networkRequest, publishRequest } from '../../src/docker/driver.js';
import { dockerTapName as tapNameFor } from '../../src/service/endpoint-config.js';

const id = 'b8e0d5791f6a2c3e4d5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5';
const pool = [{ AddressSpace: 'LocalDefault', Pool: '10.240.0.0/24', Gateway: '10.240.0.1/24' }];

test('CreateNetwork becomes a vsw network: docker\'s pool and gateway, nat unless --internal, owned by the docker id', (t) => {
  t.deepEqual(networkRequest({ NetworkID: id, Options: { 'com.docker.network.generic': {} }, IPv4Data: pool, IPv6Data: [] }), {
    name: 'docker-b8e0d5791f6a',
    driver: 'nat',
    subnet: '10.240.0.0/24',
    gateway: '10.240.0.1',
    owner: `docker:${id}`,
  });
  const named = networkRequest({ NetworkID: id, Options: { 'com.docker.network.generic': { 'vsw.name': 'web', 'vsw.driver': 'overlay', 'vsw.vni': '42', 'vsw.peers': '192.168.56.11, 192.168.56.12' } }, IPv4Data: pool });
  t.like(named, { name: 'web', driver: 'overlay', vni: 42, peers: ['192.168.56.11', '192.168.56.12'] });
  t.is(networkRequest({ NetworkID: id, Options: { 'com.docker.network.internal': true }, IPv4Data: pool }).driver, 'internal');
});

test('CreateNetwork refuses what vsw cannot do, in one sentence each', (t) => {
  const refuse = (call: Parameters<typeof networkRequest>[0], pattern: RegExp): void => {
    const err = t.throws(() => networkRequest(call), { instanceOf: DriverError });
    t.regex(err?.message ?? '', pattern);
    t.regex(err?.message ?? '', /^[^.]*[^.]\.$|: .*\.$/);
  };
  refuse({ NetworkID: id, Options: { 'com.docker.network.generic': { 'vsw.bogus': '1' } }, IPv4Data: pool }, /^docker network option vsw\.bogus is not known to vsw: use vsw\.driver/);
  refuse({ NetworkID: id, Options: { 'com.docker.network.generic': { 'vsw.driver': 'l3' } }, IPv4Data: pool }, /^-o vsw\.driver=l3 is not a vsw driver/);
  refuse({ NetworkID: id, Options: { 'com.docker.network.generic': { 'vsw.vni': 'x' } }, IPv4Data: pool }, /^-o vsw\.vni=x is not a whole number/);
  refuse({ NetworkID: id, Options: { 'com.docker.network.generic': { 'vsw.name': '-x' } }, IPv4Data: pool }, /^-o vsw\.name=-x is not a network name/);
  refuse({ NetworkID: id, Options: { 'com.docker.network.enable_ipv6': true }, IPv4Data: pool }, /IPv4 only/);
  refuse({ NetworkID: id, IPv4Data: [...pool, ...pool] }, /exactly one IPv4 subnet/);
  refuse({ NetworkID: id, Options: { 'com.docker.network.internal': true, 'com.docker.network.generic': { 'vsw.driver': 'nat' } }, IPv4Data: pool }, /contradict/);
  refuse({ NetworkID: 'not-an-id', IPv4Data: pool }, /is not a docker network id/);
});

test('port bindings: tcp and udp, HostPort 0 (-p 80, -P) for vsw to pick, host address kept; ranges and sctp refused', (t) => {
  t.deepEqual(
    publishRequest([
      { Proto: 6, Port: 80, HostIP: '', HostPort: 18081, HostPortEnd: 18081 },
      { Proto: 6, Port: 8080, HostIP: '', HostPort: 0, HostPortEnd: 0 },
      { Proto: 17, Port: 53, HostIP: '127.0.0.1', HostPort: 5353, HostPortEnd: 5353 },
    ]),
    [
      { protocol: 'tcp', hostPort: 18081, containerPort: 80 },
      { protocol: 'tcp', hostPort: 0, containerPort: 8080 },
      { protocol: 'udp', hostIp: '127.0.0.1', hostPort: 5353, containerPort: 53 },
    ],
  );
  t.deepEqual(publishRequest(undefined), []);
  t.throws(() => publishRequest([{ Proto: 132, Port: 9 }]), { message: /IP protocol 132/ });
  t.throws(() => publishRequest([{ Proto: 6, Port: 80, HostPort: 8000, HostPortEnd: 8010 }]), { message: /range 8000-8010/ });
});

test('the TAP docker moves is named within IFNAMSIZ', (t) => {
  t.is(tapNameFor(id), 'vswb8e0d5791f6a');
  t.true(Buffer.byteLength(tapNameFor(id)) <= 15);
});

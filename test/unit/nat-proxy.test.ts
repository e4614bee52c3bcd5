import test from 'ava';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import pino from 'pino';
import { PortProxy, ProxyError, parsePortHolder, type ProxySpec } from '../../src/nat/proxy.js';

// Loopback only: every listener binds 127.0.0.1, ports come from binding port 0.

const LO = '127.0.0.1';
const logger = pino({ level: 'silent' });

const hasSs = (() => {
  try {
    execFileSync('ss', ['-V'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
})();

function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(cond: () => boolean, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await sleep(10);
  }
}

async function freeTcpPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, LO, resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function freeUdpPort(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, LO, resolve));
  const { port } = socket.address();
  await new Promise<void>((resolve) => socket.close(resolve));
  return port;
}

/** TCP target: echoes every byte; on the client's end it writes "bye" and ends. */
async function echoServer(): Promise<{ server: net.Server; port: number; sawEnd: Promise<void> }> {
  let markEnd!: () => void;
  const sawEnd = new Promise<void>((resolve) => (markEnd = resolve));
  const server = net.createServer({ allowHalfOpen: true }, (socket) => {
    socket.on('error', () => {});
    socket.on('data', (chunk) => {
      if (!socket.write(chunk)) {
        socket.pause();
        socket.once('drain', () => socket.resume());
      }
    });
    socket.on('end', () => {
      markEnd();
      socket.end('bye');
    });
  });
  await new Promise<void>((resolve) => server.listen(0, LO, resolve));
  return { server, port: (server.address() as net.AddressInfo).port, sawEnd };
}

async function tcpProxy(targetPort: number, opts = {}): Promise<PortProxy> {
  const hostPort = await freeTcpPort();
  return PortProxy.start({ protocol: 'tcp', hostIp: LO, hostPort, targetIp: LO, targetPort }, logger, opts);
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const socket = net.connect({ host: LO, port, allowHalfOpen: true }, () => {
      socket.off('error', reject);
      resolve(socket);
    });
    socket.once('error', reject);
  });
}

/** Everything the socket sends until it ends or closes. */
function readAll(socket: net.Socket): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    socket.on('error', () => {});
    socket.once('end', () => resolve(Buffer.concat(chunks)));
    socket.once('close', () => resolve(Buffer.concat(chunks)));
  });
}

function readBytes(socket: net.Socket, n: number): Promise<Buffer> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const onData = (c: Buffer) => {
      chunks.push(c);
      got += c.length;
      if (got >= n) {
        socket.off('data', onData);
        resolve(Buffer.concat(chunks));
      }
    };
    socket.on('data', onData);
  });
}

const closed = (s: net.Socket) => new Promise<void>((resolve) => (s.destroyed && !s.readable ? resolve() : s.once('close', () => resolve())));

// ---------------------------------------------------------------------------
// TCP

test('tcp: data goes to the target and back, and a half-close passes through both ways', async (t) => {
  const target = await echoServer();
  const proxy = await tcpProxy(target.port);
  t.teardown(() => {
    target.server.close();
    return proxy.stop();
  });

  const client = await connect(proxy.spec.hostPort);
  client.write('hello');
  t.is((await withTimeout(readBytes(client, 5), 2000, 'the echo')).toString(), 'hello');
  t.is(proxy.stats().active, 1);

  const rest = readAll(client);
  client.end();
  await withTimeout(target.sawEnd, 2000, 'the target to see the end');
  // The target answers after the client's end: the proxy kept that direction open.
  t.is((await withTimeout(rest, 2000, 'the reply after the half-close')).toString(), 'bye');
  await withTimeout(closed(client), 2000, 'the client to close');

  await until(() => proxy.stats().active === 0, 2000, 'the connection to be forgotten');
  const stats = proxy.stats();
  t.is(stats.total, 1);
  t.is(stats.bytesToTarget, 5);
  t.is(stats.bytesToClient, 8);
  t.is(stats.failed, 0);
});

test('tcp: 4 MB arrive intact both ways', async (t) => {
  const target = await echoServer();
  const proxy = await tcpProxy(target.port);
  t.teardown(() => {
    target.server.close();
    return proxy.stop();
  });

  const payload = randomBytes(4 * 1024 * 1024);
  const client = await connect(proxy.spec.hostPort);
  const echoed = readAll(client);
  client.end(payload);
  const back = await withTimeout(echoed, 20_000, '4 MB echoed');
  t.is(back.length, payload.length + 3);
  t.is(back.subarray(payload.length).toString(), 'bye');
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  t.is(sha(back.subarray(0, payload.length)), sha(payload));

  await withTimeout(closed(client), 5000, 'the client to close');
  await until(() => proxy.stats().active === 0, 2000, 'the connection to be forgotten');
  t.is(proxy.stats().bytesToTarget, payload.length);
  t.is(proxy.stats().bytesToClient, payload.length + 3);
});

test('tcp: stop() closes open connections, frees the port and is idempotent', async (t) => {
  const target = await echoServer();
  t.teardown(() => target.server.close());
  const proxy = await tcpProxy(target.port);
  const port = proxy.spec.hostPort;

  const clients = await Promise.all([connect(port), connect(port)]);
  for (const c of clients) {
    c.on('error', () => {});
    c.write('x');
    await withTimeout(readBytes(c, 1), 2000, 'the echo');
  }
  t.is(proxy.stats().active, 2);

  await withTimeout(Promise.all([proxy.stop(), proxy.stop()]), 3000, 'stop()');
  await withTimeout(Promise.all(clients.map(closed)), 2000, 'the clients to be closed');
  t.true(proxy.stopped);
  t.is(proxy.stats().active, 0);
  await proxy.stop();

  const again = net.createServer();
  await withTimeout(new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.listen({ host: LO, port, exclusive: true }, resolve);
  }), 2000, 're-listen');
  await new Promise((resolve) => again.close(resolve));
  t.pass();
});

test('tcp: a client of an unreachable target is closed, not left hanging', async (t) => {
  const deadPort = await freeTcpPort();
  const proxy = await tcpProxy(deadPort, { connectTimeoutMs: 1000 });
  t.teardown(() => proxy.stop());

  const client = await connect(proxy.spec.hostPort);
  const data = readAll(client);
  client.write('anyone?');
  t.is((await withTimeout(data, 3000, 'the client to be closed')).length, 0);
  await withTimeout(closed(client), 1000, 'close');
  await until(() => proxy.stats().active === 0, 2000, 'the connection to be forgotten');
  t.is(proxy.stats().failed, 1);
  t.is(proxy.stats().total, 1);

  // The proxy still serves after the failure.
  const client2 = await connect(proxy.spec.hostPort);
  await withTimeout(readAll(client2), 3000, 'the second client to be closed');
  await until(() => proxy.stats().failed === 2, 2000, 'the second failure');
});

// ---------------------------------------------------------------------------
// UDP

/** UDP target: answers "<msg>@<source port>". */
async function udpEchoServer(): Promise<{ socket: dgram.Socket; port: number; sources: Set<number> }> {
  const socket = dgram.createSocket('udp4');
  const sources = new Set<number>();
  socket.on('message', (msg, rinfo) => {
    sources.add(rinfo.port);
    socket.send(`${msg.toString()}@${rinfo.port}`, rinfo.port, rinfo.address);
  });
  await new Promise<void>((resolve) => socket.bind(0, LO, resolve));
  return { socket, port: socket.address().port, sources };
}

async function udpProxy(targetPort: number, opts = {}): Promise<PortProxy> {
  const hostPort = await freeUdpPort();
  return PortProxy.start({ protocol: 'udp', hostIp: LO, hostPort, targetIp: LO, targetPort }, logger, opts);
}

async function udpClient(): Promise<{ socket: dgram.Socket; replies: string[] }> {
  const socket = dgram.createSocket('udp4');
  const replies: string[] = [];
  socket.on('message', (msg) => replies.push(msg.toString()));
  await new Promise<void>((resolve) => socket.bind(0, LO, resolve));
  return { socket, replies };
}

test('udp: two clients each get their own replies through their own flows', async (t) => {
  const target = await udpEchoServer();
  const proxy = await udpProxy(target.port);
  const a = await udpClient();
  const b = await udpClient();
  t.teardown(() => {
    a.socket.close();
    b.socket.close();
    target.socket.close();
    return proxy.stop();
  });

  for (let i = 0; i < 3; i++) {
    a.socket.send(`a${i}`, proxy.spec.hostPort, LO);
    b.socket.send(`b${i}`, proxy.spec.hostPort, LO);
  }
  await until(() => a.replies.length === 3 && b.replies.length === 3, 2000, 'six replies');
  t.true(a.replies.every((r) => r.startsWith('a')), a.replies.join());
  t.true(b.replies.every((r) => r.startsWith('b')), b.replies.join());
  // One source port per client at the target, and it stays the same within a flow.
  t.is(new Set(a.replies.map((r) => r.split('@')[1])).size, 1);
  t.is(new Set(b.replies.map((r) => r.split('@')[1])).size, 1);
  t.is(target.sources.size, 2);

  const stats = proxy.stats();
  t.is(stats.active, 2);
  t.is(stats.total, 2);
  t.is(stats.bytesToTarget, 12);
  t.is(stats.bytesToClient, a.replies.concat(b.replies).reduce((n, r) => n + r.length, 0));
});

test('udp: an idle flow expires and the next datagram starts a new one', async (t) => {
  const target = await udpEchoServer();
  const proxy = await udpProxy(target.port, { udpIdleTimeoutMs: 100 });
  const a = await udpClient();
  t.teardown(() => {
    a.socket.close();
    target.socket.close();
    return proxy.stop();
  });

  a.socket.send('one', proxy.spec.hostPort, LO);
  await until(() => a.replies.length === 1, 2000, 'the first reply');
  t.is(proxy.stats().active, 1);
  await until(() => proxy.stats().active === 0, 2000, 'the flow to expire');

  a.socket.send('two', proxy.spec.hostPort, LO);
  await until(() => a.replies.length === 2, 2000, 'the second reply');
  t.is(proxy.stats().total, 2);
  t.is(target.sources.size, 2, 'the new flow has a new socket');
});

test('udp: the flow bound drops and counts new clients, and frees room on expiry', async (t) => {
  const target = await udpEchoServer();
  const proxy = await udpProxy(target.port, { udpMaxFlows: 2, udpIdleTimeoutMs: 300 });
  const clients = await Promise.all([udpClient(), udpClient(), udpClient()]);
  t.teardown(() => {
    for (const c of clients) c.socket.close();
    target.socket.close();
    return proxy.stop();
  });

  const [a, b, c] = clients;
  a.socket.send('a', proxy.spec.hostPort, LO);
  b.socket.send('b', proxy.spec.hostPort, LO);
  await until(() => a.replies.length === 1 && b.replies.length === 1, 2000, 'two replies');
  c.socket.send('c', proxy.spec.hostPort, LO);
  c.socket.send('c', proxy.spec.hostPort, LO);
  await until(() => proxy.stats().dropped === 2, 2000, 'two drops');
  await sleep(50);
  t.deepEqual(c.replies, []);
  t.is(proxy.stats().active, 2);
  t.is(proxy.stats().total, 2);

  await until(() => proxy.stats().active === 0, 3000, 'the flows to expire');
  c.socket.send('c', proxy.spec.hostPort, LO);
  await until(() => c.replies.length === 1, 2000, 'a reply once there is room');
  t.is(proxy.stats().dropped, 2);
});

test('udp: stop() closes the flows and frees the port', async (t) => {
  const target = await udpEchoServer();
  t.teardown(() => target.socket.close());
  const proxy = await udpProxy(target.port);
  const a = await udpClient();
  t.teardown(() => a.socket.close());
  a.socket.send('x', proxy.spec.hostPort, LO);
  await until(() => a.replies.length === 1, 2000, 'a reply');

  await proxy.stop();
  await proxy.stop();
  t.is(proxy.stats().active, 0);
  const again = dgram.createSocket('udp4');
  await withTimeout(new Promise<void>((resolve, reject) => {
    again.once('error', reject);
    again.bind({ address: LO, port: proxy.spec.hostPort, exclusive: true }, resolve);
  }), 2000, 're-bind');
  await new Promise<void>((resolve) => again.close(resolve));
  t.pass();
});

// ---------------------------------------------------------------------------
// Start errors

test('start: a port in use names its holder', async (t) => {
  const holder = net.createServer();
  await new Promise<void>((resolve) => holder.listen(0, LO, resolve));
  t.teardown(() => holder.close());
  const port = (holder.address() as net.AddressInfo).port;
  const spec: ProxySpec = { protocol: 'tcp', hostIp: LO, hostPort: port, targetIp: LO, targetPort: 9 };

  const err = await t.throwsAsync(PortProxy.start(spec, logger), { instanceOf: ProxyError });
  t.is(err?.code, 'EADDRINUSE');
  t.regex(err?.message ?? '', new RegExp(`^host port ${port}/tcp on 127\\.0\\.0\\.1 is in use by .+: pick another host port or stop that program\\.$`));
  if (hasSs) t.true(err?.message.includes(`by node (pid ${process.pid})`), err?.message);
  else t.true(err?.message.includes('by another program'), err?.message);

  const anon = await t.throwsAsync(PortProxy.start(spec, logger, { findHolder: async () => undefined }), { instanceOf: ProxyError });
  t.is(anon?.message, `host port ${port}/tcp on 127.0.0.1 is in use by another program: pick another host port or stop that program.`);
});

test('start: a UDP port in use names its holder', async (t) => {
  const holder = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => holder.bind(0, LO, resolve));
  t.teardown(() => holder.close());
  const port = holder.address().port;

  const err = await t.throwsAsync(PortProxy.start({ protocol: 'udp', hostIp: LO, hostPort: port, targetIp: LO, targetPort: 9 }, logger), {
    instanceOf: ProxyError,
  });
  t.is(err?.code, 'EADDRINUSE');
  t.regex(err?.message ?? '', new RegExp(`^host port ${port}/udp on 127\\.0\\.0\\.1 is in use by `));
  if (hasSs) t.true(err?.message.includes(`by node (pid ${process.pid})`), err?.message);
});

test('start: an address that is not on this host, and a bad spec, are clear errors', async (t) => {
  const notHere = await t.throwsAsync(
    PortProxy.start({ protocol: 'tcp', hostIp: '192.0.2.123', hostPort: await freeTcpPort(), targetIp: LO, targetPort: 9 }, logger),
    { instanceOf: ProxyError },
  );
  t.is(notHere?.code, 'EADDRNOTAVAIL');
  t.regex(notHere?.message ?? '', /^host address 192\.0\.2\.123 is not on this host: .+\.$/);

  const bad: [Partial<ProxySpec>, RegExp][] = [
    [{ hostPort: 0 }, /^host port 0 is out of range: use a port from 1 to 65535\.$/],
    [{ hostPort: 70000 }, /^host port 70000 is out of range/],
    [{ hostIp: 'localhost' }, /^host address "localhost" is not an IP address: /],
    [{ targetIp: '' }, /^proxy target "" is not an IP address: /],
    [{ targetPort: 1.5 }, /^proxy target port 1\.5 is out of range/],
    [{ protocol: 'sctp' as 'tcp' }, /^protocol "sctp" is not supported by the port proxy: use tcp or udp\.$/],
  ];
  for (const [change, message] of bad) {
    const spec = { protocol: 'tcp', hostIp: LO, hostPort: 8080, targetIp: LO, targetPort: 80, ...change } as ProxySpec;
    const err = await t.throwsAsync(PortProxy.start(spec, logger), { instanceOf: ProxyError, message });
    t.is(err?.code, 'EINVAL');
  }
});

// ---------------------------------------------------------------------------
// parsePortHolder

const SS_TCP = [
  'LISTEN 0      128      0.0.0.0:2024  0.0.0.0:*',
  'LISTEN 0      511    127.0.0.1:41493 0.0.0.0:* users:(("node",pid=21800,fd=19))',
  'LISTEN 0      511          0.0.0.0:80        0.0.0.0:*    users:(("nginx",pid=1235,fd=6),("nginx",pid=1234,fd=6),("nginx",pid=1236,fd=6))',
  'LISTEN 0      4096            [::]:8080         [::]:*    users:(("docker-proxy",pid=999,fd=4))',
  'LISTEN 0      4096               *:9090            *:*    users:(("prometheus",pid=77,fd=7))',
  'LISTEN 0      4096        10.0.0.1:5353      0.0.0.0:*    users:(("far",pid=10,fd=3))',
  'LISTEN 0      4096       127.0.0.1:5353      0.0.0.0:*    users:(("near",pid=11,fd=3))',
  'ESTAB  0      0          127.0.0.1:50000   127.0.0.1:7777  users:(("curl",pid=5,fd=3))',
].join('\n');

const SS_UDP = [
  'udp   UNCONN 0      0      127.0.0.53%lo:53        0.0.0.0:*    users:(("systemd-resolve",pid=612,fd=13))',
  'udp   UNCONN 0      0      [fe80::1]%eth0:546         [::]:*    users:(("dhclient",pid=700,fd=6))',
  'udp   ESTAB  0      0          127.0.0.1:40000   127.0.0.1:53    users:(("dig",pid=800,fd=20))',
].join('\n');

test('parsePortHolder reads the process of the socket on a port', (t) => {
  t.deepEqual(parsePortHolder(SS_TCP, 41493), { program: 'node', pid: 21800 });
  t.deepEqual(parsePortHolder(SS_TCP, 80), { program: 'nginx', pid: 1234 }, 'lowest pid of a shared socket');
  t.deepEqual(parsePortHolder(SS_TCP, 8080), { program: 'docker-proxy', pid: 999 });
  t.deepEqual(parsePortHolder(SS_TCP, 9090), { program: 'prometheus', pid: 77 });
  t.deepEqual(parsePortHolder(SS_UDP, 53), { program: 'systemd-resolve', pid: 612 }, 'Netid column, %scope');
  t.deepEqual(parsePortHolder(SS_UDP, 546), { program: 'dhclient', pid: 700 });
  t.deepEqual(parsePortHolder(SS_UDP, 40000), { program: 'dig', pid: 800 });
});

test('parsePortHolder: nobody when no process is shown, the port differs or only the peer matches', (t) => {
  t.is(parsePortHolder(SS_TCP, 2024), undefined, 'socket without a users field');
  t.is(parsePortHolder(SS_TCP, 4149), undefined, 'a prefix of a port is not the port');
  t.is(parsePortHolder(SS_TCP, 7777), undefined, 'peer port');
  t.is(parsePortHolder(SS_TCP, 50001), undefined);
  t.is(parsePortHolder('', 80), undefined);
  t.is(parsePortHolder('State Recv-Q Send-Q Local Address:Port Peer Address:Port Process\n', 80), undefined);
});

test('parsePortHolder prefers a socket whose address clashes with the host address', (t) => {
  t.deepEqual(parsePortHolder(SS_TCP, 5353, '127.0.0.1'), { program: 'near', pid: 11 });
  t.deepEqual(parsePortHolder(SS_TCP, 5353, '0.0.0.0'), { program: 'far', pid: 10 });
  t.deepEqual(parsePortHolder(SS_TCP, 5353), { program: 'far', pid: 10 });
  t.deepEqual(parsePortHolder(SS_TCP, 5353, '192.168.1.1'), { program: 'far', pid: 10 }, 'no clash: still the best guess');
  t.deepEqual(parsePortHolder(SS_TCP, 8080, '127.0.0.1'), { program: 'docker-proxy', pid: 999 }, '[::] is a wildcard');
});

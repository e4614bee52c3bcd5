/**
 * The controller and an agent reaching etcd over client TLS: a CA, a server
 * certificate for the member and a client certificate made with openssl; the
 * member requires client certificates. The controller and the agent with
 * --etcd-ca/--etcd-cert/--etcd-key work; without them the controller does not
 * start, with one sentence. Underlay 192.168.98.0/24 (etcd at .1), overlay
 * 10.104.0.0/24.
 */
import test from 'ava';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { addNetns, inNetns, must, runPrefix } from './helpers/env.js';
import { CLI, runCli, startDaemon, teardown, type DaemonHandle } from './helpers/daemon.js';
import { addUnderlay } from './helpers/overlay.js';
import { startEtcd, until } from './helpers/controller.js';

const prefix = runPrefix();
const UNDERLAY = '192.168.98';
const ETCD = `https://${UNDERLAY}.1:23790`;
const dir = `/tmp/${prefix}/tls`;
const socket = `${dir}/controller.sock`;
const tls = (name: string): string => `${dir}/${name}`;
const TLS_FLAGS = ['--etcd-ca', tls('ca.pem'), '--etcd-cert', tls('client.pem'), '--etcd-key', tls('client-key.pem')];

let ul: string;
let etcd: ChildProcess | undefined;
let controller: ChildProcess | undefined;
let daemon: DaemonHandle | undefined;

async function openssl(args: string[]): Promise<void> {
  await must('openssl', args);
}

/** A CA, a server certificate for the member's address, and a client certificate, all signed by the CA. */
async function makeCertificates(): Promise<void> {
  await openssl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=vswt-ca', '-keyout', tls('ca-key.pem'), '-out', tls('ca.pem')]);
  for (const [name, cn, ext] of [
    ['server', 'vswt-etcd', `subjectAltName=IP:${UNDERLAY}.1,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth`],
    ['client', 'vswt-client', 'extendedKeyUsage=clientAuth'],
  ]) {
    writeFileSync(tls(`${name}.ext`), `${ext}\n`);
    await openssl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-subj', `/CN=${cn}`, '-keyout', tls(`${name}-key.pem`), '-out', tls(`${name}.csr`)]);
    await openssl(['x509', '-req', '-in', tls(`${name}.csr`), '-CA', tls('ca.pem'), '-CAkey', tls('ca-key.pem'), '-CAcreateserial', '-days', '1', '-extfile', tls(`${name}.ext`), '-out', tls(`${name}.pem`)]);
  }
}

test.before(async () => {
  mkdirSync(dir, { recursive: true });
  await makeCertificates();
  const [host] = await addUnderlay(prefix, 1, 1, UNDERLAY);
  ul = `${prefix}-ul`;
  await must('ip', ['-n', ul, 'addr', 'add', `${UNDERLAY}.1/24`, 'dev', 'br0']);
  await must('ip', ['-n', ul, 'link', 'set', 'lo', 'up']);
  etcd = startEtcd(ul, `${dir}/etcd`, ETCD, 23800, ['--cert-file', tls('server.pem'), '--key-file', tls('server-key.pem'), '--trusted-ca-file', tls('ca.pem'), '--client-cert-auth']);
  controller = spawn('ip', ['netns', 'exec', ul, 'node', CLI, 'controller', '--etcd', ETCD, '--socket', socket, ...TLS_FLAGS], { stdio: 'ignore' });
  await until('the controller answers', async () => (await runCli(['--controller', socket, 'network', 'ls', '--json'])).code === 0);
  daemon = await startDaemon(prefix, { netns: host.ns, name: 'h1', extraArgs: ['--agent', '--etcd', ETCD, '--host', 'h1', '--vtep', host.ip, ...TLS_FLAGS] });
});

test.after.always(async () => {
  controller?.kill('SIGTERM');
  etcd?.kill('SIGTERM');
  await sleep(300);
  try {
    await teardown(prefix, daemon);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test.serial('with client TLS the controller and an agent work: an endpoint made through the controller is applied on its host', async (t) => {
  const net = `${prefix}-tls`;
  const ns = `${prefix}-c1`;
  await addNetns(ns);
  t.is((await runCli(['--controller', socket, 'network', 'create', '-d', 'overlay', '--subnet', '10.104.0.0/24', '--vni', '4204', '--hosts', 'h1', net])).code, 0);
  t.is((await runCli(['--controller', socket, 'endpoint', 'create', '--network', net, '--host', 'h1', '--netns', ns, '--name', `${prefix}-e1`])).code, 0);
  await until('applied on h1', async () => {
    const r = await runCli(['--controller', socket, 'endpoint', 'inspect', `${prefix}-e1`]);
    return r.code === 0 && (JSON.parse(r.stdout) as { status: Record<string, { state: string }> }).status.h1?.state === 'applied';
  });
  const ep = JSON.parse((await runCli(['--controller', socket, 'endpoint', 'inspect', `${prefix}-e1`])).stdout) as { ip: string };
  t.regex((await inNetns(ns, 'ip', ['-4', '-o', 'addr'])).stdout, new RegExp(ep.ip.replace(/\./g, '\\.')), 'the endpoint has its address in its namespace');
  await runCli(['--controller', socket, 'endpoint', 'rm', `${prefix}-e1`]);
  await until('removed from h1', async () => (await daemon!.vswJson<unknown[]>(['endpoint', 'ls', '--json'])).length === 0);
  await runCli(['--controller', socket, 'network', 'rm', net]);
  await until('the network left h1', async () => (await daemon!.vswJson<unknown[]>(['network', 'ls', '--json'])).length === 0);
});

test.serial('without the TLS files the controller cannot reach the member and stops with one sentence; half the TLS flags are refused at once', async (t) => {
  const started = Date.now();
  const r = await inNetns(ul, 'timeout', ['30', 'node', CLI, 'controller', '--etcd', ETCD, '--socket', `${dir}/other.sock`], { timeoutMs: 40_000 });
  t.log(`refused after ${Date.now() - started} ms: ${r.stderr.trim()}`);
  t.not(r.code, 0);
  t.not(r.code, 124, 'it stopped by itself, not by the timeout');
  t.regex(r.stderr.trim(), /^vsw: .*\.$/);
  t.notRegex(r.stderr, /\n\s+at /, 'no stack trace');
  const half = await inNetns(ul, 'node', [CLI, 'controller', '--etcd', ETCD, '--socket', `${dir}/other.sock`, '--etcd-ca', tls('ca.pem')]);
  t.regex(half.stderr.trim(), /^vsw: etcd client TLS needs all three of --etcd-ca, --etcd-cert and --etcd-key\.$/);
});

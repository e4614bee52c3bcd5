/** `vsw capture`'s reading of its command line: destination, format, points, numbers, file errors. */
import test from 'ava';
import { captureDestination, captureRequest, fileError } from '../../src/cli/commands/capture.js';

const toFile = { path: '/tmp/x.pcapng' };

test('binary to a terminal is refused unless -w says where; -w - and a pipe mean stdout', (t) => {
  t.throws(() => captureDestination(undefined, true), { message: /writes a binary capture file: pass -w FILE\.pcap, or pipe it into a reader/ });
  t.deepEqual(captureDestination(undefined, false), { stdout: true });
  t.deepEqual(captureDestination('-', true), { stdout: true });
  t.deepEqual(captureDestination('/tmp/x.pcap', true), { path: '/tmp/x.pcap' });
});

test('the format follows the file name unless --format says otherwise; stdout gets pcap', (t) => {
  t.is(captureRequest('web1', { point: 'ingress,egress' }, toFile).format, 'pcapng');
  t.is(captureRequest('web1', { point: 'ingress,egress' }, { path: '/tmp/x.pcap' }).format, 'pcap');
  t.is(captureRequest('web1', { point: 'ingress,egress', format: 'pcap' }, toFile).format, 'pcap');
  t.is(captureRequest('web1', { point: 'ingress,egress' }, { stdout: true }).format, 'pcap');
});

test('points, count and snaplen become the request; a point named twice counts once', (t) => {
  t.deepEqual(captureRequest('web1', { point: 'drop, ingress,drop', count: '10', snaplen: '128' }, toFile), {
    target: 'web1',
    points: ['drop', 'ingress'],
    format: 'pcapng',
    count: 10,
    snaplen: 128,
  });
});

test('every mistake is one sentence naming the flag', (t) => {
  const bad: [object, RegExp][] = [
    [{ point: 'in' }, /^--point takes ingress, egress, drop or a comma list of them such as ingress,drop; got "in"\.$/],
    [{ point: '' }, /^--point takes/],
    [{ point: 'ingress', count: '0' }, /^-c takes a whole number of frames from 1 to 1000000000; got "0"\.$/],
    [{ point: 'ingress', count: '1.5' }, /^-c takes/],
    [{ point: 'ingress', count: '-3' }, /^-c takes/],
    [{ point: 'ingress', snaplen: '65536' }, /^-s takes a whole number of bytes from 1 to 65535; got "65536"\.$/],
    [{ point: 'ingress', format: 'pcap-ng' }, /^--format takes pcap or pcapng; got "pcap-ng"\.$/],
  ];
  for (const [opts, re] of bad) t.throws(() => captureRequest('web1', opts as { point: string }, toFile), { message: re }, JSON.stringify(opts));
});

test('a file that cannot be written is named with what to do', (t) => {
  const err = (code: string) => Object.assign(new Error(code), { code });
  t.is(fileError('/x/y.pcap', err('ENOENT')), 'cannot write /x/y.pcap: its directory does not exist; create it or pick another -w path.');
  t.is(fileError('/x/y.pcap', err('EACCES')), 'cannot write /x/y.pcap: permission denied; pick a path you may write with -w.');
  t.is(fileError('/tmp/', err('EISDIR')), '/tmp/ is a directory: give -w a file name such as /tmp/capture.pcap.');
  t.is(fileError('/x/y.pcap', err('EROFS')), 'cannot write /x/y.pcap: the file system is read-only; pick another -w path.');
  t.is(fileError('/x/y.pcap', err('EMFILE')), 'cannot write /x/y.pcap (EMFILE): pick another -w path.');
});

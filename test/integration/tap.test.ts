/**
 * TAP creation inside a namespace from the calling thread (setns there and
 * back), exclusivity, and persistent TAPs re-attached by name: what a daemon
 * restart will rely on to keep containers' interfaces.
 */
import test from 'ava';
import { readlinkSync } from 'node:fs';
import { createNetns, netnsPath } from '../../src/host/index.js';
import { closeFd, tapOpen, tapSetPersist } from '../../src/native/index.js';
import { removeEverything, runPrefix, sh } from './helpers/env.js';

const prefix = runPrefix();
const ns = `${prefix}-tap`;

test.before(async () => {
  await createNetns(ns);
});

test.after.always(async () => {
  await removeEverything(prefix);
});

async function tapInNetns(name: string): Promise<boolean> {
  return (await sh('ip', ['-n', ns, 'link', 'show', name])).code === 0;
}

test.serial('a TAP is created inside the namespace and the thread comes back to its own', async (t) => {
  const ownBefore = readlinkSync('/proc/thread-self/ns/net');
  const fd = tapOpen({ name: 'eth0', netns: netnsPath(ns) });
  try {
    t.is(readlinkSync('/proc/thread-self/ns/net'), ownBefore);
    t.true(await tapInNetns('eth0'));
    t.throws(() => tapOpen({ name: 'eth0', netns: netnsPath(ns) }), { message: /TUNSETIFF on eth0: .*(EBUSY|EEXIST)/ });
  } finally {
    closeFd(fd);
  }
  t.false(await tapInNetns('eth0'), 'a non-persistent TAP goes with its fd');
});

test.serial('a persistent TAP outlives its fd and is re-attached by name', async (t) => {
  const first = tapOpen({ name: 'eth9', netns: netnsPath(ns), persist: true });
  await sh('ip', ['-n', ns, 'addr', 'add', '10.70.0.9/24', 'dev', 'eth9']);
  closeFd(first);
  t.true(await tapInNetns('eth9'), 'still there after close');
  const again = tapOpen({ name: 'eth9', netns: netnsPath(ns), exclusive: false });
  const addrs = await sh('ip', ['-n', ns, '-br', 'addr', 'show', 'eth9']);
  t.regex(addrs.stdout, /10\.70\.0\.9\/24/, 'the address survived the re-attach');
  tapSetPersist(again, false);
  closeFd(again);
  t.false(await tapInNetns('eth9'), 'gone once no longer persistent and closed');
});

test.serial('bad names and namespaces are refused with the reason', (t) => {
  t.throws(() => tapOpen({ name: 'x'.repeat(16), netns: netnsPath(ns) }), { message: /1 to 15 bytes/ });
  t.throws(() => tapOpen({ name: 'eth0', netns: `/run/netns/${prefix}-missing` }), { message: /open network namespace .*No such file or directory \(ENOENT\)/ });
  t.is(readlinkSync('/proc/thread-self/ns/net'), readlinkSync('/proc/self/ns/net'));
});

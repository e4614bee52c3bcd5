/**
 * The state directory (src/service/state-file.ts) on a real file system:
 * writes that land whole, refusals of files this build cannot read (one
 * sentence naming the file, the file untouched), the lock, and the runtime
 * snapshot that is used at most once and only with the state it was taken at.
 */
import test from 'ava';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseState, STATE_VERSION, StateFileError, StateStore, type SavedState } from '../../src/service/state-file.js';

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'vswt-state-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function state(generation: number): SavedState {
  return {
    version: STATE_VERSION,
    id: 'a1b2c3d4e5f60718',
    generation,
    written: new Date(0).toISOString(),
    networks: [{ network: { name: 'n', id: 1, driver: 'internal', subnet: '10.9.0.0/24', gateway: null, created: '' }, ipam: { allocated: ['10.9.0.2'] } }],
    endpoints: [],
    compartments: [{ name: 'c1', created: '' }],
    host: { forwardingSetByVsw: false, nftTables: [] },
  };
}

/** One sentence: ends with a period, no line break, names the file. */
function oneSentenceNaming(t: { regex(s: string, r: RegExp, m?: string): void; true(v: boolean, m?: string): void }, message: string, path: string): void {
  t.regex(message, /\.$/);
  t.true(!message.includes('\n'), message);
  t.true(message.includes(path), `names ${path}: ${message}`);
}

test('save writes the whole state and load reads back the same; no temporary file is left', async (t) => {
  const dir = tempDir(t);
  const store = await StateStore.open(dir);
  t.teardown(() => store.close());
  t.is(await store.load(), null, 'a first start has no state');
  await store.save(state(1));
  await store.save(state(2));
  t.deepEqual(await store.load(), state(2));
  t.deepEqual(readdirSync(dir).sort(), ['lock', 'state.json']);
  t.is(statSync(join(dir, 'state.json')).mode & 0o777, 0o600);
});

test('a second store on the same directory is refused with one sentence naming it and the holder', async (t) => {
  const dir = tempDir(t);
  const first = await StateStore.open(dir);
  const err = await t.throwsAsync(StateStore.open(dir), { instanceOf: StateFileError });
  oneSentenceNaming(t, err!.message, dir);
  t.regex(err!.message, new RegExp(`pid ${process.pid}`));
  first.close();
  const again = await StateStore.open(dir);
  again.close();
  t.pass('the lock is free once its holder closes it');
});

const refusals: [string, string, RegExp][] = [
  ['not JSON', '{"version": 1, "generation": ', /is not valid JSON/],
  ['no version', '{"networks": []}', /is not a vsw state file/],
  ['a future version', JSON.stringify({ ...state(3), version: 99 }), /format version 99, which this vsw does not know/],
  ['a damaged shape', JSON.stringify({ ...state(3), endpoints: 'x' }), /is damaged \(its "endpoints" is not a list\)/],
  ['an endpoint on a missing network', JSON.stringify({ ...state(3), endpoints: [{ endpoint: { id: 'e', netns: 'n', ifname: 'eth0', ip: '10.9.0.2', mac: '02:00:00:00:00:01', portId: 1, network: 'gone' }, policy: { layers: [] } }] }), /network gone, which the file does not have/],
];

for (const [what, text, why] of refusals) {
  test(`a state file with ${what} is refused in one sentence and left as it was`, async (t) => {
    const dir = tempDir(t);
    const path = join(dir, 'state.json');
    writeFileSync(path, text);
    const before = statSync(path).mtimeMs;
    const store = await StateStore.open(dir);
    t.teardown(() => store.close());
    const err = await t.throwsAsync(store.load(), { instanceOf: StateFileError });
    t.regex(err!.message, why);
    oneSentenceNaming(t, err!.message, path);
    t.is(readFileSync(path, 'utf8'), text, 'not a byte changed');
    t.is(statSync(path).mtimeMs, before);
  });
}

test('parseState takes what save writes', (t) => {
  t.deepEqual(parseState(JSON.stringify(state(5)), '/x/state.json'), state(5));
});

test('the runtime snapshot comes back once, only for the state and generation it was taken at', async (t) => {
  const dir = tempDir(t);
  const store = await StateStore.open(dir);
  t.teardown(() => store.close());
  const snapshot = { conntrack: Uint32Array.from({ length: 30 }, (_, i) => i * 7), nat: [{ networkId: 3, mappings: Uint32Array.from([1, 2, 3, 4, 5, 6, 7, 0]) }] };
  const at = { id: 'a1b2c3d4e5f60718', generation: 4 };
  await store.saveRuntime(snapshot, at.id, at.generation);
  const discarded: string[] = [];
  const got = await store.takeRuntime(at, (r) => discarded.push(r));
  t.deepEqual(discarded, []);
  t.deepEqual(got?.snapshot, snapshot);
  t.true(got!.downtimeMs >= 0 && got!.downtimeMs < 60_000);
  t.false(existsSync(store.runtimePath), 'used once: deleted on reading');
  t.is(await store.takeRuntime(at, (r) => discarded.push(r)), null);

  const refusedAt: [{ id: string; generation: number } | null, RegExp][] = [
    [{ ...at, generation: 5 }, /saved at state generation 4, the state is at 5/],
    [{ ...at, id: 'ffffffffffffffff' }, /belongs to another state/],
    [null, /no saved state it could belong to/],
  ];
  for (const [state, why] of refusedAt) {
    await store.saveRuntime(snapshot, at.id, at.generation);
    t.is(await store.takeRuntime(state, (r) => discarded.push(r)), null, String(why));
    t.regex(discarded.pop() ?? '', why);
    t.false(existsSync(store.runtimePath), 'deleted all the same');
  }

  writeFileSync(store.runtimePath, '{"version":1,"stateId":"a1b2c3d4e5f60718","generation":4,"savedAt":0,"conntrack":30,"nat":[]}\n\u0001\u0002');
  t.is(await store.takeRuntime(at, (r) => discarded.push(r)), null);
  t.regex(discarded.pop() ?? '', /truncated/);
});

test('removeFiles leaves only the lock; the directory is not refused afterwards', async (t) => {
  const dir = tempDir(t);
  const store = await StateStore.open(dir);
  await store.save(state(1));
  await store.saveRuntime({ conntrack: new Uint32Array(0), nat: [] }, 'a1b2c3d4e5f60718', 1);
  await store.removeFiles();
  t.deepEqual(readdirSync(dir), ['lock']);
  store.close();
});

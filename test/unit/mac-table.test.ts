import test from 'ava';
import { MacTable } from '../../src/switch/mac-table.js';

const NET = 7;

function macLo(i: number): number {
  return (0x10000000 + i) >>> 0;
}

test('learns, looks up and keeps networks apart', (t) => {
  const table = new MacTable({ maxEntries: 16, agingSeconds: 10 });
  table.learn(NET, 0x0276, 0x0a000002, 3, 0);
  t.is(table.lookup(NET, 0x0276, 0x0a000002, 1), 3);
  t.is(table.lookup(NET + 1, 0x0276, 0x0a000002, 1), -1, 'same MAC in another network is unknown');
  t.is(table.lookup(NET, 0x0276, 0x0a000003, 1), -1);
  t.is(table.counters().learned, 1);
});

test('a MAC seen on another port moves and is counted', (t) => {
  const table = new MacTable();
  table.learn(NET, 1, 2, 3, 0);
  table.learn(NET, 1, 2, 4, 1);
  t.is(table.lookup(NET, 1, 2, 2), 4);
  t.is(table.counters().moved, 1);
  t.is(table.size, 1);
});

test('entries age out on lookup and on sweep', (t) => {
  const table = new MacTable({ maxEntries: 64, agingSeconds: 1 });
  table.learn(NET, 1, macLo(1), 1, 0);
  table.learn(NET, 1, macLo(2), 2, 0);
  table.learn(NET, 1, macLo(3), 3, 900);
  t.is(table.lookup(NET, 1, macLo(1), 1500), -1, 'older than 1 s');
  t.is(table.counters().aged, 1);
  t.is(table.sweep(1500), 1, 'the second stale entry goes in the sweep');
  t.is(table.lookup(NET, 1, macLo(3), 1500), 3, 'a fresh one stays');
  t.is(table.size, 1);
  t.is(table.counters().aged, 2);
});

test('refreshing an entry keeps it alive', (t) => {
  const table = new MacTable({ agingSeconds: 1 });
  table.learn(NET, 1, 1, 1, 0);
  table.learn(NET, 1, 1, 1, 800);
  t.is(table.lookup(NET, 1, 1, 1700), 1);
});

test('the bound holds: evictions are counted and the newest MACs stay', (t) => {
  const table = new MacTable({ maxEntries: 100, agingSeconds: 3600 });
  for (let i = 0; i < 1000; i++) table.learn(NET, 0x0200, macLo(i), i % 5, i);
  t.is(table.size, 100);
  const c = table.counters();
  t.is(c.learned, 1000);
  t.is(c.evicted, 900);
  t.is(table.lookup(NET, 0x0200, macLo(999), 1000), 999 % 5, 'the last learned MAC is present');
  let recent = 0;
  for (let i = 900; i < 1000; i++) if (table.lookup(NET, 0x0200, macLo(i), 1000) >= 0) recent++;
  t.true(recent >= 60, `most of the 100 newest MACs survive approximate LRU (got ${recent})`);
});

test('every remaining entry stays reachable after heavy deletion (backward shift)', (t) => {
  const table = new MacTable({ maxEntries: 512 });
  for (let i = 0; i < 500; i++) table.learn(NET, 0, macLo(i), i, 0);
  for (let i = 0; i < 500; i += 3) table.learn(NET, 0, macLo(i), 10_000, 0);
  t.is(table.flushPort(10_000), 167);
  for (let i = 0; i < 500; i++) {
    const expected = i % 3 === 0 ? -1 : i;
    if (table.lookup(NET, 0, macLo(i), 1) !== expected) {
      t.fail(`MAC ${i}: expected ${expected}`);
      return;
    }
  }
  t.is(table.size, 333);
});

test('flushNetwork forgets one network only', (t) => {
  const table = new MacTable();
  table.learn(1, 0, 1, 1, 0);
  table.learn(2, 0, 1, 2, 0);
  t.is(table.flushNetwork(1), 1);
  t.is(table.lookup(1, 0, 1, 0), -1);
  t.is(table.lookup(2, 0, 1, 0), 2);
});

test('entries() formats MACs for operators', (t) => {
  const table = new MacTable();
  table.learn(3, 0x0276, 0x0a320002, 9, 0);
  t.deepEqual(table.entries(2000), [{ networkId: 3, mac: '02:76:0a:32:00:02', portId: 9, ageSeconds: 2 }]);
});

test('refuses nonsense bounds', (t) => {
  t.throws(() => new MacTable({ maxEntries: 0 }), { instanceOf: RangeError });
  t.throws(() => new MacTable({ agingSeconds: 0 }), { instanceOf: RangeError });
});

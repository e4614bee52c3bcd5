import test from 'ava';
import { NetworkNames, normalizeName, reverseIpv4, reverseIpv6Key } from '../../src/dns/names.js';
import { mustParseIpv4Addr } from '../../src/packet/ipv4.js';

function mynet(): NetworkNames {
  const names = new NetworkNames('MyNet');
  t0(names.add({ owner: 'ep-1', name: 'web', ipv4: ['10.88.0.10'], ipv6: ['fd00::a'] }));
  t0(names.add({ owner: 'lb-1', name: 'api', ipv4: ['10.88.0.100'] }));
  return names;
}

function t0(refusal: string | null): void {
  if (refusal !== null) throw new Error(refusal);
}

test('a name answers as NAME and NAME.NETWORK, without case, a trailing dot tolerated', (t) => {
  const names = mynet();
  t.is(names.zone, 'mynet');
  for (const q of ['web', 'web.mynet', 'WEB.MyNet.', 'Web.']) {
    const e = names.lookup(normalizeName(q));
    t.truthy(e, q);
    t.is(e!.owner, 'ep-1');
    t.is(e!.fqdn, 'web.mynet');
    t.deepEqual([...e!.ipv4], [mustParseIpv4Addr('10.88.0.10')]);
    t.is(e!.ipv6Count, 1);
  }
  t.is(names.lookup('api.mynet')!.owner, 'lb-1');
  t.is(names.lookup('db'), undefined);
  t.is(names.lookup('web.other'), undefined);
  t.is(names.size, 2);
});

test('the network is authoritative under its name, and only there', (t) => {
  const names = mynet();
  t.true(names.inZone('mynet'));
  t.true(names.inZone('db.mynet'));
  t.true(names.inZone('a.b.mynet'));
  t.false(names.inZone('notmynet'), 'a suffix that is not a label boundary');
  t.false(names.inZone('example.com'));
  t.false(names.inZone('web'));
});

test('PTR names of in-addr.arpa and ip6.arpa find the names of an address', (t) => {
  const names = mynet();
  t.is(names.reverse('10.0.88.10.in-addr.arpa')?.[0].fqdn, 'web.mynet');
  t.is(names.reverse('100.0.88.10.in-addr.arpa')?.[0].fqdn, 'api.mynet');
  t.is(names.reverse('11.0.88.10.in-addr.arpa'), undefined);
  const v6 = `a.${'0.'.repeat(28)}0.d.f.ip6.arpa`;
  t.is(names.reverse(v6)?.[0].owner, 'ep-1');
  t.is(names.reverse('web.mynet'), undefined);

  t.is(reverseIpv4('4.3.2.1.in-addr.arpa'), mustParseIpv4Addr('1.2.3.4'));
  t.is(reverseIpv4('255.255.255.255.in-addr.arpa'), 0xffffffff);
  for (const bad of ['3.2.1.in-addr.arpa', '5.4.3.2.1.in-addr.arpa', '256.3.2.1.in-addr.arpa', '04.3.2.1.in-addr.arpa', '4..2.1.in-addr.arpa', 'x.3.2.1.in-addr.arpa', 'in-addr.arpa', '4.3.2.1.in-addr.arpa.com']) {
    t.is(reverseIpv4(bad), -1, bad);
  }
  t.is(reverseIpv6Key(v6), 'fd00' + '0'.repeat(27) + 'a');
  t.is(reverseIpv6Key(v6.replace('a.', 'g.')), null);
  t.is(reverseIpv6Key(v6.slice(2)), null, '31 nibbles');
  t.is(reverseIpv6Key(v6.replace('a.0', 'a0.')), null);
});

test('a name that exists on the network is refused with a sentence, in either form', (t) => {
  const names = mynet();
  const taken = names.add({ owner: 'ep-2', name: 'WEB', ipv4: ['10.88.0.11'] });
  t.regex(taken ?? '', /^the name web is taken on network MyNet by ep-1/);
  const clash = names.add({ owner: 'ep-2', name: 'web.mynet', ipv4: ['10.88.0.11'] });
  t.regex(clash ?? '', /would answer for web\.mynet, which ep-1's name web answers for/);
  t.truthy(names.add({ owner: 'ep-1', name: 'web' }), 'the same owner twice is refused as well');
  t.regex(names.add({ owner: 'ep-2', name: 'bad name' }) ?? '', /is not a DNS name/);
  t.regex(names.add({ owner: 'ep-2', name: 'a..b' }) ?? '', /is not a DNS name/);
  t.regex(names.add({ owner: 'ep-2', name: 'x'.repeat(64) }) ?? '', /is not a DNS name/);
  t.regex(names.add({ owner: 'ep-2', name: 'db', ipv4: ['10.88.0.300'] }) ?? '', /not an IPv4 address/);
  t.regex(names.add({ owner: 'ep-2', name: 'db', ipv6: ['fd00::g'] }) ?? '', /not an IPv6 address/);
  t.is(names.size, 2, 'nothing changed');
  t.is(names.add({ owner: 'ep-2', name: 'db_1', ipv4: ['10.88.0.11'] }), null, "underscores are fine (docker's names have them)");
  t.is(names.refusal({ owner: 'x', name: 'db_1' }), names.add({ owner: 'x', name: 'db_1' }), 'refusal says what add would');
});

test('names go with their owner, and replace is all or nothing', (t) => {
  const names = mynet();
  t.is(names.add({ owner: 'ep-1', name: 'www', ipv4: ['10.88.0.10'] }), null);
  t.is(names.remove('ep-1'), 2);
  t.is(names.lookup('web'), undefined);
  t.is(names.lookup('www.mynet'), undefined);
  t.is(names.reverse('10.0.88.10.in-addr.arpa'), undefined);
  t.is(names.remove('ep-1'), 0);

  t.is(names.replace('lb-1', [{ name: 'api', ipv4: ['10.88.0.101'] }, { name: 'api2', ipv4: ['10.88.0.101'] }]), null, 'an owner may keep its own name');
  t.is(names.lookup('api')!.record.ipv4![0], '10.88.0.101');
  t.is(names.reverse('101.0.88.10.in-addr.arpa')?.length, 2, 'two names, one address: both PTRs');
  t.is(names.reverse('100.0.88.10.in-addr.arpa'), undefined, 'the old address went');
  t.is(names.add({ owner: 'ep-9', name: 'other' }), null);
  const refused = names.replace('lb-1', [{ name: 'api' }, { name: 'other' }]);
  t.regex(refused ?? '', /taken on network MyNet by ep-9/);
  t.truthy(names.lookup('api2'), 'a refused replace changes nothing');
  t.regex(names.replace('lb-1', [{ name: 'x' }, { name: 'X.' }]) ?? '', /given twice/);
});

test('load replaces everything at once, and records() gives back what was loaded', (t) => {
  const names = mynet();
  const records = [
    { owner: 'ep-3', name: 'Cache', ipv4: ['10.88.0.30'] },
    { owner: 'ep-4', name: 'queue', ipv4: ['10.88.0.40'], ipv6: ['fd00::28'] },
  ];
  t.is(names.load(records), null);
  t.is(names.lookup('web'), undefined);
  t.is(names.lookup('cache.mynet')!.owner, 'ep-3');
  t.deepEqual(names.records(), [
    { owner: 'ep-3', name: 'cache', ipv4: ['10.88.0.30'] },
    { owner: 'ep-4', name: 'queue', ipv4: ['10.88.0.40'], ipv6: ['fd00::28'] },
  ]);
  t.regex(names.load([...records, { owner: 'ep-5', name: 'cache' }]) ?? '', /taken/);
  t.truthy(names.lookup('queue'), 'a refused load changes nothing');
});

test('a network whose name is no DNS name serves bare names only', (t) => {
  const names = new NetworkNames('a..b');
  t.is(names.zone, null);
  t.is(names.add({ owner: 'e', name: 'web', ipv4: ['10.0.0.1'] }), null);
  t.truthy(names.lookup('web'));
  t.is(names.lookup('web.a..b'), undefined);
  t.false(names.inZone('x.a..b'));
  t.is(names.lookup('web')!.fqdn, 'web');
  t.regex(new NetworkNames(Array(4).fill('n'.repeat(49)).join('.')).add({ owner: 'e', name: 'x'.repeat(60) }) ?? '', /too long with the network's suffix/);
});

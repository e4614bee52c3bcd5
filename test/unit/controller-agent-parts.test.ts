/**
 * The parts the controller's agent leans on at scale, without etcd or a
 * kernel: many endpoints' groups put as one change and saved once (one
 * refused group fails alone; a failed save puts every one back), and the
 * agent's copy of the state, read one kind at a time.
 */
import test from 'ava';
import { pino } from 'pino';
import { StateCopy } from '../../src/controller/agent.js';
import { Keys } from '../../src/controller/layout.js';
import type { Endpoint } from '../../src/service/api-types.js';
import { PolicyService, type PolicyDataPlane } from '../../src/service/policies.js';
import { State } from '../../src/service/state.js';
import type { PortPolicy } from '../../src/vfp/policy.js';

function stateWith(count: number): State {
  const state = new State(64);
  for (let i = 1; i <= count; i++) {
    const endpoint = { id: `e${i}`, name: `ep${i}`, network: 'n', netns: `c${i}`, ifname: 'eth0', mac: `02:00:00:00:00:0${i}`, ip: `10.0.0.${i + 1}`, prefixLength: 24, portId: i, created: '', ownedCompartment: false } as Endpoint;
    const policy: PortPolicy = { layers: [], spoofGuard: { enabled: false, mac: endpoint.mac, ips: [] }, qos: null };
    state.endpoints.set(endpoint.id, { endpoint, fd: -1, down: null, networkId: 1, policy });
  }
  return state;
}

function recordingDataPlane(): { dp: PolicyDataPlane; installed: Map<number, PortPolicy> } {
  const installed = new Map<number, PortPolicy>();
  const dp = { setPolicy: async (portId: number, policy: PortPolicy) => void installed.set(portId, policy) } as unknown as PolicyDataPlane;
  return { dp, installed };
}

const group = (port: number, id?: string) => ({ priority: 100, rules: [{ ...(id === undefined ? {} : { id }), priority: 10, action: 'block' as const, direction: 'in' as const, match: { protocol: 'tcp' as const, dstPorts: String(port) } }] });

test('putGroups: every endpoint gets its group with one save; a group refused on one endpoint fails alone with its sentence', async (t) => {
  const state = stateWith(3);
  const { dp, installed } = recordingDataPlane();
  let saves = 0;
  const policies = new PolicyService(state, dp, pino({ level: 'silent' }), async () => void saves++);
  // ep2 already has a rule id "x" in another group: the new group's rule "x" must be refused there.
  await policies.putGroup('e2', 'acl', 'other', group(1, 'x'));
  saves = 0;
  const outcomes = await policies.putGroups(['e1', 'e2', 'e3'].map((endpoint) => ({ endpoint, layer: 'acl', group: 'scale', req: group(22, 'x') })));
  t.is(outcomes[0], null);
  t.regex(outcomes[1] ?? '', /rule id x is used in another group/);
  t.is(outcomes[2], null);
  t.is(saves, 1, 'one save for the whole change');
  t.deepEqual(state.endpoints.get('e1')!.policy.layers[0].groups.map((g) => g.name), ['scale']);
  t.deepEqual(state.endpoints.get('e2')!.policy.layers[0].groups.map((g) => g.name), ['other'], 'the refused endpoint keeps what it had');
  t.is(installed.get(3)?.layers[0].groups[0].name, 'scale', 'installed in the data plane');
});

test('putGroups: when the save fails, every endpoint has its previous policy again, in the data plane too, and every group fails with the reason', async (t) => {
  const state = stateWith(2);
  const { dp, installed } = recordingDataPlane();
  const policies = new PolicyService(state, dp, pino({ level: 'silent' }), async () => {
    throw new Error('the disk is full');
  });
  const outcomes = await policies.putGroups(['e1', 'e2'].map((endpoint) => ({ endpoint, layer: 'acl', group: 'scale', req: group(22) })));
  t.deepEqual(outcomes, ['the disk is full', 'the disk is full']);
  for (const [id, port] of [['e1', 1], ['e2', 2]] as const) {
    t.deepEqual(state.endpoints.get(id)!.policy.layers, [], `${id}'s policy is back`);
    t.deepEqual(installed.get(port)?.layers, [], `${id}'s data plane policy is back`);
  }
});

test('StateCopy: one kind read without the others, changes counted per kind, unknown keys ignored', (t) => {
  const copy = new StateCopy([Keys.endpoints, Keys.realized, Keys.statusOf('h1')]);
  copy.set(Keys.endpoint('blue', 'a'), { value: 1, revision: 5 });
  copy.set(Keys.realizedEndpoint('blue', 'a'), { value: 2, revision: 6 });
  copy.set(Keys.realizedEndpoint('red', 'b'), { value: 3, revision: 7 });
  copy.set(Keys.objectStatus('h2', 'endpoints', 'blue/a'), { value: 4, revision: 8 });
  t.deepEqual(copy.entries(Keys.realizedOf('blue')).map(([k]) => k), [Keys.realizedEndpoint('blue', 'a')]);
  t.is(copy.entries(Keys.realized).length, 2);
  t.is(copy.get(Keys.objectStatus('h2', 'endpoints', 'blue/a')), undefined, "another host's status is not kept");
  const before = copy.changesOf(Keys.realized);
  copy.set(Keys.endpoint('blue', 'c'), { value: 9, revision: 9 });
  t.is(copy.changesOf(Keys.realized), before, 'an endpoint change is not a realized change');
  copy.delete(Keys.realizedEndpoint('red', 'b'));
  t.is(copy.changesOf(Keys.realized), before + 1);
  copy.delete(Keys.realizedEndpoint('red', 'b'));
  t.is(copy.changesOf(Keys.realized), before + 1, 'deleting what is not there changes nothing');
  t.is(copy.get(Keys.endpoint('blue', 'a'))?.revision, 5);
});

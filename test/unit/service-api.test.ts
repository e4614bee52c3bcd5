import test from 'ava';
import { HostError } from '../../src/host/index.js';
import { classifyError } from '../../src/service/api.js';
import { conflict, notFound, sentence } from '../../src/service/errors.js';
import { IdPool } from '../../src/service/id-pool.js';
import { IpamError } from '../../src/service/ipam.js';
import { Mutex } from '../../src/service/mutex.js';
import { createEndpointSchema, createNetworkSchema, describeViolation } from '../../src/service/schemas.js';

const net = createNetworkSchema.fields;

test('a missing field names the flag that supplies it', (t) => {
  const msg = describeViolation({ keyword: 'required', instancePath: '', params: { missingProperty: 'subnet' } }, 'body', net);
  t.is(msg, 'body.subnet is required: pass --subnet CIDR.');
});

test('an unknown field is named as such', (t) => {
  const msg = describeViolation({ keyword: 'additionalProperties', instancePath: '', params: { additionalProperty: 'x' } }, 'body', net);
  t.is(msg, 'unknown field "x" in the request body.');
  const inQuery = describeViolation({ keyword: 'additionalProperties', instancePath: '', params: { additionalProperty: 'q' } }, 'querystring', {});
  t.is(inQuery, 'unknown field "q" in the query string.');
});

test('an enum violation lists the allowed values', (t) => {
  const msg = describeViolation({ keyword: 'enum', instancePath: '/driver', params: { allowedValues: ['internal', 'nat'] } }, 'body', net);
  t.is(msg, 'body.driver must be one of internal, nat: pass -d internal.');
});

test('a type or pattern violation says what the field must look like', (t) => {
  const msg = describeViolation({ keyword: 'type', instancePath: '/ip', params: { type: 'string' } }, 'body', createEndpointSchema.fields);
  t.is(msg, 'body.ip must be an IP address string such as 10.88.0.5: pass --ip ADDRESS or leave it out.');
});

test('a body that is not an object is refused as a whole', (t) => {
  t.is(describeViolation({ keyword: 'type', instancePath: '', params: { type: 'object' } }, 'body', net), 'the request body must be a JSON object.');
});

test('an undocumented field falls back to the validator wording', (t) => {
  t.is(describeViolation({ keyword: 'maxLength', instancePath: '/zz', params: {}, message: 'must NOT have more than 3 characters' }, 'body', {}), 'body.zz must NOT have more than 3 characters.');
});

test('classifyError maps service, host and IPAM errors to 4xx with their sentence', (t) => {
  t.deepEqual(classifyError(notFound('network x not found: list them.')), { status: 404, message: 'network x not found: list them.' });
  t.deepEqual(classifyError(conflict('taken: pick another.')), { status: 409, message: 'taken: pick another.' });
  t.deepEqual(classifyError(new HostError('no such namespace: create it.')), { status: 400, message: 'no such namespace: create it.' });
  t.is(classifyError(new HostError('the "ip" command was not found: install iproute2.', { system: true })).status, 500, 'a broken host is not the client\'s fault');
  t.deepEqual(classifyError(new IpamError('bad subnet: fix it')), { status: 400, message: 'bad subnet: fix it.' });
});

test('classifyError rewords fastify body errors and hides nothing of internal ones', (t) => {
  t.is(classifyError(Object.assign(new Error('x'), { code: 'FST_ERR_CTP_EMPTY_JSON_BODY', statusCode: 400 })).message, 'the request body is empty: send a JSON object.');
  const internal = classifyError(new Error('TUNSETIFF on eth0: Operation not permitted (EPERM)'));
  t.is(internal.status, 500);
  t.is(internal.message, 'the daemon failed: TUNSETIFF on eth0: Operation not permitted (EPERM); see its log for details.');
});

test('sentence adds a final period only when missing', (t) => {
  t.is(sentence('done'), 'done.');
  t.is(sentence('done.'), 'done.');
  t.is(sentence('really?'), 'really?');
});

test('IdPool hands out the lowest free id and reuses freed ones', (t) => {
  const pool = new IdPool(1, 3, 'port');
  t.is(pool.allocate(), 1);
  t.is(pool.allocate(), 2);
  pool.release(1);
  t.is(pool.allocate(), 1);
  t.is(pool.allocate(), 3);
  const exhausted = t.throws(() => pool.allocate(), { message: /no free port id is left/ });
  t.is(classifyError(exhausted).status, 409, 'running out of ids is a conflict, not a daemon failure');
});

test('Mutex runs tasks one at a time, in order, and survives a failing task', async (t) => {
  const mutex = new Mutex();
  const log: string[] = [];
  const task = (name: string, ms: number, fail = false) =>
    mutex.run(async () => {
      log.push(`start ${name}`);
      await new Promise((r) => setTimeout(r, ms));
      log.push(`end ${name}`);
      if (fail) throw new Error(name);
      return name;
    });
  const results = await Promise.allSettled([task('a', 20), task('b', 1, true), task('c', 1)]);
  t.deepEqual(log, ['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
  t.is(results[1].status, 'rejected');
  t.deepEqual(results[2], { status: 'fulfilled', value: 'c' });
});

// The client-matrix scenario with ioredis (tests/client_matrix.rs runs it).
//
//   node ioredis.mjs redis://127.0.0.1:6380 [--protocol 2|3|default]
//
// `default` leaves the protocol to the library: ioredis 6 sends HELLO 3 and,
// when the server answers NOPROTO (or does not know HELLO), silently goes on
// in RESP2; the connect line says which one it got. Output and exit codes:
// see common.mjs.

import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

import Redis from 'ioredis';

import {
  BIG_VALUE_BYTES,
  PIPELINE_COMMANDS,
  PUBSUB_MESSAGES,
  check,
  parseArgs,
  runPrefix,
  runSteps,
  skipped,
  sleep,
  urlWithDb,
  waitUntil,
} from './common.mjs';

const VERSION = createRequire(import.meta.url)('ioredis/package.json').version;
const { url, protocol } = parseArgs('node ioredis.mjs URL [--protocol 2|3|default]');
const prefix = runPrefix('ioredis');
const keys = { 0: new Set(), 1: new Set() };
const open = [];

function key(name, db = 0) {
  const k = prefix + name;
  keys[db].add(k);
  return k;
}

const sha1 = (text) => createHash('sha1').update(text).digest('hex');

/** A new connected client; its 'error' events are kept for the failure message. */
async function connected(target = url) {
  const client = new Redis(target, {
    ...(protocol === undefined ? {} : { protocol }),
    lazyConnect: true,
    connectTimeout: 5000,
    // Fail instead of reconnecting or retrying: a dropped connection is a finding.
    retryStrategy: () => null,
    maxRetriesPerRequest: 0,
  });
  client.errors = [];
  client.on('error', (e) => client.errors.push(e));
  await client.connect();
  open.push(client);
  return client;
}

/** The protocol the connection ended up with (ioredis downgrades on NOPROTO). */
const negotiated = (client) => client.condition?.protocol;

let client;
let other;
let db1;

const steps = [
  ['connect', async () => {
    client = await connected();
    check((await client.ping()) === 'PONG', 'PING did not answer PONG');
    other = await connected();
    check((await other.ping()) === 'PONG', 'PING on a second connection failed');
    const asked = protocol === undefined ? 'default (asks RESP3)' : `RESP${protocol}`;
    return `ioredis ${VERSION}, ${asked}, got RESP${negotiated(client)}`;
  }],

  ['set-get', async () => {
    const k = key('setget');
    check((await client.set(k, 'hello')) === 'OK', 'SET did not answer OK');
    const got = await client.get(k);
    check(got === 'hello', `GET returned ${JSON.stringify(got)}, expected "hello"`);
    return 'SET then GET returned the value';
  }],

  ['pipeline', async () => {
    const batch = client.pipeline();
    const expected = [];
    const counter = key('pipeline:n');
    for (let i = 0; i < PIPELINE_COMMANDS; i++) {
      if (i % 3 === 0) {
        batch.set(key(`pipeline:${i}`), `v${i}`);
        expected.push('OK');
      } else if (i % 3 === 1) {
        batch.get(key(`pipeline:${i - 1}`));
        expected.push(`v${i - 1}`);
      } else {
        batch.incr(counter);
        expected.push(Math.floor(i / 3) + 1);
      }
    }
    const replies = await batch.exec();
    check(replies.length === expected.length, `${replies.length} replies for ${expected.length} commands`);
    replies.forEach(([err, got], i) => {
      check(!err, `reply ${i} is an error: ${err?.message}`);
      check(got === expected[i], `reply ${i} is ${JSON.stringify(got)}, expected ${JSON.stringify(expected[i])}`);
    });
    return `${PIPELINE_COMMANDS} replies, each the right one in order`;
  }],

  ['multi-exec', async () => {
    const k = key('multi');
    const n = key('multi:n');
    const replies = await client.multi().set(k, 'a').incr(n).incr(n).get(k).exec();
    const want = [[null, 'OK'], [null, 1], [null, 2], [null, 'a']];
    check(JSON.stringify(replies) === JSON.stringify(want), `EXEC returned ${JSON.stringify(replies)}`);
    return 'EXEC returned [OK, 1, 2, "a"]';
  }],

  ['watch-conflict', async () => {
    const k = key('watch');
    await client.set(k, 'before');
    const watcher = await connected();
    check((await watcher.watch(k)) === 'OK', 'WATCH did not answer OK');
    check((await watcher.get(k)) === 'before', 'GET after WATCH returned the wrong value');
    await other.set(k, 'theirs');
    const aborted = await watcher.multi().set(k, 'mine').exec();
    check(aborted === null, `EXEC ran despite the conflicting write: ${JSON.stringify(aborted)}`);
    const got = await client.get(k);
    check(got === 'theirs', `the key holds ${JSON.stringify(got)} after the aborted EXEC`);
    await watcher.watch(k);
    const replies = await watcher.multi().set(k, 'mine').exec();
    check(JSON.stringify(replies) === '[[null,"OK"]]', `uncontended WATCH/EXEC returned ${JSON.stringify(replies)}`);
    check((await client.get(k)) === 'mine', 'uncontended EXEC did not write');
    return 'EXEC returned null after another connection\'s write; uncontended EXEC commits';
  }],

  ['pubsub', async () => {
    const channel = key('channel');
    const subscriber = await connected();
    const received = [];
    subscriber.on('message', (ch, message) => {
      if (ch === channel) received.push(message);
    });
    check((await subscriber.subscribe(channel)) === 1, 'SUBSCRIBE did not count 1 channel');
    // Ordinary commands on a third connection while messages flow.
    const busy = await connected();
    const counter = key('pubsub:busy');
    let stop = false;
    let answered = 0;
    const busyLoop = (async () => {
      while (!stop) {
        await busy.incr(counter);
        answered++;
      }
    })();
    try {
      for (let i = 0; i < PUBSUB_MESSAGES; i++) {
        const receivers = await client.publish(channel, `m${i}`);
        check(receivers === 1, `PUBLISH ${i} reached ${receivers} subscribers, expected 1`);
      }
      await waitUntil(10_000, `${PUBSUB_MESSAGES} messages arrived (${received.length} so far)`,
        async () => received.length >= PUBSUB_MESSAGES);
    } finally {
      stop = true;
      await busyLoop;
    }
    received.forEach((m, i) => check(m === `m${i}`, `message ${i} is ${JSON.stringify(m)}, expected "m${i}"`));
    check(received.length === PUBSUB_MESSAGES, `received ${received.length} messages, sent ${PUBSUB_MESSAGES}`);
    const count = Number(await client.get(counter));
    check(count === answered, `INCR counter is ${count}, ${answered} INCRs answered`);
    await subscriber.unsubscribe(channel);
    return `${PUBSUB_MESSAGES} messages in order while ${answered} INCRs ran on another connection`;
  }],

  ['pubsub-same-connection', async () => {
    const both = await connected();
    if (negotiated(both) !== 3) {
      return skipped(`the connection is RESP${negotiated(both)}: ioredis allows only subscriber commands on a subscribed RESP2 connection`);
    }
    const channel = key('channel:same');
    const received = [];
    both.on('message', (ch, message) => {
      if (ch === channel) received.push(message);
    });
    await both.subscribe(channel);
    const k = key('same');
    const rounds = 20;
    for (let i = 0; i < rounds; i++) {
      check((await both.set(k, `s${i}`)) === 'OK', `SET ${i} on the subscribed connection`);
      const got = await both.get(k);
      check(got === `s${i}`, `GET ${i} on the subscribed connection returned ${JSON.stringify(got)}`);
      const receivers = await other.publish(channel, `m${i}`);
      check(receivers === 1, `PUBLISH ${i} reached ${receivers} subscribers, expected 1`);
    }
    await waitUntil(5000, `${rounds} messages arrived (${received.length} so far)`, async () => received.length >= rounds);
    received.forEach((m, i) => check(m === `m${i}`, `message ${i} is ${JSON.stringify(m)}`));
    await both.unsubscribe(channel);
    check((await both.get(k)) === `s${rounds - 1}`, 'GET after UNSUBSCRIBE');
    return `${rounds} SET/GET pairs and ${rounds} messages interleaved on one RESP3 connection`;
  }],

  ['blpop', async () => {
    const empty = key('blpop:empty');
    let start = Date.now();
    const none = await client.blpop(empty, 1);
    const waited = (Date.now() - start) / 1000;
    check(none === null, `BLPOP on an empty list returned ${JSON.stringify(none)}`);
    check(waited >= 0.9 && waited < 3, `BLPOP with timeout 1 returned after ${waited}s`);
    const k = key('blpop:list');
    const blocker = await connected();
    start = Date.now();
    const pending = blocker.blpop(k, 3);
    await sleep(200);
    await other.lpush(k, 'pushed');
    const got = await pending;
    const served = (Date.now() - start) / 1000;
    check(JSON.stringify(got) === JSON.stringify([k, 'pushed']), `BLPOP returned ${JSON.stringify(got)}`);
    check(served < 2.5, `BLPOP took ${served}s to see the LPUSH`);
    return `timeout: null after ${waited.toFixed(2)}s; served by another connection's LPUSH after ${served.toFixed(2)}s`;
  }],

  ['select', async () => {
    db1 = await connected(urlWithDb(url, 1));
    const k = key('select', 1);
    keys[0].add(k);
    check((await db1.set(k, 'in-db1')) === 'OK', 'SET in db 1 failed');
    check((await db1.get(k)) === 'in-db1', 'db 1 does not see its own key');
    let got = await client.get(k);
    check(got === null, `db 0 sees the key set in db 1: ${JSON.stringify(got)}`);
    const k0 = key('select:db0');
    keys[1].add(k0);
    await client.set(k0, 'in-db0');
    got = await db1.get(k0);
    check(got === null, `db 1 sees the key set in db 0: ${JSON.stringify(got)}`);
    check((await client.get(k0)) === 'in-db0', 'db 0 lost its own key');
    return 'a key set through /1 is invisible in db 0, and the other way round';
  }],

  ['evalsha', async () => {
    const k = key('script');
    const body = `-- ${prefix}\nreturn {KEYS[1], ARGV[1]}`;
    const sha = await client.script('LOAD', body);
    check(sha === sha1(body), `SCRIPT LOAD returned ${sha}`);
    const got = await client.evalsha(sha, 1, k, 'arg');
    check(JSON.stringify(got) === JSON.stringify([k, 'arg']), `EVALSHA returned ${JSON.stringify(got)}`);
    try {
      await client.evalsha(sha1(`-- ${prefix} never loaded`), 0);
      check(false, 'EVALSHA of an unloaded script succeeded');
    } catch (e) {
      check(String(e.message).startsWith('NOSCRIPT'), `EVALSHA of an unloaded script: ${e.message}`);
    }
    // defineCommand: EVALSHA, NOSCRIPT, then EVAL with the body.
    const fallback = `-- ${prefix} fallback\nreturn ARGV[1]`;
    const [before] = await client.script('EXISTS', sha1(fallback));
    check(before === 0, 'the fallback script was already loaded');
    client.defineCommand('matrixFallback', { numberOfKeys: 1, lua: fallback });
    const viaFallback = await client.matrixFallback(k, 'via-fallback');
    check(viaFallback === 'via-fallback', `defineCommand call returned ${JSON.stringify(viaFallback)}`);
    const again = await client.matrixFallback(k, 'again');
    check(again === 'again', `second defineCommand call returned ${JSON.stringify(again)}`);
    return 'SCRIPT LOAD + EVALSHA; NOSCRIPT error; defineCommand fell back to EVAL on NOSCRIPT';
  }],

  ['big-value', async () => {
    const k = key('big');
    const blob = randomBytes(BIG_VALUE_BYTES);
    check((await client.set(k, blob)) === 'OK', 'SET of 10 MiB failed');
    check((await client.strlen(k)) === blob.length, 'STRLEN differs');
    const got = await client.getBuffer(k);
    check(Buffer.isBuffer(got) && got.length === blob.length, `GET returned ${got?.length} bytes`);
    check(got.equals(blob), 'the 10 MiB value came back with different bytes');
    return `${BIG_VALUE_BYTES} random bytes round-tripped exactly`;
  }],

  ['client-side-cache', async () => skipped(`ioredis ${VERSION} has no client-side caching option`)],

  ['cleanup', async () => {
    let deleted = await client.del(...keys[0]);
    if (keys[1].size) deleted += await db1.del(...keys[1]);
    for (const c of open) {
      check(c.errors.length === 0, `a connection reported errors: ${c.errors.map((e) => e.message).join('; ')}`);
      c.disconnect();
    }
    return `deleted ${deleted} keys`;
  }],
];

await runSteps(steps);

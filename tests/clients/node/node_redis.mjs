// The client-matrix scenario with node-redis (tests/client_matrix.rs runs it).
//
//   node node_redis.mjs redis://127.0.0.1:6380 [--protocol 2|3|default]
//
// `default` leaves RESP to the library (RESP3 in node-redis 6); `2` sets
// `RESP: 2`. Output and exit codes: see common.mjs.

import { createHash, randomBytes } from 'node:crypto';
import { createRequire } from 'node:module';

import { createClient, defineScript, RESP_TYPES, WatchError } from 'redis';

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

const VERSION = createRequire(import.meta.url)('redis/package.json').version;
const { url, protocol } = parseArgs('node node_redis.mjs URL [--protocol 2|3|default]');
const resp = protocol ?? 3; // node-redis 6's DEFAULT_RESP
const prefix = runPrefix('node-redis');
const keys = { 0: new Set(), 1: new Set() };
const open = [];

function key(name, db = 0) {
  const k = prefix + name;
  keys[db].add(k);
  return k;
}

const sha1 = (text) => createHash('sha1').update(text).digest('hex');
const fallbackScript = `-- ${prefix} fallback\nreturn ARGV[1]`;

function options(extra = {}) {
  return {
    url,
    ...(protocol === undefined ? {} : { RESP: protocol }),
    // Fail instead of reconnecting forever: a dropped connection is a finding.
    socket: { connectTimeout: 5000, reconnectStrategy: false },
    ...extra,
  };
}

/** A new connected client; its 'error' events are kept for the failure message. */
async function connected(extra = {}) {
  const client = createClient(options(extra));
  client.errors = [];
  client.on('error', (e) => client.errors.push(e));
  await client.connect();
  open.push(client);
  return client;
}

let client;
let other;
let db1;

const steps = [
  ['connect', async () => {
    client = await connected({
      scripts: {
        matrixFallback: defineScript({
          NUMBER_OF_KEYS: 1,
          SCRIPT: fallbackScript,
          parseCommand(parser, k, arg) {
            parser.pushKey(k);
            parser.push(arg);
          },
          transformReply(reply) {
            return reply;
          },
        }),
      },
    });
    check((await client.ping()) === 'PONG', 'PING did not answer PONG');
    other = await connected();
    check((await other.ping()) === 'PONG', 'PING on a second connection failed');
    return `node-redis ${VERSION}, RESP${resp}${resp === 3 ? ' (HELLO 3 accepted)' : ''}`;
  }],

  ['set-get', async () => {
    const k = key('setget');
    check((await client.set(k, 'hello')) === 'OK', 'SET did not answer OK');
    const got = await client.get(k);
    check(got === 'hello', `GET returned ${JSON.stringify(got)}, expected "hello"`);
    return 'SET then GET returned the value';
  }],

  ['pipeline', async () => {
    const batch = client.multi();
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
    const replies = await batch.execAsPipeline();
    check(replies.length === expected.length, `${replies.length} replies for ${expected.length} commands`);
    replies.forEach((got, i) => {
      check(got === expected[i], `reply ${i} is ${JSON.stringify(got)}, expected ${JSON.stringify(expected[i])}`);
    });
    return `${PIPELINE_COMMANDS} replies, each the right one in order`;
  }],

  ['multi-exec', async () => {
    const k = key('multi');
    const n = key('multi:n');
    const replies = await client.multi().set(k, 'a').incr(n).incr(n).get(k).exec();
    check(JSON.stringify(replies) === JSON.stringify(['OK', 1, 2, 'a']), `EXEC returned ${JSON.stringify(replies)}`);
    return 'EXEC returned [OK, 1, 2, "a"]';
  }],

  ['watch-conflict', async () => {
    const k = key('watch');
    await client.set(k, 'before');
    const watcher = await connected();
    await watcher.watch(k);
    check((await watcher.get(k)) === 'before', 'GET after WATCH returned the wrong value');
    await other.set(k, 'theirs');
    try {
      const replies = await watcher.multi().set(k, 'mine').exec();
      check(false, `EXEC ran despite the conflicting write: ${JSON.stringify(replies)}`);
    } catch (e) {
      if (!(e instanceof WatchError)) throw e;
    }
    const got = await client.get(k);
    check(got === 'theirs', `the key holds ${JSON.stringify(got)} after the aborted EXEC`);
    await watcher.watch(k);
    const replies = await watcher.multi().set(k, 'mine').exec();
    check(JSON.stringify(replies) === '["OK"]', `uncontended WATCH/EXEC returned ${JSON.stringify(replies)}`);
    check((await client.get(k)) === 'mine', 'uncontended EXEC did not write');
    return 'EXEC aborted (WatchError) after another connection\'s write; uncontended EXEC commits';
  }],

  ['pubsub', async () => {
    const channel = key('channel');
    const subscriber = await connected();
    const received = [];
    await subscriber.subscribe(channel, (message) => received.push(message));
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
    if (resp !== 3) {
      return skipped('RESP2: a subscribed connection may only run (P|S)SUBSCRIBE, PING and the like, so node-redis needs another connection');
    }
    const channel = key('channel:same');
    const both = await connected();
    const received = [];
    await both.subscribe(channel, (message) => received.push(message));
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
    const none = await client.blPop(empty, 1);
    const waited = (Date.now() - start) / 1000;
    check(none === null, `BLPOP on an empty list returned ${JSON.stringify(none)}`);
    check(waited >= 0.9 && waited < 3, `BLPOP with timeout 1 returned after ${waited}s`);
    const k = key('blpop:list');
    const blocker = await connected();
    start = Date.now();
    const pending = blocker.blPop(k, 3);
    await sleep(200);
    await other.lPush(k, 'pushed');
    const got = await pending;
    const served = (Date.now() - start) / 1000;
    check(got && got.key === k && got.element === 'pushed', `BLPOP returned ${JSON.stringify(got)}`);
    check(served < 2.5, `BLPOP took ${served}s to see the LPUSH`);
    return `timeout: null after ${waited.toFixed(2)}s; served by another connection's LPUSH after ${served.toFixed(2)}s`;
  }],

  ['select', async () => {
    db1 = await connected({ url: urlWithDb(url, 1) });
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
    const sha = await client.scriptLoad(body);
    check(sha === sha1(body), `SCRIPT LOAD returned ${sha}`);
    const got = await client.evalSha(sha, { keys: [k], arguments: ['arg'] });
    check(JSON.stringify(got) === JSON.stringify([k, 'arg']), `EVALSHA returned ${JSON.stringify(got)}`);
    try {
      await client.evalSha(sha1(`-- ${prefix} never loaded`));
      check(false, 'EVALSHA of an unloaded script succeeded');
    } catch (e) {
      check(String(e.message).startsWith('NOSCRIPT'), `EVALSHA of an unloaded script: ${e.message}`);
    }
    // defineScript: EVALSHA, NOSCRIPT, then EVAL with the body.
    const before = await client.scriptExists(sha1(fallbackScript));
    check(!before[0], 'the fallback script was already loaded');
    const viaFallback = await client.matrixFallback(k, 'via-fallback');
    check(viaFallback === 'via-fallback', `defineScript call returned ${JSON.stringify(viaFallback)}`);
    const again = await client.matrixFallback(k, 'again');
    check(again === 'again', `second defineScript call returned ${JSON.stringify(again)}`);
    return 'SCRIPT LOAD + EVALSHA; NOSCRIPT error; defineScript fell back to EVAL on NOSCRIPT';
  }],

  ['big-value', async () => {
    const k = key('big');
    const blob = randomBytes(BIG_VALUE_BYTES);
    check((await client.set(k, blob)) === 'OK', 'SET of 10 MiB failed');
    check((await client.strLen(k)) === blob.length, 'STRLEN differs');
    const got = await client.withTypeMapping({ [RESP_TYPES.BLOB_STRING]: Buffer }).get(k);
    check(Buffer.isBuffer(got) && got.length === blob.length, `GET returned ${got?.length} bytes`);
    check(got.equals(blob), 'the 10 MiB value came back with different bytes');
    return `${BIG_VALUE_BYTES} random bytes round-tripped exactly`;
  }],

  ['client-side-cache', async () => {
    const k = key('cached');
    await other.set(k, 'v1');
    let cached;
    try {
      cached = await connected({ clientSideCache: { ttl: 0, maxEntries: 0 } });
    } catch (e) {
      if (String(e.message).includes('Client Side Caching is only supported with RESP3')) {
        return skipped(`node-redis ${VERSION} refuses: ${e.message}`);
      }
      throw e;
    }
    const cache = cached.clientSideCache;
    check((await cached.get(k)) === 'v1', 'first GET through the cache');
    check((await cached.get(k)) === 'v1', 'second GET through the cache');
    const stats = cache.stats();
    check(stats.hitCount >= 1, `the second GET was not a cache hit (hits ${stats.hitCount}, misses ${stats.missCount})`);
    const invalidated = new Promise((resolve) => cache.on('invalidate', (what) => {
      if (what === null || String(what) === k) resolve();
    }));
    await other.set(k, 'v2');
    const timeout = sleep(3000).then(() => 'timeout');
    check((await Promise.race([invalidated, timeout])) !== 'timeout', 'no invalidation within 3s of another connection\'s SET');
    const got = await cached.get(k);
    check(got === 'v2', `GET after the invalidation returned ${JSON.stringify(got)}`);
    return `cached GET (hits ${stats.hitCount}) invalidated by another connection's SET`;
  }],

  ['cleanup', async () => {
    let deleted = await client.del([...keys[0]]);
    if (keys[1].size) deleted += await db1.del([...keys[1]]);
    for (const c of open) {
      check(c.errors.length === 0, `a connection reported errors: ${c.errors.map((e) => e.message).join('; ')}`);
      c.destroy();
    }
    return `deleted ${deleted} keys`;
  }],
];

await runSteps(steps);

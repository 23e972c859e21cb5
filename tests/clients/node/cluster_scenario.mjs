// A cluster-mode client pointed at poolside, which presents itself as a
// one-node cluster owning every slot (tests/cluster.rs runs it, in front of
// a Redis Cluster and of a standalone Redis).
//
//   node cluster_scenario.mjs ioredis|node-redis HOST PORT
//
// Prints `ok <step>` per step and `all steps passed`; the first failure
// prints `FAIL <step>: <message>` on stderr and exits 1.

import { randomBytes } from 'node:crypto';

import Redis from 'ioredis';
import { createCluster } from 'redis';

const [library, host, portText] = process.argv.slice(2);
const port = Number(portText);
const prefix = `nc:${library}:${randomBytes(4).toString('hex')}`;
let step = 'connect';

/** The same few calls on either library. */
async function connect() {
  if (library === 'ioredis') {
    const client = new Redis.Cluster([{ host, port }], {
      enableOfflineQueue: true,
      clusterRetryStrategy: () => null,
      redisOptions: { connectTimeout: 5000, maxRetriesPerRequest: 0 },
    });
    await new Promise((resolve, reject) => {
      client.once('ready', resolve);
      client.once('error', reject);
    });
    return {
      nodes: () => client.nodes('master').map((n) => n.options.port),
      set: (k, v) => client.set(k, v),
      get: (k) => client.get(k),
      mset: (pairs) => Promise.all(pairs.map(([k, v]) => client.set(k, v))),
      mgetTagged: (ks) => client.mget(...ks),
      incrPipeline: async (ks) => {
        const pipe = client.pipeline();
        for (const k of ks) pipe.incr(k);
        return (await pipe.exec()).map(([err, n]) => {
          if (err) throw err;
          return n;
        });
      },
      transaction: async (ks) => {
        const multi = client.multi();
        for (const k of ks) multi.incr(k);
        return (await multi.exec()).map(([err, n]) => {
          if (err) throw err;
          return n;
        });
      },
      del: async (ks) => (await Promise.all(ks.map((k) => client.del(k)))).reduce((a, b) => a + b, 0),
      quit: () => client.quit(),
    };
  }
  const client = createCluster({
    rootNodes: [{ socket: { host, port, connectTimeout: 5000, reconnectStrategy: false } }],
    RESP: 2,
  });
  const errors = [];
  client.on('error', (e) => errors.push(e));
  await client.connect();
  return {
    nodes: () => client.masters.map((n) => n.port),
    set: (k, v) => client.set(k, v),
    get: (k) => client.get(k),
    mset: (pairs) => Promise.all(pairs.map(([k, v]) => client.set(k, v))),
    mgetTagged: (ks) => client.mGet(ks),
    incrPipeline: (ks) => Promise.all(ks.map((k) => client.incr(k))),
    transaction: (ks) => {
      const multi = client.multi();
      for (const k of ks) multi.incr(k);
      return multi.exec();
    },
    del: async (ks) => (await Promise.all(ks.map((k) => client.del(k)))).reduce((a, b) => a + b, 0),
    quit: () => client.close(),
  };
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

try {
  if (library !== 'ioredis' && library !== 'node-redis') {
    throw new Error('usage: node cluster_scenario.mjs ioredis|node-redis HOST PORT');
  }
  const client = await connect();
  const nodes = client.nodes();
  check(nodes.length === 1 && nodes[0] === port, `nodes: ${JSON.stringify(nodes)}`);
  console.log(`ok ${step}: one node at port ${nodes[0]}`);

  step = 'set/get';
  const keys = Array.from({ length: 200 }, (_, i) => `${prefix}:${i}`);
  await Promise.all(keys.map((k, i) => client.set(k, String(i))));
  const got = await Promise.all(keys.map((k) => client.get(k)));
  check(
    got.every((v, i) => v === String(i)),
    `got ${JSON.stringify(got.slice(0, 5))}`,
  );
  console.log(`ok ${step}: 200 keys`);

  step = 'mget with a hash tag';
  const tagged = Array.from({ length: 20 }, (_, i) => `{${prefix}}:t${i}`);
  await client.mset(tagged.map((k, i) => [k, String(i)]));
  const values = await client.mgetTagged(tagged);
  check(
    values.every((v, i) => v === String(i)),
    `got ${JSON.stringify(values.slice(0, 5))}`,
  );
  console.log(`ok ${step}`);

  step = 'pipeline';
  const counters = Array.from({ length: 100 }, (_, i) => `${prefix}:counter:${i % 10}`);
  const counts = await client.incrPipeline(counters);
  check(counts.length === 100 && counts.slice(-10).every((n) => n === 10), `counts ${counts.slice(-10)}`);
  console.log(`ok ${step}: 100 commands`);

  step = 'transaction';
  const tx = [`{${prefix}}:x`, `{${prefix}}:x`, `{${prefix}}:y`];
  const ran = await client.transaction(tx);
  check(JSON.stringify(ran) === '[1,2,1]', `EXEC gave ${JSON.stringify(ran)}`);
  console.log(`ok ${step}`);

  step = 'delete';
  const all = [...keys, ...tagged, ...new Set(counters), `{${prefix}}:x`, `{${prefix}}:y`];
  const deleted = await client.del(all);
  check(deleted === all.length, `deleted ${deleted} of ${all.length}`);
  console.log(`ok ${step}`);
  await client.quit();
  console.log('all steps passed');
  process.exit(0);
} catch (e) {
  console.error(`FAIL ${step}: ${e?.stack ?? e}`);
  process.exit(1);
}

// What node_redis.mjs and ioredis.mjs share: arguments, the step runner with
// its output format, the watchdog and small helpers. The scenario itself is
// written out in each program, in that library's own API.
//
// Output: one `ok <step>: ...` line per step passed, `skipped <step>: <why>`
// where the library itself refuses a feature, then `all steps passed`. The
// first failure prints `FAIL <step>: <message>` on stderr and exits 1; a hang
// is stopped by the watchdog (exit 3).

import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';

// The whole run must take a few seconds; this only catches a hang.
const WATCHDOG_MS = 30_000;

export const PIPELINE_COMMANDS = 1000;
export const PUBSUB_MESSAGES = 200;
export const BIG_VALUE_BYTES = 10 * 1024 * 1024;

export class StepFailed extends Error {}

export function check(condition, message) {
  if (!condition) throw new StepFailed(message);
}

/** A step's result meaning "the library refuses this": printed, not failed. */
export function skipped(reason) {
  return { skipped: reason };
}

export { sleep };

/** `<program> URL [--protocol 2|3|default]` -> { url, protocol } (protocol undefined: default). */
export function parseArgs(usage) {
  const args = process.argv.slice(2);
  let url;
  let protocol = 'default';
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--protocol') {
      protocol = args[++i];
    } else if (args[i].startsWith('--protocol=')) {
      protocol = args[i].slice('--protocol='.length);
    } else if (url === undefined && !args[i].startsWith('-')) {
      url = args[i];
    } else {
      usageError(usage, `unexpected argument ${args[i]}`);
    }
  }
  if (url === undefined) usageError(usage, 'missing URL');
  if (!['2', '3', 'default'].includes(protocol)) usageError(usage, `--protocol must be 2, 3 or default, not ${protocol}`);
  return { url, protocol: protocol === 'default' ? undefined : Number(protocol) };
}

function usageError(usage, message) {
  console.error(`${message}\nusage: ${usage}`);
  process.exit(2);
}

export function urlWithDb(url, db) {
  const parsed = new URL(url);
  parsed.pathname = `/${db}`;
  return parsed.toString();
}

/** A per-run key prefix, so that runs in parallel never share a key. */
export function runPrefix(library) {
  return `matrix:${library}:${process.pid}:${randomBytes(4).toString('hex')}:`;
}

/** Polls `cond` (async) until true; fails with `what` after `ms`. */
export async function waitUntil(ms, what, cond) {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return;
    check(Date.now() < deadline, `timed out after ${ms}ms waiting until ${what}`);
    await sleep(5);
  }
}

/** Runs `[name, fn]` steps in order, printing one line each; exits on the first failure. */
export async function runSteps(steps) {
  let current = 'start';
  const started = Date.now();
  const watchdog = setTimeout(() => {
    console.error(`FAIL ${current}: still running after ${WATCHDOG_MS / 1000}s (hung?)`);
    process.exit(3);
  }, WATCHDOG_MS);
  for (const [name, run] of steps) {
    current = name;
    let result;
    try {
      result = await run();
    } catch (e) {
      if (!(e instanceof StepFailed) && e?.stack) console.error(e.stack);
      console.error(`FAIL ${name}: ${e instanceof StepFailed ? e.message : `${e?.name ?? 'Error'}: ${e?.message ?? e}`}`);
      process.exit(1);
    }
    if (result && typeof result === 'object' && 'skipped' in result) {
      console.log(`skipped ${name}: ${result.skipped}`);
    } else {
      console.log(`ok ${name}: ${result}`);
    }
  }
  clearTimeout(watchdog);
  console.log(`all steps passed in ${((Date.now() - started) / 1000).toFixed(2)}s`);
  // Clients are closed by the last step; exit even if a socket lingers.
  process.exit(0);
}

/**
 * A simulated host of the controller's scale bench (scripts/bench-controller.ts):
 *
 *   node dist/scripts/bench/sim-agent.js --etcd URL --host NAME --vtep IP [--stats FILE]
 *
 * runs the real host agent (src/controller/agent.ts, as `vsw daemon --agent`
 * does) against a recording data plane (scripts/bench/recording-host.ts)
 * instead of a daemon: it registers, watches and reconciles exactly like a
 * real host and writes the same realized and status keys, but applies to
 * memory only. Logs are pino JSON at level warn on stderr, so a lost lease or
 * a failed reconciliation is visible and the rest stays quiet.
 *
 * --stats FILE: what the recording host holds and how often each of its
 * methods was called, rewritten (atomically) at most once a second while it
 * changes, and at exit; the bench reads it for the simulated hosts' remote
 * endpoints, and its path under the bench's /tmp/vswt* directory lets
 * scripts/cleanup.sh find a stray agent. SIGTERM or SIGINT: the agent stops
 * (its lease is left to expire, as a daemon's is) and the process exits 0.
 */
import { rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { Agent } from '../../src/controller/agent.js';
import { connectEtcd, parseEtcdUrls } from '../../src/controller/etcd.js';
import { RecordingHost } from './recording-host.js';

const USAGE = 'usage: node dist/scripts/bench/sim-agent.js --etcd URL --host NAME --vtep IP [--stats FILE]';

function options(): { etcd: string[]; host: string; vtep: string; stats?: string } {
  let values: Record<string, string | boolean | undefined>;
  try {
    values = parseArgs({ options: { etcd: { type: 'string' }, host: { type: 'string' }, vtep: { type: 'string' }, stats: { type: 'string' } }, strict: true, allowPositionals: false }).values;
  } catch (err) {
    throw new Error(`${(err as Error).message.replace(/\.$/, '')}: ${USAGE}`);
  }
  const { etcd, host, vtep, stats } = values as Record<string, string | undefined>;
  if (etcd === undefined || host === undefined || vtep === undefined) throw new Error(`--etcd, --host and --vtep are all needed: ${USAGE}`);
  const urls = parseEtcdUrls(etcd);
  if (typeof urls === 'string') throw new Error(urls);
  return { etcd: urls, host, vtep, ...(stats === undefined ? {} : { stats }) };
}

async function main(): Promise<void> {
  const o = options();
  // Synchronous like the daemon's logger: the last lines before an exit are the ones that explain it.
  const logger = pino({ level: 'warn', base: { pid: process.pid, name: 'vsw-sim-agent', host: o.host } }, pino.destination({ dest: 2, sync: true }));
  const recording = new RecordingHost(o.host);
  const etcd = connectEtcd({ urls: o.etcd });
  const agent = new Agent(etcd, recording, { host: o.host, vtep: o.vtep }, logger.child({ component: 'agent' }));

  let written = -1;
  let writing: Promise<void> = Promise.resolve();
  const writeStats = (): Promise<void> => {
    if (o.stats === undefined || recording.changes === written) return writing;
    const file = o.stats;
    const changes = recording.changes;
    // One write at a time, each whole (temporary file, then rename): the bench may read it at any moment.
    writing = writing.then(async () => {
      await writeFile(`${file}.tmp`, JSON.stringify(recording.stats()));
      await rename(`${file}.tmp`, file);
      written = changes;
    }).catch((err: unknown) => logger.warn({ err, file }, 'could not write the stats file'));
    return writing;
  };
  const ticker = setInterval(() => void writeStats(), 1000);
  ticker.unref();

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (stopping) process.exit(1);
    stopping = true;
    clearInterval(ticker);
    agent
      .stop()
      .then(() => etcd.close())
      .then(() => {
        written = -1;
        return writeStats();
      })
      .then(
        () => process.exit(0),
        (err: unknown) => {
          logger.error({ err, signal }, 'the simulated agent could not stop cleanly');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);

  agent.start();
  await writeStats();
}

main().catch((err: unknown) => {
  process.stderr.write(`sim-agent: ${(err as Error).message}\n`);
  process.exit(2);
});

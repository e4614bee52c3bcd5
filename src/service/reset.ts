/**
 * `vsw system reset`: removes everything vsw made on the host, as the saved
 * state records it, and then the state itself. For people who want a stop to
 * leave nothing behind (a stop no longer does: containers keep their
 * interfaces across restarts), and for tests, which assert it.
 *
 * What goes: every endpoint's TAP (in namespaces vsw did not create as well),
 * every compartment vsw created with the processes inside, every nat
 * network's host TAP and nftables table (also tables only the ledger names,
 * left by a crash mid-create), ip_forward when vsw turned it on, state.json,
 * runtime.bin and the lock, and a stale socket. Namespaces vsw did not create
 * stay, as do interfaces that are not TAPs.
 *
 * It takes the state directory's lock, so it refuses to run beside a daemon
 * (stop that first: a running daemon would recreate what this removes).
 */
import { lstat, readdir, rm, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { deleteNetns, netnsExists, netnsMounted } from '../host/index.js';
import { nftTableFamily, removeNftTable, setForwarding } from '../host/nat.js';
import { daemonAnswers } from './socket.js';
import { currentNetns, LOCK_FILE, StateFileError, StateStore } from './state-file.js';
import { removeEndpointTap, removePersistentTap } from './taps.js';
import { hasTap } from './endpoint-config.js';

export interface ResetReport {
  /** What was done, one line each ("removed ..."). */
  removed: string[];
  /** What could not be removed, one sentence each (the rest went on). */
  problems: string[];
}

export async function resetHost(stateDir: string, socketPath?: string): Promise<ResetReport> {
  const store = await StateStore.open(stateDir, '`vsw system reset`');
  const report: ResetReport = { removed: [], problems: [] };
  const attempt = async (what: string, action: () => Promise<boolean | void>, done = `removed ${what}`): Promise<void> => {
    try {
      if ((await action()) !== false) report.removed.push(done);
    } catch (err) {
      report.problems.push(`could not remove ${what}: ${(err as Error).message.replace(/\.$/, '')}.`);
    }
  };
  try {
    const saved = await store.load();
    const here = currentNetns();
    if (saved?.host.netns !== undefined && saved.host.netns !== here) {
      throw new StateFileError(
        `the state in ${stateDir} belongs to a daemon in network namespace ${saved.host.netns}, and this runs in ${here}: run \`vsw system reset\` in that namespace (ip netns exec NAME vsw system reset ...), where its host interfaces, tables and ip_forward are.`,
      );
    }
    if (saved) {
      const compartments = new Set(saved.compartments.map((c) => c.name));
      for (const { endpoint } of saved.endpoints) {
        if (endpoint.vhostUser?.mode === 'server') {
          // A VM endpoint's socket, left by a daemon that did not live to remove it.
          await attempt(`socket ${endpoint.vhostUser.socket} (VM endpoint ${endpoint.name})`, async () => {
            if (!(await lstat(endpoint.vhostUser!.socket).then((s) => s.isSocket(), () => false))) return false;
            await rm(endpoint.vhostUser!.socket, { force: true });
          });
        }
        if (!hasTap(endpoint)) continue; // a fabric endpoint or a VM's has no TAP
        // Compartments' TAPs too: a namespace kept alive by something else would keep a persistent TAP.
        await attempt(`TAP ${endpoint.ifname} in network namespace ${endpoint.netns} (endpoint ${endpoint.name})`, async () => removeEndpointTap(endpoint));
      }
      for (const name of compartments) {
        await attempt(`network namespace ${name} (a compartment vsw created) and the processes in it`, async () => {
          if (!(await netnsExists(name))) return false;
          // A name whose namespace is gone (only the mount point's file is left) is removed all the same.
          await deleteNetns(name, { killProcesses: await netnsMounted(name) });
        });
        await attempt(`/etc/netns/${name} (the compartment's resolv.conf)`, async () => {
          if (!(await lstat(`/etc/netns/${name}`).then(() => true, () => false))) return false;
          await rm(`/etc/netns/${name}`, { recursive: true, force: true });
        });
      }
      const tables = new Set(saved.host.nftTables);
      for (const { network, nat } of saved.networks) {
        if (!nat) continue;
        if (nat.table) tables.add(nat.table);
        await attempt(`host interface ${nat.info.hostInterface} (nat network ${network.name})`, async () => removePersistentTap(nat.info.hostInterface, undefined));
      }
      for (const table of tables) await attempt(`nftables table ${nftTableFamily(table)} ${table}`, () => removeNftTable(table));
      if (saved.host.forwardingSetByVsw) {
        await attempt('the net.ipv4.ip_forward=1 vsw had set', () => setForwarding(false), 'set net.ipv4.ip_forward back to 0 (vsw had turned it on for its nat networks)');
      }
    }
    await attempt(`the saved state in ${stateDir}`, async () => {
      // A runtime snapshot or a temporary file without a state goes too; only a state is worth a line.
      await store.removeFiles();
      return saved !== null;
    });
    if (socketPath !== undefined) {
      await attempt(`the stale socket ${socketPath}`, async () => {
        const stat = await lstat(socketPath).catch(() => undefined);
        if (!stat?.isSocket() || (await daemonAnswers(socketPath))) return false;
        await rm(socketPath);
      });
    }
  } finally {
    await rm(join(stateDir, LOCK_FILE), { force: true });
    store.close();
  }
  // The directory too, when nothing else is in it (it may be shared, or hold files someone put there).
  if ((await readdir(stateDir).catch(() => ['?'])).length === 0) await rmdir(stateDir).catch(() => undefined);
  return report;
}

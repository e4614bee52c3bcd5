/**
 * The Vagrant lab (Vagrantfile, scripts/vagrant/): `vagrant validate` passes
 * for the default 2 VMs and for VSW_HOSTS=3, a bad VSW_HOSTS stops vagrant
 * with the Vagrantfile's own sentence, and every provisioning script parses
 * (`bash -n`). Nothing boots: validation needs no provider
 * (`--ignore-provider`), so it runs on any machine with Debian's vagrant
 * package, and a missing vagrant is a failure, never a skip. Vagrant's home and
 * data directories live in a per-run temporary directory, so the checkout gets
 * no .vagrant/ and a user's boxes and lab are never touched.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runPrefix } from './helpers/env.js';

/** The checkout: this file runs from dist/test/integration/. */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const scriptsDir = join(root, 'scripts', 'vagrant');
const tmp = mkdtempSync(`/tmp/${runPrefix()}-vagrant-`);
const dotVagrantBefore = existsSync(join(root, '.vagrant'));

test.after.always('remove the temporary vagrant home', () => {
  rmSync(tmp, { recursive: true, force: true });
});

function findVagrant(): string | undefined {
  const dirs = [...(process.env.PATH ?? '').split(delimiter).filter((d) => d && !d.includes('node_modules')), '/usr/bin', '/usr/local/bin'];
  for (const dir of dirs) {
    try {
      accessSync(join(dir, 'vagrant'), constants.X_OK);
      return join(dir, 'vagrant');
    } catch {}
  }
  return undefined;
}
const vagrantBin = findVagrant();

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** `vagrant validate --ignore-provider` in the checkout, with only the given lab settings. */
function validate(settings: Record<string, string> = {}): Promise<Result> {
  const env: NodeJS.ProcessEnv = {};
  // The caller's VAGRANT_* and VSW_* settings must not leak in (VAGRANT_CWD, VAGRANT_VAGRANTFILE, VSW_HOSTS...).
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('VAGRANT_') && !k.startsWith('VSW_')) env[k] = v;
  Object.assign(env, {
    VAGRANT_HOME: join(tmp, 'home'),
    VAGRANT_DOTFILE_PATH: join(tmp, 'dotfile'),
    VAGRANT_CHECKPOINT_DISABLE: '1',
    VAGRANT_NO_COLOR: '1',
    ...settings,
  });
  return new Promise((resolve) => {
    execFile(vagrantBin ?? 'vagrant', ['validate', '--ignore-provider'], { cwd: root, env, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

function needVagrant(t: ExecutionContext): boolean {
  if (vagrantBin) return true;
  t.fail("vagrant is not installed: install Debian's package (`apt-get install vagrant`; CI installs it), which these tests need to run `vagrant validate` on the Vagrantfile.");
  return false;
}

function machinesIn(output: string): string[] {
  return [...output.matchAll(/^==> (vsw\d+): Ignoring provider config for validation/gm)].map((m) => m[1]);
}

test.serial('vagrant validate passes for the default lab of 2 VMs', async (t) => {
  if (!needVagrant(t)) return;
  const r = await validate();
  t.is(r.code, 0, `vagrant validate failed:\n${r.stdout}${r.stderr}`);
  t.regex(r.stdout, /^Vagrantfile validated successfully\.$/m);
  t.deepEqual(machinesIn(r.stdout), ['vsw1', 'vsw2']);
  t.is(existsSync(join(root, '.vagrant')), dotVagrantBefore, 'validation leaves no .vagrant/ in the checkout');
});

test.serial('vagrant validate passes with VSW_HOSTS=3 and defines vsw3', async (t) => {
  if (!needVagrant(t)) return;
  const r = await validate({ VSW_HOSTS: '3' });
  t.is(r.code, 0, `vagrant validate failed:\n${r.stdout}${r.stderr}`);
  t.regex(r.stdout, /^Vagrantfile validated successfully\.$/m);
  t.deepEqual(machinesIn(r.stdout), ['vsw1', 'vsw2', 'vsw3']);
});

test.serial('a bad VSW_HOSTS stops vagrant with one sentence from the Vagrantfile', async (t) => {
  if (!needVagrant(t)) return;
  for (const bad of ['7', '0', 'three']) {
    const r = await validate({ VSW_HOSTS: bad });
    t.not(r.code, 0, `VSW_HOSTS=${bad} must fail`);
    t.notRegex(r.stdout, /validated successfully/);
    t.true(
      r.stderr.includes(`vsw lab: VSW_HOSTS (the number of lab VMs) must be 2 or 3, not "${bad}": unset it for the default, 2.`),
      `stderr for VSW_HOSTS=${bad}:\n${r.stderr}`,
    );
  }
});

test.serial('bad VSW_CPUS and VSW_MEMORY are refused too', async (t) => {
  if (!needVagrant(t)) return;
  const cpus = await validate({ VSW_CPUS: '0' });
  t.not(cpus.code, 0);
  t.true(cpus.stderr.includes('vsw lab: VSW_CPUS (the number of vCPUs per VM) must be 1 to 64, not "0"'), cpus.stderr);
  const memory = await validate({ VSW_MEMORY: '2G' });
  t.not(memory.code, 0);
  t.true(memory.stderr.includes('vsw lab: VSW_MEMORY (the RAM per VM in MiB) must be 1024 to 65536, not "2G"'), memory.stderr);
});

test('every provisioning script under scripts/vagrant passes bash -n', async (t) => {
  const scripts = readdirSync(scriptsDir).filter((f) => f.endsWith('.sh')).sort();
  t.deepEqual(scripts, ['build.sh', 'install-deps.sh', 'lab-network.sh', 'services.sh']);
  for (const script of scripts) {
    const r = await new Promise<Result>((resolve) => {
      execFile('bash', ['-n', join(scriptsDir, script)], (err, stdout, stderr) =>
        resolve({ code: err ? 1 : 0, stdout: String(stdout), stderr: String(stderr) || (err?.message ?? '') }),
      );
    });
    t.is(r.code, 0, `bash -n ${script}: ${r.stderr}`);
  }
  t.true(existsSync(join(scriptsDir, 'vsw.service')), 'the systemd unit that services.sh installs is there');
});

/**
 * The Vagrant lab (Vagrantfile, scripts/vagrant/): `vagrant validate` passes
 * for the default 2 VMs and for VSW_HOSTS=3, a bad VSW_HOSTS stops vagrant
 * with the Vagrantfile's own sentence, and every provisioning script parses
 * (`bash -n`). Nothing boots: validation needs no provider
 * (`--ignore-provider`), so it runs on any machine with Debian's vagrant
 * package, and a missing vagrant is a failure, never a skip. Vagrant's home and
 * data directories live in a per-run temporary directory, so the checkout gets
 * no .vagrant/ and a user's boxes and lab are never touched.
 *
 * What each VM would get is read through vagrant's own configuration loader
 * (a few lines of Ruby against the vagrant library): its two private
 * networks, the underlay and the LAN NIC that carries the transparent
 * network, and what the provisioning is told about them. lab-network.sh,
 * which creates the networks in a VM, runs for real inside a namespace of
 * this test that stands in for a VM, against a real daemon.
 */
import test, { type ExecutionContext } from 'ava';
import { execFile } from 'node:child_process';
import { accessSync, chmodSync, constants, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { CLI, startDaemon, teardown, type DaemonHandle } from './helpers/daemon.js';
import { addNetns, inNetns, runPrefix, sh } from './helpers/env.js';

/** The checkout: this file runs from dist/test/integration/. */
const root = fileURLToPath(new URL('../../../', import.meta.url));
const scriptsDir = join(root, 'scripts', 'vagrant');
const prefix = runPrefix();
const tmp = mkdtempSync(`/tmp/${prefix}-vagrant-`);
const dotVagrantBefore = existsSync(join(root, '.vagrant'));

/** The daemon of the lab-network.sh test. */
let daemon: DaemonHandle | undefined;

test.after.always('remove the temporary vagrant home and what the lab-network.sh test made', async () => {
  rmSync(tmp, { recursive: true, force: true });
  // Resets the daemon's state in its namespace, checks that nothing of it is left, removes the namespaces.
  await teardown(prefix, daemon);
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

/** The environment of a vagrant command: only the given lab settings, vagrant's files in the temporary directory. */
function vagrantEnv(settings: Record<string, string>): NodeJS.ProcessEnv {
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
  return env;
}

/** `vagrant validate --ignore-provider` in the checkout, with only the given lab settings. */
function validate(settings: Record<string, string> = {}): Promise<Result> {
  const env = vagrantEnv(settings);
  return new Promise((resolve) => {
    execFile(vagrantBin ?? 'vagrant', ['validate', '--ignore-provider'], { cwd: root, env, timeout: 120_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

interface MachineConfig {
  name: string;
  networks: { type: string; options: Record<string, unknown> }[];
  /** Provisioner name -> the environment it runs with. */
  provisioners: Record<string, Record<string, string>>;
  /** VirtualBox's `vb.customize` calls: [event, [VBoxManage arguments]]. */
  virtualbox: [string, string[]][];
}

/**
 * Each VM's configuration as vagrant itself merges it from the Vagrantfile
 * (the ruby that runs vagrant, with the vagrant library loaded), for the
 * VirtualBox provider without checking that VirtualBox is there.
 */
const DUMP_CONFIG = `
require "json"
require "vagrant"
env = Vagrant::Environment.new(cwd: ARGV[0])
machines = env.machine_names.map do |name|
  vm = env.vagrantfile.machine_config(name, :virtualbox, env.boxes, nil, false)[:config].vm
  { name: name,
    networks: vm.networks.map { |type, opts| { type: type, options: opts.reject { |k, _| k == :id } } },
    provisioners: vm.provisioners.to_h { |p| [p.name, p.config.env || {}] },
    virtualbox: vm.get_provider_config(:virtualbox).customizations }
end
puts JSON.generate(machines)
`;

async function machineConfigs(settings: Record<string, string> = {}): Promise<MachineConfig[]> {
  // vagrant's launcher is a ruby script: the same interpreter finds the same vagrant library.
  const ruby = (await sh('sh', ['-c', `head -1 '${vagrantBin}' | sed 's/^#! *//'`])).stdout.trim().split(' ')[0] || 'ruby';
  const r = await new Promise<Result>((resolve) => {
    execFile(ruby, ['-e', DUMP_CONFIG, root], { cwd: root, env: vagrantEnv(settings), timeout: 120_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? 1 : 0, stdout: String(stdout), stderr: String(stderr) || (err?.message ?? '') }),
    );
  });
  if (r.code !== 0) throw new Error(`reading the Vagrantfile through vagrant's loader failed:\n${r.stderr}`);
  return JSON.parse(r.stdout) as MachineConfig[];
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

test.serial('every VM has a second NIC on the LAN, the uplink its provisioning turns into the transparent network "lan"', async (t) => {
  if (!needVagrant(t)) return;
  for (const hosts of ['2', '3']) {
    const machines = await machineConfigs({ VSW_HOSTS: hosts });
    t.is(machines.length, Number(hosts));
    const ranges = new Set<string>();
    for (const [k, m] of machines.entries()) {
      const i = k + 1;
      const privates = m.networks.filter((n) => n.type === 'private_network');
      t.is(privates.length, 2, `${m.name} has two private networks (the underlay and the LAN): ${JSON.stringify(m.networks)}`);
      const [underlay, lan] = privates;
      t.is(underlay?.options.ip, `192.168.56.${10 + i}`, `${m.name}'s first NIC is the underlay`);
      t.is(lan?.options.ip, `192.168.57.${10 + i}`, `${m.name}'s second NIC is on the LAN`);
      t.is(lan?.options.nic_type, 'virtio');
      // libvirt's DHCP on the LAN hands out only what no container takes.
      t.is(lan?.options.libvirt__dhcp_start, '192.168.57.50');
      t.is(lan?.options.libvirt__dhcp_stop, '192.168.57.99');
      const env = m.provisioners.services ?? {};
      t.is(env.VSW_LAB_LAN_ADDRESS, String(lan?.options.ip), `${m.name}'s provisioning finds the uplink by the LAN NIC's address`);
      t.is(env.VSW_LAB_LAN_SUBNET, '192.168.57.0/24');
      t.is(env.VSW_LAB_LAN_GATEWAY, '192.168.57.1');
      t.is(env.VSW_LAB_LAN_NETWORK, 'lan');
      t.is(env.VSW_LAB_LAN_RANGE, `192.168.57.${112 + 16 * i}/28`, `${m.name}'s containers' own slice, outside the DHCP pool`);
      ranges.add(env.VSW_LAB_LAN_RANGE);
      // VirtualBox delivers frames for the containers' MACs only with the LAN NIC (adapter 3) promiscuous.
      t.true(
        m.virtualbox.some(([, args]) => args[0] === 'modifyvm' && args[2] === '--nicpromisc3' && args[3] === 'allow-all'),
        `${m.name}'s VirtualBox settings: ${JSON.stringify(m.virtualbox)}`,
      );
    }
    t.is(ranges.size, machines.length, 'no two VMs hand out the same LAN addresses');
  }
});

test.serial('lab-network.sh creates blue and, on the NIC with the LAN address, the transparent network lan on a real daemon; run again, it changes nothing', async (t) => {
  // A namespace plays the VM: the underlay NIC with the VTEP address, the LAN NIC with the VM's LAN address
  // (veths, whose other ends stay in the namespace: nothing is sent, the daemon only opens the uplink).
  const vm = `${prefix}-vm`;
  await addNetns(vm);
  for (const [nic, peer, addr] of [['eth1', 'ul', '192.168.56.11/24'], ['eth2', 'lan', '192.168.57.11/24']]) {
    for (const args of [['link', 'add', nic, 'type', 'veth', 'peer', 'name', peer], ['addr', 'add', addr, 'dev', nic], ['link', 'set', nic, 'up'], ['link', 'set', peer, 'up']]) {
      const r = await sh('ip', ['-n', vm, ...args]);
      t.is(r.code, 0, `ip -n ${vm} ${args.join(' ')}: ${r.stderr}`);
    }
  }
  const d = (daemon = await startDaemon(prefix, { netns: vm }));
  const bin = join(tmp, 'vsw');
  writeFileSync(bin, `#!/bin/sh\nexec node '${CLI}' --socket '${d.socket}' "$@"\n`);
  chmodSync(bin, 0o755);
  const envFile = join(tmp, 'lab.env');
  writeFileSync(envFile, [
    'VSW_LAB_NETWORK=blue', 'VSW_LAB_SUBNET=10.10.0.0/24', 'VSW_LAB_VNI=4096', 'VSW_LAB_VTEP=192.168.56.11', 'VSW_LAB_PEERS="192.168.56.12"',
    'VSW_LAB_LAN_NETWORK=lan', 'VSW_LAB_LAN_ADDRESS=192.168.57.11', 'VSW_LAB_LAN_SUBNET=192.168.57.0/24',
    'VSW_LAB_LAN_GATEWAY=192.168.57.1', 'VSW_LAB_LAN_RANGE=192.168.57.128/28', '',
  ].join('\n'));
  const run = (): Promise<Result> =>
    inNetns(vm, 'env', [`VSW_LAB_ENV=${envFile}`, `VSW_BIN=${bin}`, 'VSW_LAB_TIMEOUT=15', 'bash', join(scriptsDir, 'lab-network.sh')], { timeoutMs: 60_000 });
  const first = await run();
  t.is(first.code, 0, `lab-network.sh: ${first.stderr}`);
  t.regex(first.stderr, /created overlay network blue/);
  t.regex(first.stderr, /vsw network create -d transparent --uplink eth2 --subnet 192\.168\.57\.0\/24 --gateway 192\.168\.57\.1 --ip-range 192\.168\.57\.128\/28 lan/);
  const lan = await d.vswJson<{ driver: string; gateway: string; uplink?: { interface: string } }>(['network', 'inspect', 'lan']);
  t.is(lan.driver, 'transparent');
  t.is(lan.uplink?.interface, 'eth2', 'the uplink is the NIC with the LAN address');
  t.is(lan.gateway, '192.168.57.1');
  // A container on it takes an address from the VM's own slice.
  const c = `${prefix}-vm-c1`;
  await addNetns(c);
  const id = (await d.vswOk(['endpoint', 'create', '--network', 'lan', '--netns', c])).trim();
  const ep = await d.vswJson<{ ip: string }>(['endpoint', 'inspect', id]);
  const last = Number(ep.ip.split('/')[0].split('.')[3]);
  t.true(ep.ip.startsWith('192.168.57.') && last >= 128 && last < 144, `the container's address ${ep.ip} is from 192.168.57.128/28`);

  const second = await run();
  t.is(second.code, 0, `lab-network.sh, again: ${second.stderr}`);
  t.regex(second.stderr, /network blue exists already/);
  t.regex(second.stderr, /network lan exists already/);
  const nets = await d.vswJson<{ name: string }[]>(['network', 'ls', '--json']);
  t.deepEqual(nets.map((n) => n.name).sort(), ['blue', 'lan']);
  await d.vswOk(['endpoint', 'rm', id]);
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

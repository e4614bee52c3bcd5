/**
 * A small Linux guest under QEMU for the vhost-user tests and the benchmark:
 * Debian's own kernel (/boot/vmlinuz-*) with a busybox initramfs built here,
 * one virtio-net NIC on either a vhost-user socket (vsw serves it, QEMU is the
 * client) or a kernel TAP inside a namespace (the Linux-bridge baseline), and
 * a shell on the serial console that `Guest.run` drives.
 *
 * Why a home-made initramfs and not a disk image: nothing to download, the
 * kernel comes from the `linux-image-amd64` package, and the whole guest is a
 * few MB that boots in seconds even under TCG. It holds busybox, iperf3 with
 * the shared libraries ldd names (for the benchmark), the virtio modules, and
 * an /init (initScript below) that mounts proc, sys, dev; insmods the modules
 * in dependency order; reads `vsw.ip=CIDR vsw.gw=ADDR vsw.mtu=N` from the
 * kernel command line and configures eth0; then runs a shell on ttyS0 with
 * echo off, no prompt and no job control, which prints VSW-GUEST-READY once
 * it reads commands.
 *
 * Why TCG by default here: /dev/kvm exists on these machines but a nested
 * KVM guest hangs right after the boot stub (burning a core), so detectAccel
 * boots once with KVM, gives up quickly when the kernel prints nothing, and
 * remembers the verdict until the machine reboots.
 *
 * Files: /tmp/vsw-vm/<hash of inputs>/initramfs.cpio.gz (the image),
 * /tmp/vsw-vm/accel-<boot id>.json (the verdict), /tmp/vsw-vm/<name>.log
 * (each guest's serial console and QEMU's stderr).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  constants,
  copyFileSync,
  createWriteStream,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { createGzip } from 'node:zlib';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const VM_DIR = '/tmp/vsw-vm';
const QEMU = 'qemu-system-x86_64';
const BUSYBOX = '/bin/busybox';
const IPERF3 = '/usr/bin/iperf3';
/** What the guest's shell prints once it reads commands (see SHRC). */
const READY = 'VSW-GUEST-READY';
/** What /init prints when something the guest needs failed (startGuest refuses the guest). */
const INIT_ERROR = 'vsw-init: error:';
/** The NIC drivers: virtio_pci's and virtio_net's dependencies, merged in load order. */
const MODULE_ROOTS = ['virtio_pci', 'virtio_net'];

// ---------------------------------------------------------------------------
// What the machine must have

function onPath(cmd: string): boolean {
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    try {
      accessSync(join(dir, cmd), constants.X_OK);
      return true;
    } catch {}
  }
  return false;
}

/**
 * null when guests can be built and started here, else one sentence naming
 * what is missing and its Debian package (for the tests' and the bench's
 * "cannot run here" messages).
 */
export async function qemuAvailable(): Promise<string | null> {
  if (!onPath(QEMU)) return `${QEMU} is not installed (package qemu-system-x86).`;
  try {
    kernelPath();
  } catch (e) {
    return (e as Error).message;
  }
  if (!existsSync(join('/lib/modules', kernelVersion()))) return `/lib/modules/${kernelVersion()} is missing (package linux-image-amd64).`;
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} is missing (package busybox-static).`;
  if (!onPath('cpio')) return 'cpio is not installed (package cpio).';
  if (!onPath('modprobe')) return 'modprobe is not installed (package kmod).';
  if (!existsSync(IPERF3)) return `${IPERF3} is missing (package iperf3).`;
  return null;
}

// ---------------------------------------------------------------------------
// Kernel

/** The newest /boot/vmlinuz-*; throws one sentence when there is none. */
export function kernelPath(): string {
  const kernels = existsSync('/boot') ? readdirSync('/boot').filter((f) => f.startsWith('vmlinuz-')) : [];
  if (kernels.length === 0) throw new Error('No kernel in /boot/vmlinuz-* to boot guests with: install linux-image-amd64.');
  // "6.1.0-57" after "6.1.0-9": compare the numbers as numbers.
  kernels.sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  return join('/boot', kernels[kernels.length - 1]);
}

/** The version of kernelPath(), which names its modules' directory. */
export function kernelVersion(): string {
  return basename(kernelPath()).slice('vmlinuz-'.length);
}

// ---------------------------------------------------------------------------
// Initramfs

/**
 * /init. Runs as PID 1 with no open files when the image has no /dev/console
 * (GNU cpio cannot add a device node without mknod, i.e. root), hence the
 * redirect once devtmpfs is up. printk goes to 1 so that kernel messages do
 * not land in the middle of a command's output on the console (dmesg still
 * has them). The shell is respawned: PID 1 must not exit.
 */
function initScript(modules: string[]): string {
  return `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec 0<>/dev/console 1>&0 2>&0
mkdir -p /dev/pts /dev/shm /tmp /run /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk
for m in ${modules.join(' ')}; do
  insmod /modules/$m.ko || echo "${INIT_ERROR} insmod $m failed"
done
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vsw.ip=*) ip=\${arg#vsw.ip=} ;;
    vsw.gw=*) gw=\${arg#vsw.gw=} ;;
    vsw.mtu=*) mtu=\${arg#vsw.mtu=} ;;
  esac
done
ip link set lo up
# virtio_net registers eth0 during its probe; wait a little in case it is late.
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done
if [ -e /sys/class/net/eth0 ]; then
  [ -n "$mtu" ] && { ip link set eth0 mtu "$mtu" || echo "${INIT_ERROR} mtu $mtu refused"; }
  ip link set eth0 up
  [ -n "$ip" ] && { ip addr add "$ip" dev eth0 || echo "${INIT_ERROR} address $ip refused"; }
  [ -n "$gw" ] && { ip route add default via "$gw" || echo "${INIT_ERROR} gateway $gw refused"; }
else
  echo "${INIT_ERROR} no eth0 (the virtio-net device did not appear)"
fi
export HOME=/root PATH=/bin:/sbin:/usr/bin:/usr/sbin ENV=/etc/vsw-shrc
cd /root
while true; do setsid cttyhack sh -i; done
`;
}

/**
 * The interactive shell's rc ($ENV). No echo and no prompts so that the
 * console carries only what commands print; no job control (set +m) so that
 * a finished background job prints no "Done" line into a later command's
 * output, and background jobs ignore the ^C that Guest.run sends on timeout.
 * The ^C still reaches the foreground command: cttyhack made ttyS0 the
 * shell's controlling terminal.
 */
const SHRC = `set +m
PS1=''
PS2=''
stty -echo
echo ${READY}
`;

/** The `insmod` lines of modprobe's plan for MODULE_ROOTS: paths in load order, duplicates dropped. */
async function modulePaths(version: string): Promise<string[]> {
  const paths: string[] = [];
  for (const root of MODULE_ROOTS) {
    const { stdout } = await execFileP('modprobe', ['-S', version, '--show-depends', root]);
    for (const line of stdout.split('\n')) {
      const m = /^insmod (\S+)/.exec(line);
      if (m && !paths.includes(m[1])) paths.push(m[1]);
    }
  }
  const names = paths.map(moduleName);
  for (const needed of MODULE_ROOTS) {
    if (!names.includes(needed)) throw new Error(`Kernel ${version} has no loadable ${needed} module (built in kernels are not supported here).`);
  }
  return paths;
}

function moduleName(path: string): string {
  return basename(path).replace(/\.ko(\.(xz|zst|gz))?$/, '');
}

/** The shared libraries `ldd` resolves for a binary, the dynamic loader included; none for a static one. */
async function sharedLibraries(binary: string): Promise<string[]> {
  let stdout: string;
  try {
    ({ stdout } = await execFileP('ldd', [binary]));
  } catch {
    return []; // "not a dynamic executable"
  }
  const libs: string[] = [];
  for (const line of stdout.split('\n')) {
    const m = /(?:=>\s*)?(\/\S+)\s+\(0x/.exec(line);
    if (m) libs.push(m[1]);
  }
  return libs;
}

/** Copies a file to the same path under root (through symlinks: the image gets the content). */
function copyInto(root: string, path: string, as = path): void {
  const dest = join(root, as);
  mkdirSync(dirname(dest), { recursive: true });
  copyFileSync(path, dest);
  chmodSync(dest, statSync(path).mode & 0o7777);
}

/** A module as a plain .ko: busybox's insmod is not trusted with compressed ones. */
async function copyModule(path: string, dest: string): Promise<void> {
  const tool = path.endsWith('.xz') ? 'xz' : path.endsWith('.zst') ? 'zstd' : path.endsWith('.gz') ? 'gzip' : undefined;
  if (!tool) {
    copyFileSync(path, dest);
    return;
  }
  const { stdout } = await execFileP(tool, ['-dc', path], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 });
  writeFileSync(dest, stdout);
}

let building: Promise<string> | undefined;

/**
 * The guest's initramfs (gzip'ed newc cpio), built once per set of inputs:
 * the path is keyed by a hash of the kernel version, /init, the shell rc and
 * the size and time of every file copied in, so a kernel or package upgrade or
 * an edit of the scripts above makes a new one. Built in a private directory
 * and renamed into place, so concurrent builders do not see half an image.
 */
export function buildInitramfs(): Promise<string> {
  building ??= build().finally(() => {
    building = undefined;
  });
  return building;
}

async function build(): Promise<string> {
  const version = kernelVersion();
  const modules = await modulePaths(version);
  const init = initScript(modules.map(moduleName));
  const binaries = [BUSYBOX, IPERF3];
  const libs = [...new Set((await Promise.all(binaries.map(sharedLibraries))).flat())];
  const inputs = [kernelPath(), ...modules, ...binaries, ...libs].map((f) => {
    const s = statSync(f);
    return `${f}:${s.size}:${s.mtimeMs}`;
  });
  const hash = createHash('sha256').update(JSON.stringify({ format: 1, version, init, SHRC, inputs })).digest('hex').slice(0, 16);
  const dir = join(VM_DIR, hash);
  const image = join(dir, 'initramfs.cpio.gz');
  if (existsSync(image)) return image;

  mkdirSync(dir, { recursive: true });
  const root = join(dir, `root-${process.pid}-${randomBytes(3).toString('hex')}`);
  const partial = `${image}.${process.pid}.partial`;
  try {
    for (const d of ['bin', 'sbin', 'usr/bin', 'usr/sbin', 'proc', 'sys', 'dev', 'tmp', 'etc', 'modules', 'root']) mkdirSync(join(root, d), { recursive: true });
    for (const f of [...binaries, ...libs]) copyInto(root, f);
    // Symlinks made here rather than `busybox --install` at boot: every TCG second counts.
    const { stdout: applets } = await execFileP(BUSYBOX, ['--list-full']);
    for (const applet of applets.split('\n').filter(Boolean)) {
      const link = join(root, applet);
      if (existsSync(link)) continue;
      mkdirSync(dirname(link), { recursive: true });
      symlinkSync('/bin/busybox', link);
    }
    for (const m of modules) await copyModule(m, join(root, 'modules', `${moduleName(m)}.ko`));
    writeFileSync(join(root, 'init'), init, { mode: 0o755 });
    writeFileSync(join(root, 'etc', 'vsw-shrc'), SHRC);
    await writeCpioGz(root, partial);
    renameSync(partial, image);
  } finally {
    rmSync(root, { recursive: true, force: true });
    rmSync(partial, { force: true });
  }
  return image;
}

/** `find . | cpio -o -H newc | gzip` of root, owned by root:root whoever builds it. */
async function writeCpioGz(root: string, out: string): Promise<void> {
  const { stdout: list } = await execFileP('find', ['.'], { cwd: root, maxBuffer: 16 * 1024 * 1024 });
  const cpio = spawn('cpio', ['-o', '-H', 'newc', '-R', '0:0', '--quiet'], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  cpio.stderr.on('data', (d) => (stderr += String(d)));
  const exited = new Promise<number | null>((resolve, reject) => {
    cpio.on('error', reject);
    cpio.on('close', resolve);
  });
  cpio.stdin.end(list);
  await pipeline(cpio.stdout, createGzip(), createWriteStream(out));
  const code = await exited;
  if (code !== 0) throw new Error(`cpio failed (exit ${code}): ${stderr.trim()}`);
}

// ---------------------------------------------------------------------------
// Accelerator

export type Accel = 'kvm' | 'tcg';

/** How long a KVM boot may stay silent before we call it the nested-KVM hang. */
const KVM_FIRST_OUTPUT_MS = 3_000;
/** How long a KVM boot that did start may take to reach the shell. */
const KVM_READY_MS = 20_000;

/**
 * 'kvm' when a KVM guest boots here, else 'tcg'. VSW_VM_ACCEL=kvm|tcg
 * decides without asking. Otherwise the answer of one probe per machine boot
 * (cached under /tmp/vsw-vm, keyed by the kernel's boot_id): the image is
 * booted with KVM and `earlyprintk`; the nested hang shows as silence after
 * the boot stub, so a kernel that prints nothing within 3 s is given up on
 * (and one that prints but never reaches the shell within 20 s too).
 */
export async function detectAccel(): Promise<Accel> {
  const forced = process.env.VSW_VM_ACCEL;
  if (forced) {
    if (forced !== 'kvm' && forced !== 'tcg') throw new Error(`VSW_VM_ACCEL must be kvm or tcg, not ${JSON.stringify(forced)}.`);
    return forced;
  }
  if (!existsSync('/dev/kvm')) return 'tcg';
  const bootId = readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim();
  const cache = join(VM_DIR, `accel-${bootId}.json`);
  try {
    return (JSON.parse(readFileSync(cache, 'utf8')) as { accel: Accel }).accel;
  } catch {}
  probing ??= (async () => {
    const started = Date.now();
    const accel: Accel = (await kvmBoots()) ? 'kvm' : 'tcg';
    mkdirSync(VM_DIR, { recursive: true });
    writeFileSync(`${cache}.${process.pid}`, JSON.stringify({ accel, probeMs: Date.now() - started }) + '\n');
    renameSync(`${cache}.${process.pid}`, cache);
    return accel;
  })().finally(() => {
    probing = undefined;
  });
  return probing;
}

let probing: Promise<Accel> | undefined;

/**
 * QEMU's argv behind `setpriv --pdeathsig KILL` when there is setpriv: a
 * guest (or a hung KVM probe spinning on a core) dies with this process
 * instead of outliving a crashed test run. setpriv execs, so the pid is QEMU's.
 */
function qemuCommand(args: string[]): string[] {
  return [...(onPath('setpriv') ? ['setpriv', '--pdeathsig', 'KILL'] : []), QEMU, ...args];
}

async function kvmBoots(): Promise<boolean> {
  const initrd = await buildInitramfs();
  const [file, ...args] = qemuCommand([
    ...['-name', 'vswt-kvm-probe', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot', '-accel', 'kvm', '-cpu', 'host', '-m', '256'],
    ...['-kernel', kernelPath(), '-initrd', initrd, '-append', 'console=ttyS0 earlyprintk=ttyS0 panic=-1', '-serial', 'stdio'],
  ]);
  const qemu = spawn(file, args, { stdio: ['pipe', 'pipe', 'ignore'] });
  qemu.stdin.on('error', () => {});
  let out = '';
  const exited = new Promise<void>((resolve) => {
    qemu.on('error', () => resolve());
    qemu.on('exit', () => resolve());
  });
  const seen = (text: string, ms: number) =>
    new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => done(false), ms);
      const check = () => {
        if (out.includes(text)) done(true);
      };
      const done = (v: boolean) => {
        clearTimeout(timer);
        qemu.stdout.off('data', check);
        resolve(v);
      };
      qemu.stdout.on('data', check);
      void exited.then(() => done(out.includes(text)));
      check();
    });
  qemu.stdout.on('data', (d: Buffer) => (out += d.toString('latin1')));
  try {
    return (await seen('Linux version', KVM_FIRST_OUTPUT_MS)) && (await seen(READY, KVM_READY_MS));
  } finally {
    qemu.kill('SIGKILL');
    await exited;
  }
}

// ---------------------------------------------------------------------------
// Guests

export type GuestNetdev =
  /**
   * vsw serves SOCKET; QEMU connects to it and finishes the vhost-user
   * handshake before it boots the guest (so the boot timeout includes it).
   * Without reconnectSeconds the socket must exist when QEMU starts; with it
   * QEMU waits for it and connects again after vsw restarts.
   */
  | { kind: 'vhost-user'; socket: string; reconnectSeconds?: number; server?: boolean }
  /**
   * A kernel TAP named IFNAME in namespace NETNS; QEMU runs inside that
   * namespace. A persistent TAP made beforehand (`ip tuntap add`, already in
   * its bridge and up) is attached; otherwise QEMU creates one, down, that
   * disappears with QEMU.
   */
  | { kind: 'tap'; ifname: string; netns: string };

export interface GuestOptions {
  /** Names the QEMU process (-name) and its log /tmp/vsw-vm/NAME.log: the test's vswtXXXX prefix and a suffix. */
  name: string;
  netdev: GuestNetdev;
  mac: string;
  /** eth0's address, CIDR. */
  ip?: string;
  gateway?: string;
  mtu?: number;
  /** Guest memory, a shared memfd (vhost-user needs it; the TAP guest gets the same for like-for-like numbers). Default 256. */
  memMb?: number;
  cpus?: number;
  /** More kernel command line. */
  extraAppend?: string;
  /** Appended to the virtio-net-pci device's options, e.g. "guest_tso4=off,guest_csum=off" (offloads the NIC declines). */
  deviceOptions?: string;
  /** How long the guest may take to reach its shell; default 60 s under TCG, 20 s under KVM. */
  bootTimeoutMs?: number;
}

export interface RunResult {
  code: number;
  /** What the command printed (stdout and stderr, console line endings turned into \n). */
  output: string;
}

export interface Guest {
  readonly name: string;
  readonly pid: number;
  readonly accel: Accel;
  readonly logPath: string;
  /** Milliseconds from spawning QEMU to the guest's shell. */
  readonly bootMs: number;
  /**
   * Runs a shell command line (several lines allowed) in the guest, stdin
   * /dev/null, and returns its exit status and output. Runs one at a time.
   * On timeout (default 30 s) the command gets a ^C and the call rejects.
   */
  run(cmd: string, opts?: { timeoutMs?: number }): Promise<RunResult>;
  /** Starts `cmd` in the background with its output in a file in the guest; returns its pid there and that file. */
  spawnBackground(cmd: string): Promise<{ pid: number; log: string }>;
  /** SIGTERM, then SIGKILL after 5 s; resolves once QEMU is gone. Idempotent. */
  stop(): Promise<void>;
}

function logTail(path: string, lines = 25): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r/g, '').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function qemuArgs(opts: GuestOptions, accel: Accel, initrd: string): string[] {
  const mem = opts.memMb ?? 256;
  const append = ['console=ttyS0', 'quiet', 'panic=-1'];
  if (opts.ip) append.push(`vsw.ip=${opts.ip}`);
  if (opts.gateway) append.push(`vsw.gw=${opts.gateway}`);
  if (opts.mtu) append.push(`vsw.mtu=${opts.mtu}`);
  if (opts.extraAppend) append.push(opts.extraAppend);
  const net = opts.netdev;
  const netdev =
    net.kind === 'vhost-user'
      ? [
          '-chardev',
          // server: QEMU serves the socket and vsw connects (--vhost-mode client); QEMU then waits for vsw before the guest boots.
          net.server === true
            ? `socket,id=chr0,path=${net.socket},server=on,wait=off`
            : `socket,id=chr0,path=${net.socket}${net.reconnectSeconds !== undefined ? `,reconnect=${net.reconnectSeconds}` : ''}`,
          '-netdev',
          'vhost-user,id=net0,chardev=chr0',
        ]
      : ['-netdev', `tap,id=net0,ifname=${net.ifname},script=no,downscript=no,vhost=off`];
  return [
    ...['-name', `${opts.name},process=${opts.name}`, '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot'],
    ...['-accel', accel, ...(accel === 'kvm' ? ['-cpu', 'host'] : []), '-smp', String(opts.cpus ?? 1), '-m', `${mem}M`],
    ...['-object', `memory-backend-memfd,id=mem,size=${mem}M,share=on`, '-numa', 'node,memdev=mem'],
    ...['-kernel', kernelPath(), '-initrd', initrd, '-append', append.join(' '), '-serial', 'stdio'],
    ...netdev,
    // Under TCG, QEMU 7.2 (Debian 12) crashes in msix_set_vector_notifiers when a vhost-user NIC starts with MSI-X
    // (gdb: vhost_net_start -> msix_set_vector_notifiers, SIGSEGV): without vectors the NIC uses INTx and runs.
    // Both netdevs get the same device, so the benchmark compares like with like.
    ...['-device', `virtio-net-pci,netdev=net0,mac=${opts.mac}${accel === 'tcg' ? ',vectors=0' : ''}${opts.deviceOptions ? `,${opts.deviceOptions}` : ''}`],
  ];
}

/**
 * Boots a guest and resolves once its shell is ready (see the module
 * comment). On any failure QEMU is stopped and the error names the log and
 * carries its tail. The caller registers stop() in its cleanup; QEMU also
 * gets SIGKILL if this process dies (qemuCommand), so a crashed test run
 * leaves no guest behind.
 */
export async function startGuest(opts: GuestOptions): Promise<Guest> {
  if (!/^vswt[A-Za-z0-9_.-]*$/.test(opts.name)) throw new Error(`Guest name ${JSON.stringify(opts.name)} must start with vswt and hold only letters, digits, _ . -.`);
  if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/i.test(opts.mac)) throw new Error(`Guest MAC ${JSON.stringify(opts.mac)} is not of the form 52:54:00:12:34:56.`);
  const missing = await qemuAvailable();
  if (missing) throw new Error(missing);
  const [accel, initrd] = await Promise.all([detectAccel(), buildInitramfs()]);
  mkdirSync(VM_DIR, { recursive: true });
  const logPath = join(VM_DIR, `${opts.name}.log`);
  const args = qemuArgs(opts, accel, initrd);
  const argv = qemuCommand(args);
  // `ip netns exec` execs too, so the child's pid is QEMU's.
  const [file, ...rest] = opts.netdev.kind === 'tap' ? ['ip', 'netns', 'exec', opts.netdev.netns, ...argv] : argv;
  writeFileSync(logPath, `[vsw-guest] ${[file, ...rest].join(' ')}\n`);
  const errFd = openSync(logPath, 'a');
  const started = Date.now();
  let qemu: ChildProcess & { stdin: NonNullable<ChildProcess['stdin']>; stdout: NonNullable<ChildProcess['stdout']> };
  try {
    qemu = spawn(file, rest, { stdio: ['pipe', 'pipe', errFd] }) as typeof qemu;
  } finally {
    closeSync(errFd);
  }
  const con = new Console(qemu, logPath);
  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      if (!con.exited) {
        qemu.kill('SIGTERM');
        const timer = setTimeout(() => qemu.kill('SIGKILL'), 5_000);
        await con.exit;
        clearTimeout(timer);
      }
    })());

  const bootTimeoutMs = opts.bootTimeoutMs ?? (accel === 'kvm' ? 20_000 : 60_000);
  try {
    const ready = await con.waitFor(new RegExp(READY), bootTimeoutMs, 'the guest to boot');
    const failed = ready.input.slice(0, ready.index).split('\n').filter((l) => l.includes(INIT_ERROR));
    if (failed.length) throw new Error(`The guest's init failed: ${failed.join('; ')} (log ${logPath}).`);
  } catch (e) {
    await stop();
    throw new Error(`${(e as Error).message}\n--- tail of ${logPath} ---\n${logTail(logPath)}`);
  }
  const bootMs = Date.now() - started;

  const nonce = randomBytes(3).toString('hex');
  let seq = 0;
  let queue: Promise<unknown> = Promise.resolve();
  const runOnce = async (cmd: string, timeoutMs: number): Promise<RunResult> => {
    if (!cmd.trim()) throw new Error('Guest.run needs a command.');
    const id = `${nonce}${++seq}`;
    // The quotes keep the markers' literal text out of anything that echoes the input back.
    con.write(`echo __vsw_b"${id}"__\n{\n${cmd}\n} </dev/null\necho __vsw_e"${id}"_$?__\n`, cmd);
    try {
      const m = await con.waitFor(new RegExp(`__vsw_b${id}__\\n([\\s\\S]*?)__vsw_e${id}_(\\d+)__\\n`), timeoutMs, `\`${cmd}\``);
      return { code: Number(m[2]), output: m[1] };
    } catch (e) {
      if (!con.exited) con.write('\x03', '^C');
      throw new Error(`${(e as Error).message}\n--- tail of ${logPath} ---\n${logTail(logPath)}`);
    }
  };
  const run = (cmd: string, o: { timeoutMs?: number } = {}): Promise<RunResult> => {
    const next = queue.then(() => runOnce(cmd, o.timeoutMs ?? 30_000));
    queue = next.catch(() => {});
    return next;
  };
  let bg = 0;
  const spawnBackground = async (cmd: string): Promise<{ pid: number; log: string }> => {
    const log = `/tmp/bg${++bg}.log`;
    const r = await run(`( ${cmd}\n) >${log} 2>&1 &\necho $!`);
    const pid = Number(r.output.trim().split('\n').pop());
    if (r.code !== 0 || !Number.isInteger(pid)) throw new Error(`Could not start \`${cmd}\` in the background: ${r.output.trim()}`);
    return { pid, log };
  };
  return { name: opts.name, pid: qemu.pid!, accel, logPath, bootMs, run, spawnBackground, stop };
}

/**
 * The serial console: QEMU's stdout read into `text` (and appended to the
 * log), stdin written to. waitFor resolves with the first match in `text`
 * and drops everything up to its end, so each marker is looked for only in
 * what came after the previous one.
 */
class Console {
  text = '';
  exited = false;
  readonly exit: Promise<void>;
  private readonly logFd: number;
  private readonly listeners = new Set<() => void>();

  constructor(
    private readonly qemu: ChildProcess & { stdin: NonNullable<ChildProcess['stdin']>; stdout: NonNullable<ChildProcess['stdout']> },
    private readonly logPath: string,
  ) {
    qemu.stdin.on('error', () => {}); // EPIPE once QEMU is gone: the exit is reported instead
    qemu.stdout.setEncoding('utf8');
    // Written synchronously: the log's order is the console's, and an error's tail is up to date.
    this.logFd = openSync(logPath, 'a');
    qemu.stdout.on('data', (chunk: string) => {
      this.log(chunk);
      this.text += chunk.replace(/\r/g, '');
      // A guest printing without end must not grow us without end: markers sit near the end.
      if (this.text.length > 8 << 20) this.text = this.text.slice(-(1 << 20));
      for (const l of this.listeners) l();
    });
    this.exit = new Promise<void>((resolve) => {
      const done = (why: string) => {
        if (this.exited) return;
        this.log(`\n[vsw-guest] QEMU ${why}\n`);
        this.exited = true;
        closeSync(this.logFd);
        for (const l of this.listeners) l();
        resolve();
      };
      qemu.on('error', (e) => done(`could not start: ${e.message}`));
      // 'close', not 'exit': the console's last output has been read by then.
      qemu.on('close', (code, signal) => done(`exited (${signal ?? `code ${code}`})`));
    });
  }

  private log(text: string): void {
    if (!this.exited) writeSync(this.logFd, text);
  }

  write(data: string, what: string): void {
    this.log(`\n[vsw-guest] > ${what}\n`);
    this.qemu.stdin.write(data);
  }

  waitFor(re: RegExp, timeoutMs: number, what: string): Promise<RegExpExecArray> {
    return new Promise((resolve, reject) => {
      const finish = (err?: Error, m?: RegExpExecArray) => {
        clearTimeout(timer);
        this.listeners.delete(check);
        if (err) reject(err);
        else resolve(m!);
      };
      const check = () => {
        const m = re.exec(this.text);
        if (m) {
          this.text = this.text.slice(m.index + m[0].length);
          finish(undefined, m);
        } else if (this.exited) {
          finish(new Error(`QEMU exited while waiting for ${what} (log ${this.logPath}).`));
        }
      };
      const timer = setTimeout(() => finish(new Error(`Timed out after ${timeoutMs} ms waiting for ${what} (log ${this.logPath}).`)), timeoutMs);
      this.listeners.add(check);
      check();
    });
  }
}

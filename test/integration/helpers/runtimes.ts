/**
 * Real container runtimes for integration tests and benchmarks: podman,
 * dockerd and containerd, each started with its own configuration, state and
 * sockets under /tmp/PREFIX, so that nothing reads the host's /etc/containers,
 * /etc/docker or /var/lib/{containers,docker,containerd}, and nothing needs
 * a registry: every image is built here from the host's static busybox.
 *
 * What each runtime needs on these machines (measured on Debian 12, podman
 * 4.3.1, docker.io 20.10.24, containerd 1.6.20, kernel 6.18, hybrid cgroups):
 *
 * - Images. busyboxRootfsTar() writes a rootfs tarball (/bin/busybox and a
 *   symlink per applet, /etc/passwd, /etc/group, /etc/hosts, /tmp, /proc,
 *   /sys, /dev, /root) once per directory. `podman import` and `docker import`
 *   take it as it is; containerd wants an image archive, so ociImageTar()
 *   wraps the same tarball as the single layer of an OCI image layout
 *   (oci-layout, index.json, manifest, config, sha256 blobs), which `ctr
 *   images import` accepts with no flags (name from the
 *   io.containerd.image.name annotation).
 * - iperf3. busybox has none, so the rootfs carries the host's
 *   /usr/bin/iperf3 and the libraries `ldd` names (libiperf, libcrypto,
 *   libsctp, libm, libc and the loader, about 8 MiB), copied to the paths ldd
 *   prints, which are in the loader's default search path. That works the
 *   same in all three runtimes, with no per-runtime bind-mount syntax and no
 *   dependence on the host's files staying put while a container runs. The
 *   image is then about 10 MiB. Without /usr/bin/iperf3 on the host the image
 *   has no iperf3 (hasIperf3() says so).
 * - podman: `runtime = "runc"` (Debian's crun refuses hybrid cgroups),
 *   `cgroup_manager = "cgroupfs"` (no systemd), `events_logger = "file"`,
 *   `lock_type = "file"` (the default shm lock is one host-wide
 *   /dev/shm/libpod_lock that every podman store on the machine would share),
 *   `network_backend = "cni"` with our own `network_config_dir` and
 *   `cni_plugin_dirs`, tmp_dir and image_copy_tmp_dir under /tmp/PREFIX
 *   (plus TMPDIR: `podman import` stages the tarball in /var/tmp otherwise),
 *   XDG_CONFIG_HOME and XDG_DATA_HOME under /tmp/PREFIX (`podman system
 *   reset` writes ~/.config/containers/podman otherwise). Storage driver
 *   overlay works on this ext4 root (native kernel overlay, no
 *   fuse-overlayfs); vfs works too but copies the rootfs per container.
 *   `podman network create` is not used for the baseline bridge: podman 4.3
 *   has no --interface-name (the bridge would be cni-podmanN, not
 *   prefixed), and its conflist adds ipMasq, portmap and the firewall
 *   plugin, which leave CNI-FORWARD/CNI-ADMIN chains and an empty `ip
 *   filter` and `ip nat` table in the host's nftables after the network is
 *   removed, and host-local leases in /var/lib/cni/networks. PodmanHandle
 *   .bridgeNetwork() writes a conflist (bridge + host-local only, bridge named
 *   with the prefix, leases under /tmp/PREFIX) into the isolated
 *   network_config_dir; podman lists it and `podman network rm` deletes it
 *   and its bridge.
 * - dockerd: its own --data-root, --exec-root, -H unix://..., --pidfile and
 *   --config-file (which also moves the trust key, `deprecated-key-path`, off
 *   /etc/docker/key.json), and its own containerd (startContainerd, passed by
 *   --containerd): the containerd dockerd starts by itself creates
 *   /opt/containerd. By default `--bridge=none --iptables=false
 *   --ip6tables=false --ip-masq=false --ip-forward=false`; with `bridge:
 *   true` a bridge PREFIXdbr is made with `ip link` and an address and passed
 *   as --bridge (docker refuses --bip together with --bridge and cannot
 *   rename docker0), still without iptables. The CLI is Debian's
 *   /usr/bin/docker (20.10; /usr/local/bin/docker on these machines is a
 *   28.x CLI) with DOCKER_CONFIG under /tmp/PREFIX. Remote network plugins
 *   are found at /run/docker/plugins/NAME.sock (host-wide; that is fine).
 * - containerd: a generated config.toml (version 2) with root, state and the
 *   gRPC address under /tmp/PREFIX, the CRI plugin and the `opt` plugin
 *   (which would create /opt/containerd) disabled. Snapshotter overlayfs
 *   (the default) works; native works too. `ctr run` would keep runc state in
 *   /run/containerd/runc/NAMESPACE and FIFOs in /run/containerd/fifo, so
 *   ContainerdHandle.ctr() adds --runc-root and --fifo-dir under /tmp/PREFIX
 *   to `run`, `task start` and `task exec`. Shim sockets are always in
 *   /run/containerd/s (hard-coded); they go away with the shims.
 *   `ctr run --cni` reads only the host's /etc/cni/net.d (the lexically first
 *   file: installCniConf() names its file 00-NAME.conflist to come before the
 *   podman package's 87-podman-bridge.conflist) and /opt/cni/bin
 *   (installCniPlugins()); both remove only what they wrote. `ctr run --cni`
 *   calls CNI DEL only for --rm containers; a detached container leaves its
 *   result in /var/lib/cni/results, which CniConfInstall.remove() deletes.
 *   A test can also avoid CNI: `ctr run --with-ns network:/run/netns/NAME`
 *   joins a namespace the test made.
 *
 * Host-wide traces these runtimes leave whatever the configuration, and what
 * the handles do about them: podman's runc keeps state in /run/runc/ID and
 * podman's libcni in /var/lib/cni/results while a container runs (both gone
 * once it is removed; the directories are removed at cleanup if this handle
 * created them and they are empty); `podman import` creates
 * /var/lib/containers/cache/blob-info-cache-v1.boltdb (c/image's blob cache,
 * no setting moves it for root; removed at cleanup if it did not exist when
 * the handle was made); CNI network namespaces of podman are
 * /run/netns/netns-UUID and host veths are vethXXXX while a container runs.
 * Cgroups (cgroupfs driver, every v1 hierarchy plus `unified`): dockerd gets
 * --cgroup-parent=/PREFIXdocker and ctr puts containers in /NAMESPACE/ID
 * (NAMESPACE = PREFIX); runc removes a container's cgroup but not the
 * parent, so stop() removes the parent, first killing any process still in
 * it (a container whose shim was killed lives on, reparented to init).
 * podman's parent is always /libpod_parent (conmon's /libpod_parent/conmon);
 * cleanup() rmdirs those where the handle did not find them.
 *
 * Everything is named with the run's prefix (`vswt...`): directories
 * /tmp/PREFIX/{podman,docker,containerd}, bridges PREFIXpbr/PREFIXdbr,
 * containerd namespace PREFIX. Each handle's cleanup/stop removes its
 * containers, unmounts whatever is still mounted under its directory,
 * removes its bridge and directory, and throws after cleaning if something
 * went wrong (so a test reports it and the machine is still clean).
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  closeSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
  chmodSync,
  readSync,
} from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { sh, type CommandResult } from './env.js';

/** The image every helper here imports: busybox, plus iperf3 when the host has it. */
export const BUSYBOX_IMAGE = 'localhost/vswt-busybox:latest';

/** Where iperf3 is inside the image (when the host had /usr/bin/iperf3 to copy). */
export const IPERF3_IN_IMAGE = '/usr/bin/iperf3';

const HOST_BUSYBOX = '/bin/busybox';
const HOST_IPERF3 = '/usr/bin/iperf3';
/** Debian's docker.io CLI; /usr/local/bin/docker on these machines is a newer one. */
const DOCKER_CLI = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
const CNI_PLUGINS = '/usr/lib/cni';
const READY_TIMEOUT_MS = 20_000;
const STOP_GRACE_MS = 15_000;

// ---------------------------------------------------------------------------
// Commands with an environment

/** Like env.ts's sh(), with an environment; never throws for a non-zero exit. */
export function shEnv(file: string, args: string[], env: NodeJS.ProcessEnv, opts: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = execFile(file, args, { env, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 1) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) });
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

function ok(what: string, r: CommandResult): string {
  if (r.code !== 0) throw new Error(`${what} exited ${r.code}: ${(r.stderr.trim() || r.stdout.trim()).split('\n').slice(-3).join(' | ')}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------
// Availability

export type RuntimeName = 'podman' | 'docker' | 'containerd';

/** An executable on PATH (or at an absolute path), as `command -v` finds it. */
async function which(cmd: string): Promise<string | null> {
  const r = await sh('sh', ['-c', `command -v ${cmd}`]);
  return r.code === 0 && r.stdout.trim() !== '' ? r.stdout.trim() : null;
}

/** Whether an ELF file has no PT_INTERP program header (is statically linked). */
function isStaticElf(path: string): boolean {
  const fd = openSync(path, 'r');
  try {
    const head = Buffer.alloc(64);
    readSync(fd, head, 0, 64, 0);
    if (head.readUInt32BE(0) !== 0x7f454c46 || head[4] !== 2) return false; // ELF, 64-bit
    const phoff = Number(head.readBigUInt64LE(32));
    const phentsize = head.readUInt16LE(54);
    const phnum = head.readUInt16LE(56);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) if (ph.readUInt32LE(i * phentsize) === 3) return false; // PT_INTERP
    return true;
  } finally {
    closeSync(fd);
  }
}

/**
 * null when `name` can run here with these helpers, else one sentence saying
 * what is missing (for `test.skip`-style messages and the benchmark's report).
 */
export async function runtimeAvailable(name: RuntimeName): Promise<string | null> {
  if (process.getuid?.() !== 0) return `${name} needs root for these helpers.`;
  if (!existsSync(HOST_BUSYBOX)) return `${HOST_BUSYBOX} is missing (package busybox-static).`;
  if (!isStaticElf(HOST_BUSYBOX)) return `${HOST_BUSYBOX} is not statically linked (install busybox-static).`;
  if ((await which('tar')) === null) return 'tar is not installed.';
  const needs: Record<RuntimeName, [string, string][]> = {
    podman: [
      ['podman', 'podman'],
      ['runc', 'runc'],
      ['conmon', 'conmon'],
    ],
    docker: [
      ['dockerd', 'docker.io'],
      [DOCKER_CLI, 'docker.io'],
      ['containerd', 'containerd'],
      ['containerd-shim-runc-v2', 'containerd'],
      ['runc', 'runc'],
    ],
    containerd: [
      ['containerd', 'containerd'],
      ['ctr', 'containerd'],
      ['containerd-shim-runc-v2', 'containerd'],
      ['runc', 'runc'],
    ],
  };
  for (const [cmd, pkg] of needs[name]) if ((await which(cmd)) === null) return `${cmd} is not installed (package ${pkg}).`;
  if (name === 'podman') {
    for (const plugin of ['bridge', 'host-local', 'loopback']) {
      if (!existsSync(join(CNI_PLUGINS, plugin))) return `${CNI_PLUGINS}/${plugin} is missing (package containernetworking-plugins).`;
    }
  }
  return null;
}

/** Whether images built here carry iperf3 (the host has /usr/bin/iperf3 to copy). */
export function hasIperf3(): boolean {
  return existsSync(HOST_IPERF3);
}

// ---------------------------------------------------------------------------
// Images

const rootfsBuilds = new Map<string, Promise<string>>();

/**
 * A tarball of a minimal busybox rootfs, built once per `dir` and reused:
 * `DIR/busybox-rootfs.tar`. /bin/busybox (static) with a symlink in /bin for
 * every applet it lists (sh, ping, ip, ifconfig, wget, httpd, nc, sleep, cat,
 * route, hostname, ...), /etc/passwd, /etc/group, /etc/hosts, /tmp (1777),
 * /proc, /sys, /dev, /root, /var/www, and /usr/bin/iperf3 with its libraries
 * when the host has iperf3. Entries are owned by 0:0, sorted and dated
 * 1970, so the same host gives the same bytes (and the same image digest).
 */
export function busyboxRootfsTar(dir: string): Promise<string> {
  const out = join(dir, 'busybox-rootfs.tar');
  let build = rootfsBuilds.get(out);
  if (!build) {
    build = buildRootfsTar(dir, out);
    rootfsBuilds.set(out, build);
    build.catch(() => rootfsBuilds.delete(out));
  }
  return build;
}

async function buildRootfsTar(dir: string, out: string): Promise<string> {
  if (existsSync(out)) return out;
  const stage = join(dir, `busybox-rootfs.${process.pid}`);
  rmSync(stage, { recursive: true, force: true });
  for (const d of ['bin', 'etc', 'tmp', 'proc', 'sys', 'dev', 'root', 'usr/bin', 'var/www']) mkdirSync(join(stage, d), { recursive: true });
  chmodSync(join(stage, 'tmp'), 0o1777);
  copyFileSync(HOST_BUSYBOX, join(stage, 'bin/busybox'));
  chmodSync(join(stage, 'bin/busybox'), 0o755);
  const applets = ok('busybox --list', await sh(HOST_BUSYBOX, ['--list'])).split('\n').filter((a) => a !== '' && a !== 'busybox' && !a.includes('/'));
  for (const applet of applets) symlinkSync('busybox', join(stage, 'bin', applet));
  writeFileSync(join(stage, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n');
  writeFileSync(join(stage, 'etc/group'), 'root:x:0:\nnogroup:x:65534:\n');
  writeFileSync(join(stage, 'etc/hosts'), '127.0.0.1 localhost\n');
  if (hasIperf3()) {
    copyFileSync(HOST_IPERF3, join(stage, IPERF3_IN_IMAGE));
    chmodSync(join(stage, IPERF3_IN_IMAGE), 0o755);
    // "libx.so.1 => /lib/x86_64-linux-gnu/libx.so.1 (0x...)" and "/lib64/ld-linux-x86-64.so.2 (0x...)".
    const ldd = ok('ldd iperf3', await sh('ldd', [HOST_IPERF3]));
    for (const m of ldd.matchAll(/(?:=>\s*)?(\/\S+)\s+\(0x/g)) {
      const lib = m[1];
      mkdirSync(join(stage, dirname(lib)), { recursive: true });
      copyFileSync(realpathSync(lib), join(stage, lib));
    }
  }
  const tmp = `${out}.${process.pid}.tmp`;
  ok('tar', await sh('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-C', stage, '-cf', tmp, '.']));
  renameSync(tmp, out);
  rmSync(stage, { recursive: true, force: true });
  return out;
}

const ociBuilds = new Map<string, Promise<string>>();

/**
 * The busybox rootfs as an OCI image archive (`DIR/busybox-oci.tar`), for
 * `ctr images import`: oci-layout, index.json (one linux/amd64 manifest,
 * annotated io.containerd.image.name=`ref` and
 * org.opencontainers.image.ref.name=latest), the manifest, the image config
 * (PATH, Cmd ["sh"]) and one uncompressed layer, which is the rootfs tarball
 * itself, all under blobs/sha256.
 */
export function ociImageTar(dir: string, ref: string = BUSYBOX_IMAGE): Promise<string> {
  const out = join(dir, 'busybox-oci.tar');
  let build = ociBuilds.get(out);
  if (!build) {
    build = buildOciTar(dir, out, ref);
    ociBuilds.set(out, build);
    build.catch(() => ociBuilds.delete(out));
  }
  return build;
}

async function buildOciTar(dir: string, out: string, ref: string): Promise<string> {
  if (existsSync(out)) return out;
  const rootfs = await busyboxRootfsTar(dir);
  const layout = join(dir, `busybox-oci.${process.pid}`);
  rmSync(layout, { recursive: true, force: true });
  const blobs = join(layout, 'blobs/sha256');
  mkdirSync(blobs, { recursive: true });
  const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');
  const blob = (content: Buffer): { digest: string; size: number } => {
    const hex = sha256(content);
    writeFileSync(join(blobs, hex), content);
    return { digest: `sha256:${hex}`, size: content.length };
  };
  const layerBytes = readFileSync(rootfs);
  const layer = blob(layerBytes);
  const config = blob(
    Buffer.from(
      JSON.stringify({
        architecture: 'amd64',
        os: 'linux',
        config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'], Cmd: ['sh'] },
        rootfs: { type: 'layers', diff_ids: [layer.digest] },
        history: [{ created_by: 'vsw test/integration/helpers/runtimes.ts busyboxRootfsTar' }],
      }),
    ),
  );
  const manifest = blob(
    Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
        layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
      }),
    ),
  );
  writeFileSync(join(layout, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          ...manifest,
          platform: { architecture: 'amd64', os: 'linux' },
          annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': 'latest' },
        },
      ],
    }),
  );
  const tmp = `${out}.${process.pid}.tmp`;
  ok('tar', await sh('tar', ['--numeric-owner', '--owner=0', '--group=0', '--sort=name', '--mtime=@0', '-C', layout, '-cf', tmp, 'oci-layout', 'index.json', 'blobs']));
  renameSync(tmp, out);
  rmSync(layout, { recursive: true, force: true });
  return out;
}

// ---------------------------------------------------------------------------
// Mounts, processes, host-wide directories

/** Mount points at or under `dir`, deepest first, from /proc/self/mountinfo. */
export function mountsUnder(dir: string): string[] {
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  const points = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => unescape(l.split(' ')[4]))
    .filter((p) => p === dir || p.startsWith(`${dir}/`));
  return [...new Set(points)].sort((a, b) => b.length - a.length);
}

/** Unmounts everything at or under `dir` (lazily when a plain umount fails); returns what stays mounted. */
export async function unmountUnder(dir: string): Promise<string[]> {
  for (let round = 0; round < 3; round++) {
    const points = mountsUnder(dir);
    if (points.length === 0) return [];
    for (const p of points) {
      const r = await sh('umount', [p]);
      if (r.code !== 0) await sh('umount', ['-l', p]);
    }
  }
  return mountsUnder(dir);
}

/** Pids of processes whose command line (arguments joined by spaces) contains `needle` and, with `argv0`, whose first argument is that. */
function pidsWithCmdline(needle: string, argv0?: string): number[] {
  const pids: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv.join(' ').includes(needle) && (argv0 === undefined || argv[0] === argv0)) pids.push(Number(entry));
    } catch {
      // gone
    }
  }
  return pids;
}

function killPids(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** The host-wide directories in `paths` that do not exist now (to rmdir at cleanup if still empty). */
function absent(paths: string[]): string[] {
  return paths.filter((p) => !existsSync(p));
}

/** rmdir each of `dirs` (deepest first) that exists and is empty; leaves anything else alone. */
function rmdirIfEmpty(dirs: string[]): void {
  for (const d of [...dirs].sort((a, b) => b.length - a.length)) {
    try {
      rmdirSync(d);
    } catch {
      // not empty (someone else uses it) or already gone
    }
  }
}

/** Where the cgroup hierarchies are mounted (v1 controllers, name=systemd, the v2 `unified`), from /proc/self/mountinfo. */
export function cgroupRoots(): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter(Boolean)
    .filter((l) => / - cgroup2? /.test(l))
    .map((l) => l.split(' ')[4]);
}

/** The cgroup directories at or under /sys/fs/cgroup/CTRL/`rel` in every hierarchy, deepest first. */
function cgroupTree(rel: string): string[] {
  const dirs: string[] = [];
  const walk = (d: string): void => {
    dirs.push(d);
    for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) walk(join(d, e.name));
  };
  for (const root of cgroupRoots()) {
    const top = join(root, rel);
    if (existsSync(top)) walk(top);
  }
  return dirs.sort((a, b) => b.length - a.length);
}

/**
 * Removes the cgroup `rel` (e.g. "vswt1234" or "vswt1234docker") in every hierarchy: with `kill`,
 * first SIGKILLs every process still in it (a container whose shim died is reparented to init but
 * stays in its cgroup), then rmdirs it deepest first. Returns the directories that stay.
 */
export async function removeCgroup(rel: string, opts: { kill?: boolean } = {}): Promise<string[]> {
  if (rel === '' || rel.split('/').includes('..')) throw new Error(`removeCgroup: refusing ${JSON.stringify(rel)}`);
  for (let round = 0; round < 10; round++) {
    const dirs = cgroupTree(rel);
    if (dirs.length === 0) return [];
    if (opts.kill) {
      for (const d of dirs) {
        try {
          killPids(readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
        } catch {
          // gone
        }
      }
    }
    for (const d of dirs) {
      try {
        rmdirSync(d);
      } catch {
        // busy (processes still exiting) or already gone: next round
      }
    }
    await sleep(100);
  }
  return cgroupTree(rel);
}

/** mkdir -p that returns the directories it created, top first. */
function mkdirRecording(dir: string): string[] {
  const created: string[] = [];
  let d = dir;
  while (!existsSync(d)) {
    created.unshift(d);
    d = dirname(d);
  }
  mkdirSync(dir, { recursive: true });
  return created;
}

async function linkExists(name: string): Promise<boolean> {
  return (await sh('ip', ['link', 'show', 'dev', name])).code === 0;
}

/** Waits for a child's exit for up to `ms`; SIGKILLs it after. Resolves to whether it exited by itself. */
/**
 * Polls `probe` until it succeeds; a daemon that exits first, or does not
 * answer within READY_TIMEOUT_MS, is stopped (cleaning up what it made) and
 * reported with the tail of its log.
 */
async function waitReady(
  name: string,
  probeText: string,
  probe: () => Promise<CommandResult>,
  exitCode: () => number | null | undefined,
  stop: () => Promise<void>,
  logPath: string,
): Promise<void> {
  const deadline = Date.now() + READY_TIMEOUT_MS;
  for (;;) {
    if (exitCode() !== undefined) {
      await stop().catch(() => undefined);
      throw new Error(`${name} exited with ${exitCode()} before it was ready:\n${tail(logPath)}`);
    }
    const r = await probe();
    if (r.code === 0) return;
    if (Date.now() > deadline) {
      await stop().catch(() => undefined);
      throw new Error(`${name} did not answer ${probeText} within ${READY_TIMEOUT_MS} ms (last: ${r.stderr.trim()}):\n${tail(logPath)}`);
    }
    await sleep(50);
  }
}

async function waitExit(child: ChildProcess, exited: Promise<unknown>, ms: number): Promise<boolean> {
  const done = await Promise.race([exited.then(() => true), sleep(ms, false, { ref: false })]);
  if (done) return true;
  child.kill('SIGKILL');
  await exited;
  return false;
}

function spawnLogged(file: string, args: string[], logPath: string, env?: NodeJS.ProcessEnv): { child: ChildProcess; exited: Promise<number>; exitCode: () => number | undefined } {
  const fd = openSync(logPath, 'a');
  const child = spawn(file, args, { stdio: ['ignore', fd, fd], env: env ?? process.env });
  closeSync(fd);
  let code: number | undefined;
  const exited = new Promise<number>((resolve) => {
    child.on('exit', (c, signal) => {
      code = c ?? (signal ? 128 : 0);
      resolve(code);
    });
    child.on('error', () => {
      code = 127;
      resolve(code);
    });
  });
  return { child, exited, exitCode: () => code };
}

function tail(path: string, lines = 8): string {
  return existsSync(path) ? readFileSync(path, 'utf8').split('\n').slice(-lines).join('\n') : '';
}

// ---------------------------------------------------------------------------
// CNI conflists

export interface BridgeConflistOptions {
  /** The CNI network name (podman's network name). */
  name: string;
  /** The Linux bridge, at most 15 characters; created by the plugin on first use. */
  bridge: string;
  /** An IPv4 /24 or so; the gateway is its .1 and is put on the bridge (isGateway). */
  subnet: string;
  /** host-local's lease directory (its default, /var/lib/cni/networks, is host-wide). */
  ipamDataDir: string;
  /** 1.0.0 by default (podman 4.3 and containerd 1.6 take 0.4.0 and 1.0.0, not 1.1.0). */
  cniVersion?: string;
}

/** The first usable address of an IPv4 CIDR (the gateway the bridge gets). */
export function gatewayOf(subnet: string): string {
  const [addr] = subnet.split('/');
  const o = addr.split('.').map(Number);
  o[3] += 1;
  return o.join('.');
}

/**
 * A conflist with only the `bridge` plugin and `host-local` IPAM: no ipMasq,
 * portmap or firewall plugin, so nothing is written to the host's
 * iptables/nftables; the baseline kernel network of the benchmarks.
 */
export function bridgeConflist(o: BridgeConflistOptions): Record<string, unknown> {
  return {
    cniVersion: o.cniVersion ?? '1.0.0',
    name: o.name,
    plugins: [
      {
        type: 'bridge',
        bridge: o.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: false,
        ipam: { type: 'host-local', dataDir: o.ipamDataDir, ranges: [[{ subnet: o.subnet, gateway: gatewayOf(o.subnet) }]] },
      },
    ],
  };
}

// ---------------------------------------------------------------------------
// podman

export interface PodmanOptions {
  /** CNI conflists podman reads (`network_config_dir`); default /tmp/PREFIX/podman/cni (created). */
  cniConfigDir?: string;
  /**
   * Where podman looks for CNI plugins (`cni_plugin_dirs`); default ['/usr/lib/cni'].
   * bridgeNetwork() needs `bridge` and `host-local` in one of them: keep /usr/lib/cni in the list.
   */
  cniPluginDirs?: string[];
  /** Storage driver: overlay (default, works on these machines) or vfs. */
  storageDriver?: 'overlay' | 'vfs';
}

export interface PodmanNetwork {
  name: string;
  bridge: string;
  subnet: string;
  gateway: string;
}

export interface PodmanHandle {
  prefix: string;
  /** /tmp/PREFIX/podman: containers.conf, storage.conf, graphroot (root/), runroot (run/), tmp/. */
  dir: string;
  /** The whole environment to run podman with (process.env plus `vars`), e.g. for spawn(). */
  env: NodeJS.ProcessEnv;
  /** Only what this handle sets: CONTAINERS_CONF, CONTAINERS_STORAGE_CONF, TMPDIR, XDG_CONFIG_HOME, XDG_DATA_HOME. */
  vars: Record<string, string>;
  cniConfigDir: string;
  /** `podman ...args` in the isolated configuration; never throws for a non-zero exit. */
  run(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<CommandResult>;
  /** Like run() but throws unless it exits 0; returns stdout. */
  runOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** `podman import` of busyboxRootfsTar(/tmp/PREFIX) as BUSYBOX_IMAGE (once); resolves to the image name. */
  importBusyboxImage(): Promise<string>;
  /**
   * A CNI bridge network podman can use (`--network NAME`): writes a bridgeConflist() into
   * cniConfigDir with the bridge named `bridge` (default PREFIXpbr) and host-local leases under
   * dir; the bridge appears with the first container. Removed by cleanup().
   */
  bridgeNetwork(name: string, subnet: string, bridge?: string): Promise<PodmanNetwork>;
  /**
   * Removes every container and pod (`rm -af -t 0`), the networks bridgeNetwork() made and their
   * bridges, unmounts what is left under dir, removes dir and the host-wide directories podman
   * created since this handle was made; throws afterwards if something stayed.
   */
  cleanup(): Promise<void>;
}

/**
 * An isolated podman for one run: a containers.conf and storage.conf under
 * /tmp/PREFIX/podman passed through CONTAINERS_CONF and
 * CONTAINERS_STORAGE_CONF (see the header for every setting and why). Nothing
 * is started: podman is daemonless; run() passes the environment.
 */
export function podmanEnv(prefix: string, opts: PodmanOptions = {}): PodmanHandle {
  const dir = `/tmp/${prefix}/podman`;
  const cniConfigDir = opts.cniConfigDir ?? join(dir, 'cni');
  const cniPluginDirs = opts.cniPluginDirs ?? [CNI_PLUGINS];
  for (const d of [dir, join(dir, 'tmp'), join(dir, 'xdg-config'), join(dir, 'xdg-data'), cniConfigDir]) mkdirSync(d, { recursive: true });
  const toml = (s: string): string => JSON.stringify(s);
  writeFileSync(
    join(dir, 'containers.conf'),
    [
      '[containers]',
      'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]',
      '',
      '[engine]',
      'runtime = "runc"',
      'cgroup_manager = "cgroupfs"',
      'events_logger = "file"',
      `events_logfile_path = ${toml(join(dir, 'events.log'))}`,
      'lock_type = "file"',
      `tmp_dir = ${toml(join(dir, 'tmp'))}`,
      `image_copy_tmp_dir = ${toml(join(dir, 'tmp'))}`,
      `static_dir = ${toml(join(dir, 'root/libpod'))}`,
      `volume_path = ${toml(join(dir, 'root/volumes'))}`,
      '',
      '[network]',
      'network_backend = "cni"',
      `cni_plugin_dirs = [${cniPluginDirs.map(toml).join(', ')}]`,
      `network_config_dir = ${toml(cniConfigDir)}`,
      '',
    ].join('\n'),
  );
  writeFileSync(
    join(dir, 'storage.conf'),
    ['[storage]', `driver = ${toml(opts.storageDriver ?? 'overlay')}`, `graphroot = ${toml(join(dir, 'root'))}`, `runroot = ${toml(join(dir, 'run'))}`, ''].join('\n'),
  );
  // No registries.conf or policy.json: nothing here pulls or pushes, and import/run of a local image read neither.
  const vars: Record<string, string> = {
    CONTAINERS_CONF: join(dir, 'containers.conf'),
    CONTAINERS_STORAGE_CONF: join(dir, 'storage.conf'),
    TMPDIR: join(dir, 'tmp'),
    XDG_CONFIG_HOME: join(dir, 'xdg-config'),
    XDG_DATA_HOME: join(dir, 'xdg-data'),
  };
  const env: NodeJS.ProcessEnv = { ...process.env, ...vars };
  // Host-wide places podman (runc, libcni, c/image) creates whatever the configuration says.
  const hostDirs = absent(['/run/runc', '/var/lib/cni/results', '/var/lib/cni']);
  // podman's cgroupfs parent is always /libpod_parent (conmon in /libpod_parent/conmon); no setting moves it.
  const libpodParentAbsent = cgroupRoots().filter((root) => !existsSync(join(root, 'libpod_parent')));
  const blobCacheAbsent = !existsSync('/var/lib/containers/cache');
  const containersDirAbsent = !existsSync('/var/lib/containers');
  const networks: PodmanNetwork[] = [];
  let imported: Promise<string> | undefined;

  const run = (args: string[], o: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> => shEnv('podman', args, env, o);
  const runOk = async (args: string[], o: { timeoutMs?: number } = {}): Promise<string> => ok(`podman ${args.join(' ')}`, await run(args, o));

  return {
    prefix,
    dir,
    env,
    vars,
    cniConfigDir,
    run,
    runOk,
    importBusyboxImage(): Promise<string> {
      imported ??= (async () => {
        const tar = await busyboxRootfsTar(`/tmp/${prefix}`);
        await runOk(['import', tar, BUSYBOX_IMAGE]);
        return BUSYBOX_IMAGE;
      })();
      return imported;
    },
    async bridgeNetwork(name: string, subnet: string, bridge = `${prefix}pbr`): Promise<PodmanNetwork> {
      if (bridge.length > 15) throw new Error(`bridge name ${bridge} is longer than 15 characters`);
      const file = join(cniConfigDir, `${name}.conflist`);
      if (existsSync(file)) throw new Error(`${file} exists already`);
      writeFileSync(file, `${JSON.stringify(bridgeConflist({ name, bridge, subnet, ipamDataDir: join(dir, 'ipam') }), null, 2)}\n`);
      const net: PodmanNetwork = { name, bridge, subnet, gateway: gatewayOf(subnet) };
      networks.push(net);
      const listed = (await runOk(['network', 'ls', '--format', '{{.Name}}'])).split('\n');
      if (!listed.includes(name)) throw new Error(`podman does not list network ${name} written to ${file}`);
      return net;
    },
    async cleanup(): Promise<void> {
      const problems: string[] = [];
      try {
        const pods = await run(['pod', 'rm', '-af', '-t', '0']);
        if (pods.code !== 0) problems.push(`podman pod rm -af: ${pods.stderr.trim()}`);
        const ctrs = await run(['rm', '-af', '-t', '0']);
        if (ctrs.code !== 0) problems.push(`podman rm -af: ${ctrs.stderr.trim()}`);
        for (const n of networks) {
          await run(['network', 'rm', '-f', n.name]);
          rmSync(join(cniConfigDir, `${n.name}.conflist`), { force: true });
          if (await linkExists(n.bridge)) await sh('ip', ['link', 'delete', n.bridge]);
        }
      } finally {
        // conmon of a container podman could not remove: it carries the container's directory under dir.
        // A removed container's conmon may outlive `podman rm` by some milliseconds: give it a few seconds.
        let conmons = pidsWithCmdline(`${dir}/`, '/usr/bin/conmon');
        for (const deadline = Date.now() + 5_000; conmons.length > 0 && Date.now() < deadline; conmons = pidsWithCmdline(`${dir}/`, '/usr/bin/conmon')) await sleep(50);
        if (conmons.length > 0) {
          problems.push(`conmon processes left for ${dir}: ${conmons.join(', ')} (killed)`);
          killPids(conmons);
          await sleep(200);
        }
        const left = await unmountUnder(dir);
        if (left.length > 0) problems.push(`still mounted under ${dir}: ${left.join(', ')}`);
        rmSync(dir, { recursive: true, force: true });
        if (blobCacheAbsent && imported) rmSync('/var/lib/containers/cache', { recursive: true, force: true });
        rmdirIfEmpty([...hostDirs, ...(containersDirAbsent ? ['/var/lib/containers'] : [])]);
        // rmdir of a cgroup fails while it has processes or children: another podman's stay.
        rmdirIfEmpty(libpodParentAbsent.flatMap((root) => [join(root, 'libpod_parent'), join(root, 'libpod_parent/conmon')]));
      }
      if (problems.length > 0) throw new Error(`podman cleanup for ${prefix}: ${problems.join('; ')}`);
    },
  };
}

/** `handle.importBusyboxImage()` for any of the three runtimes; resolves to the image reference to run. */
export function importBusyboxImage(handle: { importBusyboxImage(): Promise<string> }): Promise<string> {
  return handle.importBusyboxImage();
}

// ---------------------------------------------------------------------------
// containerd

export interface ContainerdOptions {
  /** Directory for config, root, state, socket, runc root and FIFOs; default /tmp/PREFIX/containerd. */
  dir?: string;
  /** The namespace ctr() uses; default PREFIX. */
  namespace?: string;
  /** The snapshotter ctr() uses (CONTAINERD_SNAPSHOTTER): overlayfs (ctr's default, works here) or native. */
  snapshotter?: 'overlayfs' | 'native';
}

export interface ContainerdHandle {
  prefix: string;
  dir: string;
  /** The gRPC socket (ctr -a). */
  address: string;
  namespace: string;
  /** runc state directory ctr() passes to `run` (instead of /run/containerd/runc). */
  runcRoot: string;
  /** FIFO directory ctr() passes to `run`, `task start`, `task exec` (instead of /run/containerd/fifo). */
  fifoDir: string;
  pid: number;
  /**
   * `ctr -a ADDRESS -n NAMESPACE ...args`; adds --runc-root and --fifo-dir after `run`, and
   * --fifo-dir after `task start|exec`. Never throws for a non-zero exit.
   */
  ctr(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<CommandResult>;
  /** Like ctr() but throws unless it exits 0; returns stdout. */
  ctrOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** `ctr images import` of ociImageTar(/tmp/PREFIX) (once); resolves to BUSYBOX_IMAGE. */
  importBusyboxImage(): Promise<string>;
  /**
   * Kills and deletes every task and container in every namespace, SIGTERMs containerd (SIGKILL
   * after 15 s, reported), kills shims left on its address, unmounts what is left under dir and
   * removes dir. Throws afterwards if something went wrong.
   */
  stop(): Promise<void>;
  exited(): boolean;
  log(): string;
}

/** Starts a containerd of its own (config.toml under dir) and waits until `ctr version` answers. */
export async function startContainerd(prefix: string, opts: ContainerdOptions = {}): Promise<ContainerdHandle> {
  const dir = opts.dir ?? `/tmp/${prefix}/containerd`;
  mkdirSync(dir, { recursive: true });
  const address = join(dir, 'containerd.sock');
  const namespace = opts.namespace ?? prefix;
  const runcRoot = join(dir, 'runc');
  const fifoDir = join(dir, 'fifo');
  const logPath = join(dir, 'containerd.log');
  const toml = (s: string): string => JSON.stringify(s);
  writeFileSync(
    join(dir, 'config.toml'),
    [
      'version = 2',
      `root = ${toml(join(dir, 'root'))}`,
      `state = ${toml(join(dir, 'state'))}`,
      // cri: a kubelet's API (and CNI setup) nobody here uses; opt: would create /opt/containerd.
      'disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]',
      '',
      '[grpc]',
      `  address = ${toml(address)}`,
      '',
      '[debug]',
      '  level = "info"',
      '',
    ].join('\n'),
  );
  const env: NodeJS.ProcessEnv = { ...process.env, ...(opts.snapshotter ? { CONTAINERD_SNAPSHOTTER: opts.snapshotter } : {}) };
  const { child, exited, exitCode } = spawnLogged('containerd', ['--config', join(dir, 'config.toml')], logPath);
  const log = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const base = (): string[] => ['-a', address, '-n', namespace];
  const withDirs = (args: string[]): string[] => {
    if (args[0] === 'run' || args[0] === 'r') return [args[0], '--runc-root', runcRoot, '--fifo-dir', fifoDir, ...args.slice(1)];
    if (['task', 'tasks', 't'].includes(args[0]) && ['start', 'exec'].includes(args[1])) return [args[0], args[1], '--fifo-dir', fifoDir, ...args.slice(2)];
    return args;
  };
  const ctr = (args: string[], o: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> => shEnv('ctr', [...base(), ...withDirs(args)], env, o);
  const ctrOk = async (args: string[], o: { timeoutMs?: number } = {}): Promise<string> => ok(`ctr ${args.join(' ')}`, await ctr(args, o));
  let imported: Promise<string> | undefined;

  const stop = async (): Promise<void> => {
    const problems: string[] = [];
    const namespaces = new Set<string>([namespace]);
    try {
      if (exitCode() === undefined) {
        const nss = await shEnv('ctr', ['-a', address, 'namespaces', 'ls', '-q'], env, { timeoutMs: 10_000 });
        for (const ns of nss.stdout.split('\n').filter(Boolean)) {
          namespaces.add(ns);
          const c = (args: string[]): Promise<CommandResult> => shEnv('ctr', ['-a', address, '-n', ns, ...args], env, { timeoutMs: 20_000 });
          const tasks = (await c(['tasks', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
          for (const id of tasks) await c(['tasks', 'kill', '-a', '-s', 'SIGKILL', id]);
          for (const id of tasks) {
            // Until the shim has reaped the process, `tasks rm` refuses a running task; -f kills it too.
            const deadline = Date.now() + 5_000;
            while ((await c(['tasks', 'rm', '-f', id])).code !== 0 && Date.now() < deadline) await sleep(100);
          }
          const containers = (await c(['containers', 'ls', '-q'])).stdout.split('\n').filter(Boolean);
          for (const id of containers) {
            const r = await c(['containers', 'rm', id]);
            if (r.code !== 0) problems.push(`ctr -n ${ns} containers rm ${id}: ${r.stderr.trim()}`);
          }
        }
        child.kill('SIGTERM');
        if (!(await waitExit(child, exited, STOP_GRACE_MS))) problems.push(`containerd did not exit within ${STOP_GRACE_MS} ms of SIGTERM; it was killed`);
      }
    } finally {
      // Shims outlive containerd by design; any left here are ours (they carry our socket path).
      const shims = pidsWithCmdline(`-address ${address}`);
      if (shims.length > 0) {
        problems.push(`containerd-shim processes left on ${address}: ${shims.join(', ')} (killed)`);
        killPids(shims);
        await sleep(200);
      }
      // ctr puts a container in the cgroup /NAMESPACE/ID; runc removes /NAMESPACE/ID, not /NAMESPACE.
      // Only prefixed namespaces: "moby" (dockerd's) has no cgroups of its own, dockerd uses its --cgroup-parent.
      for (const ns of namespaces) {
        if (!ns.startsWith('vswt')) continue;
        const stays = await removeCgroup(ns, { kill: true });
        if (stays.length > 0) problems.push(`cgroups left: ${stays.join(', ')}`);
      }
      const left = await unmountUnder(dir);
      if (left.length > 0) problems.push(`still mounted under ${dir}: ${left.join(', ')}`);
      rmSync(dir, { recursive: true, force: true });
    }
    if (problems.length > 0) throw new Error(`containerd stop for ${prefix}: ${problems.join('; ')}`);
  };

  const handle: ContainerdHandle = {
    prefix,
    dir,
    address,
    namespace,
    runcRoot,
    fifoDir,
    pid: child.pid ?? -1,
    ctr,
    ctrOk,
    importBusyboxImage(): Promise<string> {
      imported ??= (async () => {
        const tar = await ociImageTar(`/tmp/${prefix}`);
        await ctrOk(['images', 'import', tar]);
        const names = (await ctrOk(['images', 'ls', '-q'])).split('\n');
        if (!names.includes(BUSYBOX_IMAGE)) throw new Error(`ctr images import of ${tar} did not give ${BUSYBOX_IMAGE} (images: ${names.join(' ')})`);
        return BUSYBOX_IMAGE;
      })();
      return imported;
    },
    stop,
    exited: () => exitCode() !== undefined,
    log,
  };

  await waitReady('containerd', '`ctr version`', () => shEnv('ctr', ['-a', address, 'version'], env, { timeoutMs: 5_000 }), exitCode, stop, logPath);
  return handle;
}

// ---------------------------------------------------------------------------
// dockerd

export interface DockerOptions {
  /**
   * false (default): --bridge=none, containers get only what a network driver gives them.
   * true: a bridge PREFIXdbr with bridgeSubnet's .1 is made and passed as --bridge, so
   * `docker run` without --network joins it: the kernel baseline of the benchmarks.
   */
  bridge?: boolean;
  /** The default bridge's subnet with bridge: true; default 10.251.8.0/24. */
  bridgeSubnet?: string;
  /** More dockerd arguments. */
  extraArgs?: string[];
}

export interface DockerHandle {
  prefix: string;
  /** /tmp/PREFIX/docker: daemon.json, data/ (--data-root), exec/ (--exec-root), containerd/. */
  dir: string;
  /** The API socket (docker -H unix://SOCKET). */
  socket: string;
  pid: number;
  /** The containerd dockerd uses (started here, so dockerd does not start its own). */
  containerd: ContainerdHandle;
  /** The default bridge with bridge: true. */
  bridge?: { name: string; subnet: string; gateway: string };
  /** `docker -H unix://SOCKET ...args` (Debian's 20.10 CLI); never throws for a non-zero exit. */
  docker(args: string[], opts?: { timeoutMs?: number; input?: string }): Promise<CommandResult>;
  /** Like docker() but throws unless it exits 0; returns stdout. */
  dockerOk(args: string[], opts?: { timeoutMs?: number }): Promise<string>;
  /** `docker import` of busyboxRootfsTar(/tmp/PREFIX) as BUSYBOX_IMAGE (once); resolves to the image name. */
  importBusyboxImage(): Promise<string>;
  /**
   * `docker rm -f` of every container, SIGTERM to dockerd (SIGKILL after 15 s, reported), the
   * containerd's stop(), unmount of whatever is left under dir (dockerd can leave netns files under
   * exec/netns and its data-root bind mount), removal of the bridge and of dir. Throws afterwards if
   * something went wrong.
   */
  stop(): Promise<void>;
  exited(): boolean;
  log(): string;
}

/** Starts dockerd with everything of its own (see the header) and waits until `docker info` answers. */
export async function startDockerd(prefix: string, opts: DockerOptions = {}): Promise<DockerHandle> {
  const dir = `/tmp/${prefix}/docker`;
  mkdirSync(dir, { recursive: true });
  const socket = join(dir, 'docker.sock');
  const logPath = join(dir, 'dockerd.log');
  writeFileSync(join(dir, 'daemon.json'), `${JSON.stringify({ 'deprecated-key-path': join(dir, 'key.json') }, null, 2)}\n`);
  const cliEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_CONFIG: join(dir, 'cli') };
  delete cliEnv.DOCKER_HOST;
  delete cliEnv.DOCKER_CONTEXT;

  let bridge: DockerHandle['bridge'];
  let containerd: ContainerdHandle;
  try {
    containerd = await startContainerd(prefix, { dir: join(dir, 'containerd'), namespace: 'moby' });
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const cleanupEarly = async (): Promise<void> => {
    await containerd.stop().catch(() => undefined);
    if (bridge && (await linkExists(bridge.name))) await sh('ip', ['link', 'delete', bridge.name]);
    await unmountUnder(dir);
    rmSync(dir, { recursive: true, force: true });
  };
  if (opts.bridge) {
    const subnet = opts.bridgeSubnet ?? '10.251.8.0/24';
    const name = `${prefix}dbr`;
    bridge = { name, subnet, gateway: gatewayOf(subnet) };
    const steps: string[][] = [
      ['link', 'add', name, 'type', 'bridge'],
      ['addr', 'add', `${bridge.gateway}/${subnet.split('/')[1]}`, 'dev', name],
      ['link', 'set', name, 'up'],
    ];
    for (const s of steps) {
      const r = await sh('ip', s);
      if (r.code !== 0) {
        await cleanupEarly();
        throw new Error(`ip ${s.join(' ')}: ${r.stderr.trim()}`);
      }
    }
  }
  const network = bridge ? [`--bridge=${bridge.name}`] : ['--bridge=none'];
  // Containers' cgroups: /PREFIXdocker/ID instead of the host-wide /docker/ID.
  const cgroupParent = `${prefix}docker`;
  const args = [
    '--config-file', join(dir, 'daemon.json'),
    '--containerd', containerd.address,
    '--data-root', join(dir, 'data'),
    '--exec-root', join(dir, 'exec'),
    '-H', `unix://${socket}`,
    '--pidfile', join(dir, 'docker.pid'),
    '--cgroup-parent', `/${cgroupParent}`,
    ...network,
    '--iptables=false', '--ip6tables=false', '--ip-masq=false', '--ip-forward=false',
    ...(opts.extraArgs ?? []),
  ];
  const { child, exited, exitCode } = spawnLogged('dockerd', args, logPath);
  const log = (): string => (existsSync(logPath) ? readFileSync(logPath, 'utf8') : '');
  const docker = (a: string[], o: { timeoutMs?: number; input?: string } = {}): Promise<CommandResult> => shEnv(DOCKER_CLI, ['-H', `unix://${socket}`, ...a], cliEnv, o);
  const dockerOk = async (a: string[], o: { timeoutMs?: number } = {}): Promise<string> => ok(`docker ${a.join(' ')}`, await docker(a, o));
  let imported: Promise<string> | undefined;

  const stop = async (): Promise<void> => {
    const problems: string[] = [];
    try {
      if (exitCode() === undefined) {
        // rm -f kills at once; dockerd's own shutdown would give each container 10 s of SIGTERM first.
        const ids = (await docker(['ps', '-aq'], { timeoutMs: 20_000 })).stdout.split('\n').filter(Boolean);
        if (ids.length > 0) {
          const r = await docker(['rm', '-f', ...ids], { timeoutMs: 60_000 });
          if (r.code !== 0) problems.push(`docker rm -f: ${r.stderr.trim()}`);
        }
        child.kill('SIGTERM');
        if (!(await waitExit(child, exited, STOP_GRACE_MS))) problems.push(`dockerd did not exit within ${STOP_GRACE_MS} ms of SIGTERM; it was killed`);
      }
    } finally {
      try {
        await containerd.stop();
      } catch (err) {
        problems.push((err as Error).message);
      }
      const stays = await removeCgroup(cgroupParent, { kill: true });
      if (stays.length > 0) problems.push(`cgroups left: ${stays.join(', ')}`);
      const left = await unmountUnder(dir);
      if (left.length > 0) problems.push(`still mounted under ${dir}: ${left.join(', ')}`);
      if (bridge && (await linkExists(bridge.name))) {
        const r = await sh('ip', ['link', 'delete', bridge.name]);
        if (r.code !== 0) problems.push(`ip link delete ${bridge.name}: ${r.stderr.trim()}`);
      }
      rmSync(dir, { recursive: true, force: true });
    }
    if (problems.length > 0) throw new Error(`dockerd stop for ${prefix}: ${problems.join('; ')}`);
  };

  const handle: DockerHandle = {
    prefix,
    dir,
    socket,
    pid: child.pid ?? -1,
    containerd,
    bridge,
    docker,
    dockerOk,
    importBusyboxImage(): Promise<string> {
      imported ??= (async () => {
        const tar = await busyboxRootfsTar(`/tmp/${prefix}`);
        await dockerOk(['import', tar, BUSYBOX_IMAGE]);
        return BUSYBOX_IMAGE;
      })();
      return imported;
    },
    stop,
    exited: () => exitCode() !== undefined,
    log,
  };

  await waitReady('dockerd', '`docker info`', () => docker(['info', '--format', '{{.ServerVersion}}'], { timeoutMs: 5_000 }), exitCode, stop, logPath);
  return handle;
}

// ---------------------------------------------------------------------------
// Host-wide CNI configuration for `ctr run --cni`

export interface CniConfInstall {
  /** The file written: /etc/cni/net.d/00-NAME.conflist. */
  path: string;
  /** The network name inside the conflist. */
  network: string;
  /**
   * Deletes the file (only if it still holds what was written), the results libcni cached for
   * this network in /var/lib/cni/results (left by detached `ctr run --cni` containers), and the
   * directories installCniConf created if they are empty.
   */
  remove(): void;
}

/**
 * Writes `conflist` (object or JSON text) to /etc/cni/net.d/00-NAME.conflist, the file `ctr run
 * --cni` reads (it takes the lexically first one; the podman package ships 87-podman-bridge.conflist
 * there). Refuses to overwrite an existing file. `name` should carry the run's prefix.
 */
export function installCniConf(name: string, conflist: string | Record<string, unknown>, confDir = '/etc/cni/net.d'): CniConfInstall {
  const text = typeof conflist === 'string' ? conflist : `${JSON.stringify(conflist, null, 2)}\n`;
  const network = (JSON.parse(text) as { name?: unknown }).name;
  if (typeof network !== 'string' || network === '') throw new Error('installCniConf: the conflist has no "name"');
  const path = join(confDir, `00-${name}.conflist`);
  if (existsSync(path)) throw new Error(`installCniConf: ${path} exists already`);
  const created = mkdirRecording(confDir);
  const cacheDirs = absent(['/var/lib/cni/results', '/var/lib/cni']);
  writeFileSync(path, text, { flag: 'wx' });
  return {
    path,
    network,
    remove(): void {
      if (existsSync(path) && readFileSync(path, 'utf8') === text) unlinkSync(path);
      const results = '/var/lib/cni/results';
      if (existsSync(results)) {
        for (const f of readdirSync(results)) if (f.startsWith(`${network}-`)) rmSync(join(results, f), { force: true });
      }
      rmdirIfEmpty([...created, ...cacheDirs]);
    },
  };
}

export interface CniPluginsInstall {
  /** The symlinks made, e.g. /opt/cni/bin/bridge. */
  paths: string[];
  /** Deletes those symlinks (if they still point where they were made to) and the directories made for them, if empty. */
  remove(): void;
}

/**
 * Symlinks CNI plugins into /opt/cni/bin (where `ctr run --cni` looks), each
 * as `name` -> `fromDir/name`, or `name` -> path for [name, path] pairs (a
 * vsw plugin built in the repository). A name already in /opt/cni/bin is an
 * error (it is not ours to replace).
 */
export function installCniPlugins(plugins: (string | [string, string])[], fromDir = CNI_PLUGINS, binDir = '/opt/cni/bin'): CniPluginsInstall {
  const created = mkdirRecording(binDir);
  const made: [string, string][] = [];
  const remove = (): void => {
    for (const [link, target] of made) {
      try {
        if (lstatSync(link).isSymbolicLink() && readlinkSync(link) === target) unlinkSync(link);
      } catch {
        // gone
      }
    }
    rmdirIfEmpty(created);
  };
  try {
    for (const p of plugins) {
      const [name, target] = typeof p === 'string' ? [p, join(fromDir, p)] : p;
      if (!existsSync(target) || !statSync(target).isFile()) throw new Error(`installCniPlugins: ${target} is not a file`);
      const link = join(binDir, name);
      // The same link left by an earlier run that was killed: used as it is, and left as it was found.
      if (isSymlink(link) && readlinkSync(link) === target) continue;
      if (existsSync(link) || isSymlink(link)) throw new Error(`installCniPlugins: ${link} exists already`);
      symlinkSync(target, link);
      made.push([link, target]);
    }
  } catch (err) {
    remove();
    throw err;
  }
  return { paths: made.map(([l]) => l), remove };
}

function isSymlink(path: string): boolean {
  try {
    return lstatSync(path).isSymbolicLink();
  } catch {
    return false;
  }
}

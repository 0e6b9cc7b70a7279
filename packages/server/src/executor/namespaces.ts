import { execFileSync } from "node:child_process";
import fs from "node:fs";
import path from "node:path";

/**
 * The bubblewrap command line: what a sandboxed process (a worker, or a build) may see.
 *
 * Every process gets its own PID, mount, network, IPC and UTS namespaces. Its filesystem is an
 * empty tmpfs holding only what is mounted here: the Node binary and the libraries it links, and
 * the mounts the caller names (its own deployment, its own scratch dir, the egress socket). Its
 * network namespace has loopback only; HTTP(S) leaves through the egress gateway's Unix socket.
 *
 * As root, bubblewrap runs privileged (it can mount the data dir whatever its permissions), and
 * the command starts through `setpriv`, which drops to the workspace's uid and gid, all
 * capabilities and the bounding set, with no_new_privs, before Node starts: the worker is that
 * unprivileged uid on the host. As another user, bubblewrap makes a user namespace (mapping that
 * user to itself) and forbids nested ones.
 */

/** Facts of this machine the command lines need, found once at start. */
export interface SandboxHost {
  bwrap: string;
  /** Set when the server runs as root: drops to the workspace's uid inside the sandbox. */
  setpriv: string | undefined;
  /** The Node binary (real path). */
  node: string;
  /** Symlinks and files that make the Node binary loadable: its dynamic libraries and loader. */
  runtime: FileSystemView;
}

export interface FileSystemView {
  /** Real directories to create, parents first. */
  dirs: string[];
  /** Symlinks as on the host: [linkPath, target]. */
  symlinks: [string, string][];
  /** Real files or directories mounted read-only at the same path. */
  files: string[];
}

export interface Mount {
  /** A host path (file or directory) that exists. */
  source: string;
  /** Where the process sees it. */
  target: string;
  writable?: boolean;
}

export interface SandboxCommandOptions {
  /** Mounted in order after the runtime; targets' parent directories are created. */
  mounts: Mount[];
  /** With a privileged bubblewrap (root): the uid and gid the command runs as. */
  user?: { uid: number; gid: number } | undefined;
  /** The command inside the sandbox: absolute paths as the sandbox sees them. */
  command: string[];
  /** Working directory inside the sandbox. */
  cwd: string;
  /** A descriptor of the spawned bwrap on which it writes `{"child-pid": N, ...}`. */
  infoFd?: number;
  /** Writable tmpfs folders, each with its size in bytes: a scratch dir cannot fill the disk. */
  tmpfs?: { path: string; bytes: number }[];
}

export class SandboxUnavailable extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SandboxUnavailable";
  }
}

/** Finds bubblewrap, setpriv (as root) and what the Node binary loads; throws SandboxUnavailable. */
export function findSandboxHost(options: { privileged: boolean; node?: string; env?: NodeJS.ProcessEnv }): SandboxHost {
  if (process.platform !== "linux") throw new SandboxUnavailable(`Linux namespaces are not available on ${process.platform}.`);
  const env = options.env ?? process.env;
  // WORKYARD_BWRAP names another bubblewrap (or none: a path that does not exist).
  const bwrap = env.WORKYARD_BWRAP ? (isExecutable(env.WORKYARD_BWRAP) ? env.WORKYARD_BWRAP : undefined) : which("bwrap", env);
  if (!bwrap) throw new SandboxUnavailable(env.WORKYARD_BWRAP ? `WORKYARD_BWRAP=${env.WORKYARD_BWRAP} is not an executable.` : "bubblewrap (bwrap) is not installed.");
  const setpriv = options.privileged ? which("setpriv", env) : undefined;
  if (options.privileged && !setpriv) throw new SandboxUnavailable("setpriv (util-linux) is not installed.");
  const node = fs.realpathSync(options.node ?? process.execPath);
  const binaries = [node, ...(setpriv ? [setpriv] : [])];
  const files = [...binaries, ...binaries.flatMap(linkedLibraries)];
  return { bwrap, setpriv, node, runtime: viewOf(files) };
}

/** The bwrap arguments (without the bwrap binary itself) for one sandboxed command. */
export function sandboxArgs(host: SandboxHost, options: SandboxCommandOptions): string[] {
  const args = [
    "--unshare-pid",
    "--unshare-net",
    "--unshare-ipc",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--hostname",
    "workyard",
    "--die-with-parent",
    "--new-session",
    "--as-pid-1",
  ];
  if (options.user) {
    // Privileged: setpriv needs these two, and gives them up before Node starts.
    args.push("--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID");
  } else {
    args.push("--unshare-user", "--disable-userns");
  }
  if (options.infoFd !== undefined) args.push("--info-fd", String(options.infoFd));

  const view = host.runtime;
  const made = new Set<string>(["/"]);
  const mkdir = (dir: string) => {
    const missing: string[] = [];
    for (let d = dir; !made.has(d); d = path.posix.dirname(d)) missing.unshift(d);
    for (const d of missing) {
      args.push("--perms", "0755", "--dir", d);
      made.add(d);
    }
  };
  for (const dir of view.dirs) mkdir(dir);
  for (const [link, target] of view.symlinks) {
    mkdir(path.posix.dirname(link));
    args.push("--symlink", target, link);
    made.add(link);
  }
  for (const file of view.files) {
    mkdir(path.posix.dirname(file));
    args.push("--ro-bind", file, file);
  }
  args.push("--proc", "/proc", "--dev", "/dev");
  for (const { path: dir, bytes } of options.tmpfs ?? []) {
    mkdir(path.posix.dirname(dir));
    // Only this sandbox's one process uses it, whatever uid it drops to.
    args.push("--perms", "0777", "--size", String(bytes), "--tmpfs", dir);
    made.add(dir);
  }
  for (const mount of options.mounts) {
    mkdir(path.posix.dirname(mount.target));
    args.push(mount.writable ? "--bind" : "--ro-bind", mount.source, mount.target);
    made.add(mount.target);
  }
  args.push("--chdir", options.cwd, "--");
  if (options.user) {
    args.push(
      host.setpriv!,
      `--reuid=${options.user.uid}`,
      `--regid=${options.user.gid}`,
      "--clear-groups",
      "--inh-caps=-all",
      "--bounding-set=-all",
      "--no-new-privs",
      // A change of uid clears bubblewrap's --die-with-parent: set it again for the new uid.
      "--pdeathsig=KILL",
      "--",
    );
  }
  args.push(...options.command);
  return args;
}

function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

function which(name: string, env: NodeJS.ProcessEnv): string | undefined {
  const dirs = (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":").concat(["/usr/bin", "/usr/sbin", "/bin", "/sbin"]);
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    try {
      fs.accessSync(candidate, fs.constants.X_OK);
      return fs.realpathSync(candidate);
    } catch {
      // not here
    }
  }
  return undefined;
}

/** The shared libraries and loader a binary needs, as `ldd` lists them. */
function linkedLibraries(binary: string): string[] {
  let text: string;
  try {
    text = execFileSync("ldd", [binary], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 5000 });
  } catch {
    // A static binary ("not a dynamic executable") or no ldd: mount the usual library folders.
    return ["/lib", "/lib64", "/usr/lib", "/usr/lib64"].filter((p) => fs.existsSync(p));
  }
  const out: string[] = [];
  for (const line of text.split("\n")) {
    const match = /=>\s+(\/\S+)/.exec(line) ?? /^\s*(\/\S+)\s+\(/.exec(line);
    if (match?.[1]) out.push(match[1]);
  }
  return out;
}

/**
 * What makes each path reachable inside the sandbox as on the host: every symlink met on the way
 * (merged-/usr's /lib -> usr/lib, the loader's absolute link) recreated, and the real files bound.
 */
export function viewOf(paths: string[]): FileSystemView {
  const dirs = new Set<string>();
  const symlinks = new Map<string, string>();
  const files = new Set<string>();
  for (const start of paths) {
    let current = path.posix.resolve(start);
    // Resolve one component at a time, recording links, until the path has none.
    for (let guard = 0; guard < 40; guard++) {
      const parts = current.split("/").filter(Boolean);
      let prefix = "";
      let rewritten: string | undefined;
      for (let i = 0; i < parts.length; i++) {
        prefix = `${prefix}/${parts[i]}`;
        let stat: fs.Stats;
        try {
          stat = fs.lstatSync(prefix);
        } catch {
          break;
        }
        if (stat.isSymbolicLink()) {
          const target = fs.readlinkSync(prefix);
          symlinks.set(prefix, target);
          const rest = parts.slice(i + 1).join("/");
          rewritten = path.posix.resolve(path.posix.dirname(prefix), target, rest);
          break;
        }
        if (i < parts.length - 1) dirs.add(prefix);
      }
      if (rewritten === undefined) {
        if (fs.existsSync(current)) files.add(current);
        break;
      }
      current = rewritten;
    }
  }
  // A directory bound whole needs no separate entries below it.
  const fileList = [...files].sort();
  const covered = (p: string) => fileList.some((f) => p !== f && p.startsWith(`${f}/`));
  return {
    dirs: [...dirs].filter((d) => !symlinks.has(d) && !covered(d)).sort((a, b) => a.split("/").length - b.split("/").length),
    symlinks: [...symlinks].filter(([link]) => !covered(link)),
    files: fileList.filter((f) => !covered(f)),
  };
}

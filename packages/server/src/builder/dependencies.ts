import fs from "node:fs";
import path from "node:path";
import { AppError } from "../errors.js";

/**
 * Dependencies a build installs come from the registry, nowhere else. A `file:` or `link:`
 * dependency would point npm at paths on the server (`"rootfs": "file:/"` linked node_modules to
 * the machine's root), and git or URL dependencies at hosts other than the registry.
 */

const SECTIONS = ["dependencies", "devDependencies", "optionalDependencies", "peerDependencies", "bundleDependencies", "overrides"] as const;

/** Why a version spec does not come from the registry, or undefined when it does. */
export function nonRegistrySource(spec: string): string | undefined {
  const value = spec.trim();
  if (/^(file|link):/i.test(value)) return "a path on the server";
  if (/^(git(\+[a-z]+)?|github|gitlab|bitbucket|gist):/i.test(value) || /\.git(#.*)?$/i.test(value)) return "a git repository";
  if (/^https?:\/\//i.test(value)) return "a URL";
  if (/^(\.{0,2}\/|~\/)/.test(value)) return "a path on the server";
  // `owner/repo` and `owner/repo#ref` are GitHub shorthands (scoped names start with @).
  if (/^[^@\s/:]+\/[^\s/:]+(#.*)?$/.test(value)) return "a git repository (GitHub shorthand)";
  // `npm:name@range` aliases are fine, unless they alias one of the above.
  const alias = /^npm:(?:@[^/]+\/)?[^@]+@(.+)$/i.exec(value);
  if (alias?.[1]) return nonRegistrySource(alias[1]);
  return undefined;
}

function refused(name: string, spec: string, why: string, file: string): AppError {
  return new AppError("dependency_refused", `${file}: the dependency ${JSON.stringify(name)} (${JSON.stringify(spec)}) comes from ${why}; Workyard installs packages from the registry only.`, {
    hint: "Publish the package to the registry (or vendor its code into src/), update package-lock.json, and deploy again.",
  });
}

/** Refuses file:, link:, git and URL dependencies in package.json and in the lockfile. */
export function checkDependencySources(projectDir: string): void {
  const read = (name: string) => {
    try {
      return JSON.parse(fs.readFileSync(path.join(projectDir, name), "utf8")) as Record<string, unknown>;
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw new AppError("build_failed", `${name} is not valid JSON: ${(error as Error).message}`, { hint: `Fix ${name} and deploy again.` });
    }
  };
  const manifest = read("package.json");
  if (manifest) {
    for (const section of SECTIONS) {
      const entries = manifest[section];
      if (!entries || typeof entries !== "object") continue;
      walkSpecs(entries as Record<string, unknown>, (name, spec) => {
        const why = nonRegistrySource(spec);
        if (why) throw refused(name, spec, why, "package.json");
      });
    }
  }
  const lock = read("package-lock.json");
  const packages = lock?.packages;
  if (packages && typeof packages === "object") {
    for (const [location, raw] of Object.entries(packages as Record<string, unknown>)) {
      if (location === "" || !raw || typeof raw !== "object") continue;
      const entry = raw as { link?: unknown; resolved?: unknown };
      const name = location.replace(/^.*node_modules\//, "");
      if (entry.link === true) throw refused(name, String(entry.resolved ?? location), "a path on the server (a link)", "package-lock.json");
      // Tarball URLs are fine: npm fetches them through the gateway, which reaches the registry only.
      const why = typeof entry.resolved === "string" ? nonRegistrySource(entry.resolved) : undefined;
      if (why && why !== "a URL") throw refused(name, entry.resolved as string, why, "package-lock.json");
    }
  }
}

/** Version specs of a dependency section; `overrides` nest. */
function walkSpecs(entries: Record<string, unknown>, visit: (name: string, spec: string) => void): void {
  for (const [name, value] of Object.entries(entries)) {
    if (typeof value === "string") visit(name, value);
    else if (value && typeof value === "object" && !Array.isArray(value)) walkSpecs(value as Record<string, unknown>, visit);
  }
}

/**
 * After an install: every entry of the tree is a file, a folder or a link that stays inside it.
 * npm follows the lockfile, but the tree is checked as it is, not as it should be.
 */
export function checkInstalledTree(nodeModules: string): void {
  const root = fs.existsSync(nodeModules) ? fs.realpathSync(nodeModules) : path.resolve(nodeModules);
  const visit = (p: string) => {
    const stat = fs.lstatSync(p);
    if (stat.isSymbolicLink()) {
      // Where the link really leads, through any chain of links (one that leads nowhere stays lexical).
      let target: string;
      try {
        target = fs.realpathSync(p);
      } catch {
        target = path.resolve(path.dirname(p), fs.readlinkSync(p));
      }
      if (target !== root && !target.startsWith(`${root}${path.sep}`)) {
        throw new AppError("dependency_refused", `The installed packages hold a link that leaves node_modules: ${path.relative(root, p)} -> ${fs.readlinkSync(p)}.`, {
          hint: "Dependencies must come from the registry; check package-lock.json for file: or link: entries.",
        });
      }
      return;
    }
    if (stat.isDirectory()) {
      for (const name of fs.readdirSync(p)) visit(path.join(p, name));
      return;
    }
    if (!stat.isFile()) {
      throw new AppError("dependency_refused", `The installed packages hold something other than files and folders: ${path.relative(root, p)}.`);
    }
  };
  if (fs.existsSync(root)) visit(root);
}

/**
 * The worker project `ntn workers new` writes: the official template's shape (package.json,
 * tsconfig, src/index.ts with one tool, .gitignore), made here instead of downloaded, so it works
 * with no network but the npm registry.
 */

/** Versions the scaffold depends on; the SDK declares Node 22 but runs on Node 20 from node_modules. */
export const SCAFFOLD_VERSIONS = {
  workers: "^0.9.2",
  client: "^5.26.0",
  typescript: "^5.9.3",
  typesNode: "^20.19.0",
  tsx: "^4.20.0",
};

export function packageName(dir: string): string {
  const base = dir
    .toLowerCase()
    .replace(/[^a-z0-9-_.]+/g, "-")
    .replace(/^[-_.]+|[-_.]+$/g, "");
  return base || "my-worker";
}

export function scaffoldFiles(name: string): Record<string, string> {
  const packageJson = {
    name: packageName(name),
    version: "0.1.0",
    private: true,
    type: "module",
    scripts: { build: "tsc", check: "tsc --noEmit" },
    dependencies: { "@notionhq/client": SCAFFOLD_VERSIONS.client, "@notionhq/workers": SCAFFOLD_VERSIONS.workers },
    devDependencies: { "@types/node": SCAFFOLD_VERSIONS.typesNode, tsx: SCAFFOLD_VERSIONS.tsx, typescript: SCAFFOLD_VERSIONS.typescript },
  };
  const tsconfig = {
    compilerOptions: {
      target: "ES2022",
      module: "nodenext",
      moduleResolution: "nodenext",
      strict: true,
      // The SDK's own type declarations do not all check; skip them, check yours.
      skipLibCheck: true,
      types: ["node"],
      rootDir: "src",
      outDir: "dist",
    },
    include: ["src"],
  };
  return {
    "package.json": `${JSON.stringify(packageJson, null, 2)}\n`,
    "tsconfig.json": `${JSON.stringify(tsconfig, null, 2)}\n`,
    ".gitignore": [".env", ".env.*", "dist/", "node_modules/", ".dev-shell/", "workers.*.json", "workers.json", ""].join("\n"),
    "src/index.ts": `import { Worker } from "@notionhq/workers";
import { j } from "@notionhq/workers/schema-builder";

const worker = new Worker();
export default worker;

worker.tool("sayHello", {
  title: "Say Hello",
  description: "Greets someone by name",
  schema: j.object({
    name: j.string().describe("Who to greet"),
  }),
  execute: async ({ name }) => {
    return { message: \`Hello, \${name}!\` };
  },
});
`,
    "README.md": `# ${name}

A Notion worker. With a Workyard server (\`ntn server\`) or Notion:

\`\`\`sh
ntn workers deploy --name ${packageName(name)}
ntn workers exec sayHello -d '{"name":"World"}'
ntn workers exec sayHello --local -d '{"name":"World"}'
\`\`\`
`,
  };
}

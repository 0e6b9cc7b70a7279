/** Bounds of a run, and of the processes that run them. */
export const LIMITS = {
  /** stdout + stderr kept per run; the rest is dropped with a notice. */
  logBytes: 1024 * 1024,
  /** A run's result, as JSON. */
  resultBytes: 4 * 1024 * 1024,
  /** A run's input (`args`), as JSON. */
  inputBytes: 1024 * 1024,
  /** Time a process gets to load its bundle and report the manifest. */
  loadTimeoutMs: 30_000,
  /** Warm processes per deployment (the cap in all is config.maxProcesses). */
  processesPerDeployment: 4,
  /** Runs one process takes at once (config.runsPerProcess). */
  runsPerProcess: 16,
  /** Runs waiting for room under the process cap, and how long one waits before a 503. */
  queuedRunsTotal: 1024,
  roomWaitMs: 10_000,
  /** Runs waiting for a process of one deployment; beyond, a run answers 503 overloaded. */
  queuedRunsPerDeployment: 256,
  /** An idle process is stopped after this long. */
  idleMs: 5 * 60 * 1000,
  /** How often a running process's memory is checked. */
  memoryPollMs: 200,
  /** A worker process's scratch dir (a tmpfs in namespaces): what it may write. */
  scratchBytes: 64 * 1024 * 1024,
  /** A build's /tmp (a tmpfs): npm's temporary files. */
  buildTmpBytes: 512 * 1024 * 1024,
  /** Resident memory beyond the heap cap (SDK, buffers) before a run counts as over its memory limit. */
  rssHeadroomMb: 192,
};

/** Exit codes recorded for runs, as the wire protocol's `exitCode`. */
export const EXIT_CODES = { ok: 0, error: 1, timeout: 124, memory: 137 } as const;

// A benchmark's run from start to report: its namespaces (a per-run prefix) and temp dir are cleaned up once
// whatever happens (the end, a failure, SIGINT/SIGTERM), the temp dir with the daemons' logs is kept for a
// failed run, and the report is written either way (a failed run says so in its notes).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { killChildren } from './exec.js';
import { destroyTopology } from './netns.js';

export interface RunState {
  /** The namespaces' prefix ('' until made). */
  prefix: string;
  /** The temp dir ('' until made). */
  tmp: string;
}

export class BenchRun {
  private cleaning: Promise<void> | undefined;
  private readonly hooks: (() => void | Promise<void>)[] = [];

  constructor(
    private readonly say: (m: string) => void,
    private readonly state: () => RunState,
  ) {
    for (const sig of ['SIGINT', 'SIGTERM'] as const) {
      process.on(sig, () => {
        const { prefix, tmp } = this.state();
        say(`${sig}: stopping, removing namespaces ${prefix}-*`);
        void this.cleanup().finally(() => {
          if (tmp) rmSync(tmp, { recursive: true, force: true });
          process.exit(130);
        });
      });
    }
  }

  /**
   * Run first when cleaning up, before the processes are killed (stop a metrics scraper, destroy a shared proxy the
   * benchmark did not spawn itself): the last registered first, each awaited, a failing one not stopping the rest.
   */
  onCleanup(fn: () => void | Promise<void>): void {
    this.hooks.push(fn);
  }

  /** Once: the hooks, every child SIGTERM then SIGKILL, the namespaces. */
  cleanup(): Promise<void> {
    this.cleaning ??= (async () => {
      for (const fn of this.hooks.splice(0).reverse()) await Promise.resolve().then(fn).catch(() => undefined);
      killChildren('SIGTERM');
      await new Promise((r) => setTimeout(r, 300));
      killChildren('SIGKILL');
      const { prefix } = this.state();
      if (prefix) await destroyTopology(prefix);
    })();
    return this.cleaning;
  }

  /** Run `main`, clean up, write the report, exit (1 after a failure, which goes into `notes`). */
  async finish(main: () => Promise<void>, o: { notes: string[]; report: () => void; onFailure?: () => void; beforeReport?: () => void }): Promise<never> {
    const started = Date.now();
    let failed = false;
    try {
      await main();
    } catch (e) {
      failed = true;
      o.notes.push(`run aborted: ${(e as Error).message}`);
      this.say(`FAILED: ${(e as Error).stack ?? String(e)}`);
      o.onFailure?.();
    } finally {
      await this.cleanup();
      const { tmp } = this.state();
      if (tmp && !failed) rmSync(tmp, { recursive: true, force: true });
      else if (tmp) this.say(`logs kept in ${tmp}`);
    }
    this.say(`done in ${((Date.now() - started) / 1000).toFixed(0)} s`);
    o.beforeReport?.();
    o.report();
    process.exit(failed ? 1 : 0);
  }
}

/** bench/results/<out>.json and .md; the markdown goes to stdout too. */
export function writeResults(repoRoot: string, out: string, json: unknown, md: string, say: (m: string) => void): void {
  const dir = join(repoRoot, 'bench/results');
  mkdirSync(dirname(join(dir, out)), { recursive: true });
  writeFileSync(join(dir, `${out}.json`), JSON.stringify(json, null, 2) + '\n');
  writeFileSync(join(dir, `${out}.md`), md);
  process.stdout.write(md);
  say(`wrote ${join(dir, out)}.{json,md}`);
}

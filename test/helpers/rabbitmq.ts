// A private RabbitMQ node for tests: its own node name, ports, epmd, cookie, data and config in a temp dir,
// so it neither needs nor touches the system broker (rabbit@localhost on 5672) or its files.
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { getFreePort, waitFor, waitForListen } from './proc.js';

// Debian's /usr/sbin wrappers su to the rabbitmq user and cd to /var/lib/rabbitmq; the scripts behind them do not.
const BIN = process.env.QM_TEST_RABBITMQ_BIN ?? '/usr/lib/rabbitmq/bin';
const SERVER = join(BIN, 'rabbitmq-server');
const CTL = join(BIN, 'rabbitmqctl');

/** Why the RabbitMQ tests cannot run here, or undefined when they can. */
export function rabbitSkipReason(): string | undefined {
  return existsSync(SERVER) && existsSync(CTL) ? undefined : `rabbitmq-server is not installed (no ${SERVER}; apt-get install rabbitmq-server)`;
}

export interface TestRabbit {
  /** amqp URL as oslo writes it: rabbit://guest:guest@127.0.0.1:<port>/ */
  url: string;
  port: number;
  nodename: string;
  /** Stop the node for good and remove its files. */
  stop(): Promise<void>;
  /** Stop the whole node and start it again on the same data (a broker restart). */
  restart(): Promise<void>;
  /** stop_app: every client connection is closed and the listener goes away; the Erlang node stays. */
  down(): Promise<void>;
  /** start_app after down(). */
  up(): Promise<void>;
  listQueues(): Promise<Array<{ name: string; messages: number; consumers: number }>>;
  listExchanges(): Promise<Array<{ name: string; type: string; durable: boolean; auto_delete: boolean }>>;
  /** SIGSTOP / SIGCONT the node (ours, by pid): a hung broker that keeps its sockets open. */
  freeze(): void;
  thaw(): void;
  /** Any rabbitmqctl command against this node; resolves with stdout. */
  ctl(...args: string[]): Promise<string>;
  /** The node's log so far, for failure messages. */
  log(): string;
}

const live = new Set<() => void>();
// A crashed test run must not leave a broker behind: kill ours (by pid) as the process exits.
process.on('exit', () => {
  for (const kill of live) kill();
});

export async function startRabbit(): Promise<TestRabbit> {
  const reason = rabbitSkipReason();
  if (reason) throw new Error(reason);
  const dir = mkdtempSync(join(tmpdir(), 'qm-rabbit-'));
  const home = join(dir, 'home');
  mkdirSync(home);
  // The CLI and the node must share a cookie: both read $HOME/.erlang.cookie, so give them one up front.
  writeFileSync(join(home, '.erlang.cookie'), randomBytes(15).toString('hex').toUpperCase());
  chmodSync(join(home, '.erlang.cookie'), 0o400);
  writeFileSync(join(dir, 'enabled_plugins'), '[].\n');
  writeFileSync(join(dir, 'rabbitmq-env.conf'), '# empty: keep /etc/rabbitmq/rabbitmq-env.conf (NODENAME=rabbit@localhost) out\n');
  writeFileSync(join(dir, 'rabbitmq.conf'), 'log.file.level = info\n');
  const [port, distPort, epmdPort] = await distinctFreePorts(3);
  const nodename = `qm${randomBytes(4).toString('hex')}@localhost`;
  const loopbackOnly = '-kernel inet_dist_use_interface {127,0,0,1}';
  const env: NodeJS.ProcessEnv = {
    ...Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RABBITMQ_|ERL_)/.test(k))),
    HOME: home,
    RABBITMQ_NODENAME: nodename,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_CONF_ENV_FILE: join(dir, 'rabbitmq-env.conf'),
    RABBITMQ_CONFIG_FILE: join(dir, 'rabbitmq.conf'),
    RABBITMQ_ADVANCED_CONFIG_FILE: join(dir, 'advanced.config'),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, 'enabled_plugins'),
    RABBITMQ_MNESIA_BASE: join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: join(dir, 'log'),
    RABBITMQ_PID_FILE: join(dir, 'rabbitmq.pid'),
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS: loopbackOnly,
    RABBITMQ_CTL_ERL_ARGS: loopbackOnly,
    // A private epmd too, so the system's epmd (and its node names) stay out of it.
    ERL_EPMD_PORT: String(epmdPort),
    ERL_EPMD_ADDRESS: '127.0.0.1',
  };
  const outFile = join(dir, 'server.out');
  let child: ChildProcess | undefined;
  // The script stays as the parent of the Erlang VM (to forward signals); the VM writes its own pid.
  let vmPid: number | undefined;
  let exited: Promise<void> = Promise.resolve();

  const ctl = (...args: string[]) =>
    new Promise<string>((resolve, reject) => {
      execFile(CTL, ['-n', nodename, '-q', ...args], { env, timeout: 60_000, maxBuffer: 16 << 20 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`rabbitmqctl ${args.join(' ')}: ${err.message}\n${stderr}`));
        else resolve(stdout);
      });
    });
  const log = () => {
    let text = '';
    for (const f of [outFile, join(dir, 'log', `${nodename}.log`)]) {
      try {
        text += readFileSync(f, 'utf8').slice(-4000);
      } catch {
        // Not written yet.
      }
    }
    return text;
  };
  const kill = () => {
    if (child?.pid && child.exitCode === null && child.signalCode === null) {
      for (const pid of [vmPid, child.pid]) {
        if (!pid) continue;
        try {
          process.kill(pid, 'SIGCONT');
          process.kill(pid, 'SIGKILL');
        } catch {
          // Gone already.
        }
      }
    }
    spawnSync('epmd', ['-port', String(epmdPort), '-kill'], { env, stdio: 'ignore', timeout: 5000 });
  };

  const boot = async () => {
    const out = openSync(outFile, 'a');
    const c = spawn(SERVER, [], { env, cwd: dir, stdio: ['ignore', out, out] });
    closeSync(out);
    child = c;
    exited = new Promise<void>((r) => c.once('exit', () => r()));
    let dead = false;
    void exited.then(() => (dead = true));
    // The AMQP listener opens at the end of boot; await_startup then confirms the node says so too.
    await waitFor(
      async () => {
        if (dead) throw new Error(`rabbitmq-server exited during start-up:\n${log()}`);
        return waitForListen({ host: '127.0.0.1', port }, 200).catch(() => false);
      },
      60_000,
      100,
      `RabbitMQ node ${nodename} on port ${port}`,
    ).catch((e: unknown) => {
      kill();
      throw e;
    });
    await ctl('await_startup', '--timeout', '30');
    vmPid = childOf(c.pid!, Number(readFileSync(env.RABBITMQ_PID_FILE!, 'utf8').trim()));
  };
  const halt = async () => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    await ctl('stop').catch(() => undefined);
    const t = setTimeout(kill, 15_000);
    await exited;
    clearTimeout(t);
  };

  live.add(kill);
  await boot();
  return {
    url: `rabbit://guest:guest@127.0.0.1:${port}/`,
    port,
    nodename,
    ctl,
    log,
    async stop() {
      await halt();
      kill();
      live.delete(kill);
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await halt();
      await boot();
    },
    freeze() {
      if (!vmPid) throw new Error('no Erlang VM pid');
      process.kill(vmPid, 'SIGSTOP');
    },
    thaw() {
      if (vmPid) process.kill(vmPid, 'SIGCONT');
    },
    async down() {
      await ctl('stop_app');
    },
    async up() {
      await ctl('start_app');
      await waitForListen({ host: '127.0.0.1', port }, 30_000);
    },
    async listQueues() {
      const rows = JSON.parse((await ctl('list_queues', 'name', 'messages', 'consumers', '--formatter', 'json')) || '[]') as Array<{ name: string; messages: number; consumers: number }>;
      return rows.map((r) => ({ name: r.name, messages: Number(r.messages), consumers: Number(r.consumers) }));
    },
    async listExchanges() {
      return JSON.parse((await ctl('list_exchanges', 'name', 'type', 'durable', 'auto_delete', '--formatter', 'json')) || '[]') as Array<{
        name: string;
        type: string;
        durable: boolean;
        auto_delete: boolean;
      }>;
    },
  };
}

/** `pid` if it is a child of `parent` (so never signal a stranger whose pid a stale file names), else undefined. */
function childOf(parent: number, pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    return ppid === parent ? pid : undefined;
  } catch {
    return undefined;
  }
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const out = new Set<number>();
  while (out.size < n) out.add(await getFreePort());
  return [...out];
}

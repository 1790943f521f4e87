// The agent's heartbeat to quantum-server (Neutron's UnixDomainMetadataProxy._report_state): every
// report_interval seconds; start_flag on the first one until it has been accepted; failures are logged.
import type { AgentReport, Agent } from '../common/quantum-client.js';
import { errorMessage } from '../common/errors.js';
import type { Logger } from '../common/log.js';

export interface StateReporterOptions {
  client: { reportState(r: AgentReport): Promise<Agent> };
  host: string;
  socketPath: string;
  novaHost: string;
  novaPort: number;
  intervalMs: number;
  logHeartbeats: boolean;
  log: Logger;
}

export class StateReporter {
  private timer: NodeJS.Timeout | undefined;
  private startFlag = true;
  private running: Promise<void> | undefined;

  constructor(private readonly o: StateReporterOptions) {}

  payload(): AgentReport {
    const r: AgentReport = {
      binary: 'quantum-metadata-agent',
      host: this.o.host,
      topic: 'N/A',
      agent_type: 'Metadata agent',
      configurations: {
        metadata_proxy_socket: this.o.socketPath,
        nova_metadata_host: this.o.novaHost,
        nova_metadata_port: this.o.novaPort,
        log_agent_heartbeats: this.o.logHeartbeats,
      },
    };
    if (this.startFlag) r.start_flag = true;
    return r;
  }

  /** One report; never throws. */
  async reportOnce(): Promise<boolean> {
    try {
      await this.o.client.reportState(this.payload());
      this.startFlag = false;
      if (this.o.logHeartbeats) this.o.log.info({ host: this.o.host }, 'reported state');
      return true;
    } catch (e) {
      this.o.log.warn({ err: errorMessage(e) }, 'Failed reporting state!');
      return false;
    }
  }

  start(): void {
    if (this.o.intervalMs <= 0) return;
    const tick = () => {
      // Never two reports at once, even if quantum-server is slower than the interval.
      if (!this.running) this.running = this.reportOnce().then(() => (this.running = undefined));
    };
    tick();
    this.timer = setInterval(tick, this.o.intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.running;
  }
}

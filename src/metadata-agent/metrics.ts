// The metadata agent's Prometheus metrics ([metrics] listen): requests by kind (router | network) and status,
// requests per router and per network (only ids a lookup found a port for, so a stray header cannot grow the
// label set: one series per router or network this node serves), the lookup cache, Nova's latency and Nova's
// refusals and failures by reason, and the bounded queue toward Nova.
import { LATENCY_BUCKETS, type Metrics } from '../common/metrics.js';
import type { RequestSlots } from './bounds.js';

export type Kind = 'router' | 'network' | 'none';
/** Why a request did not get Nova's 200: Nova's 403 (shared secret), 404, other 4xx, 5xx; no answer at all; our own queue. */
export type NovaFailure = 'signature' | 'not_found' | 'client_error' | 'server_error' | 'unreachable' | 'timeout' | 'queue_full';

export interface AgentStats {
  answered(kind: Kind, status: number): void;
  owner(kind: 'router' | 'network', id: string): void;
  cache(hit: boolean): void;
  nova(seconds: number): void;
  failure(reason: NovaFailure): void;
  aborted(): void;
}

export function agentStats(m: Metrics, slots: RequestSlots): AgentStats {
  const requests = m.counter('requests_total', 'Requests answered to the metadata proxies, by kind (router or network) and status.', ['kind', 'status']);
  const byRouter = m.counter('router_requests_total', 'Requests answered for guests behind each router (routers with a matching port only).', ['router_id']);
  const byNetwork = m.counter('network_requests_total', 'Requests answered for guests on each isolated network (networks with a matching port only).', ['network_id']);
  const hits = m.counter('lookup_cache_hits_total', 'Instance lookups answered (at least partly) from the cache.');
  const misses = m.counter('lookup_cache_misses_total', 'Instance lookups that asked quantum-server for everything.');
  const latency = m.histogram('nova_request_duration_seconds', 'Latency of the requests to the Nova metadata API.', [], LATENCY_BUCKETS);
  const failures = m.counter('nova_errors_total', 'Requests without a 200 from Nova, by reason: signature (403: shared secrets differ), not_found, client_error, server_error, unreachable, timeout, queue_full (refused here, 503).', ['reason']);
  const aborts = m.counter('client_aborts_total', 'Requests whose proxy closed the connection before the answer (the Nova request was aborted).');
  m.gauge('nova_requests_in_flight', 'Requests being served (lookup and Nova call), at most [DEFAULT] wsgi_default_pool_size per worker.', [], (g) => g.set(slots.inFlight));
  m.gauge('queue_length', 'Requests waiting for a slot, at most [DEFAULT] metadata_queue_size per worker.', [], (g) => g.set(slots.queued));
  return {
    answered: (kind, status) => requests.inc({ kind, status: String(status) }),
    owner: (kind, id) => (kind === 'router' ? byRouter.inc({ router_id: id }) : byNetwork.inc({ network_id: id })),
    cache: (hit) => (hit ? hits.inc() : misses.inc()),
    nova: (s) => latency.observe(s),
    failure: (reason) => failures.inc({ reason }),
    aborted: () => aborts.inc(),
  };
}

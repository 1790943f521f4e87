// The agent → Nova leg: a keep-alive undici Pool to nova_metadata_host:port, http or https (CA,
// insecure, client certificate as configured), carrying exactly the four identity headers.
import { readFileSync } from 'node:fs';
import { Pool } from 'undici';
import { ConfigError } from '../common/errors.js';
import { signInstanceId } from '../common/hmac.js';
import { hostForUrl } from '../common/http.js';
import type { Identity } from './lookup.js';

export interface NovaOptions {
  host: string;
  port: number;
  protocol: 'http' | 'https';
  insecure: boolean;
  caCert?: string | undefined;
  clientCert?: string | undefined;
  clientKey?: string | undefined;
  sharedSecret: string;
  /** Milliseconds (Neutron 25.0.0: 60 s). */
  timeoutMs?: number;
  connections?: number;
}

export type NovaAnswer =
  | { kind: 'response'; status: number; contentType: string | undefined; body: Buffer; passHeaders: Record<string, string> }
  /** Connection refused/reset, DNS, TLS: Nova cannot be reached (→ 503). */
  | { kind: 'unreachable'; error: string }
  | { kind: 'timeout'; error: string }
  /** The proxy went away first and the request was aborted (Nova sees its connection close). */
  | { kind: 'aborted' };

/** Headers of Nova's answer the agent passes back (tokens' TTL, the 405's Allow, Nova's request id). */
const PASS_BACK = ['x-aws-ec2-metadata-token-ttl-seconds', 'allow'] as const;

/** What the agent adds to the four identity headers: the session-token headers and the request id. */
export interface ForwardExtras {
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

function readPem(what: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw new ConfigError(`${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
  }
}

export class NovaClient {
  private readonly pool: Pool;
  readonly origin: string;
  constructor(private readonly o: NovaOptions) {
    this.origin = `${o.protocol}://${hostForUrl(o.host)}:${o.port}`;
    const t = o.timeoutMs ?? 60_000;
    const connect: Record<string, unknown> = { timeout: Math.min(t, 10_000) };
    if (o.protocol === 'https') {
      // requests' verify: the CA file unless insecure; insecure wins (Neutron's _proxy_request).
      connect.rejectUnauthorized = !o.insecure;
      if (o.caCert && !o.insecure) connect.ca = readPem('auth_ca_cert', o.caCert);
      if (o.clientCert && o.clientKey) {
        connect.cert = readPem('nova_client_cert', o.clientCert);
        connect.key = readPem('nova_client_priv_key', o.clientKey);
      }
    }
    this.pool = new Pool(this.origin, { connections: o.connections ?? 100, headersTimeout: t, bodyTimeout: t, keepAliveTimeout: 30_000, connect });
  }

  /** Signatures of recent instances: a boot storm asks for the same few over and over. */
  private readonly sigs = new Map<string, string>();

  private sign(instanceId: string): string {
    let s = this.sigs.get(instanceId);
    if (s === undefined) {
      s = signInstanceId(this.o.sharedSecret, instanceId);
      if (this.sigs.size >= 4096) this.sigs.delete(this.sigs.keys().next().value!);
      this.sigs.set(instanceId, s);
    }
    return s;
  }

  /** The four headers Nova sees, and nothing else the guest sent. */
  headersFor(remoteAddress: string, id: Identity): Record<string, string> {
    return {
      'x-forwarded-for': remoteAddress,
      'x-instance-id': id.instanceId,
      'x-tenant-id': id.tenantId,
      'x-instance-id-signature': this.sign(id.instanceId),
    };
  }

  async forward(method: string, path: string, remoteAddress: string, id: Identity, body: Buffer | undefined, x: ForwardExtras = {}): Promise<NovaAnswer> {
    try {
      const res = await this.pool.request({
        method: method as 'GET',
        path,
        headers: x.headers ? { ...this.headersFor(remoteAddress, id), ...x.headers } : this.headersFor(remoteAddress, id),
        body: body && body.length ? body : undefined,
        ...(x.signal ? { signal: x.signal } : {}),
      });
      const buf = Buffer.from(await res.body.arrayBuffer());
      const ct = res.headers['content-type'];
      const passHeaders: Record<string, string> = {};
      for (const h of PASS_BACK) {
        const v = res.headers[h];
        if (typeof v === 'string') passHeaders[h] = v;
      }
      return { kind: 'response', status: res.statusCode, contentType: Array.isArray(ct) ? ct[0] : ct, body: buf, passHeaders };
    } catch (e) {
      const err = e as Error & { code?: string };
      if (x.signal?.aborted) return { kind: 'aborted' };
      const msg = `${err.code ?? err.name}: ${err.message}`;
      if (err.code === 'UND_ERR_HEADERS_TIMEOUT' || err.code === 'UND_ERR_BODY_TIMEOUT') return { kind: 'timeout', error: msg };
      return { kind: 'unreachable', error: msg };
    }
  }

  close(): Promise<void> {
    return this.pool.close();
  }
}

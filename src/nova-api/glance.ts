// The image service as nova-api uses it: GET /v2/images/{id} (Nova's glance.API.show), with the caller's token
// so that what they cannot see is not found, as in Nova.
import { Pool } from 'undici';
import { ApiError } from '../common/errors.js';
import type { TokenSource } from '../common/quantum-client.js';

export interface GlanceImage {
  id: string;
  name: string | null;
  status: string;
  visibility: string;
  owner: string | null;
  min_disk?: number;
  min_ram?: number;
}

export class GlanceClient {
  private pool: Pool | undefined;
  private base: URL | undefined;

  /** url: a fixed endpoint ([glance] api_servers) or a lookup (the catalog's image endpoint). */
  constructor(private readonly url: string | (() => Promise<string>), private readonly timeoutMs = 30_000) {}

  private async target(): Promise<{ pool: Pool; base: URL }> {
    if (!this.pool || !this.base) {
      const u = new URL(typeof this.url === 'string' ? this.url : await this.url());
      this.base = u;
      this.pool = new Pool(u.origin, { connections: 8, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs, connectTimeout: Math.min(this.timeoutMs, 10_000) });
    }
    return { pool: this.pool, base: this.base };
  }

  /** The image, or undefined when Glance says 404 (unknown, or not visible to the token's project). */
  async show(id: string, auth: TokenSource | undefined): Promise<GlanceImage | undefined> {
    const { pool, base } = await this.target();
    const prefix = base.pathname.replace(/\/+$/, '').replace(/\/v2$/, '');
    const headers: Record<string, string> = { accept: 'application/json' };
    if (auth) headers['x-auth-token'] = await auth.token();
    let res;
    try {
      res = await pool.request({ method: 'GET', path: `${prefix}/v2/images/${encodeURIComponent(id)}`, headers });
    } catch (e) {
      throw new ApiError(503, 'serviceUnavailable', `Connection to glance host ${base.origin} failed: ${(e as Error).message}`);
    }
    const text = await res.body.text();
    if (res.statusCode === 404) return undefined;
    if (res.statusCode >= 400) throw new ApiError(res.statusCode === 401 || res.statusCode === 403 ? 400 : 503, res.statusCode === 401 || res.statusCode === 403 ? 'badRequest' : 'serviceUnavailable', `Error from the image service (HTTP ${res.statusCode})`);
    return JSON.parse(text) as GlanceImage;
  }

  async close(): Promise<void> {
    await this.pool?.close();
  }
}

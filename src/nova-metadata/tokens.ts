// IMDSv2-style session tokens (AWS's defence against SSRF, which Nova never added): `PUT /latest/api/token`
// with `X-aws-ec2-metadata-token-ttl-seconds: 1..21600` returns a token; requests carry it in
// `X-aws-ec2-metadata-token`. A token is an HMAC over the instance it was issued to, its expiry and a nonce,
// keyed with a secret every metadata worker shares: any worker validates any token with no shared state, a
// restart within the TTL keeps tokens valid, and a token is useless to any other instance (its uuid is in the
// MAC, not in the token).
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

export const TOKEN_PATH = '/latest/api/token';
export const TOKEN_HEADER = 'x-aws-ec2-metadata-token';
export const TOKEN_TTL_HEADER = 'x-aws-ec2-metadata-token-ttl-seconds';
export const MAX_TTL = 21600;

const VERSION = 'v1.';
const NONCE = 8;
const MAC = 16;

export type TokenCheck = 'valid' | 'invalid' | 'expired';

export class MetadataTokens {
  constructor(private readonly key: Buffer) {}

  private mac(instanceId: string, body: Buffer): Buffer {
    return createHmac('sha256', this.key).update('imds-token\0').update(instanceId).update('\0').update(body).digest().subarray(0, MAC);
  }

  /** A token for `instanceId`, valid `ttl` seconds. */
  issue(instanceId: string, ttl: number, now = Date.now()): string {
    const body = Buffer.alloc(4 + NONCE);
    body.writeUInt32BE(Math.floor(now / 1000) + ttl, 0);
    randomBytes(NONCE).copy(body, 4);
    return VERSION + Buffer.concat([body, this.mac(instanceId, body)]).toString('base64url');
  }

  check(token: string, instanceId: string, now = Date.now()): TokenCheck {
    if (!token.startsWith(VERSION) || token.length > 64) return 'invalid';
    const raw = Buffer.from(token.slice(VERSION.length), 'base64url');
    if (raw.length !== 4 + NONCE + MAC) return 'invalid';
    const body = raw.subarray(0, 4 + NONCE);
    if (!timingSafeEqual(raw.subarray(4 + NONCE), this.mac(instanceId, body))) return 'invalid';
    return body.readUInt32BE(0) * 1000 > now ? 'valid' : 'expired';
  }
}

/** `X-aws-ec2-metadata-token-ttl-seconds` as AWS takes it: an integer 1..21600, else undefined. */
export function parseTtl(v: string | undefined): number | undefined {
  if (v === undefined || !/^\d{1,5}$/.test(v.trim())) return undefined;
  const n = Number(v.trim());
  return n >= 1 && n <= MAX_TTL ? n : undefined;
}

/**
 * The token key: `[api] metadata_token_key` when set; else derived from the proxy shared secret (every
 * metadata API behind the same agents shares it); else a key file under state_path, made once (0600), which
 * the workers of one host share.
 */
export function tokenKey(o: { configured?: string | undefined; sharedSecret: string; keyFile: string }): Buffer {
  if (o.configured) return Buffer.from(o.configured, 'utf8');
  if (o.sharedSecret) return createHmac('sha256', o.sharedSecret).update('quantum-metadata session tokens').digest();
  if (!existsSync(o.keyFile)) {
    mkdirSync(dirname(o.keyFile), { recursive: true });
    try {
      writeFileSync(o.keyFile, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    } catch (e) {
      // Another worker made it first: use theirs.
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
    }
  }
  chmodSync(o.keyFile, 0o600);
  return Buffer.from(readFileSync(o.keyFile, 'utf8').trim(), 'hex');
}

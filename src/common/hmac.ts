// The proxy signature Neutron's metadata agent sends and Nova checks.
import { createHmac, timingSafeEqual } from 'node:crypto';

/** hex HMAC-SHA256(secret, instance id), as hmac.new(secret, id, sha256).hexdigest(). */
export function signInstanceId(secret: string, instanceId: string): string {
  return createHmac('sha256', Buffer.from(secret, 'utf8')).update(Buffer.from(instanceId, 'utf8')).digest('hex');
}

/** Constant-time comparison (CVE-2014-3517): length differences return false without an early exit on content. */
export function constantTimeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a, 'utf8');
  const bb = Buffer.from(b, 'utf8');
  if (ab.length !== bb.length) {
    timingSafeEqual(ab, ab);
    return false;
  }
  return timingSafeEqual(ab, bb);
}

export function verifyInstanceSignature(secret: string, instanceId: string, signature: string): boolean {
  return constantTimeEqual(signInstanceId(secret, instanceId), signature);
}

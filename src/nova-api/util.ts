// Small Nova helpers: hostnames, reservation ids, passwords, keypair fingerprints.
import { createHash, generateKeyPairSync, randomInt, X509Certificate } from 'node:crypto';
import { ApiError } from '../common/errors.js';

/** nova.utils.sanitize_hostname (Zed). */
export function sanitizeHostname(hostname: string, defaultName?: string): string {
  // Drop characters outside U+0000-U+00FF (encode('latin-1', 'ignore')).
  let h = [...hostname].filter((c) => c.codePointAt(0)! <= 0xff).join('');
  h = h.slice(0, 63);
  h = h.replace(/[ _.]/g, '-');
  // Python's \w with str patterns is Unicode-aware: letters, digits and underscore (Latin-1 letters stay).
  h = h.replace(/[^\p{L}\p{N}_.-]+/gu, '');
  h = h.toLowerCase();
  h = h.replace(/^[.-]+|[.-]+$/g, '');
  if (h === '' && defaultName !== undefined) return defaultName.slice(0, 63);
  return h;
}

const UID_CHARS = '01234567890abcdefghijklmnopqrstuvwxyz';

/** nova.utils.generate_uid('r') → r-xxxxxxxx */
export function generateUid(topic: string, size = 8): string {
  let s = '';
  for (let i = 0; i < size; i++) s += UID_CHARS[randomInt(UID_CHARS.length)];
  return `${topic}-${s}`;
}

/** nova.utils.generate_password: 12 characters avoiding look-alikes. */
export function generatePassword(length = 12): string {
  const symbols = ['23456789', 'ABCDEFGHJKLMNPQRSTUVWXYZ', 'abcdefghijkmnopqrstuvwxyz'];
  const all = symbols.join('');
  const out = symbols.map((s) => s[randomInt(s.length)]!);
  while (out.length < length) out.push(all[randomInt(all.length)]!);
  for (let i = out.length - 1; i > 0; i--) {
    const j = randomInt(i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out.join('');
}

const colonHex = (hex: string) => hex.match(/../g)!.join(':');

/** Fingerprint of an OpenSSH public key (md5 of the key blob, as Nova's generate_fingerprint). */
export function sshFingerprint(publicKey: string): string {
  const parts = publicKey.trim().split(/\s+/);
  if (parts.length < 2) throw new ApiError(400, 'badRequest', 'Keypair data is invalid: failed to generate fingerprint');
  const blob = Buffer.from(parts[1]!, 'base64');
  // The blob starts with its own type name; a mismatch or garbage is not a key.
  const len = blob.length >= 4 ? blob.readUInt32BE(0) : -1;
  const type = len > 0 && len < 64 && blob.length >= 4 + len ? blob.subarray(4, 4 + len).toString('latin1') : '';
  if (!type || type !== parts[0] || !/^(ssh-(rsa|dss|ed25519)|ecdsa-sha2-nistp(256|384|521)|sk-)/.test(type) || blob.length < 4 + len + 4) {
    throw new ApiError(400, 'badRequest', 'Keypair data is invalid: failed to generate fingerprint');
  }
  return colonHex(createHash('md5').update(blob).digest('hex'));
}

/** Fingerprint of an x509 certificate (sha1 of the DER, as generate_x509_fingerprint). */
export function x509Fingerprint(pem: string): string {
  try {
    const cert = new X509Certificate(pem);
    return colonHex(createHash('sha1').update(cert.raw).digest('hex'));
  } catch (e) {
    throw new ApiError(400, 'badRequest', `Keypair data is invalid: failed to generate X509 fingerprint. Error message: ${(e as Error).message}`);
  }
}

function sshString(b: Buffer): Buffer {
  const l = Buffer.alloc(4);
  l.writeUInt32BE(b.length);
  return Buffer.concat([l, b]);
}
function mpint(b64url: string): Buffer {
  let b = Buffer.from(b64url, 'base64url');
  if (b[0]! & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
  return sshString(b);
}

/** A new RSA keypair (when os-keypairs POST carries no public_key): OpenSSH public, PEM private. */
export function generateSshKeypair(comment: string): { publicKey: string; privateKey: string } {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = publicKey.export({ format: 'jwk' });
  const blob = Buffer.concat([sshString(Buffer.from('ssh-rsa')), mpint(jwk.e!), mpint(jwk.n!)]);
  return {
    publicKey: `ssh-rsa ${blob.toString('base64')} ${comment}`,
    privateKey: privateKey.export({ format: 'pem', type: 'pkcs1' }).toString(),
  };
}

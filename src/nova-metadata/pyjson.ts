// Python's json.dumps(obj) byte for byte: ", " and ": " separators, ensure_ascii (\uXXXX for every
// non-ASCII code unit), insertion-ordered keys, None → null. Nova serialises with oslo's jsonutils,
// which is json.dumps with default settings.

export type PyJson = null | boolean | number | string | PyJson[] | { [k: string]: PyJson | undefined };

const ESC: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };

// Python's ESCAPE_ASCII regex: ([\\"]|[^\ -~]) — backslash, quote, and anything outside printable ASCII.
// eslint-disable-next-line no-control-regex
const NEEDS = /[\\"]|[^ -~]/g;

export function pyString(s: string): string {
  return `"${s.replace(NEEDS, (c) => ESC[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;
}

function pyNumber(n: number): string {
  if (Number.isNaN(n)) return 'NaN';
  if (n === Infinity) return 'Infinity';
  if (n === -Infinity) return '-Infinity';
  // Python prints integers without a fraction, floats with repr(): 1.0, 1e-05, 1e+16.
  if (Number.isInteger(n) && Math.abs(n) < 1e16) return String(n);
  let s = String(n);
  if (/e/.test(s)) s = s.replace(/e([+-])(\d)$/, 'e$10$2');
  return s;
}

export function pyDumps(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'boolean':
      return v ? 'true' : 'false';
    case 'number':
      return pyNumber(v);
    case 'string':
      return pyString(v);
    case 'object': {
      if (Array.isArray(v)) return `[${v.map(pyDumps).join(', ')}]`;
      const parts: string[] = [];
      // A Map keeps insertion order even for integer-like keys (a plain object would hoist them).
      if (v instanceof Map) {
        for (const [k, x] of v) parts.push(`${pyString(String(k))}: ${pyDumps(x)}`);
        return `{${parts.join(', ')}}`;
      }
      for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
        if (x === undefined) continue;
        parts.push(`${pyString(k)}: ${pyDumps(x)}`);
      }
      return `{${parts.join(', ')}}`;
    }
    default:
      return pyString(String(v));
  }
}

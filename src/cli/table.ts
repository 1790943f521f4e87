// Output the way the era's clients print it (cliff + prettytable): Field/Value tables for one resource,
// column tables for lists, and -f json / -f value / -c COLUMN for scripts. Shared by the quantum and nova CLIs.

export type OutputFormat = 'table' | 'json' | 'value';

export interface OutputOptions {
  format?: OutputFormat;
  /** -c COLUMN (repeatable): only these columns/fields, in this order. */
  columns?: string[];
  /** Where lines go (default: process.stdout). */
  write?: (text: string) => void;
}

export type Formatter = (row: Record<string, unknown>) => unknown;

const defaultWrite = (text: string) => {
  process.stdout.write(text);
};

/** Python's json.dumps spacing ({"a": 1, "b": [2, 3]}), which the era's clients print dict values with. */
export function pyDumps(v: unknown): string {
  if (v === undefined || v === null) return 'null';
  if (Array.isArray(v)) return `[${v.map(pyDumps).join(', ')}]`;
  if (typeof v === 'object') return `{${Object.entries(v as Record<string, unknown>).map(([k, x]) => `${JSON.stringify(k)}: ${pyDumps(x)}`).join(', ')}}`;
  return JSON.stringify(v);
}

/** A table cell as the clients render it: lists one item per line, dicts as JSON, booleans True/False, null empty. */
export function formatValue(v: unknown): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'boolean') return v ? 'True' : 'False';
  if (Array.isArray(v)) return v.map((x) => (x !== null && typeof x === 'object' ? pyDumps(x) : formatValue(x))).join('\n');
  if (typeof v === 'object') return pyDumps(v);
  return String(v);
}

/** prettytable with every column left-aligned and multi-line cells, as cliff prints it. */
export function renderTable(headers: string[], rows: string[][]): string {
  const split = rows.map((r) => r.map((c) => c.split('\n')));
  const widths = headers.map((h, i) => Math.max(h.length, ...split.map((r) => Math.max(...(r[i] ?? ['']).map((l) => l.length)))));
  const rule = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ')} |`;
  const out = [rule, line(headers), rule];
  for (const r of split) {
    const height = Math.max(1, ...r.map((c) => c.length));
    for (let k = 0; k < height; k++) out.push(line(headers.map((_, i) => r[i]?.[k] ?? '')));
  }
  out.push(rule);
  return `${out.join('\n')}\n`;
}

function pick(columns: string[] | undefined, available: string[]): string[] {
  if (!columns || columns.length === 0) return available;
  const bad = columns.filter((c) => !available.includes(c));
  if (bad.length) throw new Error(`No column named ${bad.map((b) => `'${b}'`).join(', ')}; choose from ${available.join(', ')}`);
  return columns;
}

/** One resource: an optional title line ("Created a new subnet:"), then the Field/Value table with fields sorted. */
export function printShow(title: string | undefined, obj: Record<string, unknown>, opts: OutputOptions = {}): void {
  const write = opts.write ?? defaultWrite;
  const fields = pick(opts.columns, Object.keys(obj).sort());
  switch (opts.format ?? 'table') {
    case 'json': {
      const o: Record<string, unknown> = {};
      for (const f of fields) o[f] = obj[f];
      write(`${JSON.stringify(o, null, 4)}\n`);
      return;
    }
    case 'value':
      for (const f of fields) write(`${formatValue(obj[f])}\n`);
      return;
    default:
      if (title) write(`${title}\n`);
      write(renderTable(['Field', 'Value'], fields.map((f) => [f, formatValue(obj[f])])));
  }
}

/** A list: the given columns (formatters turn a row into a column's value); nothing at all for an empty table. */
export function printList(columns: string[], rows: Record<string, unknown>[], opts: OutputOptions & { formatters?: Record<string, Formatter> } = {}): void {
  const write = opts.write ?? defaultWrite;
  const cols = pick(opts.columns, columns);
  const val = (r: Record<string, unknown>, c: string) => (opts.formatters?.[c] ? opts.formatters[c]!(r) : r[c]);
  switch (opts.format ?? 'table') {
    case 'json':
      write(`${JSON.stringify(rows.map((r) => Object.fromEntries(cols.map((c) => [c, val(r, c)]))), null, 4)}\n`);
      return;
    case 'value':
      for (const r of rows) write(`${cols.map((c) => formatValue(val(r, c)).replace(/\n/g, ' ')).join(' ')}\n`);
      return;
    default:
      if (rows.length === 0) return;
      write(renderTable(cols, rows.map((r) => cols.map((c) => formatValue(val(r, c))))));
  }
}

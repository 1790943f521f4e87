// The sample configs in etc/ are generated from the option declarations; this keeps them from drifting.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { render } from '../src/tools/gen-config.js';
import { repoRoot } from './helpers/paths.js';

const escapedHost = hostname().replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

test('etc/ samples match the option declarations (run `npm run gen-config` after changing options)', async () => {
  const files = await render();
  assert.equal(files.size, 6);
  for (const [file, text] of files) {
    assert.equal(readFileSync(join(repoRoot, file), 'utf8'), text, `${file} is out of date`);
    assert.doesNotMatch(text, new RegExp(`= ${escapedHost}$`, 'm'), `${file} shows this machine's hostname`);
  }
});

test('every daemon option has help text, and option names are Neutron/Nova style (lower_snake)', async () => {
  for (const [file, text] of await render()) {
    for (const m of text.matchAll(/^#([A-Za-z0-9_.-]+) = /gm)) assert.match(m[1]!, /^[a-z][a-z0-9_]*$/, `${file}: ${m[1]}`);
  }
});

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bool, int, list, loadConfig, optStr, str, renderSample } from '../src/common/config.js';
import { ConfigError } from '../src/common/errors.js';
import { signInstanceId, verifyInstanceSignature } from '../src/common/hmac.js';
import { parseConnectionUrl } from '../src/db/connection.js';

const spec = {
  DEFAULT: {
    state_path: str('/var/lib/quantum', 'state'),
    bind_port: int(9696, 'port', { min: 0, max: 65535 }),
    debug: bool(false, 'debug'),
    nova_metadata_host: str('127.0.0.1', 'nova host', { deprecated: [['DEFAULT', 'nova_metadata_ip']] }),
    secret: optStr('secret', { secret: true }),
  },
  cache: { enabled: bool(false, 'cache on'), backends: list([], 'list') },
};

const dir = mkdtempSync(join(tmpdir(), 'qm-conf-'));
const f1 = join(dir, 'a.conf');
const f2 = join(dir, 'b.ini');
writeFileSync(f1, '[DEFAULT]\nstate_path = /srv/a\nbind_port = 1000\nnova_metadata_ip = 10.0.0.1\nunknown_opt = 1\n[cache]\nenabled = True\nbackends = a, b\n');
writeFileSync(f2, '[DEFAULT]\nbind_port = 2000\n[keystone_authtoken]\nauth_url = http://x\n');

test('later --config-file wins, flags win over files, deprecated names map', () => {
  const { conf, warnings } = loadConfig(spec, ['--config-file', f1, '--config-file', f2, '--state_path', '/flag'], { prog: 't', description: 'd' });
  assert.equal(conf.DEFAULT.bind_port, 2000);
  assert.equal(conf.DEFAULT.state_path, '/flag');
  assert.equal(conf.DEFAULT.nova_metadata_host, '10.0.0.1');
  assert.equal(conf.cache.enabled, true);
  assert.deepEqual(conf.cache.backends, ['a', 'b']);
  assert.equal(conf.DEFAULT.secret, undefined);
  assert.equal(warnings.length, 2, warnings.join('\n'));
  assert.match(warnings.join('\n'), /unknown option \[DEFAULT\] unknown_opt/);
});

test('defaults apply without files; --nodebug negates', () => {
  const { conf } = loadConfig(spec, ['--debug', '--nodebug'], { prog: 't', description: 'd' });
  assert.equal(conf.DEFAULT.state_path, '/var/lib/quantum');
  assert.equal(conf.DEFAULT.debug, false);
});

test('bad value names file, option and value', () => {
  const bad = join(dir, 'bad.conf');
  writeFileSync(bad, '[DEFAULT]\nbind_port = nine\n');
  assert.throws(() => loadConfig(spec, ['--config-file', bad], { prog: 't', description: 'd' }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.match(e.message, /bad\.conf: \[DEFAULT\] bind_port = "nine": not an integer/);
    return true;
  });
  assert.throws(() => loadConfig(spec, ['--bind_port', '70000'], { prog: 't', description: 'd' }), /must be <= 65535/);
  assert.throws(() => loadConfig(spec, ['--config-file', join(dir, 'missing.conf')], { prog: 't', description: 'd' }), /cannot read config file .*missing\.conf: ENOENT/);
  assert.throws(() => loadConfig(spec, ['--no_such_flag'], { prog: 't', description: 'd' }), ConfigError);
});

test('sample rendering lists every option with its default', () => {
  const text = renderSample(spec, 'sample');
  assert.match(text, /#state_path = \/var\/lib\/quantum/);
  assert.match(text, /\[cache\]/);
  assert.match(text, /Deprecated name: \[DEFAULT\] nova_metadata_ip/);
});

test('HMAC test vector from Neutron', () => {
  assert.equal(signInstanceId('secret', 'foo'), '773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4');
  assert.ok(verifyInstanceSignature('secret', 'foo', '773ba44693c7553d6ee20f61ea5d2757a9a4f4a44d2841ae4e95b52e4cd62db4'));
  assert.ok(!verifyInstanceSignature('secret', 'foo', '773ba4'));
});

test('connection URLs', () => {
  assert.deepEqual(parseConnectionUrl('sqlite:////var/lib/q.db'), { dialect: 'sqlite', path: '/var/lib/q.db' });
  assert.equal(parseConnectionUrl('sqlite://').path, ':memory:');
  const m = parseConnectionUrl('mysql+pymysql://quantum:p%40ss@db1:3307/quantum?charset=utf8');
  assert.equal(m.dialect, 'mysql');
  assert.equal(m.password, 'p@ss');
  assert.equal(m.port, 3307);
  assert.equal(m.database, 'quantum');
  assert.throws(() => parseConnectionUrl('postgres://x/y'), /unsupported database/);
});

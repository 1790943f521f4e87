#!/usr/bin/env node
// CommonJS, like the build it loads (dist/proxy): no ES module loader in a process that runs once per router.
require('../dist/proxy/ns-proxy/main.js');

#!/usr/bin/env node
import '../dist/src/ns-proxy/main.js';

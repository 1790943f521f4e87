#!/usr/bin/env node
import '../dist/src/l3-agent/main.js';

#!/usr/bin/env node
import '../dist/src/quantum-server/main.js';

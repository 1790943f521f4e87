#!/usr/bin/env node
import '../dist/src/metadata-agent/main.js';

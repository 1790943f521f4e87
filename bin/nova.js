#!/usr/bin/env node
import '../dist/src/cli/nova.js';

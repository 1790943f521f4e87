#!/usr/bin/env node
import '../dist/src/nova-api/main.js';

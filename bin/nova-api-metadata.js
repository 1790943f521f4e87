#!/usr/bin/env node
import '../dist/src/nova-api/metadata-main.js';

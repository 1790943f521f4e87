#!/usr/bin/env node
import '../dist/src/glance-api/main.js';

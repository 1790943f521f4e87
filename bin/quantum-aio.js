#!/usr/bin/env node
import '../dist/src/aio/main.js';

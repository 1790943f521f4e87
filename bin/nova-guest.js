#!/usr/bin/env node
import '../dist/src/guest/main.js';

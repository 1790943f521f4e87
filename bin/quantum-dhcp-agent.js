#!/usr/bin/env node
import '../dist/src/dhcp-agent/main.js';

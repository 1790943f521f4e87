#!/usr/bin/env node
import '../dist/src/doctor/main.js';

#!/usr/bin/env node
/**
 * Re-renders an evidence sweep's markdown and goal check from its JSON (no simulation): for a changed report or
 * goal definition, or to embed hand-written notes (the reading of the numbers) after the header.
 * Usage: node bench/sim/evidence-rerender.js bench/results/sim-evidence-<date>-<tag>.json [--notes notes.md]
 * Rewrites the .json's goal (and notes) and the .md next to it; the rows are untouched.
 */
'use strict';
const fs = require('node:fs');
const { renderMarkdown, goalCheck } = require('./evidence-report');

const file = process.argv[2];
if (file === undefined || !file.endsWith('.json')) throw new Error('usage: evidence-rerender.js RESULTS.json [--notes FILE.md]');
const notesAt = process.argv.indexOf('--notes');
const data = JSON.parse(fs.readFileSync(file, 'utf8'));
const { rows, ablation } = data;
const meta = Object.fromEntries(Object.entries(data).filter(([k]) => !['goal', 'rows', 'ablation'].includes(k)));
if (notesAt > 0) meta.notes = [...fs.readFileSync(process.argv[notesAt + 1], 'utf8').trimEnd().split('\n'), ''];
const goal = goalCheck(rows, meta.scenarios);
fs.writeFileSync(file.replace(/\.json$/, '.md'), renderMarkdown(meta, rows, ablation, goal));
fs.writeFileSync(file, JSON.stringify({ ...meta, goal, rows, ablation }, null, 1));
console.log(file.replace(/\.json$/, '.md'));

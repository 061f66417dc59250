/** Shared by the simulator bench scripts: repository root, cost-model loading and the four policies. */
'use strict';
const fs = require('node:fs');
const path = require('node:path');
const { parseCostModel } = require('../../libs/sim/dist');

const root = path.join(__dirname, '..', '..');
/** A calibration file by name (libs/sim/calibration/NAME) or by path. */
const loadModel = (f) => parseCostModel(JSON.parse(fs.readFileSync(path.resolve(root, 'libs/sim/calibration', f), 'utf8')), f);
const POLICIES = [
  ['inlaid', { policy: 'inlaid' }],
  ['fifo', { policy: 'fifo' }],
  ['fcfs-maxloras', { policy: 'fcfs-maxloras', maxLoras: 4 }],
  ['mlfq', { policy: 'mlfq' }],
];

module.exports = { root, loadModel, POLICIES };

#!/bin/bash
# Session 22 (helper A): which TMA copy of hgemvt's issue is illegal (s22_ring_diag.py), each case in its own process
source bench/kernels/device_env.sh && device_header
export INLAID_QMM_TUNED=1 PYTHONPATH=workers:bench/kernels
run() { timeout 60 python3 bench/kernels/s22_ring_diag.py "$@" 2>&1 | grep DIAG; }
for c in "1 1 32 8 2" "1 4 32 8 2" "2 1 32 8 2" "4 1 32 8 2" "7 4 32 8 2" "1 1 8 16 2" "2 1 8 16 2" "4 1 8 16 2" "1 1 32 8 1"; do run $c & done; wait

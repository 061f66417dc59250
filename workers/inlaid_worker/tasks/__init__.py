"""Real evaluation tasks: dataset builders, ChatML prompts, metrics and the evaluation harness.

The built splits live in `assets/tasks/<task>/{train,calib,test}.jsonl` (see `build.py`); `spec.py` names
each task's metric and generation length; `evaluate.py` scores a model on a split.
"""

"""LoRA training with PEFT on SmolLM2-135M-Instruct, one adapter per task (loss on answer tokens only).

`python -m inlaid_worker.train --task NAME ...` trains one; `python -m inlaid_worker.train.all` trains and
evaluates every task.
"""

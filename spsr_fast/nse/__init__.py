"""Self-supervised structure learning (paper section 4): NSE pre-training by contrastive
prediction or jigsaw puzzles, its evaluation, and the structure loss of SPSR-P / SPSR-J.

    python -m spsr_fast.train --config configs/nse_contrastive.yaml   # or nse_jigsaw, spsr_p, spsr_j
    python -m spsr_fast.eval_nse --train DIR --test DIR --nse NAME=PATH --random-init

Modules: sampling (task geometry), tasks (losses and accuracies), stages (trainer stages),
structure_loss, checkpoint (reading a trained NSE), config (the `nse` / `structure` sections),
eval (the Fig. 15 protocol), train (the command line).
"""

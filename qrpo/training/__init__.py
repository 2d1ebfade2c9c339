"""Training: the loop and its batching, log-probs, the fused LM head, distributed launch and checkpoints."""

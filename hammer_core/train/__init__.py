"""The train stage: CGC-LoRA training in worker processes, batch plans, checkpoints, live tracking."""

"""Base models: packaged presets and GGUF checkpoints, converted once to a safetensors folder."""

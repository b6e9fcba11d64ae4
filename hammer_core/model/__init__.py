"""Models: base models and tokenizers (the tiny preset, packaged presets, GGUF), loading trained
and exported models, CGC-LoRA, and the export stage ("1 + N" PEFT adapters)."""

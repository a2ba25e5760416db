"""Adapting the video model to the domain: expert clips, from-scratch / LoRA training, quality."""

"""GenReward rewards: video-level (VAE-latent cosine to the goal video), frame-level (FB
F(s,a,z)ᵀz toward the key frame), a CLIP baseline, and their combination. Everything is computed
from stored frames, so a replay buffer can be relabelled with another reward model."""

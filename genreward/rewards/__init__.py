"""GenReward rewards: video-level (VAE-latent cosine to the goal video), frame-level (FB
F(s,a,z)ᵀz toward the key frame), a CLIP baseline, and their combination. Everything is computed
from stored frames, so a replay buffer can be relabelled with another reward model."""


def __getattr__(name: str):
    # GenRewardWrapper imports gymnasium, so it is loaded on first use: loading the config must not import it
    if name == "GenRewardWrapper":
        from genreward.rewards.wrapper import GenRewardWrapper

        return GenRewardWrapper
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["GenRewardWrapper"]

"""Building blocks shared by the methods (SE blocks, convolutional decoders, ...)."""

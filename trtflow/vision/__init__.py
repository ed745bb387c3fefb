"""Vision pre- and post-processing: image preprocessing, models and labels for the demos."""

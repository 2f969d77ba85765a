"""Base classes of every model: the recommender template, the BPR training loop, the closed-form fit,
model selection and the false-hard-negative probe."""

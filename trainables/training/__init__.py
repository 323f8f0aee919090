"""Training: models and tokenizer, pretraining of the tiny base, batching, the one loop, reporting, the trial."""

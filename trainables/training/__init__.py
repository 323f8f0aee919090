"""Training: models and tokenizer, pretraining of the tiny base, the one loop, reporting. Imports `data` and
`scoring`; the methods build on it, and `trainables.trial` wires a method to the loop."""

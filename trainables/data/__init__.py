"""GSM8K-style data: records, the file / hub / embedded loaders, the generator, programs, prompt styles and
token batches. The first of the four subpackages: it imports none of the others."""

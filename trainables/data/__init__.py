"""GSM8K-style data: records, the file / hub / embedded loaders, the generator, programs and prompt styles."""

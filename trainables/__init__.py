"""The machine learning of the study: data, prompts, metrics, models, strategies and the training loop."""

import logging

# bitsandbytes warns at import, on every CPU without the optional `kernels` hub package, that a faster
# 4-bit CPU kernel could not be downloaded; it falls back to its own kernel, so the warning is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

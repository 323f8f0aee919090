"""The machine learning of the study, in four subpackages imported one way: `data` <- `scoring` <-
`training` <- `methods`; `trial` (the trial entry point Ray runs) wires a method to the loop."""

import logging

# bitsandbytes warns at import, on every CPU without the optional `kernels` hub package, that a faster
# 4-bit CPU kernel could not be downloaded; it falls back to its own kernel, so the warning is only noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

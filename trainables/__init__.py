"""The machine learning of the study, in four subpackages imported one way: `data` <- `scoring` <-
`training` <- `methods`; `trial` (the trial entry point Ray runs) wires a method to the loop."""

import logging

# On a CPU with AVX512-BF16, bitsandbytes tries at import to fetch a faster 4-bit kernel from the hub through
# `kernels`; offline (always, here) `kernels` logs that it skips a trust check and bitsandbytes that the fetch
# failed, then falls back to its own kernel. Both lines are noise that would open every study and come before
# the one error line of a bad input.
for _chatty in ("bitsandbytes.backends.cpu.ops", "kernels"):
    logging.getLogger(_chatty).setLevel(logging.ERROR)

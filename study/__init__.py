"""The experiment: what the user runs (`study.run`, `study.train`, `study.evaluate`)."""

import os

# Hugging Face's per-load progress bars ("Loading weights", "Writing model shards") would repeat for every
# trial and bury Ray's progress table; Ray workers inherit this from the driver.
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

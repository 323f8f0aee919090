"""Make the packages named in `SLM_ABSENT_PACKAGES` (comma-separated) look not installed.

Put this folder first on PYTHONPATH: Python imports `sitecustomize` at start-up, in the process and in every
child that inherits the environment (Ray-free trial workers, pytest). `sys.modules[name] = None` makes
`import name` (and `import name.sub`) raise ModuleNotFoundError and `importlib.util.find_spec(name)`
return None, which is how transformers and peft probe for optional packages, so they behave as on a machine
without them. A meta-path finder that raised ImportError would make `find_spec` raise instead, which a
machine lacking the package never does.
"""

import os
import sys

for _name in filter(None, os.environ.get("SLM_ABSENT_PACKAGES", "").split(",")):
    sys.modules[_name.strip()] = None

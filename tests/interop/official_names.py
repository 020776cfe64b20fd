"""Run by the official SDK's interpreter: print the public names its modules define, as JSON."""

import importlib
import json
import sys

result = {}
for module_name in sys.argv[1:]:
    module = importlib.import_module(module_name)
    result[module_name] = sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and str(getattr(value, "__module__", "")).startswith("durabletask")
    )
print(json.dumps(result))

"""Former home of dataset generation and storage, now split in two.

``imitation/generate.py`` holds ``GenerateConfig`` and ``generate``; ``imitation/shards.py`` holds
the schema, the manifest and ``Dataset``. Only ``mirrorhall/cli.py`` still imports from here;
delete this module together with those imports.
"""

from mirrorhall.imitation.generate import GenerateConfig, generate  # noqa: F401

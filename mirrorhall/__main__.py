import sys

from mirrorhall.cli import main

sys.exit(main())

import sys

from aeris.cli import main

sys.exit(main())

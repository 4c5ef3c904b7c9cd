import sys

from zk0.tools.cli import main

sys.exit(main())

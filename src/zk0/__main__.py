import sys

from zk0.cli import main

sys.exit(main())

import sys

from jarvis_trio.cli import main

sys.exit(main())

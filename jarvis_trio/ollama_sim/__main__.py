"""``python -m jarvis_trio.ollama_sim``: the simulator on ``--host``/``--port``."""

import sys

from jarvis_trio.ollama_sim import main

sys.exit(main())

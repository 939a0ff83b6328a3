"""`python -m bench`: the core benchmark (adapters have their own: bench.slack_ack, bench.discord_defer)."""
import asyncio

from bench.core import main

asyncio.run(main())

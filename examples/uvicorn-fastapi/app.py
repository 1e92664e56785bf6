"""FastAPI on uvicorn (asyncio) for initless: initialise, listen, then say ready (see examples/README.md).

The ready phrase is printed by a uvicorn.Server subclass once startup() has bound and is listening.
"""
import asyncio
import os
import sys

import uvicorn
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse

READY = "uvicorn-fastapi: ready"

app = FastAPI()
state = {"requests": 0}


@app.get("/", response_class=PlainTextResponse)
async def hello():
    state["requests"] += 1
    # A round trip through the event loop's timers, so a restored loop must still schedule them.
    await asyncio.sleep(0.001)
    return f"hello from uvicorn (fastapi) requests={state['requests']}\n"


@app.get("/items/{item_id}")
async def item(item_id: int, q: str = ""):
    # JSON through FastAPI's validation and serialisation.
    return {"item_id": item_id, "q": q, "requests": state["requests"]}


class ReadyServer(uvicorn.Server):
    """uvicorn's server, printing the ready phrase once startup() has bound and is listening."""

    async def startup(self, sockets=None):
        await super().startup(sockets=sockets)
        if not self.should_exit:
            print(READY, flush=True)


def main():
    port = int(os.environ.get("PORT", "9000"))
    # http="h11" (pure Python; httptools may be absent), no access log, lifespan off (nothing to start).
    config = uvicorn.Config(app, host="0.0.0.0", port=port, http="h11", loop="asyncio", lifespan="off",
                            access_log=False, log_level="warning")
    ReadyServer(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

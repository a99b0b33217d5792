"""The reference app for ASGI servers: uvicorn alone, or as gunicorn's uvicorn worker.

    uvicorn --app-dir loadtest/python asgi:app                     (async's counterpart)
    gunicorn --chdir loadtest/python -k uvicorn.workers.UvicornWorker --workers 2 asgi:app
                                                                   (prefork-async's)

/io awaits asyncio.sleep and holds nothing; /cpu computes on the loop, so every other request
of that loop waits, which is what an `async def` handler that computes does. offload=1 is
loop.run_in_executor on the default thread pool.
"""

import asyncio
import atexit
from urllib.parse import unquote_to_bytes

from endpoints import Application, Offloads, Waits

application = Application("uvicorn")
# uvicorn ends by raising SIGTERM again with its default action, so atexit handlers never run
# there: the lifespan's shutdown gives the slot back first.
atexit.register(application.board.release)


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                application.board.release()
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    content_type = next((value.decode("latin-1") for name, value in scope["headers"] if name == b"content-type"), None)
    application.began()
    # raw_path is what the client sent; decoded once here, as PATH_INFO is by a WSGI server.
    raw = scope.get("raw_path")
    path = unquote_to_bytes(raw) if raw is not None else scope["path"].encode("utf-8")
    name, result = application.respond(scope["method"], path, scope["query_string"].decode("latin-1"), body, content_type)
    if isinstance(result, Waits):
        await asyncio.sleep(result.milliseconds / 1000)
        result = result.then()
    elif isinstance(result, Offloads):
        result = await asyncio.get_running_loop().run_in_executor(None, result.run)
    application.ended(name, result.status)
    headers = [(b"content-type", result.content_type.encode()), (b"content-length", str(len(result.body)).encode())]
    headers += [(name.lower().encode(), value.encode()) for name, value in result.headers]
    await send({"type": "http.response.start", "status": result.status, "headers": headers})
    await send({"type": "http.response.body", "body": result.body})

"""`talkrt serve`: live sessions over HTTP and WebSocket on one set of engines.

The top layer: it imports the library (runs, pipeline, session, voices) and nothing imports
it. FastAPI, uvicorn, websockets and prometheus-client are imported only when a server is
built, so `import talkrt` stays fast. The protocol is written down in docs/serve.md.
"""

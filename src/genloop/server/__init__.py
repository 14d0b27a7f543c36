"""The GenLoop Studio server: a FastAPI app (``app.create_app``) over the library, a durable job table
(``jobs``) and a worker process (``worker``) that runs the jobs. Nothing happens at import time."""

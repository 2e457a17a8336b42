"""`fanout serve`: the HTTP service, a front end beside `cli/` on the launch layer.

`app.create_app` builds the app (FastAPI behind `guard.Guard`); `runs.RunManager` starts
batch and canvas runs through the same application code as the CLI, on one engine;
`views` and `sse` read runs and their events from the SQLite store. Needs the `serve`
extra (`pip install 'fanout[serve]'`).
"""

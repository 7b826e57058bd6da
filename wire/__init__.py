"""statcube's PostgreSQL wire protocol server (``statcube sql-serve``): BI tools connect with
their PostgreSQL drivers and read the cubes through cube/sqlapi, the same gate as HTTP.

- ``server.py`` — asyncio server: startup, TLS, cleartext password authentication against
  the HTTP API's key store (server/auth.py), simple and extended query protocols, cancel
  requests, errors with SQLSTATE codes; queries run in a thread pool.
- ``run.py``    — ``serve(settings)``: open the releases and run the server until stopped.

It imports the core and the key store only: not Flask, not the command line.
"""

"""The Patientkontrakt benchmark (``make bench``; docs/performance.md).

Loads synthetic agreements into a fresh PostgreSQL database exactly as the server would store
them, starts the real server, measures it with concurrent HTTP clients, and compares it with a
bare FastAPI app and raw asyncpg loops run on the same machine in the same run.
"""

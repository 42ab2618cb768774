"""HTTP layer: FastAPI routers that translate HTTP to calls into ``patientkontrakt``."""

"""The judge HTTP API (FastAPI)."""

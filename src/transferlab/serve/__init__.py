"""Serve a model over HTTP: a REST API and an upload page (FastAPI + uvicorn)."""

from transferlab.serve.app import Batcher, ServeConfig, create_app

__all__ = ["Batcher", "ServeConfig", "create_app"]
